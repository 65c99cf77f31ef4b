// The op interface every compute backend implements (reference, cpu, later cuda).
//
// One name runs through every layer: Backend::SelectiveScan -> reference/selective_scan.cc,
// cpu/selective_scan.cc, cuda/selective_scan.cu. Pointers passed to ops live in the backend's
// memory (host memory for reference and cpu) unless the op says otherwise. Matrices are row-major
// with an explicit leading dimension `ld` (floats between consecutive rows), so ops read column
// slices of a wider matrix (e.g. x and z halves of in_proj's output) without copies.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace ssm {

// Varlen batch: sequence i owns rows [row_offsets[i], row_offsets[i+1]) of every activation
// matrix, in time order, and its recurrent state lives in pool slot slots[i]. Host arrays.
struct SeqBatch {
  int n_seq = 0;
  const int* row_offsets = nullptr;  // n_seq + 1 entries, row_offsets[0] == 0
  const int* slots = nullptr;        // n_seq entries, all distinct
  int rows() const { return n_seq == 0 ? 0 : row_offsets[n_seq]; }
};

// One op's per-stream state inside a state pool: slot s starts at base + s * slot_stride floats.
struct StateView {
  float* base = nullptr;
  size_t slot_stride = 0;
  float* slot(int s) const { return base + static_cast<size_t>(s) * slot_stride; }
};

// Causal depthwise conv1d with carried tail, fused with SiLU:
//   out[t, e] = silu(bias[e] + sum_k w[k, e] * x[t - K + 1 + k, e])
// where rows before the chunk come from the slot's tail, which is updated to the last K-1 inputs.
struct CausalConvArgs {
  int channels = 0;          // E
  int kernel = 0;            // K (d_conv)
  const float* x = nullptr;  // (rows, E), ld_x
  int ld_x = 0;
  const float* w = nullptr;     // (K, E): w[k * E + e] = conv1d.weight[e, 0, k]
  const float* bias = nullptr;  // (E)
  StateView tail;               // per slot (K-1, E), oldest row first
  float* out = nullptr;         // (rows, E), ld_out
  int ld_out = 0;
};

// Mamba-1 selective scan with fused softplus, D skip and SiLU gate (docs/design.md §3):
//   delta = softplus(dt);  H = exp(delta*A) * H + (delta*u) B;  out = (H.C + D*u) * silu(z)
struct SelectiveScanArgs {
  int channels = 0;          // E
  int d_state = 0;           // N
  const float* u = nullptr;  // (rows, E) conv output
  int ld_u = 0;
  const float* dt = nullptr;  // (rows, E) dt_proj output including its bias, before softplus
  int ld_dt = 0;
  const float* B = nullptr;  // (rows, N)
  const float* C = nullptr;  // (rows, N)
  int ld_bc = 0;             // row stride of B and C
  const float* z = nullptr;  // (rows, E) gate
  int ld_z = 0;
  const float* A = nullptr;  // (N, E): A[n * E + e] = -exp(A_log[e, n])
  const float* D = nullptr;  // (E)
  StateView state;           // per slot (N, E): H[n * E + e]
  float* out = nullptr;      // (rows, E)
  int ld_out = 0;
};

enum class Activation { kNone, kSigmoid, kSoftmax };

// Weights of one linear layer, prepared once in the backend's preferred layout.
class LinearWeights {
 public:
  virtual ~LinearWeights() = default;
  virtual int out_features() const = 0;
  virtual int in_features() const = 0;
};

// Memory owned by a backend (device memory on cuda). Zero-filled at allocation.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual float* data() = 0;
  virtual size_t size() const = 0;  // floats
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual std::unique_ptr<Buffer> Allocate(size_t floats) = 0;
  virtual void CopyToBackend(float* dst, const float* host_src, size_t n) = 0;
  virtual void CopyToHost(float* host_dst, const float* src, size_t n) = 0;
  virtual void Fill(float* dst, size_t n, float value) = 0;
  virtual void Synchronize() {}

  // ---- ops ----
  // w: (out, in) row-major host floats; bias: (out) or nullptr.
  virtual std::unique_ptr<LinearWeights> PrepareLinear(const float* w, const float* bias, int out,
                                                       int in) = 0;
  // y[r, :] = x[r, :] . W^T + b for r < rows. Each output row depends only on its input row:
  // results are bitwise independent of `rows` and of the other rows (batch invariance).
  virtual void Linear(const LinearWeights& w, const float* x, int ld_x, int rows, float* y,
                      int ld_y) = 0;
  // y = x * rsqrt(mean(x^2) + eps) * w, row by row; x, y: (rows, dim) contiguous, may alias.
  virtual void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) = 0;
  // y += x (n floats).
  virtual void Add(float* y, const float* x, size_t n) = 0;
  virtual void CausalConv(const SeqBatch& batch, const CausalConvArgs& args) = 0;
  virtual void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args) = 0;
  // In place over (rows, cols) contiguous; softmax is per row.
  virtual void ApplyActivation(Activation act, float* y, int rows, int cols) = 0;
  // Log-mel features are not an op: they are host code on every backend (HostLogMel,
  // server/frontend/frontend.h).
};

// Creates "reference", "cpu" or "cuda"; nullptr for an unknown name, or for "cuda" when the
// build has no CUDA or the machine no GPU. threads: the cpu backend's threads (<= 0: all
// cores); the others run no multithreaded host code.
std::unique_ptr<Backend> CreateBackend(const std::string& name, int threads);

// Whether the cuda backend can run here; if not, *why says why (no CUDA in this build, no
// driver, no device).
bool CudaAvailable(std::string* why = nullptr);

// The backend a --device value selects: "auto" is "cuda" when CudaAvailable(), else "cpu";
// other values are returned unchanged.
std::string ResolveDevice(const std::string& device);

}  // namespace ssm
