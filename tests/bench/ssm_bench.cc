// ssm-bench: engine throughput without a network. Streaming: N streams advanced together,
// C frames per stream per step, for S seconds. Offline (--offline T): one input of T frames.
// Prints one JSON object with --json.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "kernels/base/cpu_time.h"
#include "kernels/base/worker_pool.h"
#include "server/engine/engine.h"
#include "tests/bench/gemm_peak.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model_dir, device = "auto";
  int streams = 64, chunk_frames = 10, threads = 0;
  double parallel_min_mflop = EngineOptions().parallel_min_mflop;
  int worker_spin_us = WorkerPool::Process().spin_us();
  double seconds = 5;
  int64_t offline_frames = 0;
  int segment_frames = 1024;
  bool parallel_form = false;  // offline in the layers' parallel forms, not the recurrence
  bool json = false;
};

// Deterministic noise plus a few tones, generated on demand (the offline input is never held).
class SyntheticSource final : public InputSource {
 public:
  SyntheticSource(int64_t values, bool audio, uint64_t seed)
      : left_(values), audio_(audio), rng_(seed) {}
  size_t Read(float* dst, size_t max_values) override {
    const size_t n = size_t(std::min<int64_t>(left_, int64_t(max_values)));
    std::uniform_real_distribution<float> noise(-0.2f, 0.2f);
    for (size_t i = 0; i < n; ++i, ++pos_)
      dst[i] = noise(rng_) + (audio_ ? 0.3f * std::sin(0.031f * float(pos_ % 100000)) : 0.0f);
    left_ -= int64_t(n);
    return n;
  }

 private:
  int64_t left_, pos_ = 0;
  bool audio_;
  std::mt19937 rng_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
}

double PeakRssMiB() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

int Main(const Args& args) {
  auto model = Model::Load(args.model_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().message().c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  EngineOptions opt;
  opt.backend = ResolveDevice(args.device);
  opt.threads = args.threads;
  opt.parallel_min_mflop = args.parallel_min_mflop;
  WorkerPool::Process().set_spin_us(args.worker_spin_us);
  opt.max_streams = std::max(1, args.streams);
  opt.max_batch_frames = std::max(2048, args.streams * args.chunk_frames);
  auto engine_or = Engine::Create(*model, opt);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "error: %s\n", engine_or.status().message().c_str());
    return 1;
  }
  Engine& e = **engine_or;
  const bool audio = e.frontend().takes_samples();
  const size_t values_per_frame = audio ? size_t(c.frontend.hop_length) : size_t(c.d_in);
  const double flops = (*model)->flops_per_frame();
  const int threads = WorkerPool::ThreadsOrCores(args.threads);

  const double eigen_peak_before = bench::MeasureEigenGemmGflops(1024, 5, threads);
  const double own_peak_before = bench::MeasureBackendLinearGflops(1024, 5, threads);
  nlohmann::json out;
  out["model"] = args.model_dir;
  out["config"] = c.ToString();
  out["device"] = opt.backend;
  out["threads"] = threads;
  out["parallel_min_mflop"] = args.parallel_min_mflop;
  out["worker_spin_us"] = args.worker_spin_us;
  out["frame_rate"] = c.frame_rate();
  out["gflop_per_frame"] = flops / 1e9;
  out["state_bytes_per_stream"] = (*model)->state_bytes_per_stream();

  if (args.offline_frames > 0) {
    const int64_t values =
        audio ? (args.offline_frames - 1) * c.frontend.hop_length + c.frontend.win_length
              : args.offline_frames * c.d_in;
    OfflineOptions o;
    o.segment_frames = args.segment_frames;
    o.parallel_form = args.parallel_form;
    {  // warm-up: first touch of the workspace and the thread pool stay out of the timing
      SyntheticSource warm(
          std::min<int64_t>(values, 2 * int64_t(values_per_frame) * o.segment_frames), audio, 3);
      if (!e.RunOffline({&warm}, o).ok()) return 1;
    }
    SyntheticSource source(values, audio, 1);
    const auto t0 = Clock::now();
    auto result = e.RunOffline({&source}, o);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!result.ok()) {
      std::fprintf(stderr, "error: %s\n", result.status().message().c_str());
      return 1;
    }
    const double frames = double((*result)[0].size() / c.d_out);
    out["mode"] = "offline";
    out["frames"] = frames;
    out["seconds"] = s;
    out["frames_per_s"] = frames / s;
    out["realtime_factor"] = frames / s / c.frame_rate();
    out["gflops"] = frames * flops / s / 1e9;
    out["segment_frames"] = args.segment_frames;
    out["offline_form"] = args.parallel_form ? "parallel" : "recurrence";
  } else {
    // Each stream reads its own window of one shared noise buffer.
    const size_t chunk_values = size_t(args.chunk_frames) * values_per_frame;
    SyntheticSource gen(int64_t(chunk_values) * 64 + 4096, audio, 2);
    std::vector<float> noise(chunk_values * 64 + 4096);
    gen.Read(noise.data(), noise.size());
    std::vector<int> streams;
    for (int i = 0; i < args.streams; ++i) streams.push_back(*e.OpenStream());
    std::vector<ChunkInput> chunks(args.streams);
    StepResult step;
    std::vector<double> step_ms;
    int64_t frames = 0, steps = 0;
    auto run_step = [&](int64_t k) {
      for (int i = 0; i < args.streams; ++i)
        chunks[i] = {streams[i], noise.data() + ((k + i) % 64) * chunk_values, chunk_values};
      e.Step(chunks, &step);
      int64_t f = 0;
      for (const auto& co : step.chunks) f += co.frames;
      return f;
    };
    run_step(0);  // warm-up (and the log-mel window fill)
    const double cpu_start = ProcessCpuSeconds();
    const auto start = Clock::now();
    double elapsed = 0;
    while (elapsed < args.seconds) {
      const auto t0 = Clock::now();
      frames += run_step(++steps);
      const auto t1 = Clock::now();
      step_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      elapsed = std::chrono::duration<double>(t1 - start).count();
    }
    out["mode"] = "stream";
    out["streams"] = args.streams;
    out["chunk_frames"] = args.chunk_frames;
    out["steps"] = steps;
    out["seconds"] = elapsed;
    out["frames_per_s"] = double(frames) / elapsed;
    out["realtime_streams"] = double(frames) / elapsed / c.frame_rate();
    out["gflops"] = double(frames) * flops / elapsed / 1e9;
    out["step_ms_p50"] = Percentile(step_ms, 50);
    out["step_ms_p99"] = Percentile(step_ms, 99);
    out["step_ms_max"] = Percentile(step_ms, 100);
    // The engine's own CPU cost per chunk at this batch (every thread, spinning included): what
    // a server spends beyond it per chunk is its host path (tests/bench/host_path.py).
    const double cpu_s = ProcessCpuSeconds() - cpu_start;
    out["cpu_s"] = cpu_s;
    out["cpu_us_per_chunk"] = cpu_s * 1e6 / double(std::max<int64_t>(1, steps * args.streams));
  }
  // The yardstick is a well-kept library's SGEMM (Eigen, 1024^3, same threads, same run). The
  // cpu backend's own batch-invariant GEMM is faster on this shape; its figure is reported too.
  // Both are measured before and after the run and the best is kept, so a noisy moment on a
  // shared machine does not lower the peak (which would flatter the efficiency).
  const double gflops = out["gflops"].get<double>();
  const double eigen_peak =
      std::max(eigen_peak_before, bench::MeasureEigenGemmGflops(1024, 5, threads));
  const double own_peak =
      std::max(own_peak_before, bench::MeasureBackendLinearGflops(1024, 5, threads));
  out["peak_gflops"] = eigen_peak;
  out["efficiency"] = gflops / eigen_peak;
  out["own_gemm_gflops"] = own_peak;
  out["efficiency_vs_own_gemm"] = gflops / own_peak;
  out["peak_rss_mib"] = PeakRssMiB();

  if (args.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args a;
  CLI::App app{
      "Measures the engine (no network): streaming throughput of N streams advanced "
      "together, or the offline path on one long input."};
  app.add_option("--model", a.model_dir, "Model directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--streams", a.streams, "Concurrent streams")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--chunk-frames", a.chunk_frames, "Frames per stream per step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seconds", a.seconds, "Measurement time")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--offline", a.offline_frames,
                 "Time the offline path on one input of T frames instead")
      ->check(CLI::PositiveNumber);
  app.add_option("--segment-frames", a.segment_frames, "Offline segment length")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--parallel-form", a.parallel_form,
               "Offline: run layers in their parallel form where they have one (Mamba-2's "
               "chunked SSD form), not the recurrence that streaming runs");
  app.add_option("--device", a.device, "auto (cuda when a GPU is present), cpu, cuda or reference")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "reference"}))
      ->capture_default_str();
  app.add_option("--threads", a.threads, "Compute threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--parallel-min-mflop", a.parallel_min_mflop,
                 "A step with less estimated work (MFLOP) runs on one thread, as in ssm-server "
                 "(0: every step on all threads)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--worker-spin-us", a.worker_spin_us,
                 "How long an idle compute worker spins before it sleeps, as in ssm-server")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  app.add_flag("--json", a.json, "Print one JSON object on one line");
  CLI11_PARSE(app, argc, argv);
  return ssm::Main(a);
}
