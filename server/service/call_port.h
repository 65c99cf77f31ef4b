// The transport side of one streaming call, as its stream handling logic (CallReactor) sees it:
// start a read or a write, finish with a status, cancel. The server's port is gRPC's callback
// reactor (GrpcCallPort); the stream fuzz target drives the same logic through a port of its
// own, without a network (tests/fuzz/README.md).
//
// The contract is gRPC's for a bidirectional callback reactor: at most one read and one write in
// flight; each completes later with the events' OnReadDone/OnWriteDone (ok = false: half-close
// or a broken call); Finish once, when no write is in flight; OnCancel when the call is
// cancelled (by the client, or by Cancel here), after which every operation fails; OnDone last,
// once Finish was called and every operation completed. A port's methods may be called with the
// call's lock held, from any thread, and never call an event on the calling thread, except Cancel
// (called without the lock).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "server/service/authenticator.h"
#include "server/service/parked_streams.h"

namespace ssm {

// What a port reports to its call.
class CallEvents {
 public:
  virtual void OnReadDone(bool ok) = 0;
  virtual void OnWriteDone(bool ok) = 0;
  virtual void OnCancel() = 0;
  virtual void OnDone() = 0;

 protected:
  ~CallEvents() = default;
};

class CallPort {
 public:
  virtual ~CallPort() = default;
  // The call's events go to `events` from now on: once it is fully constructed, before the
  // first operation.
  virtual void Bind(CallEvents* events) = 0;
  // Who is calling: its authorization metadata and verified client certificate.
  virtual CallerCredentials Credentials() const = 0;
  virtual void StartRead(grpc::ByteBuffer* into) = 0;
  virtual void StartWrite(const grpc::ByteBuffer* bytes) = 0;  // valid until OnWriteDone
  virtual void Finish(const grpc::Status& status) = 0;
  // Sent with the final status; before Finish.
  virtual void AddTrailingMetadata(const std::string& key, const std::string& value) = 0;
  // Ends the call with `code` and `message` for the client, as a cancel: pending and later
  // operations fail, OnCancel follows. Not with the call's lock held: events may run here.
  virtual void Cancel(grpc::StatusCode code, const std::string& message) = 0;
  // A handle that cancels the call from another thread for as long as it runs (a resume that
  // takes its stream over); OnDone detaches it.
  virtual std::shared_ptr<CallCanceller> MakeCanceller() = 0;
};

// The server's port: gRPC's reactor for the call, forwarding its events.
class GrpcCallPort final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                           public CallPort {
 public:
  explicit GrpcCallPort(grpc::CallbackServerContext* context) : context_(context) {}

  void Bind(CallEvents* events) override { events_.store(events, std::memory_order_release); }
  CallerCredentials Credentials() const override;
  void StartRead(grpc::ByteBuffer* into) override { ServerBidiReactor::StartRead(into); }
  void StartWrite(const grpc::ByteBuffer* bytes) override { ServerBidiReactor::StartWrite(bytes); }
  void Finish(const grpc::Status& status) override { ServerBidiReactor::Finish(status); }
  void AddTrailingMetadata(const std::string& key, const std::string& value) override {
    context_->AddTrailingMetadata(key, value);
  }
  void Cancel(grpc::StatusCode code, const std::string& message) override;
  std::shared_ptr<CallCanceller> MakeCanceller() override;

  void OnReadDone(bool ok) override { events()->OnReadDone(ok); }
  void OnWriteDone(bool ok) override { events()->OnWriteDone(ok); }
  void OnCancel() override { events()->OnCancel(); }
  void OnDone() override { events()->OnDone(); }  // may delete this port

 private:
  // gRPC runs the events on its own threads, ordered after Bind by its internal locks, which
  // ThreadSanitizer does not see (gRPC is not instrumented): the release/acquire pair makes the
  // order visible, for the call's whole construction.
  CallEvents* events() const { return events_.load(std::memory_order_acquire); }

  grpc::CallbackServerContext* const context_;
  std::atomic<CallEvents*> events_{nullptr};
};

}  // namespace ssm
