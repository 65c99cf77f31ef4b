// Elementwise ops of the cuda backend: residual add, fill, and the head's activation.
#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

__global__ void AddKernel(float* __restrict__ y, const float* __restrict__ x, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void FillKernel(float* dst, size_t n, float value) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = value;
}

// One thread per row (d_out is small).
__global__ void ActivationKernel(Activation act, float* y, int rows, int cols) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* row = y + size_t(r) * cols;
  if (act == Activation::kSigmoid) {
    for (int c = 0; c < cols; ++c) row[c] = 1.0f / (1.0f + expf(-row[c]));
  } else if (act == Activation::kSoftmax) {
    float m = row[0];
    for (int c = 1; c < cols; ++c) m = fmaxf(m, row[c]);
    float sum = 0.0f;
    for (int c = 0; c < cols; ++c) sum += expf(row[c] - m);
    for (int c = 0; c < cols; ++c) row[c] = expf(row[c] - m) / sum;
  }
}

}  // namespace

void Add(float* y, const float* x, size_t n, cudaStream_t stream) {
  if (n > 0) AddKernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(y, x, n);
}

void Fill(float* dst, size_t n, float value, cudaStream_t stream) {
  if (n > 0) FillKernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(dst, n, value);
}

void ApplyActivation(Activation act, float* y, int rows, int cols, cudaStream_t stream) {
  if (act == Activation::kNone || rows == 0) return;
  ActivationKernel<<<(rows + 127) / 128, 128, 0, stream>>>(act, y, rows, cols);
}

}  // namespace ssm::cuda
