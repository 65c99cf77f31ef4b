// The op interface every compute backend implements (reference, cpu, cuda).
//
// One name runs through every layer: Backend::SelectiveScan -> ops/selective_scan.h (its
// arguments and equations), reference/selective_scan.cc, cpu/selective_scan.cc,
// cuda/selective_scan.cu. Pointers passed to ops live in the backend's
// memory (host memory for reference and cpu) unless the op says otherwise. Matrices are row-major
// with an explicit leading dimension `ld` (floats between consecutive rows), so ops read column
// slices of a wider matrix (e.g. x and z halves of in_proj's output) without copies.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>

#include "common/status.h"
#include "kernels/ops/batch.h"
#include "kernels/ops/causal_conv.h"
#include "kernels/ops/gated_linear_scan.h"
#include "kernels/ops/gated_rms_norm.h"
#include "kernels/ops/rotary.h"
#include "kernels/ops/selective_scan.h"
#include "kernels/ops/ssd_scan.h"
#include "kernels/ops/swiglu.h"

namespace ssm {

enum class Activation { kNone, kSigmoid, kSoftmax };

// The ops a backend may lack (the others every backend has).
enum class Op {
  kSsdScan,
  kSsdChunkedScan,
  kGatedRmsNorm,
  kGatedLinearScan,
  kGatedLinearChunkedScan,
  kRotary,
  kSwiGlu,
};
const char* OpName(Op op);  // "ssd_scan", "ssd_chunked_scan", "gated_rms_norm", ...

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
  // Copies n floats; n may be 0, and then either pointer may be null.
  virtual void CopyToBackend(float* dst, const float* host_src, size_t n) = 0;
  virtual void CopyToHost(float* host_dst, const float* src, size_t n) = 0;
  virtual void Fill(float* dst, size_t n, float value) = 0;
  virtual void Synchronize() {}
  // Compute threads for the ops that follow, clamped to [1, the count the backend was created
  // with]: the engine runs a small step on one thread, where a parallel region would cost more
  // than it saves (docs/design.md §4). Results never depend on it. A backend without host
  // threads ignores it.
  virtual void SetThreads(int threads) {}

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

  // ---- ops a backend may lack: call only where Supports(op) ----
  virtual bool Supports(Op op) const { return false; }
  virtual void SsdScan(const SeqBatch& batch, const SsdScanArgs& args);
  virtual void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& args, int chunk);
  virtual void GatedRmsNorm(const GatedRmsNormArgs& args, int rows);
  virtual void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args);
  virtual void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& args,
                                      int chunk);
  virtual void Rotary(const SeqBatch& batch, const RotaryArgs& args);
  virtual void SwiGlu(const SwiGluArgs& args, int rows);

 protected:
  [[noreturn]] void Missing(Op op) const;  // the default bodies above: a programming error

 public:
  // Log-mel features are not an op: they are host code on every backend (HostLogMel,
  // server/frontend/frontend.h).
};

// Creates "reference", "cpu" or "cuda"; nullptr for an unknown name, or for "cuda" when the
// build has no CUDA or the machine no GPU. threads: the cpu backend's threads (<= 0: all
// cores); the others run no multithreaded host code.
// OK when `backend` has every op in `ops`; else UNIMPLEMENTED naming the op, the backend and
// `what` needs it ("layer type \"mamba2\"").
Status RequireOps(const Backend& backend, std::initializer_list<Op> ops, const std::string& what);

std::unique_ptr<Backend> CreateBackend(const std::string& name, int threads);

// Whether the cuda backend can run here; if not, *why says why (no CUDA in this build, no
// driver, no device).
bool CudaAvailable(std::string* why = nullptr);

// The backend a --device value selects: "auto" is "cuda" when CudaAvailable(), else "cpu";
// other values are returned unchanged.
std::string ResolveDevice(const std::string& device);

}  // namespace ssm
