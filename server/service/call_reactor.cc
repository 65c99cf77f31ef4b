#include "server/service/call_reactor.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "server/service/log.h"

namespace ssm {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxLabelBytes = 128;

// Milliseconds between two time points, as a double.
double Millis(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

grpc::Status ToGrpcStatus(const Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

CallReactor::CallReactor(CallShared* shared, const Behaviour& behaviour)
    : shared_(shared), behaviour_(behaviour), last_activity_(Clock::now()) {}

void CallReactor::Start() {
  shared_->calls->Add(this);
  std::lock_guard<std::mutex> lock(mu_);
  MaybeReadLocked();
}

size_t CallReactor::values_per_frame() const {
  const ModelConfig& c = model_->model->config();
  return c.frontend.is_log_mel() ? size_t(c.frontend.hop_length) : size_t(c.d_in);
}

void CallReactor::OnReadDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  read_in_flight_ = false;
  if (finish_requested_) return;
  if (!ok) {  // half-close, or the call is broken (OnCancel follows then)
    input_ended_ = true;
    if (model_ == nullptr) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the request stream ended before its `open` message"));
      return;
    }
    HandleInputEndLocked();
    MaybeCompleteLocked();
    return;
  }
  last_activity_ = Clock::now();
  if (draining_ && behaviour_.ends_on_drain) {
    // Input that arrives while draining is not processed; the final status says so.
    MaybeCompleteLocked();
    return;
  }
  const Status status = HandleRequestLocked(request_);
  if (!status.ok()) {
    FinishLocked(ToGrpcStatus(status));
    return;
  }
  MaybeReadLocked();
}

Status CallReactor::HandleRequestLocked(const pb::StreamRequest& request) {
  if (model_ == nullptr) return HandleOpenLocked(request);
  if (request.has_open())
    return InvalidArgumentError(fmt::format(
        "a second `open` message on stream {}; one call carries one stream", stream_id_));
  if (!request.has_chunk())
    return InvalidArgumentError("a request with neither `open` nor `chunk`");
  const pb::StreamChunk& chunk = request.chunk();
  if (chunk.sequence() != next_sequence_)
    return InvalidArgumentError(fmt::format(
        "chunk sequence {} but expected {}: sequence numbers start at 0 and go up by 1 ({})",
        chunk.sequence(), next_sequence_,
        chunk.sequence() < next_sequence_ ? "repeated chunk" : "a chunk is missing"));
  std::vector<float> values;
  Status decoded = DecodePayload(format_, chunk.payload(), model_->model->config().d_in, &values);
  if (!decoded.ok()) return decoded.WithContext(fmt::format("chunk {}", chunk.sequence()));
  ++next_sequence_;
  return HandleChunkLocked(chunk.sequence(), std::move(values));
}

Status CallReactor::HandleOpenLocked(const pb::StreamRequest& request) {
  if (!request.has_open()) {
    if (request.has_chunk())
      return FailedPreconditionError(
          "chunk before open: the first request of a call must be `open`");
    return InvalidArgumentError("the first request of a call must be `open`");
  }
  const pb::StreamOpen& open = request.open();
  if (shared_->calls->draining())
    return UnavailableError("the server is shutting down; open the stream on another server");
  const ServedModel* model = shared_->models->Find(open.model());
  if (model == nullptr)
    return NotFoundError(fmt::format("unknown model \"{}\"; this server has: {}", open.model(),
                                     shared_->models->names()));
  if (open.label().size() > kMaxLabelBytes)
    return InvalidArgumentError(fmt::format("label of {} bytes; at most {} are allowed",
                                            open.label().size(), kMaxLabelBytes));
  if (!open.resume_token().empty())
    return NotFoundError(
        "resume token not found: this server does not support resuming streams yet; open a new "
        "stream without resume_token");
  const auto format = static_cast<PayloadFormat>(open.format());
  SSM_RETURN_IF_ERROR(CheckPayloadFormat(format, open.sample_rate(), model->model->config())
                          .WithContext(fmt::format("model \"{}\"", model->name)));
  auto stream = model->scheduler->Open(behaviour_.priority,
                                       [this](ChunkResult result) { OnResult(std::move(result)); });
  if (!stream.ok()) return stream.status().WithContext(fmt::format("model \"{}\"", model->name));

  model_ = model;
  scheduler_ = model->scheduler.get();
  stream_ = *stream;
  format_ = format;
  label_ = open.label();
  stream_id_ = fmt::format("{}-{}", model->name, shared_->next_stream_id.fetch_add(1));
  opened_at_ = Clock::now();
  if (model->metrics != nullptr) model->metrics->StreamOpened();

  pb::StreamResponse response;
  pb::StreamOpened* opened = response.mutable_opened();
  opened->set_stream_id(stream_id_);
  *opened->mutable_model() = shared_->model_infos.at(model->name);
  opened->set_max_chunk_ms(uint32_t(config().max_chunk_ms));
  // 100 ms: 10 frames per chunk at 100 frames/s batches well and keeps latency low.
  opened->set_recommended_chunk_ms(uint32_t(std::min(100, config().max_chunk_ms)));
  opened->set_next_sequence(0);
  QueueWriteLocked(std::move(response), false);
  return OkStatus();
}

void CallReactor::SubmitLocked(uint64_t sequence, std::vector<float> values) {
  chunks_.push_back({sequence, Clock::now()});
  ++in_flight_;
  scheduler_->Submit(stream_, std::move(values));
}

void CallReactor::OnResult(ChunkResult result) {
  std::lock_guard<std::mutex> lock(mu_);
  const ChunkMeta meta = chunks_.front();
  chunks_.pop_front();
  if (finish_requested_) {
    --in_flight_;
    return;
  }
  const Clock::time_point now = Clock::now();
  last_activity_ = now;
  if (!result.status.ok()) {
    --in_flight_;
    FinishLocked(ToGrpcStatus(result.status.WithContext(fmt::format("chunk {}", meta.sequence))));
    return;
  }
  if (result.frames == 0 && !behaviour_.write_empty_outputs) {
    --in_flight_;
  } else {
    pb::StreamResponse response;
    pb::StreamOutput* out = response.mutable_output();
    out->set_first_frame(result.first_frame);
    out->set_frames(result.frames);
    out->set_d_out(model_->engine->d_out());
    out->mutable_values()->Add(result.outputs.begin(), result.outputs.end());
    out->set_sequence(meta.sequence);
    out->set_server_latency_ms(Millis(meta.arrival, now));
    QueueWriteLocked(std::move(response), true);
  }
  RecordResultLocked(result, meta.arrival, now);
  MaybeCompleteLocked();
  MaybeReadLocked();
}

void CallReactor::RecordResultLocked(const ChunkResult& result, Clock::time_point arrival,
                                     Clock::time_point now) {
  ModelMetrics* m = model_->metrics;
  if (m == nullptr) return;  // metrics off
  if (behaviour_.priority != Priority::kRealTime) {
    m->offline_frames->Increment(result.frames);
    return;
  }
  // Lag: wall time since open minus the signal time covered by the outputs so far.
  const double signal_s =
      double(result.first_frame + result.frames) / model_->model->config().frame_rate();
  m->ChunkAnswered(Seconds(arrival, now), result.frames,
                   std::max(0.0, Seconds(opened_at_, now) - signal_s));
}

void CallReactor::QueueWriteLocked(pb::StreamResponse response, bool completes_chunk) {
  writes_.push_back({std::move(response), completes_chunk});
  if (!write_in_flight_) {
    write_in_flight_ = true;
    StartWrite(&writes_.front().response);
  }
}

void CallReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  write_in_flight_ = false;
  if (writes_.front().completes_chunk) --in_flight_;
  writes_.pop_front();
  last_activity_ = Clock::now();
  if (!ok) {  // the call is broken: nothing more can be written
    DropQueuedWritesLocked();
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: the client is gone"));
    return;
  }
  if (!writes_.empty()) {
    write_in_flight_ = true;
    StartWrite(&writes_.front().response);
    return;
  }
  MaybeCompleteLocked();
  MaybeFinishLocked();
  MaybeReadLocked();
}

void CallReactor::DropQueuedWritesLocked() {
  const size_t keep = write_in_flight_ ? 1 : 0;
  while (writes_.size() > keep) {
    if (writes_.back().completes_chunk) --in_flight_;
    writes_.pop_back();
  }
}

void CallReactor::OnCancel() {
  std::lock_guard<std::mutex> lock(mu_);
  DropQueuedWritesLocked();
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
}

void CallReactor::OnDone() {
  shared_->calls->Remove(this);
  int stream;
  Scheduler* scheduler;
  StatusCode code;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = stream_;
    scheduler = scheduler_;
    code = static_cast<StatusCode>(finish_status_.error_code());
    shared_->metrics->CountError(int(code));
    if (model_ != nullptr && model_->metrics != nullptr && code == StatusCode::kOk &&
        behaviour_.priority == Priority::kFile) {
      model_->metrics->offline_files->Increment();
      model_->metrics->offline_file_seconds->Observe(Seconds(opened_at_, Clock::now()));
    }
    if (!finish_status_.ok() && finish_status_.error_code() != grpc::StatusCode::CANCELLED)
      log::Warning("{} {}{}{} ended: {} {}", behaviour_.rpc, stream_id_.empty() ? "-" : stream_id_,
                   label_.empty() ? "" : " label=", label_, int(finish_status_.error_code()),
                   finish_status_.error_message());
  }
  // The slot is freed on the scheduler's worker, after any step still using it.
  if (stream >= 0) {
    scheduler->Close(stream, [this, code] {
      if (model_->metrics != nullptr) model_->metrics->StreamClosed(code);
      delete this;
    });
  } else {
    delete this;
  }
}

void CallReactor::MaybeReadLocked() {
  if (finish_requested_ || input_ended_ || read_in_flight_) return;
  if (draining_ && behaviour_.ends_on_drain) return;
  if (in_flight_ >= kMaxChunksInFlight) return;  // resumed when a chunk's output is written
  read_in_flight_ = true;
  StartRead(&request_);
}

void CallReactor::MaybeCompleteLocked() {
  if (finish_requested_ || in_flight_ > 0) return;
  if (input_ended_) {
    FinishLocked(grpc::Status::OK);
  } else if (draining_ && behaviour_.ends_on_drain) {
    FinishLocked(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        next_sequence_ == 0
            ? std::string("the server is shutting down; no chunk was received")
            : fmt::format("the server is shutting down; chunks up to sequence {} were answered, "
                          "later ones were not processed; continue on another server",
                          next_sequence_ - 1)));
  }
}

// The first status requested wins. Finish itself waits for the write in flight; every caller
// comes here (or to MaybeFinishLocked) again once that write is done. A cancel that arrives
// while a write is in flight requests the status first, and the failed write's OnWriteDone
// comes back here: it must still reach Finish, or the call (and its slot) is never released.
void CallReactor::FinishLocked(const grpc::Status& status) {
  if (!finish_requested_) {
    finish_requested_ = true;
    finish_status_ = status;
  }
  MaybeFinishLocked();
}

void CallReactor::MaybeFinishLocked() {
  if (!finish_requested_ || finished_ || write_in_flight_ || !writes_.empty()) return;
  finished_ = true;
  Finish(finish_status_);
}

void CallReactor::CheckIdle(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finish_requested_ || in_flight_ > 0) return;
  const double idle_s = Millis(last_activity_, now) / 1000.0;
  if (idle_s <= config().idle_timeout_s) return;
  FinishLocked(grpc::Status(
      grpc::StatusCode::DEADLINE_EXCEEDED,
      fmt::format("no {} for {:g} s (--idle-timeout); the stream was closed",
                  model_ == nullptr ? "open message" : "chunk", config().idle_timeout_s)));
}

void CallReactor::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  if (model_ == nullptr) {
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down; open the stream on another server"));
    return;
  }
  MaybeCompleteLocked();
}

}  // namespace ssm
