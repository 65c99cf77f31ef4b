#include "server/service/call_reactor.h"

#include <fmt/format.h>
#include <grpc/grpc.h>

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

CallReactor::CallReactor(CallShared* shared, grpc::CallbackServerContext* context,
                         const Behaviour& behaviour)
    : shared_(shared), context_(context), behaviour_(behaviour), last_activity_(Clock::now()) {}

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
  if (finish_requested_ || input_ended_) return;
  if (!ok) {  // half-close, or the call is broken (OnCancel follows then)
    input_ended_ = true;
    if (model_ == nullptr) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the request stream ended before its `open` message"),
                   CloseReason::kError);
      return;
    }
    HandleInputEndLocked();
    MaybeCompleteLocked();
    return;
  }
  ++messages_read_;
  last_activity_ = Clock::now();
  if (draining_ && behaviour_.ends_on_drain) {
    // Input that arrives while draining is not processed; the final status says so.
    MaybeCompleteLocked();
    return;
  }
  Status status = ParseRequestLocked();
  if (status.ok()) status = HandleRequestLocked(request_);
  if (!status.ok()) {
    FailInputLocked(status);
    return;
  }
  MaybeReadLocked();
}

Status CallReactor::ParseRequestLocked() {
  const std::string which = messages_read_ == 1
                                ? std::string("the first request message (`open`)")
                                : fmt::format("request message #{}", messages_read_);
  const size_t bytes = read_buffer_.Length();
  if (bytes > shared_->max_request_bytes)
    return ResourceExhaustedError(fmt::format(
        "{} is {} bytes, more than the server's limit of {} bytes (set by --max-chunk-ms); "
        "send shorter chunks",
        which, bytes, shared_->max_request_bytes));
  request_.Clear();
  const grpc::Status parsed =
      grpc::SerializationTraits<pb::StreamRequest>::Deserialize(&read_buffer_, &request_);
  if (!parsed.ok())
    return InvalidArgumentError(fmt::format(
        "{} ({} bytes) could not be parsed as ssmserve.v1.StreamRequest (truncated or corrupt "
        "protobuf)",
        which, bytes));
  return OkStatus();
}

void CallReactor::FailInputLocked(const Status& status) {
  input_ended_ = true;
  input_error_ = status;
  HandleInputEndLocked();  // what was accepted is answered, held input (a file's tail) too
  MaybeCompleteLocked();
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
  SSM_ASSIGN_OR_RETURN(const ServedModel* model, shared_->models->Lookup(open.model()));
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
  QueueWriteLocked(response, false);
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
    FinishLocked(ToGrpcStatus(result.status.WithContext(fmt::format("chunk {}", meta.sequence))),
                 CloseReason::kError);
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
    QueueWriteLocked(response, true);
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

void CallReactor::QueueWriteLocked(const pb::StreamResponse& response, bool completes_chunk) {
  Write write{grpc::ByteBuffer(), completes_chunk};
  bool own_buffer = false;
  const grpc::Status serialized =
      grpc::SerializationTraits<pb::StreamResponse>::Serialize(response, &write.bytes, &own_buffer);
  SSM_CHECK_MSG(serialized.ok(),
                "cannot serialize a StreamResponse: " + serialized.error_message());
  writes_.push_back(std::move(write));
  if (!write_in_flight_) StartWriteLocked();
}

void CallReactor::StartWriteLocked() {
  write_in_flight_ = true;
  write_started_ = Clock::now();
  StartWrite(&writes_.front().bytes);
}

void CallReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  write_in_flight_ = false;
  if (writes_.front().completes_chunk) --in_flight_;
  writes_.pop_front();
  last_activity_ = Clock::now();
  if (!ok) {  // the call is broken: nothing more can be written
    DropQueuedWritesLocked();
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: the client is gone"),
                 CloseReason::kCancelled);
    return;
  }
  if (!writes_.empty()) {
    StartWriteLocked();
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
  cancelled_ = true;
  DropQueuedWritesLocked();
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"),
               CloseReason::kCancelled);
}

void CallReactor::OnDone() {
  shared_->calls->Remove(this);
  int stream;
  Scheduler* scheduler;
  StatusCode code;
  CloseReason reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = stream_;
    scheduler = scheduler_;
    // A cancel can follow a status already requested (the cancelled read looks like a
    // half-close): the call still ended by the client's doing.
    if (cancelled_ && finish_status_.ok()) {
      finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      close_reason_ = CloseReason::kCancelled;
    }
    reason = close_reason_;
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
    scheduler->Close(stream, [this, reason] {
      if (model_->metrics != nullptr) model_->metrics->StreamClosed(reason);
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
  StartRead(&read_buffer_);
}

void CallReactor::MaybeCompleteLocked() {
  if (finish_requested_ || in_flight_ > 0) return;
  if (input_ended_) {
    FinishLocked(ToGrpcStatus(input_error_),
                 input_error_.ok() ? CloseReason::kCompleted : CloseReason::kError);
  } else if (draining_ && behaviour_.ends_on_drain) {
    FinishLocked(
        grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            next_sequence_ == 0
                ? std::string("the server is shutting down; no chunk was received")
                : fmt::format(
                      "the server is shutting down; chunks up to sequence {} were answered, "
                      "later ones were not processed; continue on another server",
                      next_sequence_ - 1)),
        CloseReason::kDrained);
  }
}

// The first status requested wins. Finish itself waits for the write in flight; every caller
// comes here (or to MaybeFinishLocked) again once that write is done. A cancel that arrives
// while a write is in flight requests the status first, and the failed write's OnWriteDone
// comes back here: it must still reach Finish, or the call (and its slot) is never released.
void CallReactor::FinishLocked(const grpc::Status& status, CloseReason reason) {
  if (!finish_requested_) {
    finish_requested_ = true;
    finish_status_ = status;
    close_reason_ = reason;
  }
  MaybeFinishLocked();
}

void CallReactor::MaybeFinishLocked() {
  if (!finish_requested_ || finished_ || write_in_flight_ || !writes_.empty()) return;
  finished_ = true;
  Finish(finish_status_);
}

void CallReactor::CheckIdle(Clock::time_point now) {
  std::string stalled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    if (write_in_flight_ && Seconds(write_started_, now) > config().write_timeout_s) {
      if (cancel_sent_) return;
      // The client stopped reading: the write can never complete, and Finish waits for it.
      stalled = fmt::format(
          "the client took no response for {:g} s (--write-timeout): a stream must read its "
          "responses; the stream was closed",
          config().write_timeout_s);
      DropQueuedWritesLocked();
      // What the client is told (the cancel below) is what the metrics and the log record, even
      // when another status was already waiting for this write.
      finish_requested_ = false;
      FinishLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, stalled),
                   CloseReason::kWriteTimeout);
      cancel_sent_ = true;
    } else {
      if (finish_requested_ || in_flight_ > 0) return;
      const double idle_s = Seconds(last_activity_, now);
      if (idle_s <= config().idle_timeout_s) return;
      FinishLocked(
          grpc::Status(
              grpc::StatusCode::DEADLINE_EXCEEDED,
              fmt::format("no {} for {:g} s (--idle-timeout); the stream was closed",
                          model_ == nullptr ? "open message" : "chunk", config().idle_timeout_s)),
          CloseReason::kIdleTimeout);
      return;
    }
  }
  // Outside mu_: gRPC fails the stuck write (OnWriteDone(false), then OnCancel), and the status
  // still reaches the client (trailers are not held back by flow control).
  grpc_call_cancel_with_status(context_->c_call(), GRPC_STATUS_DEADLINE_EXCEEDED, stalled.c_str(),
                               nullptr);
}

void CallReactor::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  if (model_ == nullptr) {
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down; open the stream on another server"),
                 CloseReason::kDrained);
    return;
  }
  MaybeCompleteLocked();
}

}  // namespace ssm
