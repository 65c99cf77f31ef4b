#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 64;

__device__ __forceinline__ float Map(FeatureMap f, float x) {
  switch (f) {
    case FeatureMap::kIdentity:
      return x;
    case FeatureMap::kRelu:
      return fmaxf(x, 0.0f);
    case FeatureMap::kEluPlusOne:
      return x > 0.0f ? x + 1.0f : expf(x);
  }
  return x;
}

__device__ __forceinline__ float LogDecay(float x, const GatedLinearScanArgs& a) {
  const float ls = fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
  return fmaxf(ls / a.gate_normalizer, a.gate_clamp_min);
}

// One thread per (sequence, head, value index j): it owns the state row S_h[j, :] (K floats in
// device memory) and advances it over the sequence's rows in order. The threads of a block share
// one head, so their q, k and gate loads are broadcasts and their v and out accesses coalesced.
__global__ void GatedLinearScanKernel(DeviceBatch batch, GatedLinearScanArgs a) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, s = blockIdx.z;
  if (j >= a.value_dim || s >= batch.n_seq) return;
  const int K = a.key_dim, V = a.value_dim;
  float* S =
      a.state.base + size_t(batch.slots[s]) * a.state.slot_stride + (size_t(h) * V + j) * size_t(K);
  for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
    const float* q = a.q + size_t(r) * a.ld_q + size_t(h) * K;
    const float* k = a.k + size_t(r) * a.ld_k + size_t(h) * K;
    const float v = a.v[size_t(r) * a.ld_v + size_t(h) * V + j];
    float scalar_decay = 1.0f;
    if (a.decay == LinearDecay::kConstant) scalar_decay = expf(a.log_gamma[h]);
    if (a.decay == LinearDecay::kPerHead)
      scalar_decay = expf(LogDecay(a.gate[size_t(r) * a.ld_gate + h], a));
    const float* gk = a.gate + size_t(r) * a.ld_gate + size_t(h) * K;
    float y = 0.0f;
    for (int i = 0; i < K; ++i) {
      const float decay = a.decay == LinearDecay::kPerKey ? expf(LogDecay(gk[i], a)) : scalar_decay;
      const float st = fmaf(decay, S[i], v * Map(a.feature_map, k[i]));
      S[i] = st;
      y = fmaf(st, a.scale * Map(a.feature_map, q[i]), y);
    }
    a.out[size_t(r) * a.ld_out + size_t(h) * V + j] = y;
  }
}

// One block per sequence, threads over the rotated pairs i < D/2; every thread reads the
// position before the barrier, and thread 0 advances it after.
__global__ void RotaryKernel(DeviceBatch batch, RotaryArgs a) {
  const int s = blockIdx.x, H = a.heads, D = a.head_dim, half = D / 2;
  float* pos = a.position.base + size_t(batch.slots[s]) * a.position.slot_stride;
  const double start = double(pos[0]) * 16777216.0 + double(pos[1]);
  const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double inv_freq = pow(double(a.base), -2.0 * i / D);
    for (int r = first; r < last; ++r) {
      double sn, c;
      sincos((start + (r - first)) * inv_freq, &sn, &c);
      for (int which = 0; which < 2; ++which) {
        float* base = which == 0 ? a.q + size_t(r) * a.ld_q : a.k + size_t(r) * a.ld_k;
        for (int h = 0; h < H; ++h) {
          float* x = base + size_t(h) * D;
          const double x0 = x[i], x1 = x[i + half];
          x[i] = float(x0 * c - x1 * sn);
          x[i + half] = float(x1 * c + x0 * sn);
        }
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const double end = start + (last - first), hi = floor(end / 16777216.0);
    pos[0] = float(hi);
    pos[1] = float(end - hi * 16777216.0);
  }
}

__global__ void SwiGluKernel(SwiGluArgs a, int rows) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * a.cols) return;
  const size_t r = i / a.cols, c = i % a.cols;
  const float g = a.gate[r * a.ld_gate + c];
  a.out[r * a.ld_out + c] = g / (1.0f + expf(-g)) * a.up[r * a.ld_up + c];
}

}  // namespace

void GatedLinearScan(const DeviceBatch& batch, const GatedLinearScanArgs& args,
                     cudaStream_t stream) {
  if (batch.n_seq == 0) return;
  const dim3 block(kThreads),
      grid((args.value_dim + kThreads - 1) / kThreads, args.heads, batch.n_seq);
  GatedLinearScanKernel<<<grid, block, 0, stream>>>(batch, args);
}

void Rotary(const DeviceBatch& batch, const RotaryArgs& args, cudaStream_t stream) {
  if (batch.n_seq == 0) return;
  RotaryKernel<<<batch.n_seq, kThreads, 0, stream>>>(batch, args);
}

void SwiGlu(const SwiGluArgs& args, int rows, cudaStream_t stream) {
  const size_t n = size_t(rows) * args.cols;
  if (n > 0) SwiGluKernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(args, rows);
}

}  // namespace ssm::cuda
