// safetensors files: a memory-mapped reader (F32, F16, BF16 -> float32) and an F32 writer.
//
// Layout: 8-byte little-endian header length H, H bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
// data section, which the tensors must cover exactly (no overlaps, no holes). Offsets are bytes
// from the start of the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm {

enum class DType { kF32, kF16, kBF16 };

const char* DTypeName(DType dtype);  // "F32", "F16", "BF16"
size_t DTypeSize(DType dtype);       // bytes per element

// One tensor as described by the header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// A read-only view of a safetensors file; the mapping lives as long as the object.
class SafetensorsFile {
 public:
  // Maps the file and validates the whole header (see the layout above).
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by name
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* Find(const std::string& name) const;  // nullptr if absent

  // The tensor's elements converted to float32, in row-major order. NOT_FOUND if absent.
  StatusOr<std::vector<float>> ReadF32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  Status ParseHeader();  // fills tensors_ and metadata_ from the mapped file

  std::string path_;
  const unsigned char* map_ = nullptr;  // whole file
  size_t map_size_ = 0;
  size_t data_start_ = 0;  // 8 + header length
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A float32 tensor to write: `data` holds the product of `shape` floats (row-major).
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes an F32 safetensors file: tensors sorted by name, header padded with spaces to a multiple
// of 8 bytes. Written to a temporary file first and renamed, so `path` is never left half-written.
Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace ssm
