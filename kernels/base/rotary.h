// The rotary op on host memory, shared by the reference and cpu backends: it is a few sin/cos
// per row and head dimension, and one implementation keeps the two bitwise equal. The outside
// float64 checks (tests/python) test its formula.
#pragma once

#include "kernels/backend.h"

namespace ssm {

// Backend::Rotary (kernels/ops/rotary.h) on host pointers; threads as the cpu backend's.
void HostRotary(const SeqBatch& batch, const RotaryArgs& args, int threads);

// The stream position kept in kRotaryStateFloats floats.
double ReadRotaryPosition(const float* state);
void WriteRotaryPosition(double position, float* state);

}  // namespace ssm
