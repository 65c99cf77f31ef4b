#include "clients/lib/stream.h"

#include <fmt/format.h>
#include <grpcpp/client_context.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

#include "clients/lib/grpc_status.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/stream_call.h"

namespace ssm::client {

namespace pb = ssmserve::v1;
using Clock = std::chrono::steady_clock;

class StreamReactor;

// The state and logic of one call, shared by the Stream and its reactor. The reactor (which owns
// the ClientContext) deletes itself on the gRPC thread at the end of OnDone, so a call is never
// freed from another thread while gRPC is still finishing it; this object, which the waiting
// Stream threads use, outlives it. One write and one read in flight; chunks queue in `writes_`.
class StreamCall {
 public:
  StreamCall(StreamRpc rpc, const StreamOptions& options, std::shared_ptr<grpc::Channel> channel)
      : rpc_(rpc), options_(options), channel_(std::move(channel)) {}

  void Start(pb::Ssm::Stub* stub, StreamReactor* reactor);

  const StreamOptions& options() const { return options_; }
  StatusOr<pb::StreamOpened> WaitOpened();
  Status Send(std::string payload);
  bool Next(Output* output);
  void CloseSend();
  Status Close();
  void Cancel();
  void CancelAndWait();
  bool done() const;
  StreamStats stats() const;

  // Reactions, forwarded by the reactor from gRPC threads.
  void OnWriteDone(bool ok);
  void OnRead(const pb::StreamResponse& response);
  void OnDone(const grpc::Status& status);

 private:
  // The client waits for the server, so silence counts toward the idle timeout.
  bool OwedLocked() const {
    return !has_opened_ || writing_ || close_send_ || !send_times_.empty();
  }
  // Blocks until stop() holds or the call has ended, cancelling it after idle_timeout_s of
  // silence while something is owed.
  template <typename Pred>
  void WaitLocked(std::unique_lock<std::mutex>& lock, Pred stop);
  void StartWritesDoneIfDueLocked();
  void TryCancelLocked();
  void HandleOutput(const pb::StreamOutput& response);
  Status EndedStatusLocked() const;

  const StreamRpc rpc_;
  const StreamOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;  // outlives the call

  mutable std::mutex mu_;                 // guards every member below
  std::condition_variable cv_;            // notified on every change of them
  StreamReactor* reactor_ = nullptr;      // alive while !finished_; null after OnDone
  std::deque<pb::StreamRequest> writes_;  // front() is in flight while writing_
  bool writing_ = false;
  bool write_failed_ = false;  // the call is ending; nothing more goes out
  bool close_send_ = false;    // CloseSend was called
  bool writes_done_started_ = false;
  bool finished_ = false;  // OnDone ran
  Status final_status_;
  Status timeout_status_;  // why the idle timeout cancelled the call (OK: it did not)
  bool has_opened_ = false;
  pb::StreamOpened opened_;
  std::deque<Output> outputs_;  // waiting for Next() (only without on_output)
  // Send time of chunks not answered yet (Stream rpc), in sequence order.
  std::deque<std::pair<uint64_t, Clock::time_point>> send_times_;
  uint64_t next_sequence_ = 0;
  int64_t next_frame_ = 0;  // where the next output must start
  StreamStats stats_;
  Clock::time_point last_progress_;  // last write completion or response
};

// The gRPC reactor: owns the ClientContext and the read buffer, forwards every reaction to the
// StreamCall, and deletes itself when the call is done.
class StreamReactor final
    : public grpc::ClientBidiReactor<pb::StreamRequest, pb::StreamResponse> {
 public:
  explicit StreamReactor(std::shared_ptr<StreamCall> call) : call_(std::move(call)) {}
  grpc::ClientContext* context() { return &context_; }
  void ReadNext() { StartRead(&response_); }

  void OnWriteDone(bool ok) override { call_->OnWriteDone(ok); }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // no more responses; OnDone follows
    call_->OnRead(response_);
    ReadNext();
  }
  void OnDone(const grpc::Status& status) override {
    call_->OnDone(status);
    delete this;
  }

 private:
  const std::shared_ptr<StreamCall> call_;
  grpc::ClientContext context_;
  pb::StreamResponse response_;  // target of the one read in flight
};

void StreamCall::Start(pb::Ssm::Stub* stub, StreamReactor* reactor) {
  pb::StreamRequest open;
  pb::StreamOpen* o = open.mutable_open();
  o->set_model(options_.model);
  o->set_format(options_.format);
  o->set_sample_rate(options_.sample_rate);
  o->set_label(options_.label);
  if (rpc_ == StreamRpc::kStream) {
    stub->async()->Stream(reactor->context(), reactor);
  } else {
    stub->async()->ProcessFile(reactor->context(), reactor);
  }
  std::lock_guard<std::mutex> lock(mu_);
  reactor_ = reactor;
  last_progress_ = Clock::now();
  writes_.push_back(std::move(open));
  writing_ = true;
  reactor_->StartWrite(&writes_.front());
  reactor_->ReadNext();
  reactor_->StartCall();  // reactions never run inline, so holding mu_ here is safe
}

void StreamCall::TryCancelLocked() {
  if (!finished_) reactor_->context()->TryCancel();  // OnDone follows
}

template <typename Pred>
void StreamCall::WaitLocked(std::unique_lock<std::mutex>& lock, Pred stop) {
  while (!finished_ && !stop()) {
    if (options_.idle_timeout_s <= 0 || !OwedLocked() || !timeout_status_.ok()) {
      cv_.wait(lock);
      continue;
    }
    const auto deadline =
        last_progress_ + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(options_.idle_timeout_s));
    if (Clock::now() < deadline) {
      cv_.wait_until(lock, deadline);
      continue;
    }
    timeout_status_ = Status(
        StatusCode::kDeadlineExceeded,
        fmt::format("no progress from the server for {} s (idle timeout); the call was cancelled",
                    options_.idle_timeout_s));
    TryCancelLocked();
  }
}

StatusOr<pb::StreamOpened> StreamCall::WaitOpened() {
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock, [&] { return has_opened_; });
  if (has_opened_) return opened_;
  if (final_status_.ok()) return InternalError("the server ended the call without opening it");
  return final_status_;
}

Status StreamCall::Send(std::string payload) {
  std::unique_lock<std::mutex> lock(mu_);
  if (options_.max_pending_chunks > 0)
    WaitLocked(lock, [&] { return writes_.size() < options_.max_pending_chunks; });
  if (close_send_) return FailedPreconditionError("chunk sent after CloseSend() or Close()");
  if (write_failed_) WaitLocked(lock, [] { return false; });  // the call is ending: say why
  if (finished_) return EndedStatusLocked();
  if (!OwedLocked()) last_progress_ = Clock::now();
  pb::StreamRequest request;
  request.mutable_chunk()->set_sequence(next_sequence_);
  request.mutable_chunk()->set_payload(std::move(payload));
  if (rpc_ == StreamRpc::kStream) send_times_.emplace_back(next_sequence_, Clock::now());
  ++next_sequence_;
  ++stats_.chunks_sent;
  writes_.push_back(std::move(request));
  if (!writing_) {
    writing_ = true;
    reactor_->StartWrite(&writes_.front());
  }
  cv_.notify_all();
  return OkStatus();
}

bool StreamCall::Next(Output* output) {
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock, [&] { return !outputs_.empty(); });
  if (outputs_.empty()) return false;
  *output = std::move(outputs_.front());
  outputs_.pop_front();
  return true;
}

void StreamCall::StartWritesDoneIfDueLocked() {
  if (close_send_ && !writing_ && !write_failed_ && !writes_done_started_ && !finished_) {
    writes_done_started_ = true;
    reactor_->StartWritesDone();
  }
}

void StreamCall::CloseSend() {
  std::lock_guard<std::mutex> lock(mu_);
  if (close_send_) return;
  if (!OwedLocked()) last_progress_ = Clock::now();
  close_send_ = true;
  StartWritesDoneIfDueLocked();
  cv_.notify_all();
}

Status StreamCall::Close() {
  CloseSend();
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock, [] { return false; });
  return final_status_;
}

void StreamCall::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  TryCancelLocked();
}

void StreamCall::CancelAndWait() {
  std::unique_lock<std::mutex> lock(mu_);
  TryCancelLocked();
  cv_.wait(lock, [&] { return finished_; });
}

bool StreamCall::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

StreamStats StreamCall::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

Status StreamCall::EndedStatusLocked() const {
  if (!final_status_.ok()) return final_status_;
  return FailedPreconditionError("the stream has already ended");
}

void StreamCall::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writes_.pop_front();
  if (!ok) {  // the call is over (the server ended it, or it was cancelled); OnDone follows
    writing_ = false;
    write_failed_ = true;
    writes_.clear();
  } else {
    last_progress_ = Clock::now();
    if (!writes_.empty()) {
      reactor_->StartWrite(&writes_.front());
    } else {
      writing_ = false;
      StartWritesDoneIfDueLocked();
    }
  }
  cv_.notify_all();
}

void StreamCall::OnRead(const pb::StreamResponse& response) {
  if (response.has_opened()) {
    std::lock_guard<std::mutex> lock(mu_);
    opened_ = response.opened();
    has_opened_ = true;
    last_progress_ = Clock::now();
    cv_.notify_all();
  } else if (response.has_output()) {
    HandleOutput(response.output());
  }
}

void StreamCall::HandleOutput(const pb::StreamOutput& response) {
  const Clock::time_point now = Clock::now();
  Output out;
  out.first_frame = response.first_frame();
  out.frames = response.frames();
  out.d_out = response.d_out();
  out.values.assign(response.values().begin(), response.values().end());
  out.sequence = response.sequence();
  out.server_latency_ms = response.server_latency_ms();
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_progress_ = now;
    if (rpc_ == StreamRpc::kStream) {
      while (!send_times_.empty() && send_times_.front().first < out.sequence)
        send_times_.pop_front();  // chunks the server never answered: not ours to time
      if (!send_times_.empty() && send_times_.front().first == out.sequence) {
        out.round_trip_ms =
            std::chrono::duration<double, std::milli>(now - send_times_.front().second).count();
        send_times_.pop_front();
      }
    }
    ++stats_.outputs_received;
    stats_.frames += std::max(out.frames, 0);
    std::string problem;
    if (out.frames < 0 || out.d_out < 0 ||
        out.values.size() != size_t(out.frames) * size_t(out.d_out)) {
      problem = fmt::format("response for chunk {} holds {} values, not frames {} x d_out {}",
                            out.sequence, out.values.size(), out.frames, out.d_out);
    } else if (out.frames > 0 && out.first_frame != next_frame_) {
      problem = fmt::format("response for chunk {} starts at frame {}, expected {} ({})",
                            out.sequence, out.first_frame, next_frame_,
                            out.first_frame > next_frame_ ? "frames skipped" : "frames repeated");
    }
    if (!problem.empty()) {
      if (stats_.frame_errors++ == 0) stats_.first_frame_error = problem;
    }
    if (out.frames > 0) next_frame_ = out.first_frame + out.frames;
    if (!options_.on_output) {
      outputs_.push_back(std::move(out));
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
  }
  options_.on_output(out);
}

void StreamCall::OnDone(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  reactor_ = nullptr;  // it deletes itself when this returns
  final_status_ = timeout_status_.ok() ? FromGrpc(status) : timeout_status_;
  writes_.clear();
  send_times_.clear();
  cv_.notify_all();
}

std::shared_ptr<StreamCall> StartStreamCall(std::shared_ptr<grpc::Channel> channel,
                                            pb::Ssm::Stub* stub, StreamRpc rpc,
                                            const StreamOptions& options) {
  // gRPC 1.51 runs callback calls on a shared "alternative" completion queue while any channel
  // that made one is alive, and tears it down when the last such channel goes; that teardown
  // races its own polling threads and can abort the process ("grpc_cq_internal_unref ... prior >
  // 0", seen in about 1 of 7 test runs). Keeping the first such channel for the life of the
  // process keeps the queue up, so the teardown never happens. One idle channel is the cost.
  static const auto* const kQueueKeeper = new std::shared_ptr<grpc::Channel>(channel);
  (void)kQueueKeeper;
  auto call = std::make_shared<StreamCall>(rpc, options, std::move(channel));
  call->Start(stub, new StreamReactor(call));
  return call;
}

// Stream: the public face of a StreamCall.

Stream::Stream(std::shared_ptr<StreamCall> call) : call_(std::move(call)) {}

Stream::~Stream() { call_->CancelAndWait(); }

StatusOr<pb::StreamOpened> Stream::WaitOpened() { return call_->WaitOpened(); }

Status Stream::SendSamples(const float* samples, size_t n) {
  const pb::SampleFormat format = call_->options().format;
  if (format == pb::SAMPLE_FORMAT_FRAMES_F32LE)
    return FailedPreconditionError("this stream sends frames (FRAMES_F32LE): use SendFrames");
  std::string payload;
  SSM_RETURN_IF_ERROR(EncodePayload(samples, n, format, &payload));
  return call_->Send(std::move(payload));
}

Status Stream::SendFrames(const float* frames, size_t n_frames) {
  const pb::SampleFormat format = call_->options().format;
  if (format != pb::SAMPLE_FORMAT_FRAMES_F32LE)
    return FailedPreconditionError("this stream sends audio samples: use SendSamples");
  SSM_ASSIGN_OR_RETURN(pb::StreamOpened opened, call_->WaitOpened());
  std::string payload;
  SSM_RETURN_IF_ERROR(
      EncodePayload(frames, n_frames * size_t(opened.model().d_in()), format, &payload));
  return call_->Send(std::move(payload));
}

Status Stream::SendPayload(std::string payload) { return call_->Send(std::move(payload)); }
bool Stream::Next(Output* output) { return call_->Next(output); }
void Stream::CloseSend() { call_->CloseSend(); }
Status Stream::Close() { return call_->Close(); }
void Stream::Cancel() { call_->Cancel(); }
bool Stream::done() const { return call_->done(); }
StreamStats Stream::stats() const { return call_->stats(); }

}  // namespace ssm::client
