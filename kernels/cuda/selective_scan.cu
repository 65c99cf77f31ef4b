#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kMaxState = 256;  // d_state limit of the config

__device__ __forceinline__ float Softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// One thread per (sequence, channel): the channel's state H[:, e] is read once into registers
// (local memory beyond what fits), advanced over the sequence's rows in order, and written back
// once. kStaticN > 0 fixes d_state at compile time (the common 16) so the state stays in
// registers. Loads of u, dt, z, A, out are coalesced across the threads of a block.
template <int kStaticN>
__global__ void SelectiveScanKernel(DeviceBatch batch, SelectiveScanArgs a) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (e >= a.channels || s >= batch.n_seq) return;
  const int E = a.channels, N = kStaticN > 0 ? kStaticN : a.d_state;
  float* H = a.state.base + size_t(batch.slots[s]) * a.state.slot_stride;  // (N, E)
  float h[kStaticN > 0 ? kStaticN : kMaxState];
  for (int n = 0; n < N; ++n) h[n] = H[size_t(n) * E + e];
  const float D = a.D[e];
  for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
    const float delta = Softplus(a.dt[size_t(r) * a.ld_dt + e]);
    const float u = a.u[size_t(r) * a.ld_u + e];
    const float du = delta * u;
    const float* B = a.B + size_t(r) * a.ld_bc;
    const float* C = a.C + size_t(r) * a.ld_bc;
    float y = 0.0f;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      h[n] = fmaf(expf(delta * a.A[size_t(n) * E + e]), h[n], du * B[n]);
      y = fmaf(h[n], C[n], y);
    }
    const float z = a.z[size_t(r) * a.ld_z + e];
    a.out[size_t(r) * a.ld_out + e] = fmaf(D, u, y) * (z / (1.0f + expf(-z)));
  }
  for (int n = 0; n < N; ++n) H[size_t(n) * E + e] = h[n];
}

}  // namespace

void SelectiveScan(const DeviceBatch& batch, const SelectiveScanArgs& args, cudaStream_t stream) {
  if (batch.n_seq == 0) return;
  const dim3 block(128), grid((args.channels + 127) / 128, batch.n_seq);
  if (args.d_state == 16)
    SelectiveScanKernel<16><<<grid, block, 0, stream>>>(batch, args);
  else
    SelectiveScanKernel<0><<<grid, block, 0, stream>>>(batch, args);
}

}  // namespace ssm::cuda
