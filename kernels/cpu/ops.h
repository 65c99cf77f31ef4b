// The cpu backend's ops: packet-vectorised (AVX-512/AVX2 through Eigen's packet math) and
// multithreaded on the worker pool (kernels/base/worker_pool.h). Each op is tested against
// kernels/reference.
#pragma once

#include "kernels/backend.h"

namespace ssm::cpu {

// Linear weights packed into column panels of kPanelWidth outputs, k-major inside a panel.
class PackedLinear;
std::unique_ptr<LinearWeights> PackLinear(const float* w, const float* bias, int out, int in);
void Linear(const LinearWeights& w, const float* x, int ld_x, int rows, float* y, int ld_y,
            int threads);
void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y, int threads);
void CausalConv(const SeqBatch& batch, const CausalConvArgs& args, int threads);
void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args, int threads);
void SsdScan(const SeqBatch& batch, const SsdScanArgs& args, int threads);
void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& args, int chunk, int threads);
void GatedRmsNorm(const GatedRmsNormArgs& args, int rows, int threads);
void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args, int threads);
void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& args, int chunk,
                            int threads);
void SwiGlu(const SwiGluArgs& args, int rows, int threads);

}  // namespace ssm::cpu
