#include "tests/bench/gemm_peak.h"

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/backend.h"

namespace ssm::bench {
namespace {

template <typename F>
double BestSeconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

double MeasureEigenGemmGflops(int n, int reps, int threads) {
  Eigen::setNbThreads(threads);
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  c.noalias() = a * b;  // warm up
  const double s = BestSeconds(reps, [&] { c.noalias() = a * b; });
  return 2.0 * n * n * n / s / 1e9;
}

double MeasureBackendLinearGflops(int n, int reps, int threads) {
  auto backend = CreateBackend("cpu", threads);
  std::vector<float> w(size_t(n) * n, 0.5f), x(size_t(n) * n, 0.25f), y(size_t(n) * n);
  auto lw = backend->PrepareLinear(w.data(), nullptr, n, n);
  backend->Linear(*lw, x.data(), n, n, y.data(), n);
  const double s = BestSeconds(reps, [&] { backend->Linear(*lw, x.data(), n, n, y.data(), n); });
  return 2.0 * n * n * n / s / 1e9;
}

}  // namespace ssm::bench
