// Why a double FFT: a float FFT's rounding error is ~1e-7 of the frame's total energy, spread over
// every bin, so a mel band 40 dB below the loudest one already misses the 1e-5 contract (measured
// with kiss_fftr in float: up to 2e-5 on espeak-ng speech, 1.5e-3 for a loud tone over quiet
// noise). In double that error is ~1e-16 of the total and the float output rounding dominates.
// Eigen's FFT is kissfft's mixed-radix algorithm, with a real-input path for n_fft % 4 == 0.
#include "kernels/cpu/log_mel.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <unsupported/Eigen/FFT>
#include <vector>

#include "kernels/base/worker_pool.h"

namespace ssm::cpu {
namespace {

// Per-thread FFT and buffers. Eigen::FFT caches twiddles per size inside the object and writes
// scratch on every transform, so each thread keeps its own; the worker pool keeps its threads, so
// plans are made once per (thread, n_fft), not per call.
struct Workspace {
  Eigen::FFT<double> fft;
  std::vector<double> frame;               // (n_fft) windowed samples, zero padded
  std::vector<std::complex<double>> bins;  // (n_fft/2 + 1) half spectrum
  std::vector<double> power;               // (n_fft/2 + 1) |X_k|^2

  Workspace() { fft.SetFlag(Eigen::FFT<double>::HalfSpectrum); }
};

Workspace& ThreadWorkspace(int n_fft) {
  thread_local Workspace ws;
  ws.frame.resize(n_fft);
  ws.bins.resize(n_fft / 2 + 1);
  ws.power.resize(n_fft / 2 + 1);
  return ws;
}

// Features of one frame (win samples) into out (n_mels).
void FrameLogMel(const LogMelPlan& plan, const float* samples, Workspace& ws, float* out) {
  const LogMelParams& p = plan.params;
  double* x = ws.frame.data();
  for (int i = 0; i < p.win_length; ++i) x[i] = plan.window[i] * samples[i];
  std::fill(x + p.win_length, x + p.n_fft, 0.0);  // padding; a plan with a longer window used it
  ws.fft.fwd(ws.bins.data(), x, p.n_fft);
  for (size_t k = 0; k < ws.bins.size(); ++k) ws.power[k] = std::norm(ws.bins[k]);
  for (int j = 0; j < p.n_mels; ++j) {
    const MelFilter& f = plan.filters[j];
    const double* pk = ws.power.data() + f.first_bin;
    double sum = 0;
    for (size_t b = 0; b < f.weights.size(); ++b) sum += f.weights[b] * pk[b];
    out[j] = float(std::log(std::max(sum, p.log_floor)));
  }
}

}  // namespace

void LogMel(const LogMelPlan& plan, const float* samples, int n_frames, float* out, int threads) {
  if (n_frames <= 0) return;
  const int hop = plan.params.hop_length, n_mels = plan.params.n_mels;
  threads = WorkerPool::ThreadsOrCores(threads);
  ParallelFor(threads, n_frames, [&](int64_t begin, int64_t end) {
    Workspace& ws = ThreadWorkspace(plan.params.n_fft);
    for (int64_t t = begin; t < end; ++t) {
      FrameLogMel(plan, samples + size_t(t) * hop, ws, out + size_t(t) * n_mels);
    }
  });
}

}  // namespace ssm::cpu
