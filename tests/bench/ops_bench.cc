// Op micro-benchmarks (Google Benchmark) at bench-m shapes: the cpu backend's ops, and Eigen's
// SGEMM on the same shape as a yardstick for Linear. Compare within one run, as ratios.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace ssm {
namespace {

std::vector<float> Random(size_t n, float lo = -1, float hi = 1) {
  std::mt19937 gen(42);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// args: rows, in, out
void BM_CpuLinear(benchmark::State& state) {
  const int rows = state.range(0), in = state.range(1), out = state.range(2);
  auto b = CreateBackend("cpu", 0);
  auto w = Random(size_t(out) * in), x = Random(size_t(rows) * in);
  std::vector<float> y(size_t(rows) * out);
  auto lw = b->PrepareLinear(w.data(), nullptr, out, in);
  for (auto _ : state) b->Linear(*lw, x.data(), in, rows, y.data(), out);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * in * out * state.iterations(), benchmark::Counter::kIsRate,
                         benchmark::Counter::kIs1000);
}

void BM_EigenGemm(benchmark::State& state) {
  const int rows = state.range(0), in = state.range(1), out = state.range(2);
  Eigen::MatrixXf x = Eigen::MatrixXf::Random(rows, in), w = Eigen::MatrixXf::Random(in, out);
  Eigen::MatrixXf y(rows, out);
  for (auto _ : state) y.noalias() = x * w;
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * in * out * state.iterations(), benchmark::Counter::kIsRate,
                         benchmark::Counter::kIs1000);
}

// args: streams, frames per stream (bench-m: E 512, N 16)
void BM_CpuSelectiveScan(benchmark::State& state) {
  const int streams = state.range(0), T = state.range(1), E = 512, N = 16, rows = streams * T;
  auto b = CreateBackend("cpu", 0);
  auto u = Random(size_t(rows) * E), dt = Random(size_t(rows) * E, -6, 1),
       bc = Random(size_t(rows) * 2 * N);
  auto z = Random(size_t(rows) * E), D = Random(E), A = Random(size_t(N) * E, -16, -1);
  std::vector<float> h(size_t(streams) * N * E), out(size_t(rows) * E);
  std::vector<int> offsets{0}, slots;
  for (int s = 0; s < streams; ++s) offsets.push_back(offsets.back() + T), slots.push_back(s);
  SelectiveScanArgs a;
  a.channels = E;
  a.d_state = N;
  a.u = u.data();
  a.ld_u = E;
  a.dt = dt.data();
  a.ld_dt = E;
  a.B = bc.data();
  a.C = bc.data() + N;
  a.ld_bc = 2 * N;
  a.z = z.data();
  a.ld_z = E;
  a.A = A.data();
  a.D = D.data();
  a.state = {h.data(), size_t(N) * E};
  a.out = out.data();
  a.ld_out = E;
  const SeqBatch batch{streams, offsets.data(), slots.data()};
  for (auto _ : state) b->SelectiveScan(batch, a);
  state.counters["Melem/s"] = benchmark::Counter(double(rows) * E * N * state.iterations() / 1e6,
                                                 benchmark::Counter::kIsRate);
}

BENCHMARK(BM_CpuLinear)
    ->Args({640, 256, 1024})
    ->Args({640, 512, 256})
    ->Args({1024, 1024, 1024})
    ->UseRealTime();
BENCHMARK(BM_EigenGemm)
    ->Args({640, 256, 1024})
    ->Args({640, 512, 256})
    ->Args({1024, 1024, 1024})
    ->UseRealTime();
BENCHMARK(BM_CpuSelectiveScan)->Args({64, 10})->Args({1, 1024})->UseRealTime();

}  // namespace
}  // namespace ssm

BENCHMARK_MAIN();
