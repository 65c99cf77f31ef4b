#include "clients/lib/stream.h"

#include <fmt/format.h>
#include <grpcpp/client_context.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "clients/lib/grpc_status.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/stream_call.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm::client {

namespace pb = ssmserve::v1;
using Clock = std::chrono::steady_clock;

namespace {

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double Milliseconds(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Runs tasks at their times on one thread that every stream shares (started on first use and
// never stopped, like the process-wide queue in StartStreamCall): it times resume attempts and
// their deadlines, so that no stream needs a thread of its own or a thread waiting in it.
class Timer {
 public:
  static Timer& Get() {
    static Timer* const timer = new Timer;
    return *timer;
  }
  void At(Clock::time_point when, std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.emplace(when, std::move(task));
    cv_.notify_one();
  }

 private:
  Timer() {
    std::thread([this] { Run(); }).detach();
  }
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (tasks_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const auto first = tasks_.begin();
      if (Clock::now() < first->first) {
        cv_.wait_until(lock, first->first);
        continue;
      }
      std::function<void()> task = std::move(first->second);
      tasks_.erase(first);
      lock.unlock();
      task();
      task = nullptr;  // its captures go before the lock is taken again
      lock.lock();
    }
  }

  std::mutex mu_;  // guards tasks_
  std::condition_variable cv_;
  std::multimap<Clock::time_point, std::function<void()>> tasks_;
};

// The codes a broken call ends with that leave the stream resumable (StreamOptions::resume):
// the server parked it. Every other code is the server's verdict on the stream.
bool Resumable(StatusCode code) {
  return code == StatusCode::kUnavailable || code == StatusCode::kUnknown ||
         code == StatusCode::kCancelled || code == StatusCode::kDeadlineExceeded;
}

}  // namespace

class StreamReactor;

// The state and logic of one stream, shared by the Stream and the reactor of its current call.
// A stream is one call, or, when calls break and it resumes, a run of them, one at a time: a
// reactor (which owns the ClientContext) deletes itself on the gRPC thread at the end of OnDone,
// and the next call gets a new one. This object, which the waiting Stream threads use, outlives
// them all. One write and one read in flight. Chunks queue in `chunks_`, which is also the
// replay buffer: with resume, a chunk stays there until the server has answered it.
class StreamCall : public std::enable_shared_from_this<StreamCall> {
 public:
  StreamCall(StreamRpc rpc, const StreamOptions& options, std::shared_ptr<grpc::Channel> channel)
      : rpc_(rpc),
        options_(options),
        channel_(std::move(channel)),
        stub_(pb::Ssm::NewStub(channel_)),
        jitter_(std::random_device{}()) {}

  void Start();

  const StreamOptions& options() const { return options_; }
  StatusOr<pb::StreamOpened> WaitOpened();
  Status Send(std::string payload);
  bool Next(Output* output);
  void CloseSend();
  Status Close();
  void Cancel();
  bool Interrupt();
  void CancelAndWait();
  bool done() const;
  StreamStats stats() const;

  // Reactions, forwarded by the current call's reactor from gRPC threads.
  void OnWriteDone(bool ok);
  void OnRead(const pb::StreamResponse& response);
  // The call's responses ended (its read failed): no operation starts on it any more, and its
  // hold is removed.
  void OnReadsDone(StreamReactor* reactor);
  // `stream_completed`: the server's trailers say the stream had completed (a resume refused).
  void OnDone(const grpc::Status& status, bool stream_completed);

 private:
  struct Chunk {
    uint64_t sequence = 0;
    std::string payload;     // empty once written when it is not kept for a resume
    Clock::time_point sent;  // Send* time
  };

  // Resumes on a break (StreamOptions::resume), and so keeps chunks until they are answered.
  bool ResumeOn() const {
    return rpc_ == StreamRpc::kStream && options_.resume && options_.resume_timeout_s > 0;
  }
  // The client waits for the server, so silence counts toward the idle timeout.
  bool OwedLocked() const {
    return !has_opened_ || resuming_ || writing_ || close_send_ ||
           (rpc_ == StreamRpc::kStream && answered_ < next_sequence_);
  }
  // Blocks until stop() holds or the stream has ended, cancelling it after idle_timeout_s of
  // silence while something is owed.
  template <typename Pred>
  void WaitLocked(std::unique_lock<std::mutex>& lock, Pred stop);
  // Starts a call: the stream's first, or one that resumes it.
  void StartCallLocked(bool resume);
  // Starts the next write of the current call (a chunk, or the half-close) if one is due.
  void PumpWritesLocked();
  // Drops the chunks no longer needed: written, and answered or not kept for a resume.
  void TrimLocked();
  void HandleOpenedLocked(const pb::StreamOpened& opened);
  void HandleOutput(const pb::StreamOutput& response);
  // Ends the stream by this client's decision: cancels the current call (whose OnDone then ends
  // the stream with `why`), or ends it now between calls.
  void AbortLocked(Status why);
  void FinishLocked(Status status);
  void ScheduleAttemptLocked(Clock::time_point when);
  void OnAttemptTime(uint64_t round);
  void OnResumeDeadline(uint64_t round);
  Status GiveUpStatusLocked() const;
  Status EndedStatusLocked() const;

  const StreamRpc rpc_;
  const StreamOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;  // outlives every call
  const std::unique_ptr<pb::Ssm::Stub> stub_;     // the stream's own: it may outlive its Client

  mutable std::mutex mu_;       // guards every member below
  std::condition_variable cv_;  // notified on every change of them

  // The current call.
  StreamReactor* reactor_ = nullptr;  // alive while set; null between calls and at the end
  bool call_resumes_ = false;         // it sent a resume token
  bool call_opened_ = false;          // its `opened` arrived
  bool writing_ = false;              // a write of it is in flight
  bool write_failed_ = false;         // it is ending; nothing more goes out on it
  bool writes_done_started_ = false;
  uint64_t write_next_ = 0;  // sequence of the next chunk it writes
  // On a resumed call: frames below this index (those the caller had when it resumed) are
  // repeats of frames already handed out, and are dropped. 0 on the first call.
  int64_t duplicates_below_ = 0;

  // The stream.
  // Chunks front().sequence .. next_sequence_ - 1: every chunk the current call has not written
  // and, for the Stream rpc, every chunk not answered (with resume, with its payload).
  std::deque<Chunk> chunks_;
  uint64_t next_sequence_ = 0;  // of the next chunk Send* takes
  uint64_t answered_ = 0;       // chunks below this have all their outputs (Stream rpc)
  bool checkpoints_ = false;    // the server checkpoints the stream (opened)
  uint64_t checkpointed_ = 0;   // chunks below this are in the server's checkpoint
  uint64_t written_end_ = 0;    // 1 + the highest sequence ever written: writes below replay
  bool close_send_ = false;     // CloseSend was called
  bool finished_ = false;       // the stream has ended: no call runs and none will
  Status final_status_;
  // Why this client ended the stream itself (the idle timeout, a resume it cannot accept); OK:
  // it did not.
  Status abort_status_;
  bool user_cancelled_ = false;  // Cancel: never resume
  bool has_opened_ = false;
  pb::StreamOpened opened_;     // the first call's
  std::string resume_token_;    // the latest `opened`'s
  std::deque<Output> outputs_;  // waiting for Next() (only without on_output)
  int64_t next_frame_ = 0;      // where the next output must start: frames the caller has
  StreamStats stats_;
  Clock::time_point last_progress_;  // last write completion or response

  // A resume: from a break to the `opened` of the call that resumes the stream.
  bool resuming_ = false;
  uint64_t resume_round_ = 0;  // counts breaks: timer tasks of an earlier one do nothing
  Status break_status_;        // how the call broke
  Status last_error_;          // of the last failed attempt (the break's before one failed)
  Clock::time_point break_time_, resume_deadline_;
  int round_attempts_ = 0;       // attempts started since the break
  bool resume_expired_ = false;  // the deadline cancelled the attempt in flight
  std::minstd_rand jitter_;
};

// ThreadSanitizer cannot see the order gRPC (not instrumented) puts between starting an
// operation and its reaction on another thread; these tell it. No-ops in other builds.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void Starting(void* side) { __tsan_release(side); }
inline void Reacting(void* side) { __tsan_acquire(side); }
#else
inline void Starting(void*) {}
inline void Reacting(void*) {}
#endif

// The gRPC reactor of one call: owns the ClientContext, the write and read buffers, forwards
// every reaction to the StreamCall, and deletes itself when the call is done.
class StreamReactor final : public grpc::ClientBidiReactor<pb::StreamRequest, pb::StreamResponse> {
 public:
  explicit StreamReactor(std::shared_ptr<StreamCall> call) : call_(std::move(call)) {}
  grpc::ClientContext* context() { return &context_; }
  pb::StreamRequest* request() { return &request_; }
  // Writes request() (its one write in flight), half-closes, or reads the next response.
  void Write() {
    Starting(&request_);
    StartWrite(&request_);
  }
  void WritesDone() {
    Starting(&request_);
    StartWritesDone();
  }
  void ReadNext() {
    Starting(&response_);
    StartRead(&response_);
  }

  void OnWriteDone(bool ok) override {
    Reacting(&request_);
    call_->OnWriteDone(ok);
  }
  void OnWritesDoneDone(bool) override { Reacting(&request_); }
  void OnReadDone(bool ok) override {
    Reacting(&response_);
    if (!ok) {  // no more responses: the call is ending, and its hold can go (StartCallLocked)
      call_->OnReadsDone(this);
      return;
    }
    call_->OnRead(response_);
    ReadNext();
  }
  void OnDone(const grpc::Status& status) override {
    Reacting(&request_);
    Reacting(&response_);
    // A refused resume of a stream that had completed (only its final status was lost).
    const auto& trailers = context_.GetServerTrailingMetadata();
    auto ended = trailers.find("ssm-stream-ended");
    const bool completed = ended != trailers.end() && ended->second == "completed";
    call_->OnDone(status, completed);
    delete this;
  }

 private:
  const std::shared_ptr<StreamCall> call_;
  grpc::ClientContext context_;
  pb::StreamRequest request_;    // source of the one write in flight
  pb::StreamResponse response_;  // target of the one read in flight
};

void StreamCall::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  last_progress_ = Clock::now();
  StartCallLocked(/*resume=*/false);
}

void StreamCall::StartCallLocked(bool resume) {
  auto* reactor = new StreamReactor(shared_from_this());
  pb::StreamOpen* o = reactor->request()->mutable_open();
  o->set_model(options_.model);
  o->set_format(options_.format);
  o->set_sample_rate(options_.sample_rate);
  o->set_label(options_.label);
  if (resume) {
    o->set_resume_token(resume_token_);
    o->set_resume_from_frame(next_frame_);
  }
  if (!options_.api_key.empty())
    reactor->context()->AddMetadata("authorization", "Bearer " + options_.api_key);
  if (rpc_ == StreamRpc::kStream) {
    stub_->async()->Stream(reactor->context(), reactor);
  } else {
    stub_->async()->ProcessFile(reactor->context(), reactor);
  }
  reactor_ = reactor;
  call_resumes_ = resume;
  call_opened_ = false;
  writing_ = true;
  write_failed_ = false;
  writes_done_started_ = false;
  // Writes start from other threads too (Send*, CloseSend), outside the call's reactions: gRPC
  // needs a hold for that, or the call could finish (and be freed) while a write starts on it.
  // The hold goes once the read side is done (OnReadsDone), after which nothing is written.
  reactor_->AddHold();
  reactor_->Write();
  reactor_->ReadNext();
  reactor_->StartCall();  // reactions never run inline, so holding mu_ here is safe
}

void StreamCall::PumpWritesLocked() {
  if (reactor_ == nullptr || writing_ || write_failed_) return;
  // A call that resumes the stream writes nothing after its `open` before its `opened` came:
  // the chunks start at the server's next_sequence, and a server that sees a message after the
  // `open` knows that the client holds the new resume token.
  if (call_resumes_ && !call_opened_) return;
  if (write_next_ < next_sequence_) {
    Chunk& chunk = chunks_[size_t(write_next_ - chunks_.front().sequence)];
    pb::StreamRequest* request = reactor_->request();
    request->mutable_chunk()->set_sequence(chunk.sequence);
    if (ResumeOn()) {
      request->mutable_chunk()->set_payload(chunk.payload);
    } else {
      request->mutable_chunk()->set_payload(std::move(chunk.payload));
      chunk.payload.clear();
    }
    if (chunk.sequence < written_end_) {
      ++stats_.replayed_chunks;
    } else {
      written_end_ = chunk.sequence + 1;
    }
    ++write_next_;
    writing_ = true;
    reactor_->Write();
    return;
  }
  if (close_send_ && !writes_done_started_) {
    writes_done_started_ = true;
    reactor_->WritesDone();
  }
}

void StreamCall::TrimLocked() {
  while (!chunks_.empty() && chunks_.front().sequence < write_next_ &&
         (rpc_ != StreamRpc::kStream || chunks_.front().sequence < answered_)) {
    // With server checkpoints, answered chunks since the last checkpoint stay too: a resume
    // after a crash continues from the checkpoint (at most max_checkpoint_chunks of them).
    if (ResumeOn() && checkpoints_ && chunks_.front().sequence >= checkpointed_ &&
        answered_ - chunks_.front().sequence <= options_.max_checkpoint_chunks)
      break;
    chunks_.pop_front();
  }
}

void StreamCall::AbortLocked(Status why) {
  if (finished_) return;
  if (abort_status_.ok()) abort_status_ = std::move(why);
  if (reactor_ != nullptr) {
    reactor_->context()->TryCancel();  // OnDone follows and ends the stream
  } else {
    FinishLocked(abort_status_);
  }
}

void StreamCall::FinishLocked(Status status) {
  finished_ = true;
  resuming_ = false;
  final_status_ = std::move(status);
  chunks_.clear();
  cv_.notify_all();
}

template <typename Pred>
void StreamCall::WaitLocked(std::unique_lock<std::mutex>& lock, Pred stop) {
  while (!finished_ && !stop()) {
    if (options_.idle_timeout_s <= 0 || !OwedLocked() || !abort_status_.ok()) {
      cv_.wait(lock);
      continue;
    }
    const auto deadline = last_progress_ + Seconds(options_.idle_timeout_s);
    if (Clock::now() < deadline) {
      cv_.wait_until(lock, deadline);
      continue;
    }
    AbortLocked(Status(
        StatusCode::kDeadlineExceeded,
        fmt::format("no progress from the server for {} s (idle timeout){}; the call was cancelled",
                    options_.idle_timeout_s, resuming_ ? " while resuming the stream" : "")));
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
  WaitLocked(lock, [&] {
    return (options_.max_pending_chunks == 0 ||
            next_sequence_ - write_next_ < options_.max_pending_chunks) &&
           (!ResumeOn() || options_.max_unanswered_chunks == 0 ||
            next_sequence_ - answered_ < options_.max_unanswered_chunks);
  });
  if (close_send_) return FailedPreconditionError("chunk sent after CloseSend() or Close()");
  // The call is ending: wait for its end, which resumes the stream or says why it ended.
  if (write_failed_) WaitLocked(lock, [&] { return !write_failed_; });
  if (finished_) return EndedStatusLocked();
  const Clock::time_point now = Clock::now();
  if (!OwedLocked()) last_progress_ = now;
  chunks_.push_back({next_sequence_, std::move(payload), now});
  ++next_sequence_;
  ++stats_.chunks_sent;
  PumpWritesLocked();
  TrimLocked();
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

void StreamCall::CloseSend() {
  std::lock_guard<std::mutex> lock(mu_);
  if (close_send_) return;
  if (!OwedLocked()) last_progress_ = Clock::now();
  close_send_ = true;
  PumpWritesLocked();
  cv_.notify_all();
}

Status StreamCall::Close() {
  CloseSend();
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock, [] { return false; });
  return final_status_;
}

bool StreamCall::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || reactor_ == nullptr || !call_opened_) return false;
  reactor_->context()->TryCancel();  // OnDone follows: a break the stream resumes from
  return true;
}

void StreamCall::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  user_cancelled_ = true;
  if (reactor_ != nullptr) {
    reactor_->context()->TryCancel();  // OnDone follows
  } else {
    FinishLocked(Status(StatusCode::kCancelled, "cancelled while the stream was being resumed"));
  }
}

void StreamCall::CancelAndWait() {
  Cancel();
  std::unique_lock<std::mutex> lock(mu_);
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
  writing_ = false;
  if (!ok) {               // the call is over (the server ended it, it broke, or it was cancelled)
    write_failed_ = true;  // OnDone follows
  } else {
    // The `open` of a call that resumes the stream is no progress until that call is opened.
    if (!call_resumes_ || call_opened_) last_progress_ = Clock::now();
    PumpWritesLocked();
    TrimLocked();
  }
  cv_.notify_all();
}

void StreamCall::OnReadsDone(StreamReactor* reactor) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor == reactor_) write_failed_ = true;  // the call is ending: nothing more goes out
  reactor->RemoveHold();  // OnDone follows (never inline: gRPC schedules it)
  cv_.notify_all();
}

void StreamCall::OnRead(const pb::StreamResponse& response) {
  if (response.has_opened()) {
    std::lock_guard<std::mutex> lock(mu_);
    HandleOpenedLocked(response.opened());
    cv_.notify_all();
  } else if (response.has_output()) {
    HandleOutput(response.output());
  }
}

void StreamCall::HandleOpenedLocked(const pb::StreamOpened& opened) {
  const Clock::time_point now = Clock::now();
  last_progress_ = now;
  if (call_opened_) return;  // one per call
  call_opened_ = true;
  resume_token_ = opened.resume_token();
  checkpoints_ = opened.checkpoint_interval_ms() > 0;
  if (!call_resumes_) {
    opened_ = opened;
    has_opened_ = true;
    return;
  }
  // The stream resumes: the server applied chunks 0 .. N-1 and holds frames up to F. It sends
  // the frames from next_frame_ to F first (if any), then answers the chunks from N, re-sent.
  const uint64_t n = opened.next_sequence();
  const uint64_t oldest = chunks_.empty() ? next_sequence_ : chunks_.front().sequence;
  Status problem;
  if (!opened.resumed()) {
    problem = FailedPreconditionError(
        "the server opened a new stream instead of resuming this one (it does not support "
        "resuming?)");
  } else if (n > next_sequence_) {
    problem = Status(StatusCode::kDataLoss,
                     fmt::format("the server resumed the stream at chunk {}, but only {} chunks "
                                 "were sent",
                                 n, next_sequence_));
  } else if (n < oldest) {
    problem = Status(
        StatusCode::kDataLoss,
        fmt::format("the server resumed the stream at chunk {}, but the client keeps chunks {} "
                    "to {} only (earlier ones were answered before the break, or dropped "
                    "beyond max_checkpoint_chunks); the stream cannot continue without a gap",
                    n, oldest, next_sequence_));
  } else if (opened.next_frame() < 0) {
    problem = Status(StatusCode::kDataLoss,
                     fmt::format("the server resumed the stream at frame {}", opened.next_frame()));
  }
  if (!problem.ok()) {
    AbortLocked(problem);
    return;
  }
  write_next_ = n;
  // Without frames to catch up on, the chunks the server applied are answered now; else the
  // output that catches up (sequence N-1) answers them.
  if (opened.next_frame() <= next_frame_) answered_ = std::max(answered_, n);
  stats_.chunks_answered = answered_;
  duplicates_below_ = next_frame_;
  resuming_ = false;
  ++stats_.resumes;
  stats_.last_resume_ms = Milliseconds(now - break_time_);
  stats_.max_resume_ms = std::max(stats_.max_resume_ms, stats_.last_resume_ms);
  stats_.total_resume_ms += stats_.last_resume_ms;
  PumpWritesLocked();
  TrimLocked();
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
    // A resumed call may repeat outputs from before the resume: of chunks answered already, or
    // frames the caller has. Those are dropped, so the caller sees every frame once.
    bool repeat = false;
    if (rpc_ == StreamRpc::kStream) {
      repeat = call_resumes_ && out.sequence < answered_;
      if (out.sequence >= answered_ && !chunks_.empty() &&
          out.sequence >= chunks_.front().sequence && out.sequence < next_sequence_) {
        const Chunk& chunk = chunks_[size_t(out.sequence - chunks_.front().sequence)];
        out.round_trip_ms = Milliseconds(now - chunk.sent);
      }
      answered_ = std::max(answered_, std::min(out.sequence + 1, next_sequence_));
      checkpointed_ = std::max(checkpointed_, response.checkpointed_sequence());
      stats_.chunks_answered = answered_;
      TrimLocked();
    }
    const bool shape_ok = out.frames >= 0 && out.d_out >= 0 &&
                          out.values.size() == size_t(out.frames) * size_t(out.d_out);
    int64_t duplicates = 0;
    if (shape_ok && out.frames > 0 && out.first_frame < duplicates_below_) {
      duplicates = std::min<int64_t>(out.frames, duplicates_below_ - out.first_frame);
      out.values.erase(out.values.begin(),
                       out.values.begin() + ptrdiff_t(duplicates) * ptrdiff_t(out.d_out));
      out.first_frame += duplicates;
      out.frames -= int(duplicates);
      stats_.duplicate_frames += duplicates;
    }
    if (out.frames == 0 && (duplicates > 0 || repeat)) {
      cv_.notify_all();
      return;  // nothing new in it
    }
    ++stats_.outputs_received;
    stats_.frames += std::max(out.frames, 0);
    std::string problem;
    if (!shape_ok) {
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

void StreamCall::OnDone(const grpc::Status& grpc_status, bool stream_completed) {
  std::lock_guard<std::mutex> lock(mu_);
  const Clock::time_point now = Clock::now();
  reactor_ = nullptr;  // it deletes itself when this returns
  writing_ = false;
  write_failed_ = false;
  const Status status = FromGrpc(grpc_status);
  // A call started to resume the stream that ended before its `opened`.
  const bool failed_attempt = call_resumes_ && !call_opened_;
  if (!abort_status_.ok()) return FinishLocked(abort_status_);
  if (status.ok()) {
    return FinishLocked(failed_attempt ? InternalError("the server ended the call that resumes "
                                                       "the stream without answering it")
                                       : status);
  }
  const bool resumable = !user_cancelled_ && ResumeOn() && Resumable(status.code());
  if (failed_attempt) {
    // The stream had ended cleanly before the break hid its OK status: every chunk answered
    // after the half-close, and the server says it completed.
    if (stream_completed && close_send_ && answered_ >= next_sequence_)
      return FinishLocked(OkStatus());
    if (!resume_expired_) last_error_ = status;
    if (!resumable) {
      if (user_cancelled_) return FinishLocked(status);
      return FinishLocked(
          Status(status.code(), fmt::format("the stream broke ({}) and resuming it failed: {}",
                                            break_status_.ToString(), status.message())));
    }
    if (resume_expired_ || now >= resume_deadline_) return FinishLocked(GiveUpStatusLocked());
    // The next attempt after the back-off: resume_backoff_s doubling per failed attempt, at
    // most resume_backoff_max_s, +-25 % jitter so that streams broken together spread out.
    const double backoff =
        std::min(options_.resume_backoff_max_s,
                 options_.resume_backoff_s * std::pow(2.0, std::min(round_attempts_ - 1, 30)));
    const double jitter = std::uniform_real_distribution<double>(0.75, 1.25)(jitter_);
    ScheduleAttemptLocked(std::min(now + Seconds(backoff * jitter), resume_deadline_));
    cv_.notify_all();
    return;
  }
  if (!resumable || !call_opened_) return FinishLocked(status);
  if (resume_token_.empty())
    return FinishLocked(Status(
        status.code(), status.message() + " (the stream cannot be resumed: the server gave no "
                                          "resume token, it keeps no broken streams)"));
  // The call broke: resume the stream on a new call, the first attempt at once.
  resuming_ = true;
  ++resume_round_;
  break_status_ = status;
  last_error_ = status;
  break_time_ = now;
  resume_deadline_ = now + Seconds(options_.resume_timeout_s);
  round_attempts_ = 0;
  resume_expired_ = false;
  ScheduleAttemptLocked(now);
  Timer::Get().At(resume_deadline_, [weak = weak_from_this(), round = resume_round_] {
    if (auto self = weak.lock()) self->OnResumeDeadline(round);
  });
  cv_.notify_all();
}

void StreamCall::ScheduleAttemptLocked(Clock::time_point when) {
  Timer::Get().At(when, [weak = weak_from_this(), round = resume_round_] {
    if (auto self = weak.lock()) self->OnAttemptTime(round);
  });
}

void StreamCall::OnAttemptTime(uint64_t round) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || !resuming_ || round != resume_round_ || reactor_ != nullptr) return;
  if (Clock::now() >= resume_deadline_ && round_attempts_ > 0)
    return FinishLocked(GiveUpStatusLocked());
  ++round_attempts_;
  ++stats_.resume_attempts;
  StartCallLocked(/*resume=*/true);
  cv_.notify_all();
}

void StreamCall::OnResumeDeadline(uint64_t round) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || !resuming_ || round != resume_round_) return;
  if (reactor_ != nullptr) {  // an attempt is in flight (a server that accepts but never answers)
    resume_expired_ = true;
    reactor_->context()->TryCancel();  // its OnDone gives up
    return;
  }
  FinishLocked(GiveUpStatusLocked());
}

Status StreamCall::GiveUpStatusLocked() const {
  std::string last;
  if (round_attempts_ > 0 && last_error_.ToString() != break_status_.ToString())
    last = "; last error: " + last_error_.ToString();
  return Status(last_error_.code(),
                fmt::format("the stream broke ({}) and could not be resumed within {} s ({} "
                            "attempt{}){}",
                            break_status_.ToString(), options_.resume_timeout_s, round_attempts_,
                            round_attempts_ == 1 ? "" : "s", last));
}

std::shared_ptr<StreamCall> StartStreamCall(std::shared_ptr<grpc::Channel> channel, StreamRpc rpc,
                                            const StreamOptions& options) {
  // gRPC 1.51 runs callback calls on a shared "alternative" completion queue while any channel
  // that made one is alive, and tears it down when the last such channel goes; that teardown
  // races its own polling threads and can abort the process ("grpc_cq_internal_unref ... prior >
  // 0", seen in about 1 of 7 test runs). Keeping the first such channel for the life of the
  // process keeps the queue up, so the teardown never happens. One idle channel is the cost.
  // [[gnu::used]]: kept even where the optimizer would drop a variable only written (LeakSanitizer
  // would then report the channel as leaked).
  [[gnu::used]] static const auto* const kQueueKeeper = new std::shared_ptr<grpc::Channel>(channel);
  auto call = std::make_shared<StreamCall>(rpc, options, std::move(channel));
  call->Start();
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
bool Stream::Interrupt() { return call_->Interrupt(); }
bool Stream::done() const { return call_->done(); }
StreamStats Stream::stats() const { return call_->stats(); }

}  // namespace ssm::client
