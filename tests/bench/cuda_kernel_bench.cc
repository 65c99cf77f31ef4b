// Achieved memory bandwidth of the cuda backend's causal-conv and selective-scan kernels against a
// device-to-device copy measured in the same run (the yardstick: what the memory system gives a
// kernel that only streams data). Prints one JSON object. Needs a GPU; exits 77 without one.
//   cuda_kernel_bench [--streams S] [--frames T] [--channels E] [--d-state N] [--iters K]
// Bytes counted per (row, channel): conv reads x and writes out (8 B); the scan reads u, dt, z
// and writes out (16 B); B and C rows, the weights and the state are added exactly.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace ssm {
namespace {

// Seconds per call of `op` (median of `iters` timed calls after 3 warm-ups).
double TimeOp(Backend& backend, int iters, const std::function<void()>& op) {
  for (int i = 0; i < 3; ++i) op();
  backend.Synchronize();
  std::vector<double> seconds;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    op();
    backend.Synchronize();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + iters / 2, seconds.end());
  return seconds[iters / 2];
}

std::unique_ptr<Buffer> Upload(Backend& backend, size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> host(n);
  for (float& x : host) x = d(gen);
  auto buffer = backend.Allocate(n);
  backend.CopyToBackend(buffer->data(), host.data(), n);
  return buffer;
}

int Run(int streams, int frames, int E, int N, int iters) {
  std::string why;
  if (!CudaAvailable(&why)) {
    std::fprintf(stderr, "cuda_kernel_bench: no CUDA here: %s\n", why.c_str());
    return 77;
  }
  auto backend = CreateBackend("cuda", 0);
  const size_t rows = size_t(streams) * frames, K = 4;
  std::vector<int> offsets{0}, slots;
  for (int s = 0; s < streams; ++s) offsets.push_back(offsets.back() + frames), slots.push_back(s);
  const SeqBatch batch{streams, offsets.data(), slots.data()};

  auto x = Upload(*backend, rows * E, -1, 1, 1), out = backend->Allocate(rows * E);
  auto dt = Upload(*backend, rows * E, -6, 1, 2), z = Upload(*backend, rows * E, -1, 1, 3);
  auto bc = Upload(*backend, rows * 2 * N, -1, 1, 4),
       A = Upload(*backend, size_t(N) * E, -16, -1, 5);
  auto D = Upload(*backend, E, -1, 1, 6), w = Upload(*backend, K * E, -1, 1, 7);
  auto bias = Upload(*backend, E, -1, 1, 8);
  auto tail = backend->Allocate(size_t(streams) * (K - 1) * E);
  auto state = backend->Allocate(size_t(streams) * N * E);

  // The yardstick: copy x (rows*E floats) to out, device to device.
  const size_t copy_bytes = rows * E * sizeof(float);
  const double copy_s = TimeOp(*backend, iters, [&] {
    // A device-to-device cudaMemcpy does not wait for the copy: synchronise explicitly.
    if (cudaMemcpy(out->data(), x->data(), copy_bytes, cudaMemcpyDeviceToDevice) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess)
      std::fprintf(stderr, "cuda_kernel_bench: copy failed\n"), std::exit(1);
  });
  const double copy_gbs = 2.0 * copy_bytes / copy_s / 1e9;  // read + write

  CausalConvArgs c;
  c.channels = E;
  c.kernel = int(K);
  c.x = x->data();
  c.ld_x = E;
  c.w = w->data();
  c.bias = bias->data();
  c.tail = {tail->data(), (K - 1) * E};
  c.out = out->data();
  c.ld_out = E;
  const double conv_s = TimeOp(*backend, iters, [&] { backend->CausalConv(batch, c); });
  const double conv_bytes = 8.0 * rows * E + 4.0 * (K + 1) * E + 8.0 * streams * (K - 1) * E;

  SelectiveScanArgs a;
  a.channels = E;
  a.d_state = N;
  a.u = x->data();
  a.ld_u = E;
  a.dt = dt->data();
  a.ld_dt = E;
  a.B = bc->data();
  a.C = bc->data() + N;
  a.ld_bc = 2 * N;
  a.z = z->data();
  a.ld_z = E;
  a.A = A->data();
  a.D = D->data();
  a.state = {state->data(), size_t(N) * E};
  a.out = out->data();
  a.ld_out = E;
  const double scan_s = TimeOp(*backend, iters, [&] { backend->SelectiveScan(batch, a); });
  const double scan_bytes =
      16.0 * rows * E + 8.0 * rows * N + 4.0 * (N + 1) * E + 8.0 * streams * N * E;

  const double conv_gbs = conv_bytes / conv_s / 1e9, scan_gbs = scan_bytes / scan_s / 1e9;
  nlohmann::json j = {{"streams", streams},
                      {"frames", frames},
                      {"channels", E},
                      {"d_state", N},
                      {"copy_gb_per_s", copy_gbs},
                      {"conv_ms", conv_s * 1e3},
                      {"conv_gb_per_s", conv_gbs},
                      {"conv_vs_copy", conv_gbs / copy_gbs},
                      {"scan_ms", scan_s * 1e3},
                      {"scan_gb_per_s", scan_gbs},
                      {"scan_vs_copy", scan_gbs / copy_gbs},
                      {"scan_frames_per_s", double(rows) / scan_s}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  CLI::App app{"Bandwidth of the cuda conv and scan kernels vs a device-to-device copy (JSON)"};
  int streams = 64, frames = 1024, channels = 512, d_state = 16, iters = 20;
  app.add_option("--streams", streams, "Sequences in the batch")->check(CLI::PositiveNumber);
  app.add_option("--frames", frames, "Rows per sequence (the offline segment is 1024)")
      ->check(CLI::PositiveNumber);
  app.add_option("--channels", channels, "d_inner (bench-m: 512)")->check(CLI::PositiveNumber);
  app.add_option("--d-state", d_state, "d_state")->check(CLI::Range(1, 256));
  app.add_option("--iters", iters, "Timed calls per kernel (the median is reported)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  return ssm::Run(streams, frames, channels, d_state, iters);
}
