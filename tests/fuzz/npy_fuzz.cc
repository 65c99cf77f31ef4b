// The .npy reader (common/io/npy.*) on any bytes, with and without int16 as PCM: it fails with
// INVALID_ARGUMENT, or gives as many values as its shape's product, each the conversion of the
// file's data bytes (which end the file); int16 only when allowed, and '<f4'/'<f8' files read the
// same either way; WriteNpy's file of the result reads back the same.
#include <algorithm>
#include <cstring>

#include "common/io/npy.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
}

// Every value against the trailing bytes of the file, converted as `item_bytes` says.
void CheckValues(const NpyArray& a, const uint8_t* data, size_t size, size_t header_end,
                 bool int16_as_pcm) {
  // numpy allows any dimensions beside a 0 (an empty array); otherwise the product must fit.
  uint64_t numel = 1;
  for (int64_t d : a.shape) FUZZ_CHECK(d >= 0);
  if (std::find(a.shape.begin(), a.shape.end(), 0) != a.shape.end()) {
    numel = 0;
  } else {
    for (int64_t d : a.shape) FUZZ_CHECK(!__builtin_mul_overflow(numel, uint64_t(d), &numel));
  }
  FUZZ_CHECK(a.data.size() == numel, "{} values for a shape of {}", a.data.size(), numel);
  const size_t data_bytes = size - header_end;
  if (numel == 0) {
    FUZZ_CHECK(data_bytes == 0, "{} data bytes for an empty array", data_bytes);
    return;
  }
  FUZZ_CHECK(data_bytes % numel == 0);
  const size_t item = data_bytes / numel;
  FUZZ_CHECK(item == 4 || item == 8 || (item == 2 && int16_as_pcm), "{}-byte items", item);
  const uint8_t* bytes = data + header_end;
  for (size_t i = 0; i < numel; ++i) {
    float expected;
    if (item == 4) {
      std::memcpy(&expected, bytes + 4 * i, 4);
    } else if (item == 8) {
      double d;
      std::memcpy(&d, bytes + 8 * i, 8);
      expected = static_cast<float>(d);
    } else {
      int16_t s;
      std::memcpy(&s, bytes + 2 * i, 2);
      expected = s / 32768.0f;
    }
    FUZZ_CHECK(std::memcmp(&expected, &a.data[i], 4) == 0, "value {}: {} read, {} stored", i,
               a.data[i], expected);
  }
}

void CheckRewrite(const NpyArray& a) {
  static fuzz::ScratchDir dir("npy");
  const std::string path = dir.File("rewrite.npy");
  const Status written = WriteNpy(path, a.shape, a.data.data());
  if (!written.ok()) {  // only a header beyond version 1's 64 KiB (thousands of dimensions)
    FUZZ_CHECK(a.shape.size() > 1000, "{}", written.ToString());
    return;
  }
  auto again = ReadNpy(path);
  FUZZ_CHECK(again.ok(), "the rewritten file does not read: {}", again.status().ToString());
  FUZZ_CHECK(again->shape == a.shape);
  FUZZ_CHECK(SameBits(again->data, a.data), "values changed in the rewrite");
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  static fuzz::InputFile input("npy");
  const std::string& path = input.Write(data, size);
  StatusOr<NpyArray> as_float = ReadNpy(path, {/*int16_as_pcm=*/false});
  StatusOr<NpyArray> as_pcm = ReadNpy(path, {/*int16_as_pcm=*/true});
  for (const auto* result : {&as_float, &as_pcm}) {
    if (!result->ok()) {
      FUZZ_CHECK(result->status().code() == StatusCode::kInvalidArgument, "{}",
                 result->status().ToString());
      continue;
    }
    FUZZ_CHECK(size >= 10);  // magic, version, at least a 2-byte header length
    const size_t header_end =
        data[6] == 1
            ? 10 + (data[8] | data[9] << 8)
            : 12 + (size_t(data[8]) | data[9] << 8 | data[10] << 16 | size_t(data[11]) << 24);
    FUZZ_CHECK(header_end <= size);
    CheckValues(**result, data, size, header_end, result == &as_pcm);
  }
  // int16_as_pcm only adds '<i2': a file of floats reads the same either way.
  if (as_float.ok()) {
    FUZZ_CHECK(as_pcm.ok(), "allowing int16 refused a float file: {}", as_pcm.status().ToString());
    FUZZ_CHECK(as_pcm->shape == as_float->shape && SameBits(as_pcm->data, as_float->data));
  }
  if (as_pcm.ok()) CheckRewrite(*as_pcm);
  return 0;
}
