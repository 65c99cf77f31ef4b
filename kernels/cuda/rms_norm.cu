#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row: sum of squares by a fixed-shape tree, so the result is deterministic.
__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ w, int dim,
                              float eps, float* __restrict__ y) {
  __shared__ float partial[kThreads];
  const float* xr = x + size_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) ss = fmaf(xr[i], xr[i], ss);
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float scale = rsqrtf(partial[0] / float(dim) + eps);
  float* yr = y + size_t(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += kThreads) yr[i] = xr[i] * scale * w[i];
}

}  // namespace

void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y,
             cudaStream_t stream) {
  if (rows > 0) RmsNormKernel<<<rows, kThreads, 0, stream>>>(x, w, dim, eps, y);
}

}  // namespace ssm::cuda
