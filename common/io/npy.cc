// .npy layout: "\x93NUMPY", major and minor version bytes, header length (uint16 LE for version 1,
// uint32 LE for 2 and 3), then a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces and '\n', then the
// raw data.
#include "common/io/npy.h"

#include <fmt/format.h>

#include <cctype>
#include <cstring>
#include <fstream>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmserve assumes a little-endian host");

namespace ssm {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;
constexpr size_t kHeaderAlign = 64;  // numpy pads the whole preamble to this
constexpr size_t kMaxHeaderBytes = 1 << 20;

// The three fields of a .npy header dict.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// A recursive-descent parser for the small Python literal subset numpy writes.
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& text) : text_(text) {}

  StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool has_descr = false, has_order = false, has_shape = false;
    SSM_RETURN_IF_ERROR(Expect('{'));
    while (!Peek('}')) {
      std::string key;
      SSM_RETURN_IF_ERROR(QuotedString(&key));
      SSM_RETURN_IF_ERROR(Expect(':'));
      if (key == "descr") {
        SSM_RETURN_IF_ERROR(QuotedString(&header.descr));
        has_descr = true;
      } else if (key == "fortran_order") {
        SSM_RETURN_IF_ERROR(Boolean(&header.fortran_order));
        has_order = true;
      } else if (key == "shape") {
        SSM_RETURN_IF_ERROR(Tuple(&header.shape));
        has_shape = true;
      } else {
        return Error(fmt::format("unknown key '{}'", key));
      }
      if (!Peek('}')) SSM_RETURN_IF_ERROR(Expect(','));
    }
    SSM_RETURN_IF_ERROR(Expect('}'));
    if (!has_descr || !has_order || !has_shape) {
      return Error("expected the keys 'descr', 'fortran_order' and 'shape'");
    }
    return header;
  }

 private:
  Status Error(const std::string& what) const {
    return InvalidArgumentError(fmt::format("header {} at offset {}: {}", Quote(), pos_, what));
  }
  std::string Quote() const {
    std::string t = text_.substr(0, 80);
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    return "\"" + t + (text_.size() > 80 ? "...\"" : "\"");
  }
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool Peek(char c) {
    SkipSpace();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  Status Expect(char c) {
    if (!Peek(c)) return Error(fmt::format("expected '{}'", c));
    ++pos_;
    return OkStatus();
  }
  Status QuotedString(std::string* out) {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) return Error("unterminated string");
    *out = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return OkStatus();
  }
  Status Boolean(bool* out) {
    SkipSpace();
    for (bool value : {true, false}) {
      const char* word = value ? "True" : "False";
      if (text_.compare(pos_, std::strlen(word), word) == 0) {
        pos_ += std::strlen(word);
        *out = value;
        return OkStatus();
      }
    }
    return Error("expected True or False");
  }
  // "()", "(3,)", "(3, 4)", "(3, 4,)".
  Status Tuple(std::vector<int64_t>* out) {
    SSM_RETURN_IF_ERROR(Expect('('));
    while (!Peek(')')) {
      int64_t value = 0;
      size_t digits = 0;
      for (; pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]));
           ++pos_, ++digits) {
        if (value > (INT64_MAX - 9) / 10) return Error("dimension too large");
        value = value * 10 + (text_[pos_] - '0');
      }
      if (digits == 0) return Error("expected a non-negative integer dimension");
      out->push_back(value);
      if (!Peek(')')) SSM_RETURN_IF_ERROR(Expect(','));
    }
    return Expect(')');
  }

  const std::string& text_;
  size_t pos_ = 0;
};

// As a Python tuple, the way the header spells it: (), (3,), (3, 4).
std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("({}{})", fmt::join(shape, ", "), shape.size() == 1 ? "," : "");
}

// Reads `count` little-endian elements of type T and converts each with `convert`.
template <typename T, typename Convert>
bool ReadConverted(std::ifstream& in, size_t count, float* out, Convert convert) {
  constexpr size_t kBlock = 1 << 14;
  std::vector<T> block(std::min(count, kBlock));
  for (size_t done = 0; done < count;) {
    const size_t n = std::min(count - done, kBlock);
    if (!in.read(reinterpret_cast<char*>(block.data()), n * sizeof(T))) return false;
    for (size_t i = 0; i < n; ++i) out[done + i] = convert(block[i]);
    done += n;
  }
  return true;
}

}  // namespace

StatusOr<NpyArray> ReadNpy(const std::string& path, const NpyReadOptions& options) {
  auto error = [&](const std::string& what) {
    return InvalidArgumentError(fmt::format("{}: {}", path, what));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(fmt::format("{}: cannot open", path));
  in.seekg(0, std::ios::end);
  const uint64_t file_bytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);

  unsigned char preamble[kMagicBytes + 2];
  if (!in.read(reinterpret_cast<char*>(preamble), sizeof preamble) ||
      std::memcmp(preamble, kMagic, kMagicBytes) != 0) {
    return error("not a .npy file (expected the magic string \"\\x93NUMPY\")");
  }
  const int major = preamble[kMagicBytes];
  if (major < 1 || major > 3) {
    return error(fmt::format("unsupported .npy format version {} (expected 1, 2 or 3)", major));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  unsigned char length_le[4] = {0, 0, 0, 0};
  if (!in.read(reinterpret_cast<char*>(length_le), length_bytes)) return error("truncated header");
  const uint32_t header_bytes = length_le[0] | length_le[1] << 8 | length_le[2] << 16 |
                                static_cast<uint32_t>(length_le[3]) << 24;
  if (header_bytes > kMaxHeaderBytes) {
    return error(fmt::format("header length {} is absurd", header_bytes));
  }
  std::string text(header_bytes, '\0');
  if (!in.read(text.data(), header_bytes)) return error("truncated header");

  StatusOr<NpyHeader> parsed = HeaderParser(text).Parse();
  if (!parsed.ok()) return parsed.status().WithContext(path);
  const NpyHeader& header = *parsed;
  if (header.fortran_order) {
    return error(
        "fortran_order is True; only C-order arrays are supported "
        "(save with np.ascontiguousarray)");
  }
  size_t item_bytes;
  if (header.descr == "<f4") {
    item_bytes = 4;
  } else if (header.descr == "<f8") {
    item_bytes = 8;
  } else if (header.descr == "<i2" && options.int16_as_pcm) {
    item_bytes = 2;
  } else {
    return error(fmt::format("unsupported dtype '{}' (expected {})", header.descr,
                             options.int16_as_pcm ? "'<f4', '<f8' or '<i2'" : "'<f4' or '<f8'"));
  }

  uint64_t numel = 1;
  const uint64_t data_bytes = file_bytes - static_cast<uint64_t>(in.tellg());
  for (int64_t d : header.shape) {
    // A product beyond the data bytes is an error anyway; clamp to avoid overflow.
    numel = (d != 0 && numel > data_bytes / d) ? data_bytes + 1 : numel * d;
  }
  if (numel * item_bytes != data_bytes) {
    return error(fmt::format("shape {} of '{}' needs {} data bytes, the file has {}",
                             ShapeString(header.shape), header.descr, numel * item_bytes,
                             data_bytes));
  }

  NpyArray array;
  array.shape = header.shape;
  array.data.resize(numel);
  bool ok;
  if (item_bytes == 4) {
    ok = static_cast<bool>(in.read(reinterpret_cast<char*>(array.data.data()), numel * 4));
  } else if (item_bytes == 8) {
    ok = ReadConverted<double>(in, numel, array.data.data(),
                               [](double v) { return static_cast<float>(v); });
  } else {
    ok = ReadConverted<int16_t>(in, numel, array.data.data(),
                                [](int16_t v) { return v / 32768.0f; });
  }
  if (!ok) return error("read error");
  return array;
}

Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return InvalidArgumentError(
          fmt::format("{}: negative dimension in shape {}", path, ShapeString(shape)));
    }
    numel *= d;
  }
  std::string header =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}", ShapeString(shape));
  const size_t preamble = kMagicBytes + 2 + 2;  // magic, version, uint16 length
  header.resize((preamble + header.size() + 1 + kHeaderAlign - 1) / kHeaderAlign * kHeaderAlign -
                    preamble - 1,
                ' ');
  header += '\n';
  if (header.size() > UINT16_MAX) {  // version 1 stores the length in 16 bits
    return InvalidArgumentError(fmt::format("{}: shape has too many dimensions", path));
  }

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return InvalidArgumentError(fmt::format("{}: cannot create", path));
  const unsigned char version_and_length[4] = {1, 0, static_cast<unsigned char>(header.size()),
                                               static_cast<unsigned char>(header.size() >> 8)};
  out.write(kMagic, kMagicBytes);
  out.write(reinterpret_cast<const char*>(version_and_length), 4);
  out << header;
  out.write(reinterpret_cast<const char*>(data), numel * sizeof(float));
  out.close();
  if (!out) return InternalError(fmt::format("{}: write failed", path));
  return OkStatus();
}

}  // namespace ssm
