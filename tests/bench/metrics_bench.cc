// The cost of ssm-server's metric updates on the hot path (Google Benchmark), with metrics on
// and off (--metrics-listen ""): per chunk, what the scheduler and the call reactor update
// (queue depth in and out, ModelMetrics::ChunkAnswered); per engine step, ModelMetrics::StepRun;
// and one scrape of /metrics. Off, the handles are null and each update is one branch.
#include <benchmark/benchmark.h>
#include <prometheus/text_serializer.h>

#include <array>

#include "server/service/metrics.h"

namespace ssm {
namespace {

// Latencies and lags (seconds) spread over the histograms' buckets, cycled through.
constexpr std::array<double, 8> kSeconds{0.0004, 0.0013, 0.0031, 0.0072, 0.015, 0.033, 0.08, 0.3};

Metrics& SharedMetrics(bool enabled) {
  static Metrics on("bench", "cpu", "cpu", true);
  static Metrics off("bench", "cpu", "cpu", false);
  return enabled ? on : off;
}

// The handles of one model; nullptr when metrics are off, as the server gets them.
ModelMetrics* Model(bool enabled) {
  static ModelMetrics* on = SharedMetrics(true).AddModel("bench", "cpu", 1024, 20000);
  static ModelMetrics* off = SharedMetrics(false).AddModel("bench", "cpu", 1024, 20000);
  return enabled ? on : off;
}

// arg: metrics on (1) or off (0). Threads(2): two reactor threads on one model's series.
void BM_ChunkMetrics(benchmark::State& state) {
  ModelMetrics* m = Model(state.range(0) != 0);
  size_t i = size_t(state.thread_index());
  for (auto _ : state) {
    benchmark::DoNotOptimize(m);  // the null test stays in the loop, as in the server
    const double s = kSeconds[i++ % kSeconds.size()];
    if (m != nullptr) m->queue_depth->Increment();     // Scheduler::Submit
    if (m != nullptr) m->queue_depth->Decrement(1);    // Scheduler::PickBatch
    if (m != nullptr) m->ChunkAnswered(s, 10, 2 * s);  // CallReactor::RecordResultLocked
  }
  state.SetItemsProcessed(state.iterations());
}

// arg: metrics on (1) or off (0).
void BM_StepMetrics(benchmark::State& state) {
  ModelMetrics* m = Model(state.range(0) != 0);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(m);
    const double s = kSeconds[i++ % kSeconds.size()];
    if (m != nullptr) m->StepRun(s, 64, 640);  // Scheduler::RecordStep
  }
  state.SetItemsProcessed(state.iterations());
}

// One GET /metrics: collect the registry (one model) and render the text format.
void BM_Scrape(benchmark::State& state) {
  Model(true);
  const auto registry = SharedMetrics(true).registry();
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = prometheus::TextSerializer().Serialize(registry->Collect());
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = double(bytes);
}

BENCHMARK(BM_ChunkMetrics)->ArgName("on")->Arg(1)->Arg(0);
BENCHMARK(BM_ChunkMetrics)->ArgName("on")->Arg(1)->Arg(0)->Threads(2);
BENCHMARK(BM_StepMetrics)->ArgName("on")->Arg(1)->Arg(0);
BENCHMARK(BM_Scrape);

}  // namespace
}  // namespace ssm

BENCHMARK_MAIN();
