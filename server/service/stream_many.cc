#include "server/service/stream_many.h"

#include <fmt/format.h>
#include <grpc/grpc.h>

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

DeferredTasks::~DeferredTasks() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DeferredTasks::Post(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  tasks_.push_back(std::move(task));
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  cv_.notify_one();
}

void DeferredTasks::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stop_, and every task ran
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // what it holds goes before the lock is taken again
    lock.lock();
  }
}

namespace {

using Clock = std::chrono::steady_clock;

// A stream that has more unread requests than this stops the call's reading (see the header).
constexpr size_t kMaxQueuedRequests = 16;
// A response message closes once its results reach this many bytes (clients accept 4 MiB).
constexpr size_t kMaxResponseBytes = 1u << 20;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

enum class EventKind { kRead, kWrite, kCancel, kDone };

// One stream of the call, as the call sees it; guarded by the call's mu_.
struct Part {
  explicit Part(uint64_t id) : id(id) {}
  const uint64_t id;
  CallEvents* events = nullptr;  // its logic, from Bind
  bool starting = true;          // its logic is being started: its events wait in `held`
  std::vector<std::pair<EventKind, bool>> held;
  std::deque<grpc::ByteBuffer> inbox;     // requests received, not yet read by its logic
  bool input_closed = false;              // close_send, or the call's half-close
  grpc::ByteBuffer* read_into = nullptr;  // the read in flight
  bool writing = false;                   // a write in flight (queued, or in the call's write)
  const grpc::ByteBuffer* write = nullptr;
  bool cancelled = false;
  grpc::Status cancel_status;  // what the client is told when cancelled
  bool finished = false;       // Finish was called
  std::map<std::string, std::string> trailers;
  bool done = false;  // OnDone is queued: nothing else happens to it
};

struct Event {
  std::shared_ptr<Part> part;
  EventKind kind;
  bool ok;
};

// A stream's write or its end, waiting for (or in) one of the call's writes.
struct Outgoing {
  std::shared_ptr<Part> part;
  bool end = false;     // the `ended` result, with `status`
  grpc::Status status;  // for `end`
};

class ManyCall final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                       public LiveCall,
                       public std::enable_shared_from_this<ManyCall> {
 public:
  ManyCall(grpc::CallbackServerContext* context, CallShared* shared, DeferredTasks* deferred,
           std::function<void(std::unique_ptr<CallPort>)> start_stream)
      : context_(context),
        shared_(shared),
        deferred_(deferred),
        start_stream_(std::move(start_stream)),
        credentials_(CallerCredentials::Of(*context)),
        last_activity_(Clock::now()) {}

  void Start(std::shared_ptr<ManyCall> self);

  // The ports' side: any thread, with the stream's lock held (except PartCancel).
  void PartBind(const std::shared_ptr<Part>& part, CallEvents* events);
  void PartRead(const std::shared_ptr<Part>& part, grpc::ByteBuffer* into);
  void PartWrite(const std::shared_ptr<Part>& part, const grpc::ByteBuffer* bytes);
  void PartFinish(const std::shared_ptr<Part>& part, const grpc::Status& status);
  void PartTrailer(const std::shared_ptr<Part>& part, const std::string& key,
                   const std::string& value);
  // `deliver_here`: the caller holds no stream's lock, so the events may run on its thread (a
  // port's Cancel); else (a resume taking the stream over, with the resuming call's lock held)
  // they go to the delivery running or to the deferred thread.
  void PartCancel(const std::shared_ptr<Part>& part, const grpc::Status& status, bool deliver_here);
  const CallerCredentials& credentials() const { return credentials_; }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void CheckIdle(Clock::time_point now) override;
  void Drain() override;

 private:
  void PushLocked(const std::shared_ptr<Part>& part, EventKind kind, bool ok = true);
  // Whether this thread is to deliver the queued events (no other delivery runs).
  bool ClaimDeliveryLocked();
  // After events were queued where no delivery may follow: one on the deferred thread.
  void EnsureDeliveryLocked();
  void Deliver();  // runs the queued events until none is left; the caller claimed delivery
  // The parts of one request message; streams to start go to `started`.
  Status DispatchLocked(pb::StreamManyRequest* request,
                        std::vector<std::shared_ptr<Part>>* started);
  // Completes the part's read in flight if it can be: a request, or the end of its input.
  void FeedReadLocked(const std::shared_ptr<Part>& part);
  void DropInboxLocked(Part& part);
  void CancelPartLocked(const std::shared_ptr<Part>& part, const grpc::Status& status);
  void EndPartLocked(const std::shared_ptr<Part>& part);  // queues OnDone
  // Ends the call with `status`: every stream is cancelled, nothing more is written.
  void BreakLocked(const grpc::Status& status);
  void MaybeReadLocked();
  void MaybeWriteLocked();
  void MaybeFinishLocked();

  grpc::CallbackServerContext* const context_;
  CallShared* const shared_;
  DeferredTasks* const deferred_;
  const std::function<void(std::unique_ptr<CallPort>)> start_stream_;
  const CallerCredentials credentials_;

  std::mutex mu_;                                    // guards everything below
  std::shared_ptr<ManyCall> self_;                   // gRPC's reference, until OnDone
  std::map<uint64_t, std::shared_ptr<Part>> parts_;  // streams not ended
  uint64_t next_new_id_ = 0;                         // ids from here on start new streams
  size_t full_parts_ = 0;  // streams with more than kMaxQueuedRequests unread requests
  std::deque<Event> events_;
  bool delivering_ = false;
  grpc::ByteBuffer read_buffer_;
  pb::StreamManyRequest request_;
  uint64_t messages_read_ = 0;
  bool read_in_flight_ = false;
  bool input_ended_ = false;  // the client half-closed (or the read failed)
  std::deque<Outgoing> outgoing_;
  std::vector<Outgoing> in_write_;  // in the write in flight
  grpc::ByteBuffer write_buffer_;
  bool write_in_flight_ = false;
  Clock::time_point write_started_, last_activity_;
  bool broken_ = false;  // the call ends with status_: no stream goes on
  bool draining_ = false;
  bool idle_ = false;
  grpc::Status status_;  // the call's final status
  bool finish_called_ = false;
  bool cancel_sent_ = false;
  bool call_done_ = false;
  std::vector<std::shared_ptr<Part>> ending_;  // their OnDone waits (EndPartLocked)
};

class PartCanceller final : public CallCanceller {
 public:
  PartCanceller(std::shared_ptr<ManyCall> call, std::shared_ptr<Part> part)
      : call_(std::move(call)), part_(std::move(part)) {}
  void Cancel(const char* why) override {
    std::shared_ptr<ManyCall> call;
    {
      std::lock_guard<std::mutex> lock(mu_);
      call = call_;
    }
    if (call != nullptr)
      call->PartCancel(part_, grpc::Status(grpc::StatusCode::CANCELLED, why),
                       /*deliver_here=*/false);
  }
  void Detach() override {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = nullptr;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<ManyCall> call_;  // nullptr once detached
  const std::shared_ptr<Part> part_;
};

// One stream's port: its reads and writes are parts of the call's messages.
class PartPort final : public CallPort {
 public:
  PartPort(std::shared_ptr<ManyCall> call, std::shared_ptr<Part> part)
      : call_(std::move(call)), part_(std::move(part)) {}
  void Bind(CallEvents* events) override { call_->PartBind(part_, events); }
  CallerCredentials Credentials() const override { return call_->credentials(); }
  void StartRead(grpc::ByteBuffer* into) override { call_->PartRead(part_, into); }
  void StartWrite(const grpc::ByteBuffer* bytes) override { call_->PartWrite(part_, bytes); }
  void Finish(const grpc::Status& status) override { call_->PartFinish(part_, status); }
  void AddTrailingMetadata(const std::string& key, const std::string& value) override {
    call_->PartTrailer(part_, key, value);
  }
  void Cancel(grpc::StatusCode code, const std::string& message) override {
    call_->PartCancel(part_, grpc::Status(code, message), /*deliver_here=*/true);
  }
  std::shared_ptr<CallCanceller> MakeCanceller() override {
    return std::make_shared<PartCanceller>(call_, part_);
  }

 private:
  const std::shared_ptr<ManyCall> call_;
  const std::shared_ptr<Part> part_;
};

void ManyCall::Start(std::shared_ptr<ManyCall> self) {
  auto identity =
      shared_->auth->Authenticate(shared_->auth->enabled() ? credentials_ : CallerCredentials());
  shared_->calls->Add(this);
  std::lock_guard<std::mutex> lock(mu_);
  self_ = std::move(self);
  if (!identity.ok()) {  // nothing is read from a caller who is not known
    shared_->metrics->CountError(int(identity.status().code()));
    BreakLocked(ToGrpcStatus(identity.status()));
    return;
  }
  MaybeReadLocked();
}

void ManyCall::PushLocked(const std::shared_ptr<Part>& part, EventKind kind, bool ok) {
  if (part->starting) {
    part->held.emplace_back(kind, ok);
  } else {
    events_.push_back({part, kind, ok});
  }
}

bool ManyCall::ClaimDeliveryLocked() {
  if (delivering_ || events_.empty()) return false;
  delivering_ = true;
  return true;
}

void ManyCall::EnsureDeliveryLocked() {
  if (!ClaimDeliveryLocked()) return;
  deferred_->Post([call = shared_from_this()] { call->Deliver(); });
}

void ManyCall::Deliver() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!events_.empty()) {
    Event event = std::move(events_.front());
    events_.pop_front();
    lock.unlock();
    CallEvents* events = event.part->events;
    switch (event.kind) {
      case EventKind::kRead:
        events->OnReadDone(event.ok);
        break;
      case EventKind::kWrite:
        events->OnWriteDone(event.ok);
        break;
      case EventKind::kCancel:
        events->OnCancel();
        break;
      case EventKind::kDone:
        events->OnDone();  // the stream's logic may be deleted from here on
        break;
    }
    event.part.reset();
    lock.lock();
  }
  delivering_ = false;
}

void ManyCall::PartBind(const std::shared_ptr<Part>& part, CallEvents* events) {
  std::lock_guard<std::mutex> lock(mu_);
  part->events = events;
}

void ManyCall::PartRead(const std::shared_ptr<Part>& part, grpc::ByteBuffer* into) {
  std::lock_guard<std::mutex> lock(mu_);
  part->read_into = into;
  FeedReadLocked(part);
  EnsureDeliveryLocked();
}

void ManyCall::FeedReadLocked(const std::shared_ptr<Part>& part) {
  if (part->read_into == nullptr) return;
  if (!part->inbox.empty()) {
    part->read_into->Swap(&part->inbox.front());
    part->inbox.pop_front();
    part->read_into = nullptr;
    PushLocked(part, EventKind::kRead, true);
    if (part->inbox.size() == kMaxQueuedRequests && --full_parts_ == 0) MaybeReadLocked();
  } else if (part->input_closed || part->cancelled || part->finished) {
    part->read_into = nullptr;
    PushLocked(part, EventKind::kRead, false);
  }
}

void ManyCall::DropInboxLocked(Part& part) {
  if (part.inbox.size() > kMaxQueuedRequests && --full_parts_ == 0) MaybeReadLocked();
  part.inbox.clear();
}

void ManyCall::PartWrite(const std::shared_ptr<Part>& part, const grpc::ByteBuffer* bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (part->cancelled || broken_) {
    PushLocked(part, EventKind::kWrite, false);
    EnsureDeliveryLocked();
    return;
  }
  part->writing = true;
  part->write = bytes;
  outgoing_.push_back({part, false, {}});
  MaybeWriteLocked();
}

void ManyCall::PartFinish(const std::shared_ptr<Part>& part, const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (part->finished) return;
  part->finished = true;
  DropInboxLocked(*part);
  FeedReadLocked(part);  // a read in flight fails
  if (broken_) {
    EndPartLocked(part);
  } else {
    outgoing_.push_back({part, true, part->cancelled ? part->cancel_status : status});
    MaybeWriteLocked();
  }
  EnsureDeliveryLocked();
}

void ManyCall::PartTrailer(const std::shared_ptr<Part>& part, const std::string& key,
                           const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  part->trailers[key] = value;
}

void ManyCall::PartCancel(const std::shared_ptr<Part>& part, const grpc::Status& status,
                          bool deliver_here) {
  std::shared_ptr<ManyCall> keep = shared_from_this();  // a stream's OnDone may drop the last
  bool deliver = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CancelPartLocked(part, status);
    if (deliver_here) {
      deliver = ClaimDeliveryLocked();
    } else {
      EnsureDeliveryLocked();
    }
  }
  if (deliver) Deliver();
}

void ManyCall::CancelPartLocked(const std::shared_ptr<Part>& part, const grpc::Status& status) {
  if (part->cancelled || part->done) return;
  part->cancelled = true;
  part->cancel_status = status;
  DropInboxLocked(*part);
  FeedReadLocked(part);
  // A write not yet in the call's write fails now; one in it fails when that write is done.
  for (auto it = outgoing_.begin(); it != outgoing_.end(); ++it)
    if (it->part == part && !it->end) {
      outgoing_.erase(it);
      part->writing = false;
      part->write = nullptr;
      PushLocked(part, EventKind::kWrite, false);
      break;
    }
  PushLocked(part, EventKind::kCancel);
}

void ManyCall::EndPartLocked(const std::shared_ptr<Part>& part) {
  if (part->done) return;
  part->done = true;
  if (broken_ && !part->cancelled) {  // its end never reaches the client: it was cancelled
    part->cancelled = true;
    PushLocked(part, EventKind::kCancel);
  }
  if (input_ended_ && !broken_ && !call_done_) {
    // The call's read failed: a half-close, or a cancel whose OnCancel has not come yet. The
    // stream's OnDone waits for the call's OnCancel (which precedes it: the stream then parks as
    // a cancelled Stream call would) or the call's OnDone (a half-close: it completed).
    ending_.push_back(part);
  } else {
    PushLocked(part, EventKind::kDone);
  }
  parts_.erase(part->id);
  MaybeFinishLocked();
}

void ManyCall::BreakLocked(const grpc::Status& status) {
  if (broken_) return;
  broken_ = true;
  status_ = status;
  for (Outgoing& out : outgoing_) {
    if (out.end) {
      EndPartLocked(out.part);
    } else {
      out.part->writing = false;
      out.part->write = nullptr;
      PushLocked(out.part, EventKind::kWrite, false);
    }
  }
  outgoing_.clear();
  for (auto& part : ending_) {
    PushLocked(part, EventKind::kCancel);
    PushLocked(part, EventKind::kDone);
  }
  ending_.clear();
  const grpc::Status gone(grpc::StatusCode::CANCELLED,
                          "the StreamMany call ended: " + status.error_message());
  std::vector<std::shared_ptr<Part>> parts;
  for (auto& [id, part] : parts_) parts.push_back(part);
  for (auto& part : parts) {
    CancelPartLocked(part, gone);
    if (part->finished && !part->writing) EndPartLocked(part);
  }
  MaybeFinishLocked();
}

void ManyCall::MaybeReadLocked() {
  if (read_in_flight_ || input_ended_ || broken_ || finish_called_ || full_parts_ > 0) return;
  read_in_flight_ = true;
  StartRead(&read_buffer_);
}

void ManyCall::MaybeWriteLocked() {
  if (write_in_flight_ || outgoing_.empty() || finish_called_) return;
  pb::StreamManyResponse batch;
  size_t bytes = 0;
  std::vector<grpc::Slice> slices;
  while (!outgoing_.empty() && bytes < kMaxResponseBytes) {
    Outgoing out = std::move(outgoing_.front());
    outgoing_.pop_front();
    pb::StreamManyResult* result = batch.add_results();
    result->set_id(out.part->id);
    if (out.end) {
      result->set_ended(true);
      result->set_code(int(out.status.error_code()));
      result->set_message(out.status.error_message());
      for (const auto& [key, value] : out.part->trailers)
        (*result->mutable_trailers())[key] = value;
      bytes += out.status.error_message().size() + 16;
    } else {
      slices.clear();
      (void)out.part->write->Dump(&slices);
      std::string* response = result->mutable_response();
      for (const grpc::Slice& slice : slices)
        response->append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      bytes += response->size() + 16;
    }
    in_write_.push_back(std::move(out));
  }
  bool own = false;
  write_buffer_.Clear();  // the last write's, done
  (void)grpc::SerializationTraits<pb::StreamManyResponse>::Serialize(batch, &write_buffer_, &own);
  write_in_flight_ = true;
  write_started_ = Clock::now();
  StartWrite(&write_buffer_);
}

void ManyCall::MaybeFinishLocked() {
  if (finish_called_ || write_in_flight_) return;
  if (!broken_) {
    if (!parts_.empty() || !outgoing_.empty()) return;
    if (input_ended_) {
      status_ = grpc::Status::OK;
    } else if (draining_) {
      status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                             "the server is shutting down; open the streams on another server");
    } else if (!idle_) {
      return;
    }
  }
  finish_called_ = true;
  Finish(status_);
}

Status ManyCall::DispatchLocked(pb::StreamManyRequest* request,
                                std::vector<std::shared_ptr<Part>>* started) {
  for (pb::StreamManyPart& in : *request->mutable_parts()) {
    std::shared_ptr<Part> part;
    auto it = parts_.find(in.id());
    if (it != parts_.end()) {
      part = it->second;
    } else if (in.id() >= next_new_id_) {
      if (!in.has_request() && !in.close_send()) continue;  // a cancel of nothing
      part = std::make_shared<Part>(in.id());
      parts_.emplace(in.id(), part);
      next_new_id_ = in.id() + 1;
      started->push_back(part);
    } else {
      continue;  // a stream that has ended (or an id skipped): ignored
    }
    if (part->cancelled || part->finished) continue;
    if (in.has_request()) {
      auto* bytes = new std::string(std::move(*in.mutable_request()));
      grpc::Slice slice(
          bytes->data(), bytes->size(), [](void* p) { delete static_cast<std::string*>(p); },
          bytes);
      part->inbox.emplace_back(&slice, 1);
      if (part->inbox.size() == kMaxQueuedRequests + 1) ++full_parts_;
    }
    if (in.close_send()) part->input_closed = true;
    if (in.cancel())
      CancelPartLocked(part, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    FeedReadLocked(part);
  }
  return OkStatus();
}

void ManyCall::OnReadDone(bool ok) {
  std::vector<std::shared_ptr<Part>> started;
  bool deliver;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Claimed before the new streams start, so that their first reads wait for this thread.
    deliver = !delivering_;
    delivering_ = true;
    read_in_flight_ = false;
    last_activity_ = Clock::now();
    if (!ok) {  // half-close, or the call is broken (OnCancel follows then)
      input_ended_ = true;
      for (auto& [id, part] : parts_) {
        part->input_closed = true;
        FeedReadLocked(part);
      }
      MaybeFinishLocked();
    } else if (!broken_) {
      ++messages_read_;
      request_.Clear();
      const size_t bytes = read_buffer_.Length();
      if (!grpc::SerializationTraits<pb::StreamManyRequest>::Deserialize(&read_buffer_, &request_)
               .ok()) {
        BreakLocked(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            fmt::format("request message #{} ({} bytes) could not be parsed as "
                        "ssmserve.v1.StreamManyRequest (truncated or corrupt protobuf)",
                        messages_read_, bytes)));
      } else {
        (void)DispatchLocked(&request_, &started);
      }
    }
  }
  // Outside mu_: starting a stream runs its logic's Start (which reads, through its port).
  for (const auto& part : started)
    start_stream_(std::make_unique<PartPort>(shared_from_this(), part));
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& part : started) {
      part->starting = false;
      for (const auto& [kind, event_ok] : part->held) events_.push_back({part, kind, event_ok});
      part->held.clear();
    }
    MaybeReadLocked();
    if (!deliver) EnsureDeliveryLocked();  // the delivery that ran may have ended meanwhile
  }
  if (deliver) Deliver();
}

void ManyCall::OnWriteDone(bool ok) {
  bool deliver;
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_in_flight_ = false;
    last_activity_ = Clock::now();
    // First: the streams of a failed write are cancelled (what it carried never arrived).
    if (!ok)
      BreakLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: the client is gone"));
    for (Outgoing& out : in_write_) {
      if (out.end) {
        EndPartLocked(out.part);
      } else {
        out.part->writing = false;
        out.part->write = nullptr;
        PushLocked(out.part, EventKind::kWrite, ok && !out.part->cancelled);
      }
    }
    in_write_.clear();
    MaybeWriteLocked();
    MaybeFinishLocked();
    deliver = ClaimDeliveryLocked();
  }
  if (deliver) Deliver();
}

void ManyCall::OnCancel() {
  bool deliver;
  {
    std::lock_guard<std::mutex> lock(mu_);
    BreakLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    deliver = ClaimDeliveryLocked();
  }
  if (deliver) Deliver();
}

void ManyCall::OnDone() {
  // The lock orders this after the call's construction for ThreadSanitizer, which cannot see
  // gRPC's own ordering (gRPC is not instrumented); Remove itself must not hold it.
  { std::lock_guard<std::mutex> lock(mu_); }
  shared_->calls->Remove(this);
  std::shared_ptr<ManyCall> self;
  bool deliver;
  {
    std::lock_guard<std::mutex> lock(mu_);
    call_done_ = true;
    for (auto& part : ending_) PushLocked(part, EventKind::kDone);  // no cancel came
    ending_.clear();
    self = std::move(self_);
    deliver = ClaimDeliveryLocked();
  }
  if (deliver) Deliver();
  // `self` may be the last reference: this is deleted on return.
}

void ManyCall::CheckIdle(Clock::time_point now) {
  std::string stalled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_) return;
    if (write_in_flight_ && Seconds(write_started_, now) > shared_->config->write_timeout_s) {
      if (cancel_sent_) return;
      cancel_sent_ = true;
      stalled = fmt::format(
          "the client took no response for {:g} s (--write-timeout): a StreamMany call must read "
          "its responses; the call was closed",
          shared_->config->write_timeout_s);
    } else {
      if (!parts_.empty() || Seconds(last_activity_, now) <= shared_->config->idle_timeout_s)
        return;
      idle_ = true;
      status_ = grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          fmt::format("no stream and no request for {:g} s (--idle-timeout); the call was closed",
                      shared_->config->idle_timeout_s));
      MaybeFinishLocked();
      return;
    }
  }
  // Outside mu_: the stuck write fails, every stream is cancelled, the status reaches the client.
  grpc_call_cancel_with_status(context_->c_call(), GRPC_STATUS_DEADLINE_EXCEEDED, stalled.c_str(),
                               nullptr);
}

void ManyCall::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;  // the streams drain themselves (each is registered)
  MaybeFinishLocked();
}

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartStreamMany(
    grpc::CallbackServerContext* context, CallShared* shared, DeferredTasks* deferred,
    std::function<void(std::unique_ptr<CallPort>)> start_stream) {
  auto call = std::make_shared<ManyCall>(context, shared, deferred, std::move(start_stream));
  ManyCall* reactor = call.get();
  reactor->Start(std::move(call));
  return reactor;
}

}  // namespace ssm
