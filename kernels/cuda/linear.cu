#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kTile = 16;

// One thread per output element; x and Wt tiles staged in shared memory. The k loop runs in
// ascending order with one accumulator, whatever the grid: batch invariance by construction.
__global__ void LinearKernel(const float* __restrict__ wt, const float* __restrict__ bias, int out,
                             int in, const float* __restrict__ x, int ld_x, int rows,
                             float* __restrict__ y, int ld_y) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int r = blockIdx.y * kTile + threadIdx.y;
  const int o = blockIdx.x * kTile + threadIdx.x;
  float acc = 0.0f;
  for (int k0 = 0; k0 < in; k0 += kTile) {
    const int kx = k0 + threadIdx.x, kw = k0 + threadIdx.y;
    xs[threadIdx.y][threadIdx.x] = (r < rows && kx < in) ? x[size_t(r) * ld_x + kx] : 0.0f;
    ws[threadIdx.y][threadIdx.x] = (o < out && kw < in) ? wt[size_t(kw) * out + o] : 0.0f;
    __syncthreads();
    const int kn = min(kTile, in - k0);
    for (int k = 0; k < kn; ++k) acc = fmaf(xs[threadIdx.y][k], ws[k][threadIdx.x], acc);
    __syncthreads();
  }
  if (r < rows && o < out) y[size_t(r) * ld_y + o] = acc + (bias ? bias[o] : 0.0f);
}

}  // namespace

void Linear(const float* wt, const float* bias, int out, int in, const float* x, int ld_x, int rows,
            float* y, int ld_y, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 block(kTile, kTile), grid((out + kTile - 1) / kTile, (rows + kTile - 1) / kTile);
  LinearKernel<<<grid, block, 0, stream>>>(wt, bias, out, in, x, ld_x, rows, y, ld_y);
}

}  // namespace ssm::cuda
