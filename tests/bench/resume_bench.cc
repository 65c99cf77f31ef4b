// ssm-resume-bench: what resuming costs (docs/design.md §7), printed as JSON.
// - Resume latency against running servers: a stream sends --warm-chunks real-time-sized chunks,
//   breaks (the client cancels), and resumes on a new call; measured from the new call's start
//   to its `opened` and to the first new chunk's output. From memory (the same --server), and
//   with --store-server (a second replica sharing the first one's --state-store, whose
//   --checkpoint-interval must be short) from the store.
// - --snapshot-size DIR: the bytes of one stream's snapshot (a checkpoint's or a hand-off's)
//   after --snapshot-seconds of signal, without a network.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "clients/lib/latency_summary.h"
#include "server/engine/engine.h"
#include "server/model/model.h"
#include "server/service/live_stream.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/integration/raw_stream.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using testing::Call;
using testing::Open;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

nlohmann::json Percentiles(std::vector<double> v) {
  if (v.empty()) return nullptr;
  const client::LatencySummary s = client::Summarize(std::move(v));
  return {{"p50", s.p50}, {"p99", s.p99}, {"max", s.max}, {"n", s.count}};
}

struct Args {
  std::string server, store_server, model, snapshot_dir;
  int iterations = 50, warm_chunks = 5, chunk_ms = 100;
  double snapshot_seconds = 10;
};

// Chunk payloads of random audio (float32) for a model with `rate` Hz.
std::string Chunk(std::mt19937& rng, int samples) {
  std::uniform_real_distribution<float> d(-0.3f, 0.3f);
  std::vector<float> v(static_cast<size_t>(samples));
  for (float& x : v) x = d(rng);
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// One measurement: open on `first`, warm up, break, resume on `second`.
bool ResumeOnce(pb::Ssm::Stub& first, pb::Ssm::Stub& second, const Args& a, bool via_store,
                std::mt19937& rng, double* opened_ms, double* output_ms, std::string* error) {
  Call call(first);
  if (!call.Open(Open(a.model, pb::SAMPLE_FORMAT_PCM_F32LE))) {
    *error = "open failed: " + call.Finish().error_message();
    return false;
  }
  const int rate = call.opened().model().sample_rate();
  const int samples = rate * a.chunk_ms / 1000;
  uint64_t sent = 0, checkpointed = 0;
  int64_t have = 0;
  for (;; ++sent) {
    if (sent >= uint64_t(a.warm_chunks) && (!via_store || checkpointed > 0)) break;
    if (sent > 1000) {
      *error =
          "no checkpoint after 1000 chunks: give the first server --state-store and a short "
          "--checkpoint-interval";
      return false;
    }
    call.Send(sent, Chunk(rng, samples));
    pb::StreamOutput out;
    if (!call.Read(&out)) {
      *error = "the stream ended: " + call.Finish().error_message();
      return false;
    }
    checkpointed = out.checkpointed_sequence();
    have = out.first_frame() + out.frames();
  }
  const std::string token = call.opened().resume_token();
  call.Cancel();
  const Clock::time_point start = Clock::now();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    Call resumed(second);
    pb::StreamOutput replay;
    if (!resumed.Open(Open("", pb::SAMPLE_FORMAT_PCM_F32LE, token, have), &replay)) {
      const grpc::Status status = resumed.Finish();
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) continue;  // still attached
      *error = "resume failed: " + status.error_message();
      return false;
    }
    *opened_ms = Ms(start, Clock::now());
    resumed.Send(resumed.opened().next_sequence(), Chunk(rng, samples));
    pb::StreamOutput out;
    if (!resumed.Read(&out)) {
      *error = "no output after the resume";
      return false;
    }
    *output_ms = Ms(start, Clock::now());
    resumed.Cancel();
    return true;
  }
  *error = "the old call never let go of the stream";
  return false;
}

int RunLatency(const Args& a) {
  auto stub = pb::Ssm::NewStub(grpc::CreateChannel(a.server, grpc::InsecureChannelCredentials()));
  std::unique_ptr<pb::Ssm::Stub> store_stub;
  if (!a.store_server.empty())
    store_stub =
        pb::Ssm::NewStub(grpc::CreateChannel(a.store_server, grpc::InsecureChannelCredentials()));
  std::mt19937 rng(1);
  nlohmann::json result{
      {"server", a.server}, {"chunk_ms", a.chunk_ms}, {"warm_chunks", a.warm_chunks}};
  for (const bool via_store : {false, true}) {
    if (via_store && store_stub == nullptr) continue;
    std::vector<double> opened, output;
    for (int i = 0; i < a.iterations; ++i) {
      double o = 0, f = 0;
      std::string error;
      if (!ResumeOnce(*stub, via_store ? *store_stub : *stub, a, via_store, rng, &o, &f, &error)) {
        std::fprintf(stderr, "ssm-resume-bench: %s\n", error.c_str());
        return 1;
      }
      opened.push_back(o);
      output.push_back(f);
    }
    result[via_store ? "from_store" : "from_memory"] = {
        {"resume_to_opened_ms", Percentiles(opened)},
        {"resume_to_first_output_ms", Percentiles(output)}};
  }
  std::printf("%s\n", result.dump(2).c_str());
  return 0;
}

int RunSnapshotSize(const Args& a) {
  auto model = Model::Load(a.snapshot_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "ssm-resume-bench: %s\n", model.status().message().c_str());
    return 1;
  }
  EngineOptions options;
  options.max_streams = 1;
  options.threads = 1;
  auto engine = Engine::Create(*model, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "ssm-resume-bench: %s\n", engine.status().message().c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  const size_t per_second = size_t(c.input_values_per_second());
  const size_t chunk = per_second * size_t(a.chunk_ms) / 1000;
  std::mt19937 rng(2);
  std::normal_distribution<float> d(0.0f, 0.3f);
  std::vector<float> input(chunk);
  auto stream = (*engine)->OpenStream();
  // The outputs a stream holds for a resume, as the service keeps them.
  HeldOutputs held;
  held.Reset(0, {}, c.d_out);
  StepResult step;
  const int chunks = int(a.snapshot_seconds * 1000 / a.chunk_ms);
  for (int i = 0; i < chunks; ++i) {
    for (float& x : input) x = d(rng);
    (*engine)->Step({{*stream, input.data(), input.size()}}, &step);
    held.Add(step.chunks[0].first_frame, step.chunks[0].frames, step.outputs);
  }
  auto snapshot = (*engine)->SnapshotStream(*stream);
  snapshot->held_first_frame = held.first_frame();
  held.AppendTo(&snapshot->held_outputs);
  const size_t held_floats = held.floats();
  const Clock::time_point start = Clock::now();
  const std::string bytes = EncodeSnapshot(*snapshot);
  const double encode_us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  size_t state = 0;
  for (const auto& l : snapshot->layers) state += l.size() * 4;
  nlohmann::json result{{"model", a.snapshot_dir},
                        {"signal_seconds", a.snapshot_seconds},
                        {"state_bytes", state},
                        {"frontend_carry_bytes", snapshot->frontend.pending.size() * 4},
                        {"held_output_bytes", held_floats * 4},
                        {"snapshot_bytes", bytes.size()},
                        {"encode_us", encode_us}};
  std::printf("%s\n", result.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args a;
  CLI::App app{
      "What resuming a stream costs: resume latency from memory and from the state "
      "store against running ssm-servers, or the size of one stream's snapshot. "
      "Prints JSON."};
  app.add_option("--server", a.server,
                 "HOST:PORT of the server streams break on and (from "
                 "memory) resume on");
  app.add_option("--store-server", a.store_server,
                 "HOST:PORT of a second replica sharing --server's state store: resumes from the "
                 "store are measured there");
  app.add_option("--model", a.model, "Model name (empty: the default)");
  app.add_option("--iterations", a.iterations, "Resumes measured per source")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warm-chunks", a.warm_chunks, "Chunks a stream sends before it breaks")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--chunk-ms", a.chunk_ms, "Chunk length, ms of signal")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--snapshot-size", a.snapshot_dir,
                 "Model directory: print the bytes of one stream's snapshot instead")
      ->check(CLI::ExistingDirectory);
  app.add_option("--snapshot-seconds", a.snapshot_seconds,
                 "Signal streamed before the snapshot is taken")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!a.snapshot_dir.empty()) return ssm::RunSnapshotSize(a);
  if (a.server.empty()) {
    std::fprintf(stderr, "ssm-resume-bench: --server or --snapshot-size is required\n");
    return 2;
  }
  return ssm::RunLatency(a);
}
