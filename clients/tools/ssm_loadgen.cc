// ssm-loadgen: N concurrent real-time-paced streams against ssm-server; prints throughput,
// latency percentiles, lag and errors. A few pacer threads drive all streams (outputs arrive on
// gRPC's threads), so thousands of streams need no thread each.
//
// --chaos-disconnect-s S interrupts every stream's call at random times, S seconds apart on
// average (Stream::Interrupt: the server parks the stream, the client library resumes it), except
// for one control stream in ten, which is never interrupted. Streams come in classes that send
// the same signal from the same offset, so each one's outputs must equal, frame for frame and
// bitwise, those of its class's control; the report counts resumes, their latency, frames lost
// or delivered twice, and the streams whose outputs differ (docs/design.md §7).
//
// --streams-per-call N carries N streams on each StreamMany call (client::StreamGroup), as a
// gateway does: every --flush-ms the chunks each call's streams have due go out in one message.
//
// --verify-offline DIR (the server's model directory) checks the outputs of up to
// --verify-streams streams against offline processing in this process: each one's input is
// rebuilt chunk by chunk as the server decoded it, run through the cpu engine, and its outputs
// must equal, bitwise, the ones the server streamed. With chaos, those are control streams, so
// every stream compared to them is checked against offline processing too.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <thread>

#include "clients/lib/client_input.h"
#include "clients/lib/latency_summary.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/ssm_client.h"
#include "clients/tools/tool_flags.h"
#include "server/engine/engine.h"
#include "server/model/model.h"

namespace ssm {
namespace {

namespace pb = ssmserve::v1;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string server, model, input, format = "auto";
  int streams = 1;
  double duration_s = 10, ramp_s = 0, drain_s = 10;
  client::ConnectOptions connect;
  int chunk_ms = 100;
  int threads = 0;
  std::string phases = "random";  // when in a chunk period each stream sends: random or even
  bool json = false;
  uint32_t seed = 1;
  double chaos_disconnect_s = 0;  // 0: no interruptions
  std::string verify_offline;     // model directory; "" = no offline check
  int verify_streams = 4;
  int streams_per_call = 1;  // > 1: StreamMany calls of this many streams
  double flush_ms = 10;      // with StreamMany: chunks are sent on this grid of times
};

// In chaos mode (and with --verify-offline), a prefix hash of a stream's outputs is kept every
// this many frames.
constexpr int64_t kHashEvery = 100;

// FNV-1a over the bytes of one output frame, continuing `hash`.
uint64_t HashFrame(uint64_t hash, const float* row, int d_out) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(row);
  for (size_t b = 0; b < size_t(d_out) * sizeof(float); ++b)
    hash = (hash ^ bytes[b]) * 1099511628211ull;
  return hash;
}

volatile std::sig_atomic_t g_interrupted = 0;  // Ctrl-C: stop early, still report

// The signal every stream loops over, each from its own offset.
struct Signal {
  std::vector<float> values;  // samples, or frames of values_per_row floats
  int64_t rows = 0;
  int values_per_row = 1;
  bool audio = false;  // samples for a log_mel model, else frames (a frame may be one value)
  bool fits_s16 = false;
};

// Noise plus three slowly modulated tones, 8 s, on the 16-bit grid (so s16 is lossless); or
// standard-normal frames for frame models.
Signal SyntheticSignal(const pb::ModelInfo& model, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Signal s;
  if (model.frontend() != "log_mel") {
    s.values_per_row = model.d_in();
    s.rows = 800;
    s.values.resize(size_t(s.rows) * s.values_per_row);
    for (float& v : s.values) v = normal(rng);
    return s;
  }
  const double rate = model.sample_rate();
  s.audio = true;
  s.rows = int64_t(8 * rate);
  s.values.resize(size_t(s.rows));
  const double tones_hz[] = {220.0, 1000.0, 2500.0};
  for (int64_t i = 0; i < s.rows; ++i) {
    const double t = double(i) / rate;
    double x = 0.02 * normal(rng);
    for (int k = 0; k < 3; ++k)
      x += 0.1 * (0.5 + 0.5 * std::sin(2 * M_PI * (0.3 + 0.2 * k) * t)) *
           std::sin(2 * M_PI * tones_hz[k] * t);
    s.values[size_t(i)] = float(std::nearbyint(std::clamp(x, -1.0, 0.99) * 32768.0) / 32768.0);
  }
  s.fits_s16 = true;
  return s;
}

constexpr uint64_t kHashSeed = 1469598103934665603ull;

// One simulated client.
struct StreamState {
  Clock::time_point start;  // when it opens; chunk k is due at start + (k + 1) · chunk
  int64_t offset = 0;       // first signal row it sends
  std::unique_ptr<client::Stream> stream;
  std::atomic<bool> opened{false};  // `stream` is set (the chaos thread reads it)
  int64_t sent = 0;                 // chunks sent
  bool stopped = false;             // a send failed: the call has ended
  Status send_error;                // why, when the call had not ended (refused locally)
  // Written by this stream's output callback only (gRPC runs one at a time), read after the end.
  std::vector<double> round_trip_ms;
  double max_lag_ms = 0;
  // Chaos mode: what the caller was handed, frame by frame.
  int64_t next_frame = 0;               // frames delivered in order
  int64_t lost_frames = 0;              // skipped (a gap in the frame indices)
  int64_t duplicated_frames = 0;        // delivered again (an index before next_frame)
  uint64_t hash = kHashSeed;            // FNV-1a of every output value so far
  std::vector<uint64_t> prefix_hashes;  // `hash` after frames kHashEvery, 2 kHashEvery, ...
  int64_t interruptions = 0;            // Interrupt() calls that hit a running call
  size_t control = 0;  // index of the stream with the same signal, never interrupted
  // With --streams-per-call > 1: stream `group_id` of the StreamMany call `group`, and what its
  // callbacks saw (written by them, one at a time per call; read after the call has ended).
  client::StreamGroup* group = nullptr;
  size_t group_index = 0;  // in groups_
  uint64_t group_id = 0;
  bool group_started = false;  // its `open` is queued
  bool group_opened = false;
  int64_t chunks_answered = 0, frames = 0, frame_errors = 0, expected_frame = 0;
  std::string first_frame_error;
  bool ended = false;
  Status end_status;
};

// A stream's counters, from its Stream or from its group's callbacks.
struct StreamCounts {
  int64_t chunks_sent = 0, chunks_answered = 0, frames = 0, frame_errors = 0;
  std::string first_frame_error;
};

class LoadGenerator {
 public:
  LoadGenerator(const Args& args, client::Client& client, pb::ModelInfo model, Signal signal,
                pb::SampleFormat format)
      : args_(args),
        client_(client),
        model_(std::move(model)),
        signal_(std::move(signal)),
        format_(format) {
    const double rows_per_s = signal_.audio ? double(model_.sample_rate())
                                            : (model_.frame_rate() > 0 ? model_.frame_rate() : 100);
    chunk_rows_ = std::max<int64_t>(1, std::llround(rows_per_s * args.chunk_ms / 1000.0));
    chunk_ = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(double(chunk_rows_) / rows_per_s));
  }

  nlohmann::ordered_json Run();

 private:
  void Pace(size_t pacer, size_t pacers);  // drives the streams of pacer `pacer` of `pacers`
  // Chaos mode: on stream's output callback, the frames in order, their hash, gaps, repeats.
  static void Record(StreamState* s, const client::Output& out);
  void Chaos();  // interrupts the streams that are not controls until the run ends
  nlohmann::ordered_json ChaosReport() const;
  // --verify-offline: the first streams' outputs against the engine's offline outputs.
  nlohmann::ordered_json OfflineReport() const;
  // The rows of chunk `k` of `s`, as sent (the signal from the stream's offset, looped).
  const float* ChunkRows(const StreamState& s, int64_t k, std::vector<float>& scratch) const;
  bool recording() const { return args_.chaos_disconnect_s > 0 || !args_.verify_offline.empty(); }
  void Open(StreamState& s);
  Status SendNext(StreamState& s, std::vector<float>& scratch);
  nlohmann::ordered_json Report(double elapsed_s);
  StreamCounts CountsOf(const StreamState& s) const;
  bool grouped() const { return args_.streams_per_call > 1; }
  // --streams-per-call: the StreamMany calls, each with its streams by group id.
  struct Group {
    explicit Group(size_t n) : members(n) {}
    std::unique_ptr<client::StreamGroup> call;
    std::vector<std::atomic<StreamState*>> members;  // by id, set before the `open` is flushed
    bool touched = false;                            // by its pacer: to flush
  };
  void StartGroups();
  void OnGroupOutput(StreamState* s, const client::Output& out);
  // The time stream chunks due at `t` go out: the next point of the --flush-ms grid.
  Clock::time_point SendTime(Clock::time_point t) const;
  std::deque<Group> groups_;

  const Args& args_;
  client::Client& client_;
  const pb::ModelInfo model_;
  const Signal signal_;
  const pb::SampleFormat format_;
  int64_t chunk_rows_ = 1;
  Clock::duration chunk_{};
  Clock::time_point start_, end_;
  std::deque<StreamState> streams_;        // not moved once the pacers and the chaos thread run
  std::map<std::string, int64_t> errors_;  // by gRPC code name
  int64_t streams_held_ = 0;
};

void LoadGenerator::StartGroups() {
  const size_t per_call = size_t(args_.streams_per_call);
  const size_t n = (size_t(args_.streams) + per_call - 1) / per_call;
  for (size_t g = 0; g < n; ++g) {
    Group& group = groups_.emplace_back(per_call);
    client::StreamGroupOptions options;
    options.auto_flush = false;  // the pacer flushes once per grid point
    options.on_opened = [&group](uint64_t id, const pb::StreamOpened&) {
      group.members[id].load()->group_opened = true;
    };
    options.on_output = [this, &group](uint64_t id, const client::Output& out) {
      OnGroupOutput(group.members[id].load(), out);
    };
    options.on_ended = [&group](uint64_t id, const Status& status) {
      StreamState* s = group.members[id].load();
      s->ended = true;
      s->end_status = status;
    };
    group.call = client_.StartStreamGroup(options);
  }
  for (size_t i = 0; i < streams_.size(); ++i) {
    streams_[i].group_index = i / per_call;
    streams_[i].group = groups_[i / per_call].call.get();
  }
}

void LoadGenerator::OnGroupOutput(StreamState* s, const client::Output& out) {
  if (recording()) Record(s, out);
  if (out.round_trip_ms >= 0) s->round_trip_ms.push_back(out.round_trip_ms);
  const Clock::time_point due = s->start + chunk_ * int64_t(out.sequence + 1);
  s->max_lag_ms = std::max(s->max_lag_ms,
                           std::chrono::duration<double, std::milli>(Clock::now() - due).count());
  if (out.first_frame != s->expected_frame || out.values.size() != size_t(out.frames) * out.d_out) {
    if (s->frame_errors++ == 0)
      s->first_frame_error = fmt::format("output of chunk {}: frames from {}, expected from {}",
                                         out.sequence, out.first_frame, s->expected_frame);
  }
  s->expected_frame = out.first_frame + out.frames;
  s->frames += out.frames;
  s->chunks_answered = std::max<int64_t>(s->chunks_answered, int64_t(out.sequence) + 1);
}

Clock::time_point LoadGenerator::SendTime(Clock::time_point t) const {
  if (!grouped() || args_.flush_ms <= 0) return t;
  const auto grid = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(args_.flush_ms));
  const int64_t k = (t - start_ + grid - Clock::duration(1)) / grid;  // rounded up
  return start_ + grid * std::max<int64_t>(k, 0);
}

StreamCounts LoadGenerator::CountsOf(const StreamState& s) const {
  StreamCounts c;
  if (s.stream) {
    const client::StreamStats stats = s.stream->stats();
    c.chunks_sent = int64_t(stats.chunks_sent);
    c.chunks_answered = int64_t(stats.chunks_answered);
    c.frames = stats.frames;
    c.frame_errors = stats.frame_errors;
    c.first_frame_error = stats.first_frame_error;
  } else if (s.group != nullptr) {
    c.chunks_sent = s.sent;
    c.chunks_answered = s.chunks_answered;
    c.frames = s.frames;
    c.frame_errors = s.frame_errors;
    c.first_frame_error = s.first_frame_error;
  }
  return c;
}

void LoadGenerator::Open(StreamState& s) {
  client::StreamOptions options;
  options.model = model_.name();
  options.format = format_;
  options.label = "ssm-loadgen";
  options.max_pending_chunks = 0;  // a pacer thread never blocks on one slow stream
  options.idle_timeout_s = args_.drain_s;
  StreamState* state = &s;
  const Clock::duration chunk = chunk_;
  const bool record = recording();
  options.resume = true;
  if (s.group != nullptr) {
    auto id = s.group->Open(options);
    if (!id.ok()) {
      s.stopped = true;
      s.send_error = id.status();
      return;
    }
    s.group_id = *id;
    s.group_started = true;
    Group& group = groups_[s.group_index];
    group.members[*id].store(&s);
    group.touched = true;
    return;
  }
  options.on_output = [state, chunk, record](const client::Output& out) {
    if (record) Record(state, out);
    if (out.round_trip_ms >= 0) state->round_trip_ms.push_back(out.round_trip_ms);
    const Clock::time_point due = state->start + chunk * int64_t(out.sequence + 1);
    state->max_lag_ms = std::max(
        state->max_lag_ms, std::chrono::duration<double, std::milli>(Clock::now() - due).count());
  };
  s.stream = client_.StartStream(options);
}

void LoadGenerator::Record(StreamState* s, const client::Output& out) {
  if (out.frames <= 0) return;
  int64_t skip = 0;
  if (out.first_frame < s->next_frame) {
    skip = std::min<int64_t>(out.frames, s->next_frame - out.first_frame);
    s->duplicated_frames += skip;
  } else if (out.first_frame > s->next_frame) {
    s->lost_frames += out.first_frame - s->next_frame;
    s->next_frame = out.first_frame;  // hashes after a gap no longer match: it is reported
  }
  for (int64_t f = skip; f < out.frames; ++f) {
    s->hash = HashFrame(s->hash, out.values.data() + f * out.d_out, out.d_out);
    if (++s->next_frame % kHashEvery == 0) s->prefix_hashes.push_back(s->hash);
  }
}

void LoadGenerator::Chaos() {
  std::mt19937_64 rng(args_.seed);
  std::exponential_distribution<double> gap(1.0 / args_.chaos_disconnect_s);
  using Event = std::pair<Clock::time_point, size_t>;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> due;
  auto after = [&](Clock::time_point t) {
    return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
  };
  for (size_t i = 0; i < streams_.size(); ++i)
    if (streams_[i].control != i) due.push({after(streams_[i].start), i});
  while (!due.empty() && !g_interrupted) {
    const auto [when, i] = due.top();
    if (when > end_) break;
    if (Clock::now() < when) {
      std::this_thread::sleep_until(std::min(when, Clock::now() + std::chrono::milliseconds(50)));
      continue;
    }
    due.pop();
    StreamState& s = streams_[i];
    if (s.opened.load() && s.stream->Interrupt()) ++s.interruptions;
    due.push({after(when), i});
  }
}

const float* LoadGenerator::ChunkRows(const StreamState& s, int64_t k,
                                      std::vector<float>& scratch) const {
  const int per_row = signal_.values_per_row;
  const int64_t row = (s.offset + k * chunk_rows_) % signal_.rows;
  if (row + chunk_rows_ <= signal_.rows) return signal_.values.data() + row * per_row;
  scratch.resize(size_t(chunk_rows_) * per_row);  // wraps around the loop's end
  for (int64_t r = 0; r < chunk_rows_; ++r)
    std::copy_n(signal_.values.data() + ((row + r) % signal_.rows) * per_row, per_row,
                scratch.data() + r * per_row);
  return scratch.data();
}

Status LoadGenerator::SendNext(StreamState& s, std::vector<float>& scratch) {
  const float* data = ChunkRows(s, s.sent, scratch);
  if (s.group != nullptr) {
    groups_[s.group_index].touched = true;
    return s.group->Send(s.group_id, data, size_t(chunk_rows_) * size_t(signal_.values_per_row));
  }
  return signal_.audio ? s.stream->SendSamples(data, size_t(chunk_rows_))
                       : s.stream->SendFrames(data, size_t(chunk_rows_));
}

void LoadGenerator::Pace(size_t pacer, size_t pacers) {
  using Event = std::pair<Clock::time_point, size_t>;  // when, stream index
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> due;
  // With StreamMany, each call's streams belong to one pacer, which flushes the call.
  const auto mine = [&](size_t i) {
    return (grouped() ? streams_[i].group_index : i) % pacers == pacer;
  };
  const auto flush = [&] {
    for (size_t g = pacer; g < groups_.size(); g += pacers)
      if (groups_[g].touched) {
        groups_[g].touched = false;
        groups_[g].call->Flush();
      }
  };
  for (size_t i = 0; i < streams_.size(); ++i)
    if (mine(i)) due.push({SendTime(streams_[i].start), i});
  std::vector<float> scratch;
  while (!due.empty() && !g_interrupted) {
    const auto [when, i] = due.top();
    if (when > end_) break;
    if (Clock::now() < when) {  // short naps, so Ctrl-C is noticed
      flush();                  // what is due now has been queued
      std::this_thread::sleep_until(std::min(when, Clock::now() + std::chrono::milliseconds(50)));
      continue;
    }
    due.pop();
    StreamState& s = streams_[i];
    if (!s.stream && !s.group_started) {
      Open(s);
      s.opened.store(true);
      if (s.stopped) continue;  // refused here (the group has ended)
    } else if (Status sent = SendNext(s, scratch); sent.ok()) {
      ++s.sent;
    } else {
      s.stopped = true;  // refused or failed; Close() reports why, or else send_error
      s.send_error = std::move(sent);
      continue;
    }
    due.push({SendTime(s.start + chunk_ * (s.sent + 1)), i});
  }
  flush();
}

nlohmann::ordered_json LoadGenerator::Run() {
  start_ = Clock::now();
  end_ = start_ + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(args_.duration_s));
  for (int i = 0; i < args_.streams; ++i) streams_.emplace_back();
  // Chaos mode: one class per ten streams; stream c of each class of streams c, c + classes, ...
  // (the first one) is its control.
  const size_t classes =
      args_.chaos_disconnect_s > 0 ? std::max<size_t>(1, streams_.size() / 10) : streams_.size();
  // Phases: evenly spaced starts put streams whose starts are a whole number of chunks apart in
  // step (with --ramp-s 2, 100 streams of 100 ms chunks send in 5 groups of 20, at once), which
  // batches far better than separate clients would; random phases spread them as those do.
  std::mt19937_64 phase_rng(args_.seed);
  std::uniform_real_distribution<double> phase(0.0, std::chrono::duration<double>(chunk_).count());
  for (size_t i = 0; i < streams_.size(); ++i) {
    double at = args_.streams > 1 ? args_.ramp_s * double(i) / double(args_.streams) : 0;
    if (args_.phases == "random") at += phase(phase_rng);
    streams_[i].start =
        start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at));
    const uint64_t signal_class = i % classes;
    streams_[i].offset =
        int64_t((signal_class * 7919 * uint64_t(chunk_rows_)) % uint64_t(signal_.rows));
    streams_[i].control = size_t(signal_class);
  }
  if (grouped()) StartGroups();
  const int threads = args_.threads > 0 ? args_.threads : std::min(args_.streams, 4);
  std::vector<std::thread> pacers;
  for (int t = 0; t < threads; ++t) pacers.emplace_back([this, t, threads] { Pace(t, threads); });
  std::thread chaos;
  if (args_.chaos_disconnect_s > 0) chaos = std::thread([this] { Chaos(); });
  for (std::thread& t : pacers) t.join();
  if (chaos.joinable()) chaos.join();

  // Drain: half-close everything, then wait; a watchdog cancels what is left after drain_s.
  for (StreamState& s : streams_) {
    if (s.stream) s.stream->CloseSend();
    if (s.group_started && !s.stopped) (void)s.group->CloseSend(s.group_id);  // ended: nothing
  }
  for (Group& group : groups_) group.call->Flush();
  std::mutex mu;
  std::condition_variable cv;
  bool drained = false;  // guarded by mu
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::duration<double>(args_.drain_s), [&] { return drained; }))
      for (StreamState& s : streams_)
        if (s.stream) s.stream->Cancel();
    for (Group& group : groups_) group.call->CancelAll();
  });
  for (Group& group : groups_) {
    const Status status = group.call->Close();  // each stream's end came first
    if (!status.ok())
      std::fprintf(stderr, "ssm-loadgen: StreamMany call failed: %s\n", status.ToString().c_str());
  }
  for (StreamState& s : streams_) {
    if (!s.stream && !s.group_started) {
      ++errors_["NOT_STARTED"];
      continue;
    }
    Status status = s.stream ? s.stream->Close() : s.end_status;
    if (status.ok()) status = s.send_error;  // the call went well, a chunk was refused here
    const bool opened = s.stream ? s.stream->WaitOpened().ok() : s.group_opened;
    if (status.ok() && opened) {
      ++streams_held_;
    } else {
      const std::string code = status.ok() ? "NOT_OPENED" : StatusCodeName(status.code());
      if (++errors_[code] == 1)  // the first failure of each kind, as an example
        std::fprintf(stderr, "ssm-loadgen: stream failed: %s\n", status.ToString().c_str());
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    drained = true;
  }
  cv.notify_all();
  watchdog.join();
  return Report(std::chrono::duration<double>(Clock::now() - start_).count());
}

nlohmann::ordered_json LoadGenerator::Report(double elapsed_s) {
  std::vector<double> latencies;
  int64_t chunks_sent = 0, chunks_answered = 0, frames = 0, frame_errors = 0;
  double max_lag_ms = 0;
  for (const StreamState& s : streams_) {
    latencies.insert(latencies.end(), s.round_trip_ms.begin(), s.round_trip_ms.end());
    max_lag_ms = std::max(max_lag_ms, s.max_lag_ms);
    const StreamCounts stats = CountsOf(s);
    chunks_sent += stats.chunks_sent;
    chunks_answered += stats.chunks_answered;
    frames += stats.frames;
    frame_errors += stats.frame_errors;
    if (stats.frame_errors > 0)
      std::fprintf(stderr, "ssm-loadgen: %s\n", stats.first_frame_error.c_str());
  }
  const client::LatencySummary lat = client::Summarize(std::move(latencies));
  const double window_s = std::min(elapsed_s, args_.duration_s);
  nlohmann::ordered_json report = {
      {"server", args_.server},
      {"model", model_.name()},
      {"chunk_ms", args_.chunk_ms},
      {"phases", args_.phases},
      {"streams_per_call", args_.streams_per_call},
      {"duration_s", args_.duration_s},
      {"elapsed_s", elapsed_s},
      {"streams_requested", args_.streams},
      {"streams_held", streams_held_},
      {"chunks_sent", chunks_sent},
      {"chunks_answered", chunks_answered},
      {"frames", frames},
      {"frames_per_s", window_s > 0 ? double(frames) / window_s : 0.0},
      {"latency_ms", {{"p50", lat.p50}, {"p90", lat.p90}, {"p99", lat.p99}, {"max", lat.max}}},
      {"max_lag_ms", max_lag_ms},
      {"errors", errors_},
      {"frame_errors", frame_errors},
      {"interrupted", bool(g_interrupted)}};
  if (args_.chaos_disconnect_s > 0) report["chaos"] = ChaosReport();
  if (!args_.verify_offline.empty()) report["offline"] = OfflineReport();
  return report;
}

nlohmann::ordered_json LoadGenerator::OfflineReport() const {
  auto model = Model::Load(args_.verify_offline);
  if (!model.ok()) return {{"error", model.status().ToString()}};
  EngineOptions options;
  options.backend = "cpu";
  options.max_streams = 1;
  auto engine = Engine::Create(*model, options);
  if (!engine.ok()) return {{"error", engine.status().ToString()}};
  int64_t verified = 0, frames = 0, skipped = 0;
  std::vector<size_t> differing;
  std::vector<float> scratch;
  for (size_t i = 0; i < streams_.size() && verified + skipped < args_.verify_streams; ++i) {
    const StreamState& s = streams_[i];
    if (s.control != i) continue;  // with chaos: controls only (the others equal theirs)
    const StreamCounts stats = CountsOf(s);
    if ((!s.stream && !s.group_started) || stats.chunks_answered != stats.chunks_sent ||
        s.lost_frames > 0) {
      ++skipped;  // not every output arrived: nothing to compare whole
      continue;
    }
    // The input as the server decoded it: each chunk through the wire format and back.
    std::vector<float> input;
    for (int64_t k = 0; k < s.sent; ++k) {
      const float* rows = ChunkRows(s, k, scratch);
      std::string payload;
      const size_t n = size_t(chunk_rows_) * size_t(signal_.values_per_row);
      auto decoded = client::EncodePayload(rows, n, format_, &payload).ok()
                         ? client::DecodePayload(payload, format_)
                         : StatusOr<std::vector<float>>(InternalError("encode failed"));
      if (!decoded.ok()) return {{"error", decoded.status().ToString()}};
      input.insert(input.end(), decoded->begin(), decoded->end());
    }
    SpanSource source(input.data(), input.size());
    // The recurrence (the default): bitwise what streaming computes, in any chunking.
    auto offline = (*engine)->RunOffline({&source}, OfflineOptions());
    if (!offline.ok()) return {{"error", offline.status().ToString()}};
    const int d_out = (*engine)->d_out();
    const std::vector<float>& outputs = (*offline)[0];
    const int64_t offline_frames = int64_t(outputs.size()) / d_out;
    uint64_t hash = kHashSeed;
    std::vector<uint64_t> prefix;
    for (int64_t f = 0; f < offline_frames; ++f) {
      hash = HashFrame(hash, outputs.data() + f * d_out, d_out);
      if ((f + 1) % kHashEvery == 0) prefix.push_back(hash);
    }
    ++verified;
    frames += offline_frames;
    if (offline_frames != s.next_frame || hash != s.hash || prefix != s.prefix_hashes)
      differing.push_back(i);
  }
  if (!differing.empty())
    std::fprintf(stderr,
                 "ssm-loadgen: %zu streams' outputs differ from offline processing "
                 "(first: stream %zu)\n",
                 differing.size(), differing.front());
  return {{"streams_verified", verified},
          {"streams_not_verified", skipped},
          {"frames_verified", frames},
          {"streams_differing", differing.size()}};
}

nlohmann::ordered_json LoadGenerator::ChaosReport() const {
  int64_t interruptions = 0, lost = 0, duplicated = 0, compared = 0, short_streams = 0;
  uint64_t resumes = 0, attempts = 0;
  double resume_ms_total = 0, resume_ms_max = 0;
  std::vector<size_t> differing;
  for (size_t i = 0; i < streams_.size(); ++i) {
    const StreamState& s = streams_[i];
    if (!s.stream) continue;
    const client::StreamStats stats = s.stream->stats();
    interruptions += s.interruptions;
    resumes += stats.resumes;
    attempts += stats.resume_attempts;
    resume_ms_total += stats.total_resume_ms;
    resume_ms_max = std::max(resume_ms_max, stats.max_resume_ms);
    lost += s.lost_frames;
    duplicated += s.duplicated_frames;
    // Every frame of a stream whose chunks were all answered was delivered.
    const int64_t expected =
        client::ExpectedFrames(model_, int64_t(stats.chunks_answered) * chunk_rows_);
    if (stats.chunks_answered == stats.chunks_sent && s.next_frame < expected)
      lost += expected - s.next_frame;
    if (s.control == i) continue;
    const StreamState& control = streams_[s.control];
    const size_t common = std::min(s.prefix_hashes.size(), control.prefix_hashes.size());
    if (common == 0) ++short_streams;
    compared += int64_t(common) * kHashEvery;
    if (!std::equal(s.prefix_hashes.begin(), s.prefix_hashes.begin() + ptrdiff_t(common),
                    control.prefix_hashes.begin()))
      differing.push_back(i);
  }
  if (!differing.empty())
    std::fprintf(stderr,
                 "ssm-loadgen: %zu streams' outputs differ from their control's (first: "
                 "stream %zu)\n",
                 differing.size(), differing.front());
  return {
      {"disconnect_every_s", args_.chaos_disconnect_s},
      {"interruptions", interruptions},
      {"resumes", resumes},
      {"resume_attempts", attempts},
      {"resume_ms",
       {{"mean", resumes > 0 ? resume_ms_total / double(resumes) : 0.0}, {"max", resume_ms_max}}},
      {"lost_frames", lost},
      {"duplicated_frames", duplicated},
      {"frames_compared", compared},
      {"streams_not_compared", short_streams},
      {"streams_differing", differing.size()}};
}

int Run(const Args& args) {
  auto client = client::Client::Connect(args.server, args.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "ssm-loadgen: error: %s\n", client.status().ToString().c_str());
    return 1;
  }
  auto model = (*client)->GetModelInfo(args.model);
  if (!model.ok()) {
    std::fprintf(stderr, "ssm-loadgen: error: %s\n", model.status().ToString().c_str());
    return 1;
  }
  Signal signal;
  if (args.input.empty()) {
    signal = SyntheticSignal(*model, args.seed);
  } else {
    auto input = client::ReadClientInput(args.input, *model);
    if (!input.ok() || input->rows == 0) {
      std::fprintf(
          stderr, "ssm-loadgen: error: %s\n",
          input.ok() ? (args.input + " is empty").c_str() : input.status().ToString().c_str());
      return 1;
    }
    signal.values_per_row = input->is_audio() ? 1 : model->d_in();
    signal.audio = input->is_audio();
    signal.rows = input->rows;
    signal.fits_s16 = input->fits_s16;
    signal.values = std::move(input->values);
  }
  auto format = client::ChoosePayloadFormat(
      args.format, signal.audio && model->frontend() == "log_mel", signal.fits_s16);
  if (!format.ok()) {
    std::fprintf(stderr, "ssm-loadgen: error: %s\n", format.status().message().c_str());
    return 1;
  }
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
  LoadGenerator generator(args, **client, *model, std::move(signal), *format);
  const nlohmann::ordered_json report = generator.Run();
  if (args.json) {
    std::printf("%s\n", report.dump().c_str());
  } else {
    std::printf("%s\n", report.dump(2).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args args;
  CLI::App app{
      "Load generator: N concurrent real-time-paced streams against ssm-server. Prints "
      "streams held, chunks, frames/s, latency percentiles (client send -> response), "
      "the largest lag behind real time, errors by gRPC code and frame-index errors. "
      "Exits 0 when the run completes, even if the server refused streams."};
  ssm::tools::AddServerFlags(app, &args.server, &args.model, &args.format, &args.connect);
  app.add_option("--streams", args.streams, "Concurrent streams")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--duration", args.duration_s, "Seconds of streaming (then drain and report)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--chunk-ms", args.chunk_ms, "Chunk length, milliseconds of signal")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--input", args.input,
                 "Signal to loop (audio or .npy frames); default: synthetic noise + tones")
      ->check(CLI::ExistingFile);
  app.add_option("--ramp-s", args.ramp_s, "Open the streams evenly over this many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--drain-s", args.drain_s,
                 "After --duration, wait at most this long for outstanding outputs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", args.threads, "Pacer threads (0: min(streams, 4))")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--phases", args.phases,
                 "When in a chunk period each stream sends: random (each stream starts at its "
                 "ramp time plus a random part of one chunk, from --seed, so streams send at "
                 "unrelated moments as separate clients do) or even (exactly at the ramp times, "
                 "--ramp-s/N apart: streams a whole number of chunks apart then send in step, "
                 "which the server batches better than it can real clients)")
      ->check(CLI::IsMember({"random", "even"}))
      ->capture_default_str();
  app.add_option("--seed", args.seed, "Seed of the synthetic signal and of the random phases")
      ->capture_default_str();
  app.add_option("--chaos-disconnect-s", args.chaos_disconnect_s,
                 "Interrupt each stream's call at random times, this many seconds apart on "
                 "average (it resumes); one stream in ten is a never-interrupted control whose "
                 "outputs the others' must equal; the report's \"chaos\" part says how it went "
                 "(0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--verify-offline", args.verify_offline,
                 "Model directory (the server's): check the outputs of --verify-streams streams "
                 "(controls, with chaos) bitwise against offline processing here; the report's "
                 "\"offline\" part says how it went")
      ->check(CLI::ExistingDirectory);
  app.add_option("--verify-streams", args.verify_streams, "Streams checked by --verify-offline")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--streams-per-call", args.streams_per_call,
                 "Carry this many streams on each StreamMany call, as a gateway does (1: one "
                 "Stream call per stream); not with --chaos-disconnect-s")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--flush-ms", args.flush_ms,
                 "With --streams-per-call > 1: chunks go out on a grid of this many milliseconds, "
                 "those of a call's streams due at one point in one message (the lag in the report "
                 "counts the wait; 0: at once, each flush as soon as it is due)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--json", args.json, "Print the report as one line of JSON");
  CLI11_PARSE(app, argc, argv);
  if (args.ramp_s >= args.duration_s) {
    std::fprintf(stderr, "ssm-loadgen: error: --ramp-s (%g) must be shorter than --duration (%g)\n",
                 args.ramp_s, args.duration_s);
    return 2;
  }
  if (args.streams_per_call > 1 && args.chaos_disconnect_s > 0) {
    std::fprintf(stderr,
                 "ssm-loadgen: error: --chaos-disconnect-s interrupts Stream calls, which resume; "
                 "it does not combine with --streams-per-call\n");
    return 2;
  }
  return ssm::Run(args);
}
