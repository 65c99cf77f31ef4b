#include <algorithm>
#include <cmath>

#include "kernels/reference/ops.h"

namespace ssm::reference {

void ApplyActivation(Activation act, float* y, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    float* row = y + size_t(r) * cols;
    if (act == Activation::kSigmoid) {
      for (int c = 0; c < cols; ++c) row[c] = float(1.0 / (1.0 + std::exp(-double(row[c]))));
    } else if (act == Activation::kSoftmax) {
      const double m = *std::max_element(row, row + cols);
      double sum = 0;
      for (int c = 0; c < cols; ++c) sum += std::exp(double(row[c]) - m);
      for (int c = 0; c < cols; ++c) row[c] = float(std::exp(double(row[c]) - m) / sum);
    }
  }
}

}  // namespace ssm::reference
