#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Silu(float z) { return z / (1.0f + expf(-z)); }

// One block per (row, group): the sum of squares by a fixed-shape tree (deterministic), then
// the scaled, gated output. Each thread writes only the channels it read, after the block's
// barrier, so out may alias x.
__global__ void GatedRmsNormKernel(GatedRmsNormArgs a) {
  __shared__ float partial[kThreads];
  const int r = blockIdx.x, G = a.group_size, c0 = blockIdx.y * G;
  const float* x = a.x + size_t(r) * a.ld_x + c0;
  const float* z = a.z ? a.z + size_t(r) * a.ld_z + c0 : nullptr;
  const bool gate_first = z && !a.norm_before_gate, gate_after = z && a.norm_before_gate;
  float* out = a.out + size_t(r) * a.ld_out + c0;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < G; i += kThreads) {
    const float v = gate_first ? x[i] * Silu(z[i]) : x[i];
    ss = fmaf(v, v, ss);
  }
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float scale = rsqrtf(partial[0] / float(G) + a.eps);
  for (int i = threadIdx.x; i < G; i += kThreads) {
    const float gate = z ? Silu(z[i]) : 1.0f;
    const float v = gate_first ? x[i] * gate : x[i];
    float y = v * scale * a.w[c0 + i];
    if (gate_after) y *= gate;
    out[i] = y;
  }
}

}  // namespace

void GatedRmsNorm(const GatedRmsNormArgs& args, int rows, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 grid(rows, args.channels / args.group_size);
  GatedRmsNormKernel<<<grid, kThreads, 0, stream>>>(args);
}

}  // namespace ssm::cuda
