#include <cmath>

#include "kernels/reference/ops.h"

namespace ssm::reference {

void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) {
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) y[r * dim + i] = float(x[r * dim + i] * scale * w[i]);
  }
}

}  // namespace ssm::reference
