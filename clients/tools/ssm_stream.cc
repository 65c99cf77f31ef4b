// ssm-stream: streams one file to ssm-server chunk by chunk (optionally at real-time pace) and
// writes the outputs as .npy (frames, d_out) or .jsonl (one line per frame).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "clients/lib/client_input.h"
#include "clients/lib/latency_summary.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/ssm_client.h"
#include "clients/tools/tool_flags.h"
#include "common/io/npy.h"
#include "common/strings.h"

namespace ssm {
namespace {

namespace pb = ssmserve::v1;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string server, model, input, output, format = "auto", label = "ssm-stream";
  int chunk_ms = 100;
  int raw_rate = 0;
  bool realtime = false;
  bool no_resume = false;
  client::ConnectOptions connect;
  double idle_timeout_s = 30;
};

volatile std::sig_atomic_t g_interrupted = 0;  // Ctrl-C: stop sending, flush, write what came

int Fail(const Status& status) {
  std::fprintf(stderr, "ssm-stream: error: %s\n", status.ToString().c_str());
  return 1;
}

// Everything the outputs callback collects (on gRPC threads).
struct Collected {
  std::mutex mu;              // guards the members below
  std::vector<float> values;  // frames x d_out
  int64_t frames = 0;
  std::vector<double> server_ms, round_trip_ms;
};

// One JSON object per frame: {"frame", "time_s" (frame start), "outputs", "label" (argmax)}.
Status WriteJsonl(const std::string& path, const pb::ModelInfo& model, const float* values,
                  int64_t frames) {
  std::ofstream out(path);
  if (!out) return InvalidArgumentError(fmt::format("cannot write {}", path));
  const int d_out = model.d_out();
  const double frame_rate = model.frame_rate() > 0 ? model.frame_rate() : 100.0;
  for (int64_t t = 0; t < frames; ++t) {
    const float* row = values + t * d_out;
    nlohmann::ordered_json line = {{"frame", t},
                                   {"time_s", double(t) / frame_rate},
                                   {"outputs", std::vector<float>(row, row + d_out)}};
    if (model.labels_size() == d_out && d_out > 0)
      line["label"] = model.labels(int(std::max_element(row, row + d_out) - row));
    out << line.dump() << '\n';
  }
  out.close();
  if (!out) return InternalError(fmt::format("writing {} failed (disk full?)", path));
  return OkStatus();
}

int Run(const Args& args) {
  auto client = client::Client::Connect(args.server, args.connect);
  if (!client.ok()) return Fail(client.status());
  auto model = (*client)->GetModelInfo(args.model);
  if (!model.ok()) return Fail(model.status());
  auto input = client::ReadClientInput(args.input, *model, {args.raw_rate});
  if (!input.ok()) return Fail(input.status());
  auto format = client::ChoosePayloadFormat(args.format, input->is_audio(), input->fits_s16);
  if (!format.ok()) return Fail(format.status());
  if (input->resampled)
    std::fprintf(stderr, "ssm-stream: resampled %s from %d Hz to %d Hz\n", args.input.c_str(),
                 input->file_rate, model->sample_rate());

  // Rows (samples or frames) per chunk, and the signal time they cover.
  const double rows_per_s = input->is_audio()
                                ? double(model->sample_rate())
                                : (model->frame_rate() > 0 ? model->frame_rate() : 100);
  const int64_t chunk_rows = std::max<int64_t>(1, std::llround(rows_per_s * args.chunk_ms / 1000));
  const int values_per_row = input->is_audio() ? 1 : model->d_in();

  Collected got;
  client::StreamOptions options;
  options.model = model->name();
  options.format = *format;
  options.label = args.label;
  options.idle_timeout_s = args.idle_timeout_s;
  options.resume = !args.no_resume;
  options.on_output = [&got](const client::Output& out) {
    std::lock_guard<std::mutex> lock(got.mu);
    got.values.insert(got.values.end(), out.values.begin(), out.values.end());
    got.frames += out.frames;
    got.server_ms.push_back(out.server_latency_ms);
    if (out.round_trip_ms >= 0) got.round_trip_ms.push_back(out.round_trip_ms);
  };
  const Clock::time_point start = Clock::now();
  auto stream = (*client)->OpenStream(options);
  if (!stream.ok()) return Fail(stream.status().WithContext("opening the stream"));
  auto opened = (*stream)->WaitOpened();
  if (!opened.ok()) return Fail(opened.status());
  if (opened->max_chunk_ms() > 0 && uint32_t(args.chunk_ms) > opened->max_chunk_ms())
    return Fail(InvalidArgumentError(
        fmt::format("--chunk-ms {} exceeds the server's limit of {} ms (it recommends {} ms)",
                    args.chunk_ms, opened->max_chunk_ms(), opened->recommended_chunk_ms())));

  std::signal(SIGINT, [](int) { g_interrupted = 1; });
  const auto chunk_duration = std::chrono::duration<double>(double(chunk_rows) / rows_per_s);
  Status sent;
  int64_t chunks = 0;
  for (int64_t row = 0; row < input->rows && sent.ok() && !g_interrupted; row += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, input->rows - row);
    if (args.realtime)  // a chunk goes out once its signal "has been recorded"
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(chunk_duration * (chunks + 1)));
    const float* data = input->values.data() + row * values_per_row;
    sent = input->is_audio() ? (*stream)->SendSamples(data, size_t(rows))
                             : (*stream)->SendFrames(data, size_t(rows));
    ++chunks;
  }
  Status status = (*stream)->Close();
  if (status.ok() && !sent.ok()) status = sent;  // e.g. NaN in the input: nothing of it was sent
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  const client::StreamStats stats = (*stream)->stats();

  std::lock_guard<std::mutex> lock(got.mu);
  const int64_t expected = client::ExpectedFrames(*model, input->rows);
  Status written =
      EndsWith(args.output, ".npy")
          ? WriteNpy(args.output, {got.frames, int64_t(model->d_out())}, got.values.data())
          : WriteJsonl(args.output, *model, got.values.data(), got.frames);
  const client::LatencySummary server = client::Summarize(got.server_ms);
  const client::LatencySummary round_trip = client::Summarize(got.round_trip_ms);
  std::fprintf(
      stderr,
      "ssm-stream: %s -> %s: %lld frames (expected %lld) in %lld chunks of %d ms, "
      "%.2f s wall (%.1fx real time)\n"
      "  server latency ms: mean %.2f p99 %.2f; round trip ms: mean %.2f p99 %.2f max "
      "%.2f\n"
      "  resumes %llu (%llu attempts, %llu chunks re-sent, %lld duplicate frames dropped); "
      "resume ms: last %.1f max %.1f%s\n",
      args.input.c_str(), args.output.c_str(), (long long)got.frames, (long long)expected,
      (long long)chunks, args.chunk_ms, wall_s,
      double(input->rows) / rows_per_s / std::max(wall_s, 1e-9), server.mean, server.p99,
      round_trip.mean, round_trip.p99, round_trip.max, (unsigned long long)stats.resumes,
      (unsigned long long)stats.resume_attempts, (unsigned long long)stats.replayed_chunks,
      (long long)stats.duplicate_frames, stats.last_resume_ms, stats.max_resume_ms,
      args.no_resume ? " (--no-resume)" : "");
  int rc = 0;
  if (!status.ok()) rc = Fail(status.WithContext("stream failed"));
  if (stats.frame_errors > 0)
    rc = Fail(InternalError(fmt::format("{} responses had wrong frame indices; first: {}",
                                        stats.frame_errors, stats.first_frame_error)));
  if (status.ok() && !g_interrupted && got.frames != expected)
    rc =
        Fail(InternalError(fmt::format("the server returned {} frames; {} expected for {} input "
                                       "rows",
                                       got.frames, expected, input->rows)));
  if (g_interrupted) {
    std::fprintf(stderr, "ssm-stream: interrupted after %lld chunks\n", (long long)chunks);
    rc = 130;
  }
  if (!written.ok()) return Fail(written);
  if (rc != 0 && got.frames > 0)
    std::fprintf(stderr, "ssm-stream: %s holds the %lld frames received before stopping\n",
                 args.output.c_str(), (long long)got.frames);
  return rc;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args args;
  CLI::App app{
      "Streams a file to ssm-server chunk by chunk and writes the model's outputs.\n"
      "Audio models take WAV/FLAC (resampled to the model's rate if needed), .raw PCM "
      "s16le or 1-D .npy samples; frame models take .npy float32 (T, d_in)."};
  ssm::tools::AddServerFlags(app, &args.server, &args.model, &args.format, &args.connect);
  ssm::tools::AddRawRateFlag(app, &args.raw_rate);
  app.add_option("--input", args.input, "Input file: .wav/.flac/... audio, .raw, .npy")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--output", args.output,
                 "Output: .npy float32 (frames, d_out), or .jsonl (one JSON object per frame)")
      ->required();
  app.add_option("--chunk-ms", args.chunk_ms, "Chunk length, milliseconds of signal")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--realtime", args.realtime,
               "Send each chunk when its signal would have been recorded (real-time pace); "
               "default: as fast as the server takes them");
  app.add_option("--label", args.label, "Label for the server's logs")->capture_default_str();
  app.add_flag("--no-resume", args.no_resume,
               "Do not resume the stream when its connection breaks; by default a broken call is "
               "continued on a new one (for up to 30 s) and the outputs have no gap");
  app.add_option("--idle-timeout-s", args.idle_timeout_s,
                 "Give up if the server stops answering for this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!ssm::EndsWith(args.output, ".npy") && !ssm::EndsWith(args.output, ".jsonl")) {
    std::fprintf(stderr, "ssm-stream: error: --output must end in .npy or .jsonl, not '%s'\n",
                 args.output.c_str());
    return 2;
  }
  return ssm::Run(args);
}
