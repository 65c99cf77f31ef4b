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

CallReactor::CallReactor(CallShared* shared, std::unique_ptr<CallPort> port,
                         const Behaviour& behaviour)
    : shared_(shared),
      port_(std::move(port)),
      behaviour_(behaviour),
      last_activity_(Clock::now()) {}

void CallReactor::Start() {
  port_->Bind(this);  // here, not in the constructor: the subclass is constructed by now
  // Without keys everyone is anonymous: the call's metadata need not be read.
  auto identity = shared_->auth->Authenticate(shared_->auth->enabled() ? port_->Credentials()
                                                                       : CallerCredentials());
  shared_->calls->Add(this);
  std::lock_guard<std::mutex> lock(mu_);
  if (!identity.ok()) {  // nothing is read from a caller who is not known
    input_ended_ = true;
    FinishLocked(ToGrpcStatus(identity.status()), CloseReason::kError);
    return;
  }
  identity_ = std::move(*identity);
  identity_generation_ = identity_->generation();
  MaybeReadLocked();
}

size_t CallReactor::values_per_frame() const {
  const ModelConfig& c = live_.model->model->config();
  return c.frontend.is_log_mel() ? size_t(c.frontend.hop_length) : size_t(c.d_in);
}

void CallReactor::OnReadDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  read_in_flight_ = false;
  if (finish_requested_ || input_ended_) return;
  if (!ok) {  // half-close, or the call is broken (OnCancel follows then)
    input_ended_ = true;
    if (live_.model == nullptr) {
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
  // Formatted only for an error, not for every message on the hot path.
  const auto which = [this] {
    return messages_read_ == 1 ? std::string("the first request message (`open`)")
                               : fmt::format("request message #{}", messages_read_);
  };
  const size_t bytes = read_buffer_.Length();
  if (bytes > shared_->max_request_bytes)
    return ResourceExhaustedError(fmt::format(
        "{} is {} bytes, more than the server's limit of {} bytes (set by --max-chunk-ms); "
        "send shorter chunks",
        which(), bytes, shared_->max_request_bytes));
  request_.Clear();
  const grpc::Status parsed =
      grpc::SerializationTraits<pb::StreamRequest>::Deserialize(&read_buffer_, &request_);
  if (!parsed.ok())
    return InvalidArgumentError(fmt::format(
        "{} ({} bytes) could not be parsed as ssmserve.v1.StreamRequest (truncated or corrupt "
        "protobuf)",
        which(), bytes));
  return OkStatus();
}

void CallReactor::FailInputLocked(const Status& status) {
  input_ended_ = true;
  input_error_ = status;
  HandleInputEndLocked();  // what was accepted is answered, held input (a file's tail) too
  MaybeCompleteLocked();
}

Status CallReactor::HandleRequestLocked(const pb::StreamRequest& request) {
  if (live_.model == nullptr) return HandleOpenLocked(request);
  if (request.has_open())
    return InvalidArgumentError(
        fmt::format("a second `open` message on stream {}; one call carries one stream", live_.id));
  if (live_.alias_pending) {  // a message after `opened`: the client has the new token
    shared_->parked->Confirm(live_.presented_hash);
    live_.alias_pending = false;
  }
  if (!request.has_chunk())
    return InvalidArgumentError("a request with neither `open` nor `chunk`");
  const pb::StreamChunk& chunk = request.chunk();
  if (chunk.sequence() != live_.next_sequence)
    return InvalidArgumentError(fmt::format(
        "chunk sequence {} but expected {}: sequence numbers start at 0 and go up by 1 ({})",
        chunk.sequence(), live_.next_sequence,
        chunk.sequence() < live_.next_sequence ? "repeated chunk" : "a chunk is missing"));
  std::vector<float> values;
  Status decoded =
      DecodePayload(live_.format, chunk.payload(), live_.model->model->config().d_in, &values);
  if (!decoded.ok()) return decoded.WithContext(fmt::format("chunk {}", chunk.sequence()));
  ++live_.next_sequence;
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
  if (open.label().size() > kMaxLabelBytes)
    return InvalidArgumentError(fmt::format("label of {} bytes; at most {} are allowed",
                                            open.label().size(), kMaxLabelBytes));
  const auto format = static_cast<PayloadFormat>(open.format());
  if (!open.resume_token().empty()) return ResumeLocked(open, format);
  if (open.resume_from_frame() != 0)
    return InvalidArgumentError("resume_from_frame without resume_token");
  SSM_ASSIGN_OR_RETURN(const ServedModel* model, shared_->models->Lookup(open.model()));
  SSM_ASSIGN_OR_RETURN(lease_, shared_->auth->Admit(identity_, model->name, /*resume=*/false));
  SSM_RETURN_IF_ERROR(CheckPayloadFormat(format, open.sample_rate(), model->model->config())
                          .WithContext(fmt::format("model \"{}\"", model->name)));
  auto stream = model->scheduler->Open(behaviour_.priority,
                                       [this](ChunkResult result) { OnResult(std::move(result)); });
  if (!stream.ok()) return stream.status().WithContext(fmt::format("model \"{}\"", model->name));
  OpenedLocked(model, *stream, format, open.label(), nullptr, 0);
  return OkStatus();
}

Status CallReactor::ResumeLocked(const pb::StreamOpen& open, PayloadFormat format) {
  resume_attempt_ = true;
  if (!behaviour_.resumable)
    return InvalidArgumentError(fmt::format(
        "resume_token: {} calls cannot be resumed; only Stream calls can", behaviour_.rpc));
  if (!shared_->parked->enabled())
    return RefuseResume(
        ResumeFailure::kDisabled,
        NotFoundError("resume token not found: this server does not keep broken streams "
                      "(--resume-ttl 0); open a new stream"));
  constexpr size_t kMaxTokenBytes = 256;
  if (open.resume_token().size() > kMaxTokenBytes)
    return RefuseResume(
        ResumeFailure::kUnknownToken,
        InvalidArgumentError(
            fmt::format("resume_token of {} bytes; the server's tokens are shorter than {} bytes",
                        open.resume_token().size(), kMaxTokenBytes)));
  Digest hash{}, entry_hash{};
  ResumeFailure failure = ResumeFailure::kUnknownToken;
  auto taken = shared_->parked->Take(open.resume_token(), owner(), &hash, &failure, &entry_hash);
  if (!taken.ok() && failure == ResumeFailure::kUnknownToken && shared_->store != nullptr) {
    // Not parked here: another replica may have handed it off or checkpointed it.
    if (!shared_->parked->BeginLookup(hash))
      return RefuseResume(
          ResumeFailure::kAttached,
          UnavailableError("a resume of this stream is in progress on another call; "
                           "retry the resume in a moment"));
    pending_open_ = open;
    store_lookup_ = true;
    ++pending_async_;
    shared_->store->Take(
        hash, [this, hash](StatusOr<std::string> bytes) { OnStoreTake(hash, std::move(bytes)); });
    return OkStatus();
  }
  if (!taken.ok()) {
    // Machine-readable for a client that lost only the final OK of its stream.
    if (failure == ResumeFailure::kCompleted)
      port_->AddTrailingMetadata("ssm-stream-ended", "completed");
    return RefuseResume(failure, taken.status());
  }
  if (shared_->store != nullptr) {  // older checkpoints, under this token or its successor's
    shared_->store->Delete(hash);
    if (!DigestsEqual(entry_hash, hash)) shared_->store->Delete(entry_hash);
  }
  return ContinueResumeLocked(open, hash, std::move(*taken), /*from_store=*/false);
}

void CallReactor::OnStoreTake(const Digest& hash, StatusOr<std::string> bytes) {
  bool last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    store_lookup_ = false;
    if (finish_requested_) {
      // The client is gone meanwhile: keep the stream for its next attempt (queued before the
      // lookup ends, so that a later attempt's GETDEL comes after this put).
      if (bytes.ok()) {
        ++pending_async_;
        shared_->store->Put(hash, std::move(*bytes), shared_->parked->options().ttl_s,
                            [this](Status) { AsyncDone(); });
      }
      shared_->parked->EndLookup(hash);
    } else if (bytes.ok()) {
      shared_->parked->EndLookup(hash);
      ContinueOrFailLocked(hash, {"", std::move(*bytes), ""}, /*from_store=*/true);
    } else {
      shared_->parked->EndLookup(hash);
      // Parked here meanwhile (its old call ended while this lookup ran)?
      Digest local_hash;
      ResumeFailure failure = ResumeFailure::kUnknownToken;
      auto local =
          shared_->parked->Take(pending_open_.resume_token(), owner(), &local_hash, &failure);
      if (local.ok()) {
        ContinueOrFailLocked(local_hash, std::move(*local), /*from_store=*/false);
      } else if (failure != ResumeFailure::kUnknownToken) {  // known here after all: its answer
        FailInputLocked(RefuseResume(failure, local.status()));
      } else if (bytes.status().code() == StatusCode::kNotFound) {
        FailInputLocked(RefuseResume(
            ResumeFailure::kUnknownToken,
            NotFoundError("resume token not found: no stream was parked, handed off or "
                          "checkpointed with it on this server or in its state store (or it "
                          "expired); open a new stream")));
      } else {
        FailInputLocked(RefuseResume(
            ResumeFailure::kStore,
            UnavailableError(fmt::format("{}; the stream may still be there: retry the resume",
                                         bytes.status().message()))));
      }
    }
    last = --pending_async_ == 0 && done_;
  }
  if (last) CompleteDone();
}

void CallReactor::ContinueOrFailLocked(const Digest& hash, ParkedStream parked, bool from_store) {
  const Status resumed = ContinueResumeLocked(pending_open_, hash, std::move(parked), from_store);
  if (resumed.ok()) {
    MaybeReadLocked();
  } else {
    FailInputLocked(resumed);
  }
}

Status CallReactor::RefuseResume(ResumeFailure failure, const Status& status) const {
  if (ResumeMetrics* metrics = shared_->metrics->resume())
    metrics->failures[size_t(failure)]->Increment();
  if (failure == ResumeFailure::kOtherIdentity)
    shared_->auth->CountRefusal(AuthRefusal::kOtherIdentity);
  const bool nothing_of_yours =
      failure == ResumeFailure::kOtherIdentity ||
      (failure == ResumeFailure::kUnknownToken && status.code() == StatusCode::kNotFound);
  if (shared_->auth->enabled() && nothing_of_yours)
    return PermissionDeniedError(fmt::format(
        "resume refused: the token names no stream of API key \"{}\" (a token resumes only a "
        "stream its own key opened); open a new stream",
        owner()));
  return status;
}

Status CallReactor::ContinueResumeLocked(const pb::StreamOpen& open, const Digest& hash,
                                         ParkedStream parked, bool from_store) {
  ResumeMetrics* metrics = shared_->metrics->resume();
  const PayloadFormat format = static_cast<PayloadFormat>(open.format());
  auto snapshot = DecodeSnapshot(parked.snapshot);
  if (!snapshot.ok())
    return RefuseResume(ResumeFailure::kCorrupt,
                        snapshot.status().WithContext("the parked stream's snapshot"));
  // A parked stream names its model; one from the store is matched by its fingerprint.
  const ServedModel* model = nullptr;
  for (const auto& m : shared_->models->models())
    if (parked.model.empty() ? DigestsEqual(m->model->fingerprint(), snapshot->model_fingerprint)
                             : m->name == parked.model)
      model = m.get();
  if (model == nullptr && from_store) {  // back to the store, for a replica that has the model
    ++pending_async_;
    shared_->store->Put(hash, std::move(parked.snapshot), shared_->parked->options().ttl_s,
                        [this](Status) { AsyncDone(); });
  }
  if (snapshot->owner != owner()) {  // only from the store: Take checked parked streams
    if (from_store) {
      ++pending_async_;
      shared_->store->Put(hash, std::move(parked.snapshot), shared_->parked->options().ttl_s,
                          [this](Status) { AsyncDone(); });
    }
    return RefuseResume(ResumeFailure::kOtherIdentity,
                        PermissionDeniedError("resume token of another identity"));
  }
  if (model == nullptr)
    return RefuseResume(
        ResumeFailure::kOtherModel,
        FailedPreconditionError(
            fmt::format("the stream's model (fingerprint {}) is not served here; this server has "
                        "{}",
                        Hex(snapshot->model_fingerprint, 16), ModelFingerprints())));
  parked.model = model->name;
  // A refusal the client can act on keeps the stream (here, or in the store where it was).
  auto keep = [&]() {
    if (from_store) {  // back where any replica finds it
      ++pending_async_;
      shared_->store->Put(hash, std::move(parked.snapshot), shared_->parked->options().ttl_s,
                          [this](Status) { AsyncDone(); });
    } else {
      shared_->parked->PutBack(hash, std::move(parked));
    }
  };
  auto put_back = [&](ResumeFailure why, const Status& status) {
    const std::string model_name = parked.model;
    keep();
    return RefuseResume(why, status.WithContext(fmt::format(
                                 "resume of a stream of model \"{}\" (still parked)", model_name)));
  };

  if (!open.model().empty() && open.model() != parked.model)
    return put_back(ResumeFailure::kOtherModel,
                    FailedPreconditionError(fmt::format(
                        "the token names a stream of model \"{}\", but `open` asks for model "
                        "\"{}\"; resume with model \"{}\" or an empty one",
                        parked.model, log::Printable(open.model()), parked.model)));
  const int64_t next_frame = snapshot->frontend.frames;
  const int64_t from = open.resume_from_frame();
  // A checkpoint from the store may be older than what the client holds: it drops those frames.
  if (from < 0 || (from > next_frame && !from_store))
    return put_back(ResumeFailure::kFrames,
                    InvalidArgumentError(fmt::format(
                        "resume_from_frame {}: the stream has produced {} frames, so expected 0 "
                        "to {}",
                        from, next_frame, next_frame)));
  if (from < snapshot->held_first_frame)
    return put_back(
        ResumeFailure::kFrames,
        Status(
            StatusCode::kOutOfRange,
            fmt::format("resume_from_frame {}: the server holds the stream's outputs from "
                        "frame {} on (about the latest 64 KiB), so frames {} to {} cannot be "
                        "sent again",
                        from, snapshot->held_first_frame, from, snapshot->held_first_frame - 1)));
  Status format_ok = CheckPayloadFormat(format, open.sample_rate(), model->model->config());
  if (!format_ok.ok()) {
    keep();
    return format_ok.WithContext(
        fmt::format("model \"{}\" (the stream is still parked)", model->name));
  }
  auto lease = shared_->auth->Admit(identity_, model->name, /*resume=*/true);
  if (!lease.ok()) {
    keep();
    return lease.status().WithContext("resume (the stream is still parked)");
  }
  lease_ = std::move(*lease);
  auto stream = model->scheduler->OpenRestored(
      behaviour_.priority, [this](ChunkResult result) { OnResult(std::move(result)); }, *snapshot);
  if (!stream.ok()) {
    if (stream.status().code() == StatusCode::kResourceExhausted)  // clients retry UNAVAILABLE
      return put_back(ResumeFailure::kNoSlot,
                      UnavailableError(stream.status().message() + "; retry the resume"));
    return RefuseResume(ResumeFailure::kCorrupt, stream.status().WithContext("the parked stream"));
  }
  live_.applied = live_.next_sequence = snapshot->next_sequence;
  live_.held.Reset(snapshot->held_first_frame, snapshot->held_outputs, snapshot->d_out);
  OpenedLocked(model, *stream, format, open.label(), &*snapshot, std::min(from, next_frame));
  if (live_.has_token) {  // the presented token names the stream until the client has the new one
    shared_->parked->Alias(hash, live_.token_hash);
    live_.presented_hash = hash;
    live_.alias_pending = true;
  }
  if (metrics != nullptr) (from_store ? metrics->resumes_store : metrics->resumes)->Increment();
  return OkStatus();
}

std::string CallReactor::ModelFingerprints() const {
  std::string list;
  for (const auto& m : shared_->models->models())
    list += fmt::format("{}\"{}\" ({})", list.empty() ? "" : ", ", m->name,
                        Hex(m->model->fingerprint(), 16));
  return list;
}

void CallReactor::OpenedLocked(const ServedModel* model, int stream, PayloadFormat format,
                               const std::string& label, const StreamSnapshot* resumed,
                               int64_t resume_from_frame) {
  live_.model = model;
  live_.scheduler = model->scheduler.get();
  live_.slot = stream;
  live_.format = format;
  live_.label = label;
  live_.id = fmt::format("{}-{}", model->name, shared_->next_stream_id.fetch_add(1));
  opened_at_ = Clock::now();
  live_.frames_at_open = resumed != nullptr ? resumed->frontend.frames : 0;
  live_.frames_done = live_.checkpoint_frame = live_.frames_at_open;
  if (model->metrics != nullptr) model->metrics->StreamOpened();

  std::string token;
  if (behaviour_.resumable && shared_->parked->enabled()) {
    canceller_ = port_->MakeCanceller();
    auto issued = shared_->parked->Issue(canceller_, owner(), &live_.token_hash);
    if (issued.ok()) {
      token = *issued;
      live_.token = std::move(*issued);
      live_.has_token = true;
    } else {
      log::Warning("{} {}: no resume token: {}", behaviour_.rpc, live_.id,
                   issued.status().message());
    }
  }
  if (resumed != nullptr)
    log::Info("{} {}{} resumed a parked stream at chunk {}, frame {}{}{}", behaviour_.rpc, live_.id,
              identity_->LogTag(), resumed->next_sequence, resumed->frontend.frames,
              live_.label.empty() ? "" : " label=", log::Printable(live_.label));

  pb::StreamResponse response;
  pb::StreamOpened* opened = response.mutable_opened();
  opened->set_stream_id(live_.id);
  *opened->mutable_model() = shared_->model_infos.at(model->name);
  opened->set_max_chunk_ms(uint32_t(config().max_chunk_ms));
  // 100 ms: 10 frames per chunk at 100 frames/s batches well and keeps latency low.
  opened->set_recommended_chunk_ms(uint32_t(std::min(100, config().max_chunk_ms)));
  opened->set_resume_token(token);
  opened->set_next_sequence(live_.next_sequence);
  opened->set_resumed(resumed != nullptr);
  opened->set_next_frame(live_.frames_at_open);
  if (shared_->store != nullptr && live_.has_token)
    opened->set_checkpoint_interval_ms(uint32_t(config().checkpoint_interval_s * 1000.0));
  QueueWriteLocked(response, false);
  if (resumed == nullptr || resume_from_frame >= resumed->frontend.frames) return;

  // The outputs the client may have missed, from the held ones.
  const int d_out = resumed->d_out;
  const size_t skip = size_t(resume_from_frame - resumed->held_first_frame) * size_t(d_out);
  pb::StreamResponse replay;
  pb::StreamOutput* out = replay.mutable_output();
  out->set_first_frame(resume_from_frame);
  out->set_frames(int32_t(resumed->frontend.frames - resume_from_frame));
  out->set_d_out(d_out);
  out->mutable_values()->Add(resumed->held_outputs.begin() + skip, resumed->held_outputs.end());
  out->set_sequence(resumed->next_sequence > 0 ? resumed->next_sequence - 1 : 0);
  out->set_server_latency_ms(0);
  QueueWriteLocked(replay, false);
}

void CallReactor::SubmitLocked(uint64_t sequence, std::vector<float> values) {
  chunks_.push_back({sequence, Clock::now()});
  ++in_flight_;
  live_.scheduler->Submit(live_.slot, std::move(values));
}

void CallReactor::OnResult(ChunkResult result) {
  std::lock_guard<std::mutex> lock(mu_);
  const ChunkMeta meta = chunks_.front();
  chunks_.pop_front();
  if (finish_requested_) {
    --in_flight_;
    if (result.status.ok()) HoldLocked(meta.sequence, result);  // for a park
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
    out->set_d_out(live_.model->engine->d_out());
    out->mutable_values()->Add(result.outputs.begin(), result.outputs.end());
    out->set_sequence(meta.sequence);
    out->set_server_latency_ms(Millis(meta.arrival, now));
    out->set_checkpointed_sequence(live_.checkpointed);
    QueueWriteLocked(response, true);
  }
  RecordResultLocked(result, meta.arrival, now);
  HoldLocked(meta.sequence, result);
  MaybeCheckpointLocked();
  MaybeCompleteLocked();
  MaybeReadLocked();
}

void CallReactor::HoldLocked(uint64_t sequence, const ChunkResult& result) {
  if (!live_.has_token) return;
  live_.Applied(sequence, result.first_frame, result.frames, result.outputs);
}

void CallReactor::RecordResultLocked(const ChunkResult& result, Clock::time_point arrival,
                                     Clock::time_point now) {
  ModelMetrics* m = live_.model->metrics;
  if (m == nullptr) return;  // metrics off
  if (behaviour_.priority != Priority::kRealTime) {
    m->offline_frames->Increment(result.frames);
    return;
  }
  // Lag: wall time since open minus the signal time covered by the outputs so far.
  const double signal_s = double(result.first_frame + result.frames - live_.frames_at_open) /
                          live_.model->model->config().frame_rate();
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
  port_->StartWrite(&writes_.front().bytes);
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
  std::shared_ptr<CallCanceller> canceller;
  {
    std::lock_guard<std::mutex> lock(mu_);
    canceller = canceller_;
  }
  if (canceller != nullptr) canceller->Detach();  // without mu_: a Cancel may hold it
  shared_->calls->Remove(this);
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    if (pending_async_ > 0) return;  // the last of them completes it (AsyncDone)
  }
  CompleteDone();
}

void CallReactor::AsyncDone() {
  bool last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last = --pending_async_ == 0 && done_;
  }
  if (last) CompleteDone();
}

void CallReactor::CompleteDone() {
  int stream;
  Scheduler* scheduler;
  StatusCode code;
  CloseReason reason;
  bool park = false;
  std::string ended;  // why the stream ended for good, for a later resume's refusal
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = live_.slot;
    scheduler = live_.scheduler;
    lease_.Release();  // the key's stream limit counts open calls, not parked streams
    // A cancel can follow a status already requested (the cancelled read looks like a
    // half-close): the call still ended by the client's doing.
    if (cancelled_ && finish_status_.ok()) {
      finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      close_reason_ = CloseReason::kCancelled;
    }
    reason = close_reason_;
    code = static_cast<StatusCode>(finish_status_.error_code());
    park = ParksLocked(reason);
    if (reason == CloseReason::kCompleted) ended = "it completed";  // TokenFate::kCompleted
    if (reason == CloseReason::kDrained) ended = "the server shut down";
    if (reason == CloseReason::kError)
      ended = fmt::format("it failed with {}", StatusCodeName(code));
    shared_->metrics->CountError(int(code));
    if (live_.model != nullptr && live_.model->metrics != nullptr && code == StatusCode::kOk &&
        behaviour_.priority == Priority::kFile) {
      live_.model->metrics->offline_files->Increment();
      live_.model->metrics->offline_file_seconds->Observe(Seconds(opened_at_, Clock::now()));
    }
    // A resume refused with UNAVAILABLE (still attached, the store unreadable) is retried by
    // the client at once; it is counted (ssm_resume_failures_total), not logged each time.
    const bool retried_resume = live_.model == nullptr &&
                                finish_status_.error_code() == grpc::StatusCode::UNAVAILABLE &&
                                resume_attempt_;
    if (!finish_status_.ok() && finish_status_.error_code() != grpc::StatusCode::CANCELLED &&
        !retried_resume)
      log::Warning("{} {}{}{}{} ended: {} {}", behaviour_.rpc, live_.id.empty() ? "-" : live_.id,
                   identity_ != nullptr ? identity_->LogTag() : "",
                   live_.label.empty() ? "" : " label=", live_.label,
                   int(finish_status_.error_code()), finish_status_.error_message());
  }
  // The slot is freed on the scheduler's worker, after any step still using it.
  if (stream >= 0) {
    Scheduler::SnapshotFn on_snapshot;
    if (park) {
      on_snapshot = [this](StatusOr<StreamSnapshot> snapshot) { Park(std::move(snapshot)); };
    } else if (live_.has_token) {
      shared_->parked->Forget(
          live_.token_hash,
          reason == CloseReason::kCompleted ? TokenFate::kCompleted : TokenFate::kEnded, ended);
      // A stream that ended for good needs no checkpoint (one handed off keeps its snapshot).
      // A failed hand-off (kDrained) keeps the last checkpoint: it is all another replica has.
      if (shared_->store != nullptr && live_.checkpoints_written && !live_.handed_off &&
          reason != CloseReason::kDrained)
        shared_->store->Delete(live_.token_hash);
    }
    scheduler->Close(
        stream,
        [this, reason] {
          if (live_.model->metrics != nullptr) live_.model->metrics->StreamClosed(reason);
          delete this;
        },
        std::move(on_snapshot));
  } else {
    delete this;
  }
}

bool CallReactor::ParksLocked(CloseReason reason) const {
  return behaviour_.resumable && live_.has_token &&
         (reason == CloseReason::kCancelled || reason == CloseReason::kIdleTimeout ||
          reason == CloseReason::kWriteTimeout);
}

void CallReactor::Park(StatusOr<StreamSnapshot> snapshot) {
  const Clock::time_point start = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  const Status status = FillSnapshotLocked(&snapshot);
  if (!status.ok()) {
    shared_->parked->Forget(live_.token_hash, TokenFate::kNotKept, status.message());
    return;
  }
  std::string bytes = EncodeCounted(*snapshot, start, shared_->metrics->resume());
  const size_t size = bytes.size();
  if (shared_->parked->Park(live_.token_hash, {live_.model->name, std::move(bytes), owner()}))
    log::Info("{} {} parked at chunk {}, frame {} ({} bytes) for {:g} s", behaviour_.rpc, live_.id,
              live_.applied, live_.frames_done, size, shared_->parked->options().ttl_s);
}

Status CallReactor::FillSnapshotLocked(StatusOr<StreamSnapshot>* snapshot) {
  if (!snapshot->ok()) return snapshot->status();
  (*snapshot)->owner = owner();
  const Status filled = live_.FillSnapshot(&**snapshot);
  if (!filled.ok()) log::Error("{} {}: {}", behaviour_.rpc, live_.id, filled.message());
  return filled;
}

std::string CallReactor::EncodeCounted(const StreamSnapshot& snapshot, Clock::time_point start,
                                       ResumeMetrics* metrics) {
  std::string bytes = EncodeSnapshot(snapshot);
  if (metrics != nullptr) {
    metrics->snapshots->Increment();
    metrics->snapshot_bytes->Increment(double(bytes.size()));
    metrics->snapshot_seconds->Observe(Seconds(start, Clock::now()));
  }
  return bytes;
}

// A snapshot filled on the worker, encoded on the store's thread.
std::function<std::string()> CallReactor::Encoder(StreamSnapshot snapshot) const {
  auto shared = std::make_shared<StreamSnapshot>(std::move(snapshot));
  ResumeMetrics* metrics = shared_->metrics->resume();
  const Clock::time_point start = Clock::now();
  return [shared, metrics, start] { return EncodeCounted(*shared, start, metrics); };
}

void CallReactor::MaybeCheckpointLocked() {
  if (shared_->store == nullptr || !live_.has_token || live_.checkpoint_in_flight ||
      finish_requested_ || draining_ || config().checkpoint_interval_s <= 0)
    return;
  const double signal_s = double(live_.frames_done - live_.checkpoint_frame) /
                          live_.model->model->config().frame_rate();
  if (signal_s < config().checkpoint_interval_s) return;
  live_.checkpoint_in_flight = true;
  live_.checkpoint_frame = live_.frames_done;
  ++pending_async_;
  live_.scheduler->Snapshot(
      live_.slot, [this](StatusOr<StreamSnapshot> snapshot) { Checkpoint(std::move(snapshot)); });
}

void CallReactor::Checkpoint(StatusOr<StreamSnapshot> snapshot) {  // worker
  {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t sequence = live_.applied;
    Status status = finish_requested_ ? Status(StatusCode::kCancelled, "the call is ending")
                                      : FillSnapshotLocked(&snapshot);
    if (!status.ok()) {
      live_.checkpoint_in_flight = false;
    } else {
      ++pending_async_;
      // The encoder and the callback both run on the store's thread, one after the other.
      auto size = std::make_shared<size_t>(0);
      shared_->store->Put(
          live_.token_hash,
          [encode = Encoder(std::move(*snapshot)), size] {
            std::string bytes = encode();
            *size = bytes.size();
            return bytes;
          },
          shared_->parked->options().ttl_s,
          [this, sequence, size](Status written) { CheckpointDone(sequence, *size, written); });
    }
  }
  AsyncDone();
}

void CallReactor::CheckpointDone(uint64_t sequence, size_t bytes, const Status& written) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.checkpoint_in_flight = false;
    ResumeMetrics* m = shared_->metrics->resume();
    if (written.ok()) {
      live_.checkpointed = std::max(live_.checkpointed, sequence);
      live_.checkpoints_written = true;
      if (m != nullptr) {
        m->checkpoints->Increment();
        m->checkpoint_bytes->Increment(double(bytes));
      }
    } else if (m != nullptr) {
      m->checkpoint_failures->Increment();
    }
  }
  AsyncDone();
}

// Draining with a state store: the stream's snapshot goes to the store, then the call ends with
// UNAVAILABLE and the token in its trailing metadata (docs/design.md §7).
void CallReactor::StartHandOffLocked() {
  live_.handoff_started = true;
  ++pending_async_;
  live_.scheduler->Snapshot(live_.slot, [this](StatusOr<StreamSnapshot> snapshot) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Status status = FillSnapshotLocked(&snapshot);
      if (!status.ok()) {
        HandOffDoneLocked(status);
      } else {
        ++pending_async_;
        shared_->store->Put(live_.token_hash, Encoder(std::move(*snapshot)),
                            shared_->parked->options().ttl_s, [this](Status stored) {
                              {
                                std::lock_guard<std::mutex> lock(mu_);
                                HandOffDoneLocked(stored);
                              }
                              AsyncDone();
                            });
      }
    }
    AsyncDone();
  });
}

void CallReactor::HandOffDoneLocked(const Status& stored) {
  if (ResumeMetrics* m = shared_->metrics->resume())
    (stored.ok() ? m->handoffs_saved : m->handoffs_failed)->Increment();
  if (!stored.ok()) {
    log::Warning("{} {}: not handed off: {}", behaviour_.rpc, live_.id, stored.message());
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              fmt::format("the server is shutting down and could not save the "
                                          "stream ({}); chunks up to sequence {} were answered; "
                                          "continue on another server with a new stream",
                                          stored.message(), int64_t(live_.applied) - 1)),
                 CloseReason::kDrained);
    return;
  }
  live_.handed_off = true;
  if (!finish_requested_) port_->AddTrailingMetadata("ssm-resume-token", live_.token);
  FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            fmt::format("the server is shutting down; the stream was saved at "
                                        "chunk {}: resume it on another server with its resume "
                                        "token (also in the trailing metadata ssm-resume-token)",
                                        live_.applied)),
               CloseReason::kDrained);
}

void CallReactor::MaybeReadLocked() {
  if (finish_requested_ || input_ended_ || read_in_flight_ || store_lookup_) return;
  if (draining_ && behaviour_.ends_on_drain) return;
  if (in_flight_ >= kMaxChunksInFlight) return;  // resumed when a chunk's output is written
  read_in_flight_ = true;
  port_->StartRead(&read_buffer_);
}

void CallReactor::MaybeCompleteLocked() {
  if (finish_requested_ || in_flight_ > 0) return;
  if (input_ended_) {
    FinishLocked(ToGrpcStatus(input_error_),
                 input_error_.ok() ? CloseReason::kCompleted : CloseReason::kError);
  } else if (draining_ && behaviour_.ends_on_drain) {
    if (live_.handoff_started) return;  // it finishes the call
    if (shared_->store != nullptr && live_.has_token) {
      StartHandOffLocked();
      return;
    }
    FinishLocked(
        grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            live_.next_sequence == 0
                ? std::string("the server is shutting down; no chunk was received")
                : fmt::format(
                      "the server is shutting down; chunks up to sequence {} were answered, "
                      "later ones were not processed; continue on another server",
                      live_.next_sequence - 1)),
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
  port_->Finish(finish_status_);
}

bool CallReactor::CheckIdentityLocked(grpc::Status* status) {
  if (identity_ == nullptr || identity_->generation() == identity_generation_ || cancel_sent_)
    return false;
  identity_generation_ = identity_->generation();
  if (live_.model == nullptr && !identity_->revoked()) return false;  // admitted at its `open`
  const Status allowed = identity_->Check(live_.model != nullptr ? live_.model->name : "");
  if (allowed.ok()) return false;
  const std::string what =
      live_.id.empty() ? std::string("the call was closed") : "stream " + live_.id + " was closed";
  *status = ToGrpcStatus(allowed.WithContext(what));
  input_ended_ = true;
  DropQueuedWritesLocked();
  finish_requested_ = false;  // this status wins over any waiting one
  FinishLocked(*status, CloseReason::kError);
  cancel_sent_ = true;
  return true;
}

void CallReactor::CheckIdle(Clock::time_point now) {
  std::string stalled;
  grpc::StatusCode cancel_code = grpc::StatusCode::DEADLINE_EXCEEDED;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    grpc::Status revoked;
    if (CheckIdentityLocked(&revoked)) {
      stalled = revoked.error_message();
      cancel_code = revoked.error_code();
    } else if (write_in_flight_ && Seconds(write_started_, now) > config().write_timeout_s) {
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
          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                       fmt::format("no {} for {:g} s (--idle-timeout); the stream was closed",
                                   live_.model == nullptr ? "open message" : "chunk",
                                   config().idle_timeout_s)),
          CloseReason::kIdleTimeout);
      return;
    }
  }
  // Outside mu_: the stuck write fails (OnWriteDone(false), then OnCancel), and the status
  // still reaches the client.
  port_->Cancel(cancel_code, stalled);
}

void CallReactor::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  if (live_.model == nullptr) {
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down; open the stream on another server"),
                 CloseReason::kDrained);
    return;
  }
  MaybeCompleteLocked();
}

}  // namespace ssm
