// The cuda backend's kernels (one .cu per op, names matching kernels/cpu and kernels/reference).
// All pointers are device memory; every launch goes to `stream`.
#pragma once

#include <cuda_runtime.h>

#include "kernels/backend.h"

namespace ssm::cuda {

// Varlen batch description in device memory (uploaded once per op call).
struct DeviceBatch {
  int n_seq = 0;
  const int* row_offsets = nullptr;  // n_seq + 1
  const int* slots = nullptr;        // n_seq
};

// y = x . Wt + b with Wt (in, out) row-major; each output is one FMA chain over ascending k, so a
// row's result does not depend on the batch (as on the cpu backend).
void Linear(const float* wt, const float* bias, int out, int in, const float* x, int ld_x, int rows,
            float* y, int ld_y, cudaStream_t stream);
void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y,
             cudaStream_t stream);
void Add(float* y, const float* x, size_t n, cudaStream_t stream);
void Fill(float* dst, size_t n, float value, cudaStream_t stream);
void CausalConv(const DeviceBatch& batch, const CausalConvArgs& args, cudaStream_t stream);
void SelectiveScan(const DeviceBatch& batch, const SelectiveScanArgs& args, cudaStream_t stream);
void ApplyActivation(Activation act, float* y, int rows, int cols, cudaStream_t stream);
void SsdScan(const DeviceBatch& batch, const SsdScanArgs& args, cudaStream_t stream);
void GatedRmsNorm(const GatedRmsNormArgs& args, int rows, cudaStream_t stream);
void GatedLinearScan(const DeviceBatch& batch, const GatedLinearScanArgs& args,
                     cudaStream_t stream);
void Rotary(const DeviceBatch& batch, const RotaryArgs& args, cudaStream_t stream);
void SwiGlu(const SwiGluArgs& args, int rows, cudaStream_t stream);

}  // namespace ssm::cuda
