// The reference backend's ops: plain scalar loops, double accumulation. The truth in tests.
#pragma once

#include "kernels/backend.h"

namespace ssm::reference {

// y[r, o] = b[o] + sum_i x[r, i] * w[o, i];  w: (out, in) row-major, b: (out) or nullptr.
void Linear(const float* w, const float* b, int out, int in, const float* x, int ld_x, int rows,
            float* y, int ld_y);
void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y);
void CausalConv(const SeqBatch& batch, const CausalConvArgs& args);
void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args);
void ApplyActivation(Activation act, float* y, int rows, int cols);
void SsdScan(const SeqBatch& batch, const SsdScanArgs& args);
void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& args, int chunk);
void GatedRmsNorm(const GatedRmsNormArgs& args, int rows);
void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args);
void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& args, int chunk);
void SwiGlu(const SwiGluArgs& args, int rows);

}  // namespace ssm::reference
