#include "clients/lib/stream_group.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "clients/lib/pcm_encoding.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm::client {

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;

class GroupReactor;

// The group's state, shared by the StreamGroup and the reactor of its call.
class StreamGroupCall : public std::enable_shared_from_this<StreamGroupCall> {
 public:
  StreamGroupCall(std::shared_ptr<grpc::Channel> channel, StreamGroupOptions options)
      : channel_(std::move(channel)),
        stub_(pb::Ssm::NewStub(channel_)),
        options_(std::move(options)) {}

  void Start();
  StatusOr<uint64_t> Open(const StreamOptions& options);
  Status Send(uint64_t id, const float* values, size_t n);
  Status SendPayload(uint64_t id, std::string payload);
  Status CloseSend(uint64_t id);
  Status Cancel(uint64_t id);
  void Flush();
  Status Close();
  void CancelAll();
  void CancelAndWait();
  bool done() const;
  StreamGroupStats stats() const;

  // Reactions, from the reactor on gRPC threads.
  void OnWriteDone(bool ok);
  void OnRead(const pb::StreamManyResponse& response);
  void OnReadsDone(GroupReactor* reactor);
  void OnDone(const grpc::Status& status);

 private:
  struct Member {
    pb::SampleFormat format = pb::SAMPLE_FORMAT_UNSPECIFIED;
    uint64_t next_sequence = 0;
    std::deque<std::pair<uint64_t, Clock::time_point>> unanswered;  // sequence, Send time
    bool closed = false;  // CloseSend or Cancel queued: nothing more is sent
    bool ended = false;   // its `ended` came (or the call ended)
  };

  // Checks that stream `id` may still send.
  StatusOr<Member*> SendableLocked(uint64_t id);
  void QueueLocked(pb::StreamManyPart part);
  // Starts a write of queued requests if none is in flight and one is due (a flush, or
  // auto_flush); the half-close once everything is written and Close asked for it.
  void PumpLocked();

  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<pb::Ssm::Stub> stub_;
  const StreamGroupOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // notified when the call ends
  GroupReactor* reactor_ = nullptr;  // alive until OnReadsDone
  std::map<uint64_t, Member> members_;
  uint64_t next_id_ = 0;
  std::deque<pb::StreamManyPart> queued_;
  bool flush_ = false;    // the queued requests are to be written
  bool writing_ = false;  // a write is in flight
  bool write_failed_ = false;
  bool closing_ = false;  // Close: half-close once the queue is written
  bool writes_done_started_ = false;
  bool done_ = false;
  Status final_;
  StreamGroupStats stats_;
};

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void Starting(void* side) { __tsan_release(side); }
inline void Reacting(void* side) { __tsan_acquire(side); }
#else
inline void Starting(void*) {}
inline void Reacting(void*) {}
#endif

class GroupReactor final
    : public grpc::ClientBidiReactor<pb::StreamManyRequest, pb::StreamManyResponse> {
 public:
  explicit GroupReactor(std::shared_ptr<StreamGroupCall> call) : call_(std::move(call)) {}
  grpc::ClientContext* context() { return &context_; }
  pb::StreamManyRequest* request() { return &request_; }
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
    if (!ok) {
      call_->OnReadsDone(this);
      return;
    }
    call_->OnRead(response_);
    ReadNext();
  }
  void OnDone(const grpc::Status& status) override {
    Reacting(&request_);
    Reacting(&response_);
    call_->OnDone(status);
    delete this;
  }

 private:
  const std::shared_ptr<StreamGroupCall> call_;
  grpc::ClientContext context_;
  pb::StreamManyRequest request_;
  pb::StreamManyResponse response_;
};

void StreamGroupCall::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  reactor_ = new GroupReactor(shared_from_this());
  if (!options_.api_key.empty())
    reactor_->context()->AddMetadata("authorization", "Bearer " + options_.api_key);
  stub_->async()->StreamMany(reactor_->context(), reactor_);
  // Writes start from other threads too: the hold keeps the call until its reads are done.
  reactor_->AddHold();
  reactor_->ReadNext();
  reactor_->StartCall();
}

StatusOr<uint64_t> StreamGroupCall::Open(const StreamOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_ || closing_ || write_failed_)
    return FailedPreconditionError("the stream group is closing or has ended");
  const uint64_t id = next_id_++;
  members_[id].format = options.format;
  pb::StreamRequest request;
  pb::StreamOpen* open = request.mutable_open();
  open->set_model(options.model);
  open->set_format(options.format);
  open->set_sample_rate(options.sample_rate);
  open->set_label(options.label);
  pb::StreamManyPart part;
  part.set_id(id);
  request.SerializeToString(part.mutable_request());
  ++stats_.streams_opened;
  QueueLocked(std::move(part));
  return id;
}

StatusOr<StreamGroupCall::Member*> StreamGroupCall::SendableLocked(uint64_t id) {
  auto it = members_.find(id);
  if (it == members_.end())
    return NotFoundError(fmt::format("stream {} was never opened in this group", id));
  if (it->second.ended) return FailedPreconditionError(fmt::format("stream {} has ended", id));
  if (it->second.closed || closing_)
    return FailedPreconditionError(fmt::format("stream {} was closed for sending", id));
  return &it->second;
}

Status StreamGroupCall::Send(uint64_t id, const float* values, size_t n) {
  pb::SampleFormat format;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SSM_ASSIGN_OR_RETURN(Member * member, SendableLocked(id));
    format = member->format;
  }
  std::string payload;
  SSM_RETURN_IF_ERROR(EncodePayload(values, n, format, &payload));
  return SendPayload(id, std::move(payload));
}

Status StreamGroupCall::SendPayload(uint64_t id, std::string payload) {
  std::lock_guard<std::mutex> lock(mu_);
  SSM_ASSIGN_OR_RETURN(Member * member, SendableLocked(id));
  pb::StreamRequest request;
  request.mutable_chunk()->set_sequence(member->next_sequence);
  request.mutable_chunk()->set_payload(std::move(payload));
  member->unanswered.emplace_back(member->next_sequence, Clock::now());
  ++member->next_sequence;
  pb::StreamManyPart part;
  part.set_id(id);
  request.SerializeToString(part.mutable_request());
  ++stats_.chunks_sent;
  QueueLocked(std::move(part));
  return OkStatus();
}

Status StreamGroupCall::CloseSend(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  SSM_ASSIGN_OR_RETURN(Member * member, SendableLocked(id));
  member->closed = true;
  pb::StreamManyPart part;
  part.set_id(id);
  part.set_close_send(true);
  QueueLocked(std::move(part));
  return OkStatus();
}

Status StreamGroupCall::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end())
    return NotFoundError(fmt::format("stream {} was never opened in this group", id));
  if (it->second.ended) return OkStatus();
  it->second.closed = true;
  pb::StreamManyPart part;
  part.set_id(id);
  part.set_cancel(true);
  QueueLocked(std::move(part));
  return OkStatus();
}

void StreamGroupCall::QueueLocked(pb::StreamManyPart part) {
  queued_.push_back(std::move(part));
  if (options_.auto_flush) flush_ = true;
  PumpLocked();
}

void StreamGroupCall::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!queued_.empty()) flush_ = true;
  PumpLocked();
}

void StreamGroupCall::PumpLocked() {
  if (reactor_ == nullptr || writing_ || write_failed_) return;
  if (flush_ && !queued_.empty()) {
    pb::StreamManyRequest* request = reactor_->request();
    request->Clear();
    size_t bytes = 0;
    while (!queued_.empty() && (request->parts_size() == 0 || bytes < options_.max_message_bytes)) {
      bytes += queued_.front().request().size() + 16;
      *request->add_parts() = std::move(queued_.front());
      queued_.pop_front();
    }
    flush_ = !queued_.empty();  // the rest goes in the next message
    writing_ = true;
    ++stats_.messages_sent;
    reactor_->Write();
    return;
  }
  if (closing_ && queued_.empty() && !writes_done_started_) {
    writes_done_started_ = true;
    reactor_->WritesDone();
  }
}

void StreamGroupCall::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  if (!ok) {  // the call is ending; OnDone says how
    write_failed_ = true;
    return;
  }
  PumpLocked();
}

void StreamGroupCall::OnRead(const pb::StreamManyResponse& response) {
  struct Report {
    uint64_t id = 0;
    enum Kind { kOpened, kOutput, kEnded } kind = kOutput;
    pb::StreamOpened opened;
    Output output;
    Status status;
  };
  const auto report = [](std::vector<Report>* reports, uint64_t id, Report::Kind kind) {
    reports->emplace_back();
    reports->back().id = id;
    reports->back().kind = kind;
    return &reports->back();
  };
  std::vector<Report> reports;
  reports.reserve(size_t(response.results_size()));
  pb::StreamResponse message;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.messages_received;
    const Clock::time_point now = Clock::now();
    for (const pb::StreamManyResult& result : response.results()) {
      auto it = members_.find(result.id());
      if (it == members_.end() || it->second.ended) continue;
      Member& member = it->second;
      if (result.ended()) {
        member.ended = true;
        ++stats_.streams_ended;
        report(&reports, result.id(), Report::kEnded)->status =
            Status(static_cast<StatusCode>(result.code()), result.message());
        continue;
      }
      if (!result.has_response() || !message.ParseFromString(result.response())) continue;
      if (message.has_opened()) {
        report(&reports, result.id(), Report::kOpened)->opened = message.opened();
      } else if (message.has_output()) {
        const pb::StreamOutput& o = message.output();
        Output& out = report(&reports, result.id(), Report::kOutput)->output;
        out.first_frame = o.first_frame();
        out.frames = o.frames();
        out.d_out = o.d_out();
        out.values.assign(o.values().begin(), o.values().end());
        out.sequence = o.sequence();
        out.server_latency_ms = o.server_latency_ms();
        while (!member.unanswered.empty() && member.unanswered.front().first < o.sequence())
          member.unanswered.pop_front();
        if (!member.unanswered.empty() && member.unanswered.front().first == o.sequence()) {
          out.round_trip_ms =
              std::chrono::duration<double, std::milli>(now - member.unanswered.front().second)
                  .count();
          member.unanswered.pop_front();
        }
        ++stats_.outputs_received;
      }
    }
  }
  for (const Report& r : reports) {  // without mu_: the callbacks may call into the group
    if (r.kind == Report::kOpened && options_.on_opened) options_.on_opened(r.id, r.opened);
    if (r.kind == Report::kOutput && options_.on_output) options_.on_output(r.id, r.output);
    if (r.kind == Report::kEnded && options_.on_ended) options_.on_ended(r.id, r.status);
  }
}

void StreamGroupCall::OnReadsDone(GroupReactor* reactor) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_failed_ = true;  // nothing more is written
    reactor_ = nullptr;
  }
  reactor->RemoveHold();  // OnDone follows (gRPC schedules it)
}

void StreamGroupCall::OnDone(const grpc::Status& grpc_status) {
  const Status status(static_cast<StatusCode>(grpc_status.error_code()),
                      grpc_status.error_message());
  std::vector<uint64_t> unended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, member] : members_)
      if (!member.ended) {
        member.ended = true;
        ++stats_.streams_ended;
        unended.push_back(id);
      }
  }
  const Status why =
      status.ok() ? Status(StatusCode::kInternal, "the StreamMany call ended before the stream did")
                  : status.WithContext("the StreamMany call ended");
  if (options_.on_ended)
    for (uint64_t id : unended) options_.on_ended(id, why);
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    final_ = status;
  }
  cv_.notify_all();
}

Status StreamGroupCall::Close() {
  std::unique_lock<std::mutex> lock(mu_);
  closing_ = true;
  flush_ = !queued_.empty();
  PumpLocked();
  cv_.wait(lock, [this] { return done_; });
  return final_;
}

void StreamGroupCall::CancelAll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ != nullptr) reactor_->context()->TryCancel();
}

void StreamGroupCall::CancelAndWait() {
  std::unique_lock<std::mutex> lock(mu_);
  if (reactor_ != nullptr) reactor_->context()->TryCancel();
  cv_.wait(lock, [this] { return done_; });
}

bool StreamGroupCall::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

StreamGroupStats StreamGroupCall::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

StreamGroup::StreamGroup(std::shared_ptr<StreamGroupCall> call) : call_(std::move(call)) {}
StreamGroup::~StreamGroup() { call_->CancelAndWait(); }
StatusOr<uint64_t> StreamGroup::Open(const StreamOptions& options) { return call_->Open(options); }
Status StreamGroup::Send(uint64_t id, const float* values, size_t n) {
  return call_->Send(id, values, n);
}
Status StreamGroup::SendPayload(uint64_t id, std::string payload) {
  return call_->SendPayload(id, std::move(payload));
}
Status StreamGroup::CloseSend(uint64_t id) { return call_->CloseSend(id); }
Status StreamGroup::Cancel(uint64_t id) { return call_->Cancel(id); }
void StreamGroup::Flush() { call_->Flush(); }
Status StreamGroup::Close() { return call_->Close(); }
void StreamGroup::CancelAll() { call_->CancelAll(); }
bool StreamGroup::done() const { return call_->done(); }
StreamGroupStats StreamGroup::stats() const { return call_->stats(); }

std::unique_ptr<StreamGroup> StartStreamGroupCall(std::shared_ptr<grpc::Channel> channel,
                                                  const StreamGroupOptions& options) {
  auto call = std::make_shared<StreamGroupCall>(std::move(channel), options);
  call->Start();
  return std::unique_ptr<StreamGroup>(new StreamGroup(std::move(call)));
}

}  // namespace ssm::client
