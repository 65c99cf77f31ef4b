// Tensors of a model as the layers see them: an expected name and shape, and host float32 data.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ssm {

// Expected tensor: name and shape (docs/design.md §2 lists every layer type's).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// A dense row-major float32 tensor.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // numel() floats
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

using TensorMap = std::map<std::string, Tensor>;

}  // namespace ssm
