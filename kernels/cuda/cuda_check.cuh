// Checked CUDA calls: a failing runtime call is an internal error with the call and the reason.
#pragma once

#include <cuda_runtime.h>

#include "common/status.h"

#define SSM_CUDA_CHECK(call)                                                            \
  do {                                                                                  \
    const cudaError_t ssm_cuda_err_ = (call);                                           \
    if (ssm_cuda_err_ != cudaSuccess)                                                   \
      ::ssm::CheckFailed(__FILE__, __LINE__, #call, cudaGetErrorString(ssm_cuda_err_)); \
  } while (0)
