// The safetensors reader (server/model/safetensors.*) on any bytes: it fails with
// INVALID_ARGUMENT, or the header it accepted describes tensors sorted by name that tile the
// data section exactly, every element reads back as the file's bytes decode (F16 and BF16 by an
// independent decoder), and the tensors written again as F32 (WriteSafetensors) read back the same.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "server/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

uint32_t FloatBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// binary16 -> binary32 by moving the fields (the reader computes with ldexp instead).
float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  int exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 31) return FromBits(sign | 0x7f800000u | mantissa << 13);  // inf, nan
  if (exponent == 0) {
    if (mantissa == 0) return FromBits(sign);
    exponent = 1;
    while ((mantissa & 0x400) == 0) mantissa <<= 1, --exponent;  // normalise a subnormal
    mantissa &= 0x3ff;
  }
  return FromBits(sign | uint32_t(exponent + 112) << 23 | mantissa << 13);
}

// The same value: bitwise, or both NaN (the reader's NaN need not keep the payload).
bool SameValue(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || FloatBits(a) == FloatBits(b);
}

// Element `i` of a tensor whose bytes start at `bytes`, decoded independently of the reader.
float Expected(DType dtype, const uint8_t* bytes, size_t i) {
  if (dtype == DType::kF32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes + 2 * i, 2);
  return dtype == DType::kF16 ? HalfBitsToFloat(h) : FromBits(uint32_t(h) << 16);
}

// The element count of a shape, or false when it overflows 64 bits (allowed only with a 0 dim).
bool Numel(const std::vector<int64_t>& shape, uint64_t* numel) {
  *numel = 1;
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) {
    *numel = 0;
    return true;
  }
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(*numel, uint64_t(d), numel)) return false;
  }
  return true;
}

// The tensors written as F32 and read back: the same names, shapes, values and metadata.
void CheckRewrite(const SafetensorsFile& file, const std::vector<std::vector<float>>& values) {
  static fuzz::ScratchDir dir("safetensors");
  std::vector<NamedTensor> named;
  bool writable = true;
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const TensorInfo& t = file.tensors()[i];
    writable = writable && !t.name.empty();  // the writer refuses an empty name (the format not)
    named.push_back({t.name, t.shape, values[i].data()});
  }
  const std::string path = dir.File("rewrite.safetensors");
  const Status written = WriteSafetensors(path, named, file.metadata());
  if (!writable) {
    FUZZ_CHECK(!written.ok(), "an empty tensor name was written");
    return;
  }
  FUZZ_CHECK(written.ok(), "{}", written.ToString());
  auto again = SafetensorsFile::Open(path);
  FUZZ_CHECK(again.ok(), "the rewritten file does not read: {}", again.status().ToString());
  FUZZ_CHECK((*again)->metadata() == file.metadata());
  FUZZ_CHECK((*again)->tensors().size() == file.tensors().size());
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const TensorInfo& a = file.tensors()[i];
    const TensorInfo& b = (*again)->tensors()[i];
    FUZZ_CHECK(a.name == b.name && a.shape == b.shape && b.dtype == DType::kF32, "tensor {}", i);
    auto read = (*again)->ReadF32(b.name);
    FUZZ_CHECK(read.ok() && read->size() == values[i].size());
    FUZZ_CHECK(
        values[i].empty() || std::memcmp(read->data(), values[i].data(), 4 * values[i].size()) == 0,
        "tensor '{}' changed in the F32 rewrite", a.name);
  }
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  static fuzz::InputFile input("safetensors");
  auto opened = SafetensorsFile::Open(input.Write(data, size));
  if (!opened.ok()) {
    FUZZ_CHECK(opened.status().code() == StatusCode::kInvalidArgument, "{}",
               opened.status().ToString());
    FUZZ_CHECK(!opened.status().message().empty());
    return 0;
  }
  const SafetensorsFile& file = **opened;

  uint64_t header_bytes;
  std::memcpy(&header_bytes, data, 8);  // Open accepted it, so there are 8 bytes
  FUZZ_CHECK(header_bytes <= size - 8);
  const uint8_t* section = data + 8 + header_bytes;
  const uint64_t data_bytes = size - 8 - header_bytes;

  const std::vector<TensorInfo>& tensors = file.tensors();
  std::vector<const TensorInfo*> by_offset;
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    FUZZ_CHECK(i == 0 || tensors[i - 1].name < t.name, "tensors not sorted by name at {}", i);
    FUZZ_CHECK(t.name != "__metadata__");
    FUZZ_CHECK(file.Find(t.name) == &t, "Find('{}')", t.name);
    uint64_t numel;
    FUZZ_CHECK(Numel(t.shape, &numel), "tensor '{}': shape overflows", t.name);
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_bytes);
    FUZZ_CHECK(t.end - t.begin == numel * DTypeSize(t.dtype), "tensor '{}': [{}, {}) for {} x {}",
               t.name, t.begin, t.end, numel, DTypeSize(t.dtype));
    FUZZ_CHECK(uint64_t(t.numel()) == numel);
    auto read = file.ReadF32(t.name);
    FUZZ_CHECK(read.ok(), "{}", read.status().ToString());
    FUZZ_CHECK(read->size() == numel);
    for (size_t e = 0; e < numel; ++e) {
      const float expected = Expected(t.dtype, section + t.begin, e);
      FUZZ_CHECK(SameValue((*read)[e], expected), "tensor '{}' element {}: {} read, {} stored",
                 t.name, e, (*read)[e], expected);
    }
    values.push_back(std::move(*read));
    by_offset.push_back(&t);
  }
  // A name after the last one is no tensor.
  const std::string absent = tensors.empty() ? "x" : tensors.back().name + '\x01';
  FUZZ_CHECK(file.Find(absent) == nullptr);
  FUZZ_CHECK(file.ReadF32(absent).status().code() == StatusCode::kNotFound);

  // The accepted tensors tile [0, data_bytes): no overlap, no hole.
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  for (const TensorInfo* t : by_offset) {
    FUZZ_CHECK(t->begin == covered, "tensor '{}' begins at {}, the last ended at {}", t->name,
               t->begin, covered);
    covered = t->end;
  }
  FUZZ_CHECK(covered == data_bytes, "{} of {} data bytes covered", covered, data_bytes);

  CheckRewrite(file, values);
  return 0;
}
