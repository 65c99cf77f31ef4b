#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 64;

__device__ __forceinline__ float Softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// One thread per (sequence, head, channel p): it owns the state row S_h[p, :] (d_state floats,
// left in device memory, where the row's reuse over the chunk keeps it in L1) and advances it
// over the sequence's rows in order. The threads of a block share one head, so their B and C
// loads are one broadcast and their x and out accesses are coalesced.
__global__ void SsdScanKernel(DeviceBatch batch, SsdScanArgs a) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, s = blockIdx.z;
  if (p >= a.head_dim || s >= batch.n_seq) return;
  const int P = a.head_dim, N = a.d_state, g = h / (a.heads / a.groups);
  float* S =
      a.state.base + size_t(batch.slots[s]) * a.state.slot_stride + (size_t(h) * P + p) * size_t(N);
  const float A = a.A[h], D = a.D[h], dt_bias = a.dt_bias[h];
  for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
    const float delta = Softplus(a.dt[size_t(r) * a.ld_dt + h] + dt_bias);
    const float decay = expf(delta * A);
    const float x = a.x[size_t(r) * a.ld_x + size_t(h) * P + p];
    const float dx = delta * x;
    const float* B = a.B + size_t(r) * a.ld_bc + size_t(g) * N;
    const float* C = a.C + size_t(r) * a.ld_bc + size_t(g) * N;
    float y = 0.0f;
    for (int n = 0; n < N; ++n) {
      const float v = fmaf(decay, S[n], dx * B[n]);
      S[n] = v;
      y = fmaf(v, C[n], y);
    }
    a.out[size_t(r) * a.ld_out + size_t(h) * P + p] = fmaf(D, x, y);
  }
}

}  // namespace

void SsdScan(const DeviceBatch& batch, const SsdScanArgs& args, cudaStream_t stream) {
  if (batch.n_seq == 0) return;
  const dim3 block(kThreads),
      grid((args.head_dim + kThreads - 1) / kThreads, args.heads, batch.n_seq);
  SsdScanKernel<<<grid, block, 0, stream>>>(batch, args);
}

}  // namespace ssm::cuda
