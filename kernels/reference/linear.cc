#include "kernels/reference/ops.h"

namespace ssm::reference {

void Linear(const float* w, const float* b, int out, int in, const float* x, int ld_x, int rows,
            float* y, int ld_y) {
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int i = 0; i < in; ++i) acc += double(x[r * ld_x + i]) * w[o * in + i];
      y[r * ld_y + o] = float(acc);
    }
  }
}

}  // namespace ssm::reference
