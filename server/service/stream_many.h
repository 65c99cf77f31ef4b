// The StreamMany rpc: many streams on one gRPC call (docs/design.md §9). Each stream inside is
// an ordinary Stream call's logic (a StreamReactor) on a port of its own, a PartPort, whose reads
// and writes are parts of the call's messages: one read of the call hands each stream its
// requests, and the outputs that streams write while a write of the call is in flight go out
// together in the next one. So a gateway carrying N streams costs the server one read and about
// one write per step, not N of each, and every rule of a Stream call (checks, errors, backpressure,
// timeouts, resume, identity) holds per stream because it is the same code.
//
// Events: a port must never run an event on the thread that called one of its methods (the
// stream's lock is held there). The call keeps one queue of the streams' events (read done,
// write done, cancel, done) and one thread at a time delivers them, without the call's lock:
// the gRPC thread of the call's read or write completion that produced them, or, for an event
// raised from elsewhere (a worker, the store's thread) while no delivery runs, the service's
// deferred-task thread.
//
// Backpressure: a stream takes its requests as its own logic reads them (at most
// CallReactor::kMaxChunksInFlight chunks in flight each); the call reads its next message only
// while no stream holds more than kMaxQueuedRequests unread requests, so one stream that cannot
// keep up holds the whole call back (as one slow reader holds a shared connection).
//
// How the call ends: the client half-closes it (every stream's input ends; OK once every stream
// has ended and its `ended` result is written), the call breaks or is cancelled (every stream is
// cancelled as a broken Stream call would be: resumable streams park), a request message that
// cannot be parsed (INVALID_ARGUMENT; every stream cancelled), the server drains (its streams
// drain, then UNAVAILABLE), no stream and no input for --idle-timeout, or a response not taken
// for --write-timeout (cancelled).
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "server/service/call_reactor.h"

namespace ssm {

// One thread that runs tasks in the order they were posted; for work that must leave the
// posting thread and is rare (the StreamMany calls' stray events). Joins in its destructor.
class DeferredTasks {
 public:
  DeferredTasks() = default;
  ~DeferredTasks();
  void Post(std::function<void()> task);  // thread-safe; the thread starts on the first post

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread thread_;
};

// Starts the call; `start_stream` starts one stream's logic on a port (SsmService::StartStream).
// The reactor returned is gRPC's; it deletes itself after OnDone (once its streams' ports, which
// share it, are gone).
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartStreamMany(
    grpc::CallbackServerContext* context, CallShared* shared, DeferredTasks* deferred,
    std::function<void(std::unique_ptr<CallPort>)> start_stream);

}  // namespace ssm
