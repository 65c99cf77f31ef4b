// The cuda backend: state, weights and activations in device memory; one CUDA stream; every
// CUDA call checked. The log-mel frontend stays on the host (HostLogMel, server/frontend/).
#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/ops.cuh"

namespace ssm::cuda {
namespace {

class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(size_t floats, cudaStream_t stream) : size_(floats) {
    SSM_CUDA_CHECK(cudaMalloc(&data_, std::max<size_t>(floats, 1) * sizeof(float)));
    SSM_CUDA_CHECK(cudaMemsetAsync(data_, 0, std::max<size_t>(floats, 1) * sizeof(float), stream));
  }
  ~DeviceBuffer() override { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  float* data_ = nullptr;
  size_t size_;
};

// Weights transposed to (in, out) so that a warp reads consecutive outputs.
class CudaLinear final : public LinearWeights {
 public:
  CudaLinear(int out, int in, std::unique_ptr<Buffer> wt, std::unique_ptr<Buffer> bias)
      : out_(out), in_(in), wt_(std::move(wt)), bias_(std::move(bias)) {}
  int out_features() const override { return out_; }
  int in_features() const override { return in_; }
  const float* wt() const { return wt_->data(); }
  const float* bias() const { return bias_ ? bias_->data() : nullptr; }

 private:
  int out_, in_;
  std::unique_ptr<Buffer> wt_, bias_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() { SSM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    batch_.reset();
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda"; }

  std::unique_ptr<Buffer> Allocate(size_t floats) override {
    return std::make_unique<DeviceBuffer>(floats, stream_);
  }
  // Both copies complete before returning: callers reuse their host memory at once.
  void CopyToBackend(float* dst, const float* src, size_t n) override {
    if (n == 0) return;
    SSM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    SSM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void CopyToHost(float* dst, const float* src, size_t n) override {
    if (n == 0) return;
    SSM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    SSM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void Fill(float* dst, size_t n, float value) override {
    cuda::Fill(dst, n, value, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void Synchronize() override { SSM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  std::unique_ptr<LinearWeights> PrepareLinear(const float* w, const float* bias, int out,
                                               int in) override {
    std::vector<float> wt(size_t(out) * in);
    for (int o = 0; o < out; ++o)
      for (int k = 0; k < in; ++k) wt[size_t(k) * out + o] = w[size_t(o) * in + k];
    auto wt_buf = Allocate(wt.size());
    CopyToBackend(wt_buf->data(), wt.data(), wt.size());
    std::unique_ptr<Buffer> bias_buf;
    if (bias) {
      bias_buf = Allocate(out);
      CopyToBackend(bias_buf->data(), bias, out);
    }
    return std::make_unique<CudaLinear>(out, in, std::move(wt_buf), std::move(bias_buf));
  }
  void Linear(const LinearWeights& weights, const float* x, int ld_x, int rows, float* y,
              int ld_y) override {
    const auto& lw = static_cast<const CudaLinear&>(weights);
    cuda::Linear(lw.wt(), lw.bias(), lw.out_features(), lw.in_features(), x, ld_x, rows, y, ld_y,
                 stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) override {
    cuda::RmsNorm(x, w, rows, dim, eps, y, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void Add(float* y, const float* x, size_t n) override {
    cuda::Add(y, x, n, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void CausalConv(const SeqBatch& batch, const CausalConvArgs& args) override {
    cuda::CausalConv(Upload(batch), args, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args) override {
    cuda::SelectiveScan(Upload(batch), args, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void ApplyActivation(Activation act, float* y, int rows, int cols) override {
    cuda::ApplyActivation(act, y, rows, cols, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  // No chunked-form kernels yet: Mamba-2 and the gated linear layers run the recurrence
  // offline as well.
  bool Supports(Op op) const override {
    return op != Op::kSsdChunkedScan && op != Op::kGatedLinearChunkedScan;
  }
  void SsdScan(const SeqBatch& batch, const SsdScanArgs& args) override {
    cuda::SsdScan(Upload(batch), args, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void GatedRmsNorm(const GatedRmsNormArgs& args, int rows) override {
    cuda::GatedRmsNorm(args, rows, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args) override {
    cuda::GatedLinearScan(Upload(batch), args, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void Rotary(const SeqBatch& batch, const RotaryArgs& args) override {
    cuda::Rotary(Upload(batch), args, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }
  void SwiGlu(const SwiGluArgs& args, int rows) override {
    cuda::SwiGlu(args, rows, stream_);
    SSM_CUDA_CHECK(cudaGetLastError());
  }

 private:
  // Copies the batch's offsets and slots to device memory (one buffer, grown as needed). Every
  // layer of a step passes the same batch, so an upload identical to the last one is skipped:
  // one host->device copy per step instead of two per layer.
  DeviceBatch Upload(const SeqBatch& batch) {
    const size_t ints = 2 * size_t(batch.n_seq) + 1;
    next_.resize(ints);
    std::memcpy(next_.data(), batch.row_offsets, sizeof(int) * (batch.n_seq + 1));
    std::memcpy(next_.data() + batch.n_seq + 1, batch.slots, sizeof(int) * batch.n_seq);
    if (!batch_ || batch_->size() < ints) {
      batch_ = Allocate(2 * ints);  // int and float: 4 bytes
      uploaded_.clear();
    }
    int* device = reinterpret_cast<int*>(batch_->data());
    if (next_ != uploaded_) {
      SSM_CUDA_CHECK(cudaMemcpyAsync(device, next_.data(), ints * sizeof(int),
                                     cudaMemcpyHostToDevice, stream_));
      SSM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // next_ is rewritten by the next op
      uploaded_.swap(next_);
    }
    return {batch.n_seq, device, device + batch.n_seq + 1};
  }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Buffer> batch_;  // device copy of the current batch's offsets and slots
  std::vector<int> uploaded_;      // what batch_ holds (offsets then slots)
  std::vector<int> next_;          // staging for the next upload
};

}  // namespace

bool DeviceAvailable(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (why) *why = err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device";
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return false;
  }
  return true;
}

std::unique_ptr<Backend> CreateCudaBackend() {
  if (!DeviceAvailable(nullptr)) return nullptr;
  return std::make_unique<CudaBackend>();
}

}  // namespace ssm::cuda
