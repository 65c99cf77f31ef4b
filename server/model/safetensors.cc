#include "server/model/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "server/model/json_check.h"

// Tensor bytes are little-endian and copied as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmserve assumes a little-endian host");

namespace ssm {
namespace {

using Json = nlohmann::json;

// The reference implementation's limit; anything larger is not a real header.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
constexpr char kMetadataKey[] = "__metadata__";

// IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
float HalfToFloat(uint16_t h) {
  const bool negative = h & 0x8000;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  }
  return negative ? -magnitude : magnitude;
}

// bfloat16 is the upper half of a float32, so widening is exact for every value (inf, nan too).
float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

StatusOr<DType> ParseDType(const std::string& name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    if (name == DTypeName(d)) return d;
  }
  return InvalidArgumentError(
      fmt::format("unsupported dtype \"{}\" (expected F32, F16 or BF16)", Excerpt(name)));
}

std::string Describe(const Json& v) {
  std::string text = v.dump();
  return text.size() > 40 ? text.substr(0, 37) + "..." : text;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Parses one non-metadata header entry; errors name the field, not yet the tensor.
Status ParseEntry(const Json& entry, uint64_t data_bytes, TensorInfo* info) {
  if (!entry.is_object()) {
    return InvalidArgumentError(fmt::format("expected an object, found {}", Describe(entry)));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return InvalidArgumentError(fmt::format("missing \"{}\"", key));
  }
  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return InvalidArgumentError(fmt::format("dtype: expected a string, found {}", Describe(dtype)));
  }
  SSM_ASSIGN_OR_RETURN(info->dtype, ParseDType(dtype.get<std::string>()));

  const Json& shape = entry["shape"];
  if (!shape.is_array()) {
    return InvalidArgumentError(fmt::format("shape: expected an array, found {}", Describe(shape)));
  }
  uint64_t numel = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const Json& dim = shape[i];
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      return InvalidArgumentError(
          fmt::format("shape[{}]: expected a non-negative integer, found {}", i, Describe(dim)));
    }
    const uint64_t n = dim.get<uint64_t>();
    // The byte count must fit the data section, so a product beyond it is an error anyway.
    numel = (n != 0 && numel > data_bytes / n) ? data_bytes + 1 : numel * n;
    info->shape.push_back(static_cast<int64_t>(n));
  }

  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return InvalidArgumentError(
        fmt::format("data_offsets: expected [begin, end] (non-negative integers), found {}",
                    Describe(offsets)));
  }
  info->begin = offsets[0].get<uint64_t>();
  info->end = offsets[1].get<uint64_t>();
  if (info->end < info->begin) {
    return InvalidArgumentError(
        fmt::format("data_offsets [{}, {}]: end is before begin", info->begin, info->end));
  }
  if (info->end > data_bytes) {
    return InvalidArgumentError(
        fmt::format("data_offsets [{}, {}]: extend past the end of the data section ({} bytes)",
                    info->begin, info->end, data_bytes));
  }
  const uint64_t needed = numel * DTypeSize(info->dtype);  // numel <= data_bytes + 1: no overflow
  if (numel > data_bytes) {  // the product was cut short above: say so rather than a wrong count
    return InvalidArgumentError(fmt::format(
        "data_offsets [{}, {}] span {} bytes, but shape {} of {} needs more than the whole data "
        "section ({} bytes)",
        info->begin, info->end, info->end - info->begin, ShapeString(info->shape),
        DTypeName(info->dtype), data_bytes));
  }
  if (info->end - info->begin != needed) {
    return InvalidArgumentError(fmt::format(
        "data_offsets [{}, {}] span {} bytes, but shape {} of {} needs {}", info->begin, info->end,
        info->end - info->begin, ShapeString(info->shape), DTypeName(info->dtype), needed));
  }
  return OkStatus();
}

// The tensors must tile the data section: sorted by offset, each begins where the last ended.
Status CheckCoverage(std::vector<const TensorInfo*> by_offset, uint64_t data_bytes) {
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;  // data bytes [0, covered) belong to the tensors seen so far
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < covered) {
      return InvalidArgumentError(fmt::format(
          "tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {}))", Excerpt(t->name),
          t->begin, t->end, Excerpt(previous->name), previous->begin, previous->end));
    }
    if (t->begin > covered) {
      return InvalidArgumentError(fmt::format(
          "bytes [{}, {}) of the data section belong to no tensor (a hole before tensor '{}')",
          covered, t->begin, Excerpt(t->name)));
    }
    covered = t->end;
    previous = t;
  }
  if (covered != data_bytes) {
    return InvalidArgumentError(fmt::format(
        "bytes [{}, {}) at the end of the data section belong to no tensor", covered, data_bytes));
  }
  return OkStatus();
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

int64_t TensorInfo::numel() const {
  // A validated header bounds every non-empty product by the data size; an empty tensor may
  // have other dimensions too large to multiply.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string message = fmt::format("{}: cannot open ({})", path, std::strerror(errno));
    return errno == ENOENT ? NotFoundError(message) : InvalidArgumentError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(fmt::format("{}: not a regular file", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return InvalidArgumentError(fmt::format(
        "{}: file is {} bytes, shorter than the 8-byte header length of a safetensors file", path,
        size));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return InvalidArgumentError(fmt::format("{}: mmap failed ({})", path, std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = static_cast<const unsigned char*>(map);
  file->map_size_ = size;
  Status status = file->ParseHeader();
  if (!status.ok()) return status.WithContext(path);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_size_);
}

Status SafetensorsFile::ParseHeader() {
  uint64_t header_bytes;
  std::memcpy(&header_bytes, map_, 8);
  if (header_bytes > kMaxHeaderBytes) {
    return InvalidArgumentError(
        fmt::format("header length {} is larger than the {} byte limit (not a safetensors file?)",
                    header_bytes, kMaxHeaderBytes));
  }
  if (header_bytes > map_size_ - 8) {
    return InvalidArgumentError(
        fmt::format("header length {} exceeds the file ({} bytes after the 8-byte length)",
                    header_bytes, map_size_ - 8));
  }
  data_start_ = 8 + header_bytes;
  const uint64_t data_bytes = map_size_ - data_start_;

  const char* text = reinterpret_cast<const char*>(map_ + 8);
  // First: the tree must never hold nesting that the recursive dump() in Describe would overflow
  // the stack on, and Json::parse throws on a number that overflows a double.
  SSM_RETURN_IF_ERROR(CheckJson(std::string_view(text, header_bytes), "header"));
  Json header;
  try {
    header = Json::parse(text, text + header_bytes);
  } catch (const Json::exception& e) {  // not expected after CheckJson; never let one escape
    return InvalidArgumentError(fmt::format("header: {}", e.what()));
  }
  if (!header.is_object()) {
    return InvalidArgumentError(
        fmt::format("header: expected a JSON object, found {}", Describe(header)));
  }

  for (const auto& [name, entry] : header.items()) {  // sorted by name
    if (name == kMetadataKey) {
      if (!entry.is_object()) {
        return InvalidArgumentError(fmt::format("{}: expected an object of strings, found {}",
                                                kMetadataKey, Describe(entry)));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return InvalidArgumentError(fmt::format("{}.{}: expected a string, found {}",
                                                  kMetadataKey, Excerpt(key), Describe(value)));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    TensorInfo info;
    info.name = name;
    Status status = ParseEntry(entry, data_bytes, &info);
    if (!status.ok()) return status.WithContext(fmt::format("tensor '{}'", Excerpt(name)));
    tensors_.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  return CheckCoverage(std::move(by_offset), data_bytes);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, const std::string& n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

StatusOr<std::vector<float>> SafetensorsFile::ReadF32(const std::string& name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) return NotFoundError(fmt::format("{}: no tensor '{}'", path_, name));
  const unsigned char* bytes = map_ + data_start_ + info->begin;
  std::vector<float> out(static_cast<size_t>(info->numel()));
  if (out.empty()) return out;
  if (info->dtype == DType::kF32) {
    std::memcpy(out.data(), bytes, out.size() * sizeof(float));  // data may be unaligned
    return out;
  }
  const bool half = info->dtype == DType::kF16;
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t v;
    std::memcpy(&v, bytes + 2 * i, 2);
    out[i] = half ? HalfToFloat(v) : BFloat16ToFloat(v);
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<const NamedTensor*> sorted;
  for (const NamedTensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const NamedTensor* a, const NamedTensor* b) { return a->name < b->name; });

  Json header = Json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;  // bytes, in sorted order
  for (size_t i = 0; i < sorted.size(); ++i) {
    const NamedTensor& t = *sorted[i];
    if (t.name.empty() || t.name == kMetadataKey) {
      return InvalidArgumentError(fmt::format("{}: invalid tensor name '{}'", path, t.name));
    }
    if (i > 0 && sorted[i - 1]->name == t.name) {
      return InvalidArgumentError(fmt::format("{}: tensor '{}' given twice", path, t.name));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return InvalidArgumentError(fmt::format("{}: tensor '{}' has negative shape {}", path,
                                                t.name, ShapeString(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (numel > 0 && t.data == nullptr) {
      return InvalidArgumentError(fmt::format("{}: tensor '{}' has no data", path, t.name));
    }
    sizes.push_back(numel * sizeof(float));
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + sizes.back()}}};
    offset += sizes.back();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // data starts 8-byte aligned

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return InvalidArgumentError(fmt::format("{}: cannot create ({})", tmp, std::strerror(errno)));
  }
  const uint64_t header_bytes = text.size();  // little-endian host: the bytes are the encoding
  bool ok = std::fwrite(&header_bytes, 8, 1, f) == 1 &&
            std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (size_t i = 0; ok && i < sorted.size(); ++i) {
    ok = sizes[i] == 0 || std::fwrite(sorted[i]->data, 1, sizes[i], f) == sizes[i];
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    return InternalError(fmt::format("{}: write failed ({})", path, reason));
  }
  return OkStatus();
}

}  // namespace ssm
