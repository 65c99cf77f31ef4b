// ssm-mic: microphone (PortAudio) -> ssm-server -> live speech display. Captures mono audio at the
// device's rate, resamples it to the model's rate as it streams, sends it chunk by chunk over the
// Stream rpc and shows the speech probability, the detected speech segments and the latency.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "clients/lib/audio_capture.h"
#include "clients/lib/latency_summary.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/speech_segments.h"
#include "clients/lib/ssm_client.h"
#include "clients/lib/stream_resampler.h"
#include "clients/lib/wav_recorder.h"
#include "clients/tools/tool_flags.h"

namespace ssm {
namespace {

namespace pb = ssmserve::v1;
using json = nlohmann::ordered_json;

// Exit codes (also in --help).
enum ExitCode {
  kExitOk = 0,      // stopped by Ctrl-C / SIGTERM or --max-seconds, every output received
  kExitServer = 1,  // server unreachable, model unknown or unsuitable, or the stream failed
  kExitUsage = 2,   // bad command line
  kExitAudio = 3,   // no input device, device cannot be opened (busy?), or capture failed
  kExitRecord = 4,  // the --record file cannot be written
};

struct Args {
  std::string server, model, format = "auto", label = "ssm-mic";
  client::ConnectOptions connect;
  bool list_devices = false;
  std::string input_device;  // "" = the default input device
  int sample_rate = 0;       // capture rate; 0 = the device's default
  int chunk_ms = 100;
  std::string speech_output;  // label or index; "" = "speech", else the last output
  client::SegmenterOptions segments;
  double min_speech_ms = 100, min_silence_ms = 300;
  std::string record;
  bool jsonl = false, jsonl_frames = false, audio_log = false, no_resume = false;
  double max_seconds = 0;  // 0 = until Ctrl-C
};

std::atomic<bool> g_stop{false};  // set by SIGINT / SIGTERM: stop capturing, finish cleanly

void OnStopSignal(int sig) {
  g_stop.store(true);
  std::signal(sig, SIG_DFL);  // a second Ctrl-C ends the process at once
}

int Fail(int code, const Status& status) {
  std::fprintf(stderr, "ssm-mic: error: %s\n", status.ToString().c_str());
  return code;
}

int ListDevices(const client::AudioSystem& audio) {
  const std::vector<client::InputDevice> devices = audio.InputDevices();
  if (devices.empty()) {
    std::printf("no input devices (PortAudio sees %d devices in all)\n", audio.device_count());
    return kExitOk;
  }
  std::printf("%-3s %5s  %-40s %-12s %8s %9s\n", "", "index", "name", "host API", "channels",
              "rate Hz");
  for (const client::InputDevice& d : devices)
    std::printf("%-3s %5d  %-40s %-12s %8d %9.0f\n", d.is_default ? "*" : "", d.index,
                d.name.c_str(), d.host_api.c_str(), d.max_input_channels, d.default_rate);
  std::printf("(* = default input device)\n");
  return kExitOk;
}

// The output channel that holds the speech probability: --speech-output as a label or an index;
// by default the label "speech", else the last output.
StatusOr<int> SpeechOutput(const pb::ModelInfo& model, const std::string& flag) {
  const int d_out = model.d_out();
  if (flag.empty()) {
    for (int i = 0; i < model.labels_size(); ++i)
      if (model.labels(i) == "speech") return i;
    return d_out - 1;
  }
  for (int i = 0; i < model.labels_size(); ++i)
    if (model.labels(i) == flag) return i;
  if (flag.size() <= 6 &&
      std::all_of(flag.begin(), flag.end(), [](unsigned char c) { return std::isdigit(c); })) {
    const int index = std::stoi(flag);
    if (index < d_out) return index;
  }
  std::string labels;
  for (const std::string& label : model.labels()) labels += (labels.empty() ? "" : ", ") + label;
  return InvalidArgumentError(fmt::format("--speech-output {}: model {} has outputs 0..{}{}", flag,
                                          model.name(), d_out - 1,
                                          labels.empty() ? " (no labels)" : " labelled " + labels));
}

json LatencyJson(const client::LatencySummary& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p99", s.p99}, {"max", s.max}};
}

// Everything done with the outputs, on the one thread that reads them: segments, the live view
// or the JSONL lines, latency figures.
class OutputView {
 public:
  // `segments.frame_rate` is the model's.
  OutputView(const Args& args, const client::SegmenterOptions& segments, int speech_index)
      : jsonl_(args.jsonl),
        jsonl_frames_(args.jsonl_frames),
        speech_index_(speech_index),
        segmenter_(segments),
        live_(!args.jsonl && isatty(STDOUT_FILENO)),
        frame_rate_(segments.frame_rate) {}

  void Add(const client::Output& out) {
    server_ms_.push_back(out.server_latency_ms);
    if (out.round_trip_ms >= 0) round_trip_ms_.push_back(out.round_trip_ms);
    for (int f = 0; f < out.frames; ++f) {
      const float* row = out.values.data() + size_t(f) * out.d_out;
      const int64_t frame = out.first_frame + f;
      if (jsonl_frames_)
        Emit({{"type", "frame"},
              {"frame", frame},
              {"time_s", double(frame) / frame_rate_},
              {"outputs", std::vector<float>(row, row + out.d_out)}});
      probability_ = row[speech_index_];
      if (std::optional<client::SpeechSegment> s = segmenter_.Push(probability_)) Segment(*s);
    }
    frames_ += out.frames;
    if (live_) DrawStatus(out);
  }

  // End of the stream: closes an open segment.
  void Finish() {
    if (std::optional<client::SpeechSegment> s = segmenter_.Finish()) Segment(*s);
    if (live_) std::printf("\r\033[K");
    std::fflush(stdout);
  }

  int64_t frames() const { return frames_; }
  size_t segments() const { return segments_; }
  double speech_s() const { return speech_s_; }
  client::LatencySummary server_ms() const { return client::Summarize(server_ms_); }
  client::LatencySummary round_trip_ms() const { return client::Summarize(round_trip_ms_); }

 private:
  void Emit(const json& line) { std::printf("%s\n", line.dump().c_str()); }

  void Segment(const client::SpeechSegment& s) {
    ++segments_;
    speech_s_ += s.end_s - s.start_s;
    if (jsonl_) {
      Emit({{"type", "segment"},
            {"index", segments_ - 1},
            {"start_s", s.start_s},
            {"end_s", s.end_s},
            {"mean_probability", s.mean_probability},
            {"peak_probability", s.peak_probability}});
      std::fflush(stdout);
      return;
    }
    std::printf("%sspeech %3zu: %8.2f s - %8.2f s  (%5.2f s)  mean %.2f  peak %.2f\n",
                live_ ? "\r\033[K" : "", segments_, s.start_s, s.end_s, s.end_s - s.start_s,
                s.mean_probability, s.peak_probability);
    std::fflush(stdout);
  }

  // One line, redrawn: time, probability bar, speech state, latency of the last output.
  void DrawStatus(const client::Output& out) {
    constexpr int kBar = 30;
    const int filled = int(std::lround(std::clamp(double(probability_), 0.0, 1.0) * kBar));
    const int mark = int(std::lround(segmenter_.options().threshold * kBar));
    std::string bar;
    for (int i = 0; i < kBar; ++i) bar += i < filled ? '#' : (i == mark ? '|' : '.');
    std::printf("\r\033[K%8.2f s  p(speech) %.2f [%s] %-7s server %6.1f ms  round trip %6.1f ms",
                double(frames_) / frame_rate_, probability_, bar.c_str(),
                segmenter_.in_speech() ? "SPEECH" : "", out.server_latency_ms,
                std::max(0.0, out.round_trip_ms));
    std::fflush(stdout);
  }

  const bool jsonl_, jsonl_frames_;
  const int speech_index_;
  client::SpeechSegmenter segmenter_;
  const bool live_;  // redraw a status line (stdout is a terminal, not --jsonl)
  const double frame_rate_;
  float probability_ = 0;
  int64_t frames_ = 0;
  size_t segments_ = 0;
  double speech_s_ = 0;
  std::vector<double> server_ms_, round_trip_ms_;
};

// What the capture loop did, and why it stopped.
struct Captured {
  int64_t captured_frames = 0;  // at the device's rate
  int64_t samples_sent = 0;     // at the model's rate
  Status audio, record, send;   // the first error of each kind
};

// Audio sent but not yet answered, at most: past it, capture waits for the server, so a server
// slower than real time loses audio (counted as input overflows) instead of lagging ever more.
constexpr double kMaxUnansweredMs = 1000;

// Captures chunks until --max-seconds, a stop signal or an error; records, resamples and sends
// them, in pieces of at most `max_chunk_samples` (the server's limit at the model's rate; 0: no
// limit): the resampler may return more than one chunk's worth at once. At the end sends the
// resampler's tail. The stream stays open (the caller half-closes).
Captured CaptureAndSend(const Args& args, client::AudioCapture& capture,
                        client::StreamResampler& resampler, client::WavRecorder* recorder,
                        client::Stream& stream, size_t max_chunk_samples) {
  const int rate = capture.sample_rate();
  const int64_t chunk_frames =
      std::max<int64_t>(1, std::llround(double(rate) * args.chunk_ms / 1000));
  const int64_t max_frames =
      args.max_seconds > 0 ? std::llround(args.max_seconds * rate) : INT64_MAX;
  std::vector<float> captured(static_cast<size_t>(chunk_frames)), resampled;
  const uint64_t max_unanswered = uint64_t(std::max(2.0, kMaxUnansweredMs / args.chunk_ms));
  Captured totals;
  auto send = [&] {
    const size_t piece = max_chunk_samples > 0 ? max_chunk_samples : resampled.size();
    for (size_t pos = 0; pos < resampled.size() && totals.send.ok(); pos += piece) {
      // The server answers every chunk of a Stream call; a stop signal ends the wait.
      for (;;) {
        const client::StreamStats stats = stream.stats();
        if (stats.chunks_sent - stats.chunks_answered < max_unanswered || stream.done() ||
            g_stop.load())
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      const size_t n = std::min(piece, resampled.size() - pos);
      totals.send = stream.SendSamples(resampled.data() + pos, n);
      totals.samples_sent += int64_t(n);
    }
    resampled.clear();
  };
  totals.audio = capture.Start();
  while (totals.audio.ok() && totals.send.ok() && !g_stop.load() &&
         totals.captured_frames < max_frames) {
    const size_t want = size_t(std::min(chunk_frames, max_frames - totals.captured_frames));
    auto got = capture.Read(captured.data(), want, g_stop);
    if (!got.ok()) {
      totals.audio = got.status();
      break;
    }
    totals.captured_frames += int64_t(*got);
    if (recorder != nullptr && totals.record.ok())
      totals.record = recorder->Write(captured.data(), *got);
    totals.audio = resampler.Process(captured.data(), *got, &resampled);
    send();
  }
  capture.Stop();
  if (Status s = resampler.Flush(&resampled); !s.ok() && totals.audio.ok()) totals.audio = s;
  send();
  return totals;
}

int Run(const Args& args) {
  auto audio = client::AudioSystem::Start(/*quiet=*/!args.audio_log);
  if (!audio.ok()) return Fail(kExitAudio, audio.status());
  if (args.list_devices) return ListDevices(**audio);

  // The device first: without one there is nothing to send.
  auto device = (*audio)->FindInputDevice(args.input_device);
  if (!device.ok()) return Fail(kExitAudio, device.status());
  auto capture = client::AudioCapture::Open(**audio, *device, {args.sample_rate});
  if (!capture.ok()) return Fail(kExitAudio, capture.status());
  const int device_rate = (*capture)->sample_rate();
  std::unique_ptr<client::WavRecorder> recorder;
  if (!args.record.empty()) {
    auto created = client::WavRecorder::Create(args.record, device_rate, (*capture)->exact_s16());
    if (!created.ok()) return Fail(kExitRecord, created.status());
    recorder = std::move(*created);
  }

  auto client = client::Client::Connect(args.server, args.connect);
  if (!client.ok()) return Fail(kExitServer, client.status());
  auto model = (*client)->GetModelInfo(args.model);
  if (!model.ok()) return Fail(kExitServer, model.status());
  if (model->frontend() != "log_mel")
    return Fail(kExitServer,
                InvalidArgumentError(fmt::format(
                    "model {} takes frames of {} values (frontend {}), not audio; ssm-mic needs "
                    "a log_mel model",
                    model->name(), model->d_in(), model->frontend())));
  auto speech_index = SpeechOutput(*model, args.speech_output);
  if (!speech_index.ok()) return Fail(kExitUsage, speech_index.status());
  client::SegmenterOptions segments = args.segments;
  segments.frame_rate = model->frame_rate() > 0 ? model->frame_rate() : 100;

  auto resampler = client::StreamResampler::Create(device_rate, model->sample_rate());
  if (!resampler.ok()) return Fail(kExitAudio, resampler.status());
  const bool lossless_s16 = device_rate == model->sample_rate() && (*capture)->exact_s16();
  auto format = client::ChoosePayloadFormat(args.format, /*audio_model=*/true, lossless_s16);
  if (!format.ok()) return Fail(kExitUsage, format.status());

  client::StreamOptions options;
  options.model = model->name();
  options.format = *format;
  options.sample_rate = model->sample_rate();
  options.label = args.label;
  options.idle_timeout_s = 30;
  options.resume = !args.no_resume;
  auto stream = (*client)->OpenStream(options);
  if (!stream.ok()) return Fail(kExitServer, stream.status().WithContext("opening the stream"));
  auto opened = (*stream)->WaitOpened();
  if (!opened.ok()) return Fail(kExitServer, opened.status());
  if (opened->max_chunk_ms() > 0 && uint32_t(args.chunk_ms) > opened->max_chunk_ms())
    return Fail(kExitUsage,
                InvalidArgumentError(fmt::format(
                    "--chunk-ms {} exceeds the server's limit of {} ms (it recommends "
                    "{} ms)",
                    args.chunk_ms, opened->max_chunk_ms(), opened->recommended_chunk_ms())));

  const std::string speech_name = *speech_index < model->labels_size()
                                      ? model->labels(*speech_index)
                                      : std::to_string(*speech_index);
  std::fprintf(stderr,
               "ssm-mic: capturing from %s \"%s\" (%s) at %d Hz, %d channel%s -> model %s at %d "
               "Hz (%s), speech = output %d \"%s\"; %s; %s\n",
               device->is_default ? "default input device" : "input device", device->name.c_str(),
               device->host_api.c_str(), device_rate, (*capture)->channels(),
               (*capture)->channels() == 1 ? "" : "s (averaged)", model->name().c_str(),
               model->sample_rate(), *format == pb::SAMPLE_FORMAT_PCM_S16LE ? "s16" : "f32",
               *speech_index, speech_name.c_str(), segments.ToString().c_str(),
               args.max_seconds > 0 ? fmt::format("stops after {} s", args.max_seconds).c_str()
                                    : "Ctrl-C stops");
  if (model->head_activation() == "none")
    std::fprintf(stderr,
                 "ssm-mic: note: model %s has no head activation: its outputs are not "
                 "probabilities, --threshold applies to the raw values\n",
                 model->name().c_str());

  OutputView view(args, segments, *speech_index);
  std::thread reader([&] {
    client::Output out;
    while ((*stream)->Next(&out)) view.Add(out);
  });

  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  const size_t max_chunk_samples =
      size_t(opened->max_chunk_ms()) * size_t(model->sample_rate()) / 1000;
  Captured totals =
      CaptureAndSend(args, **capture, **resampler, recorder.get(), **stream, max_chunk_samples);
  (*stream)->CloseSend();
  reader.join();
  Status stream_status = (*stream)->Close();
  if (stream_status.ok() && !totals.send.ok()) stream_status = totals.send;
  if (recorder && totals.record.ok()) totals.record = recorder->Close();
  view.Finish();

  // The summary.
  const client::StreamStats stats = (*stream)->stats();
  const int64_t expected = client::ExpectedFrames(*model, totals.samples_sent);
  const double audio_s = double(totals.captured_frames) / device_rate;
  const char* stopped_by = !totals.audio.ok() || !stream_status.ok() ? "error"
                           : g_stop.load()                           ? "signal"
                                                                     : "max-seconds";
  const client::LatencySummary server = view.server_ms(), round_trip = view.round_trip_ms();
  if (args.jsonl) {
    json summary = {{"type", "summary"},
                    {"audio_s", audio_s},
                    {"device", device->name},
                    {"device_rate", device_rate},
                    {"channels", (*capture)->channels()},
                    {"model", model->name()},
                    {"model_rate", model->sample_rate()},
                    {"speech_output", *speech_index},
                    {"samples_sent", totals.samples_sent},
                    {"chunks_sent", stats.chunks_sent},
                    {"frames", view.frames()},
                    {"segments", view.segments()},
                    {"speech_s", view.speech_s()},
                    {"server_latency_ms", LatencyJson(server)},
                    {"round_trip_ms", LatencyJson(round_trip)},
                    {"input_overflows", (*capture)->overflows()},
                    {"resumes", stats.resumes},
                    {"resume_attempts", stats.resume_attempts},
                    {"replayed_chunks", stats.replayed_chunks},
                    {"duplicate_frames", stats.duplicate_frames},
                    {"max_resume_ms", stats.max_resume_ms},
                    {"stopped_by", stopped_by}};
    if (recorder) summary["recorded_samples"] = recorder->samples_written();
    std::printf("%s\n", summary.dump().c_str());
  } else {
    std::printf(
        "ssm-mic: %.2f s of audio, %lld frames, %zu speech segments (%.2f s of speech); "
        "latency ms: server mean %.2f p99 %.2f, round trip mean %.2f p99 %.2f; input "
        "overflows %lld; resumes %llu (%llu attempts, max %.1f ms)\n",
        audio_s, (long long)view.frames(), view.segments(), view.speech_s(), server.mean,
        server.p99, round_trip.mean, round_trip.p99, (long long)(*capture)->overflows(),
        (unsigned long long)stats.resumes, (unsigned long long)stats.resume_attempts,
        stats.max_resume_ms);
  }
  std::fflush(stdout);
  if (recorder && totals.record.ok())
    std::fprintf(stderr, "ssm-mic: recorded %lld samples at %d Hz to %s\n",
                 (long long)recorder->samples_written(), device_rate, args.record.c_str());

  if (!stream_status.ok()) return Fail(kExitServer, stream_status.WithContext("stream failed"));
  if (stats.frame_errors > 0)
    return Fail(kExitServer,
                InternalError(fmt::format("{} responses had wrong frame indices; "
                                          "first: {}",
                                          stats.frame_errors, stats.first_frame_error)));
  if (view.frames() != expected)
    return Fail(kExitServer,
                InternalError(fmt::format("the server returned {} frames; {} "
                                          "expected for {} samples",
                                          view.frames(), expected, totals.samples_sent)));
  if (!totals.audio.ok()) return Fail(kExitAudio, totals.audio);
  if (!totals.record.ok()) return Fail(kExitRecord, totals.record);
  return kExitOk;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args args;
  CLI::App app{
      "Streams the microphone to ssm-server and shows the model's speech probability, the "
      "detected speech segments and the latency, live. Audio is captured (mono) at the device's "
      "rate and resampled to the model's. Ctrl-C stops: the last outputs are awaited and a "
      "summary printed.\n\n"
      "Exit codes: 0 stopped cleanly (Ctrl-C, SIGTERM, --max-seconds); 1 server unreachable, "
      "model unknown or not an audio model, or the stream failed; 2 bad command line; 3 no "
      "input device, the device cannot be opened (busy?) or stopped delivering audio; 4 the "
      "--record file cannot be written."};
  app.get_formatter()->column_width(34);
  ssm::tools::AddServerFlags(app, &args.server, &args.model, &args.format, &args.connect);
  // --server is not needed to list devices.
  app.get_option("--server")->required(false);
  app.add_flag("--list-devices", args.list_devices,
               "List the input devices (index, name, host API, input channels, default rate; * "
               "marks the default) and exit");
  app.add_option("--input-device", args.input_device,
                 "Input device: an index from --list-devices, or part of a name (default: the "
                 "default input device)");
  app.add_option("--sample-rate", args.sample_rate,
                 "Capture rate in Hz (default: the device's default rate)")
      ->check(CLI::PositiveNumber);
  app.add_option("--chunk-ms", args.chunk_ms, "Audio per chunk sent, milliseconds")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--speech-output", args.speech_output,
                 "Output holding the speech probability: a label or an index (default: the "
                 "label \"speech\", else the last output)");
  app.add_option("--threshold", args.segments.threshold,
                 "Speech probability at or above which a frame counts as speech")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--min-speech-ms", args.min_speech_ms,
                 "Speech shorter than this is ignored, milliseconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--min-silence-ms", args.min_silence_ms,
                 "Pauses shorter than this do not end a segment, milliseconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--record", args.record,
                 "Also save the captured audio (mono, device rate) to this WAV file");
  app.add_flag("--jsonl", args.jsonl,
               "Machine-readable output instead of the live view: one JSON line per speech "
               "segment ({\"type\":\"segment\",\"start_s\",\"end_s\",\"mean_probability\","
               "\"peak_probability\"}) and a final {\"type\":\"summary\",...} line");
  app.add_flag("--jsonl-frames", args.jsonl_frames,
               "With --jsonl, also one line per output frame: {\"type\":\"frame\",\"frame\","
               "\"time_s\",\"outputs\"}");
  app.add_option("--max-seconds", args.max_seconds,
                 "Stop after this many seconds of captured audio (default: run until Ctrl-C)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--label", args.label, "Label for the server's logs")->capture_default_str();
  app.add_flag("--no-resume", args.no_resume,
               "Do not resume the stream when its connection breaks; by default a broken call is "
               "continued on a new one (for up to 30 s): audio captured meanwhile is sent once "
               "the stream is back, within the 1 s that may wait for answers");
  app.add_flag("--audio-log", args.audio_log,
               "Show what the audio libraries (ALSA, JACK) print while probing devices");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? ssm::kExitOk : ssm::kExitUsage;  // --help is not an error
  }
  if (args.jsonl_frames && !args.jsonl) {
    std::fprintf(stderr, "ssm-mic: error: --jsonl-frames needs --jsonl\n");
    return ssm::kExitUsage;
  }
  if (!args.list_devices && args.server.empty()) {
    std::fprintf(stderr, "ssm-mic: error: --server HOST:PORT is required (or --list-devices)\n");
    return ssm::kExitUsage;
  }
  args.segments.min_speech_s = args.min_speech_ms / 1000;
  args.segments.min_silence_s = args.min_silence_ms / 1000;
  if (ssm::Status s = args.segments.Validate(); !s.ok())
    return ssm::Fail(ssm::kExitUsage, s.WithContext("speech segments"));
  return ssm::Run(args);
}
