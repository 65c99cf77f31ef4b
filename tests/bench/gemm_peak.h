// The GEMM yardstick of ssm-bench: Eigen's multithreaded SGEMM, measured in the same run.
#pragma once

namespace ssm::bench {

// Best GFLOP/s of C = A * B (n x n float) over `reps` runs on `threads` threads.
double MeasureEigenGemmGflops(int n, int reps, int threads);
// The same for the cpu backend's own batch-invariant Linear (rows = n, in = out = n).
double MeasureBackendLinearGflops(int n, int reps, int threads);

}  // namespace ssm::bench
