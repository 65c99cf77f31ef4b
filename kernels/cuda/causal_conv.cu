#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kMaxKernel = 8;  // d_conv limit of the config

// One thread per (sequence, channel): walks the sequence's rows in order with the last K-1
// inputs in registers, then writes them back as the new tail.
__global__ void CausalConvKernel(DeviceBatch batch, CausalConvArgs a) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (e >= a.channels || s >= batch.n_seq) return;
  const int E = a.channels, K = a.kernel;
  float* tail = a.tail.base + size_t(batch.slots[s]) * a.tail.slot_stride;  // (K-1, E)
  float hist[kMaxKernel];  // the K-1 previous inputs, oldest first
  for (int j = 0; j < K - 1; ++j) hist[j] = tail[size_t(j) * E + e];
  float w[kMaxKernel];
  for (int k = 0; k < K; ++k) w[k] = a.w[size_t(k) * E + e];
  const float bias = a.bias[e];
  for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
    const float x = a.x[size_t(r) * a.ld_x + e];
    float c = bias;
    for (int k = 0; k < K - 1; ++k) c = fmaf(w[k], hist[k], c);
    c = fmaf(w[K - 1], x, c);
    a.out[size_t(r) * a.ld_out + e] = c / (1.0f + expf(-c));
    for (int j = 0; j + 1 < K - 1; ++j) hist[j] = hist[j + 1];  // shift in the new input
    if (K > 1) hist[K - 2] = x;
  }
  for (int j = 0; j < K - 1; ++j) tail[size_t(j) * E + e] = hist[j];
}

}  // namespace

void CausalConv(const DeviceBatch& batch, const CausalConvArgs& args, cudaStream_t stream) {
  if (batch.n_seq == 0) return;
  const dim3 block(128), grid((args.channels + 127) / 128, batch.n_seq);
  CausalConvKernel<<<grid, block, 0, stream>>>(batch, args);
}

}  // namespace ssm::cuda
