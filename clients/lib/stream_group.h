// Many live streams on one StreamMany call (docs/design.md §9): how a gateway or media server
// carries many signals to the server at a fraction of the cost of one call each. Every stream is
// opened, fed and closed by its id, and the server treats it as it would a Stream call (same
// checks, errors and final status, its own resume token); only the transport is shared.
//
//   client::StreamGroupOptions options;
//   options.on_output = [](uint64_t id, const client::Output& out) { ... };
//   options.on_ended = [](uint64_t id, const Status& status) { ... };
//   auto group = client->StartStreamGroup(options);
//   uint64_t a = group->Open(stream_options), b = group->Open(stream_options);
//   group->Send(a, samples, n);  group->Send(b, samples, n);
//   group->Flush();              // both chunks in one message (auto_flush does it by itself)
//   Status end = group->Close();
//
// Requests queue and go out together: Flush() writes whatever is queued (in messages of at most
// max_message_bytes); with auto_flush every request flushes itself when no write is in flight,
// and those queued while one is go out together when it completes. A gateway that gathers the
// chunks due in a tick sets auto_flush false and calls Flush() once per tick.
//
// No resume here: when the call breaks, every stream still running ends with the call's error.
// The server parks its resumable streams; the resume token in on_opened's StreamOpened resumes
// one on a Stream call (StreamOpen.resume_token).
//
// Thread-safety: every method may be called from any thread. The callbacks run on gRPC's threads,
// one at a time and in order, without the group's lock (they may call Send, Flush, ...); they
// must not destroy the group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "clients/lib/stream.h"
#include "common/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace grpc {
class Channel;
}

namespace ssm::client {

class StreamGroupCall;  // stream_group.cc
class StreamGroup;
struct StreamGroupOptions;

// Starts the StreamMany call of a group on `channel` (Client::StartStreamGroup).
std::unique_ptr<StreamGroup> StartStreamGroupCall(std::shared_ptr<grpc::Channel> channel,
                                                  const StreamGroupOptions& options);

struct StreamGroupOptions {
  // The server accepted stream `id` (its `opened`).
  std::function<void(uint64_t id, const ssmserve::v1::StreamOpened&)> on_opened;
  // An output of stream `id`, in order; round_trip_ms from the Send of its chunk.
  std::function<void(uint64_t id, const Output&)> on_output;
  // Stream `id` has ended with the server's final status for it (OK after its CloseSend and
  // every answer), or the call's error when the call ended first. Once for every id opened.
  std::function<void(uint64_t id, const Status&)> on_ended;
  bool auto_flush = true;
  size_t max_message_bytes = 1u << 20;  // a flush writes messages of at most about this size
  std::string api_key;  // "authorization: Bearer"; StartStreamGroup fills in the Client's
};

// Counters over the group's life.
struct StreamGroupStats {
  uint64_t messages_sent = 0, messages_received = 0;
  uint64_t chunks_sent = 0, outputs_received = 0;
  uint64_t streams_opened = 0, streams_ended = 0;
};

class StreamGroup {
 public:
  ~StreamGroup();  // cancels a call still running and waits for it to end
  StreamGroup(const StreamGroup&) = delete;
  StreamGroup& operator=(const StreamGroup&) = delete;

  // Queues the `open` of a new stream (model, format, sample_rate and label of `options`; the
  // rest is for Stream calls) and returns its id: 0, 1, 2, ... in the order of the calls.
  // FAILED_PRECONDITION once the group is closing or has ended.
  StatusOr<uint64_t> Open(const StreamOptions& options);
  // Queues the next chunk of stream `id`: `n` values (samples, or frames of d_in floats) in the
  // stream's format, encoded as Stream::SendSamples does. INVALID_ARGUMENT for non-finite values,
  // NOT_FOUND for an id that was never opened, FAILED_PRECONDITION after the stream's
  // CloseSend or end (its on_ended says why it ended).
  Status Send(uint64_t id, const float* values, size_t n);
  Status SendPayload(uint64_t id, std::string payload);  // already encoded bytes
  // Queues stream `id`'s half-close: the server answers what was sent, then ends it with OK.
  Status CloseSend(uint64_t id);
  // Queues a cancel of stream `id` (it ends CANCELLED; the server parks it when resumable).
  Status Cancel(uint64_t id);
  // Writes every queued request (see the top of this file).
  void Flush();
  // Flushes, half-closes the call (every open stream's half-close with it), waits until every
  // stream has ended and the call with them, and returns the call's status.
  Status Close();
  // Ends the call now (CANCELLED): every stream still running ends.
  void CancelAll();
  bool done() const;  // the call has ended
  StreamGroupStats stats() const;

 private:
  friend std::unique_ptr<StreamGroup> StartStreamGroupCall(std::shared_ptr<grpc::Channel>,
                                                           const StreamGroupOptions&);
  explicit StreamGroup(std::shared_ptr<StreamGroupCall> call);
  std::shared_ptr<StreamGroupCall> call_;
};

}  // namespace ssm::client
