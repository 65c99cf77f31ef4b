// The common part of the two streaming rpcs (Stream and ProcessFile): one reactor per call that
// reads `open` then chunks, hands decoded input to its model's scheduler, and writes the outputs.
// Messages travel as raw bytes (the service registers both rpcs as raw callback methods) and are
// parsed and size-checked here, so that a malformed or oversized request ends the call with its
// own clear status instead of looking like the client's half-close. The reactor is the call's
// logic only: its transport is a CallPort (call_port.h), gRPC's callback reactor in the server,
// a scripted one in the stream fuzz target, whose events (OnReadDone, ...) it implements.
//
// How a call ends (each lands in its own close reason and code, metrics.h):
// - the client half-closes: OK once every accepted chunk is answered;
// - bad input (unparseable or oversized message, sequence gap, bad payload, ...): no more input
//   is read, every chunk accepted before it is still answered, then the call ends with the
//   input's error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...);
// - the client cancels or disappears: CANCELLED, whatever was requested before;
// - no input for --idle-timeout: DEADLINE_EXCEEDED; a response not taken by the client for
//   --write-timeout (a client that stopped reading): DEADLINE_EXCEEDED, and the call is cancelled
//   with that status so that its slot is freed at once;
// - the server drains: UNAVAILABLE; the engine fails a chunk: that chunk's error.
// Identity (docs/design.md §8): a call is authenticated when it starts (no message is read from
// a caller that is refused) and admitted at its `open` (the key's models and limits); it ends
// with UNAUTHENTICATED or PERMISSION_DENIED on the idle sweep after a reload revokes its key or
// takes its model away. A resume token resumes only the streams of the identity that opened them.
// Resuming (Stream calls, docs/design.md §7): `opened` carries a resume token. A call that ends
// without a clean half-close (cancelled, gone, idle or write timeout) parks its stream: on the
// scheduler's worker, after its last step, the stream's snapshot (with the outputs of its
// latest frames, which the client may not have received) goes to ParkedStreams and its slot is
// freed. An `open` with a resume token takes such a stream back and continues it.
//
// Threading: the port's events (OnReadDone, OnWriteDone, OnCancel, OnDone), scheduler results
// (worker thread) and the call registry (idle sweep, drain) all enter through mu_, which guards
// every field below it. Nothing blocks under mu_: the port's StartRead/StartWrite/Finish only
// queue operations. At most one read and one write are in flight; further outputs wait in writes_.
// Backpressure: at most kMaxChunksInFlight chunks (submitted, not yet written back) per call;
// beyond that no read is started, so gRPC flow control slows the client down.
// Metrics: the reactor counts its stream's open and close, its chunks and errors (metrics.h).
// Lifetime: OnDone closes the stream through the scheduler, whose close callback deletes the
// reactor, so no scheduler callback can reach a deleted reactor.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/service/authenticator.h"
#include "server/service/call_port.h"
#include "server/service/call_registry.h"
#include "server/service/live_stream.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/parked_streams.h"
#include "server/service/payload.h"
#include "server/service/scheduler.h"
#include "server/service/server_config.h"
#include "server/service/state_store.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm {

namespace pb = ::ssmserve::v1;

// Maps a library Status to the gRPC status with the same code (the codes mirror gRPC's).
grpc::Status ToGrpcStatus(const Status& status);

// What every call needs from the service; owned by it and outliving every call.
struct CallShared {
  const ServerConfig* config = nullptr;
  const ModelRegistry* models = nullptr;
  CallRegistry* calls = nullptr;
  Metrics* metrics = nullptr;
  ParkedStreams* parked = nullptr;
  StateStore* store = nullptr;                       // --state-store; nullptr: none
  Authenticator* auth = nullptr;                     // who may call (with or without --auth-keys)
  std::map<std::string, pb::ModelInfo> model_infos;  // by model name, immutable
  size_t max_request_bytes = 0;  // larger request messages fail with RESOURCE_EXHAUSTED
  std::atomic<uint64_t> next_stream_id{1};
};

class CallReactor : public CallEvents, public LiveCall {
 public:
  // Chunks (or file segments) submitted and not yet written back, per call.
  static constexpr int kMaxChunksInFlight = 4;

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void CheckIdle(std::chrono::steady_clock::time_point now) override;
  void Drain() override;

 protected:
  struct Behaviour {
    const char* rpc;           // "Stream" or "ProcessFile", for logs
    Priority priority;         // in the scheduler
    bool write_empty_outputs;  // one response per chunk even with zero frames
    bool ends_on_drain;        // draining ends the call once accepted input is answered
    bool resumable;            // gets a resume token and parks when it breaks
  };
  // Subclasses are created by the service with `new` and call Start() last in their
  // constructor (callbacks may run at once); OnDone deletes them, and `port` with them.
  CallReactor(CallShared* shared, std::unique_ptr<CallPort> port, const Behaviour& behaviour);
  ~CallReactor() override = default;
  void Start();  // binds the port, registers the call and starts the first read

  // Subclass hooks, called with mu_ held. A chunk passed the sequence check and was decoded;
  // submit it (or parts of it) with SubmitLocked. An error ends the call.
  virtual Status HandleChunkLocked(uint64_t sequence, std::vector<float> values) = 0;
  // The client half-closed after an open; submit whatever input is still held.
  virtual void HandleInputEndLocked() = 0;

  // Queues values as the next chunk of the stream; `sequence` tags its output.
  void SubmitLocked(uint64_t sequence, std::vector<float> values);
  const ServedModel& model() const { return *live_.model; }  // valid after open
  const ServerConfig& config() const { return *shared_->config; }
  // Input values per output frame: hop samples (audio) or d_in floats (frames).
  size_t values_per_frame() const;

  std::mutex mu_;  // guards everything below and the subclasses' fields

 private:
  struct Write {
    grpc::ByteBuffer bytes;  // a serialized StreamResponse
    bool completes_chunk;    // its write ends a chunk's time in flight
  };
  struct ChunkMeta {
    uint64_t sequence;
    std::chrono::steady_clock::time_point arrival;
  };

  // Parses the message just read into request_ (size limit, then protobuf).
  Status ParseRequestLocked();
  Status HandleOpenLocked(const pb::StreamRequest& request);
  // An `open` with a resume token: takes the parked stream back and continues it, or asks the
  // state store for it (OnStoreTake continues then; no read is started meanwhile).
  Status ResumeLocked(const pb::StreamOpen& open, PayloadFormat format);
  void OnStoreTake(const Digest& hash, StatusOr<std::string> bytes);  // store thread
  // Continues `parked` (from ParkedStreams, or the store: matched by model fingerprint).
  Status ContinueResumeLocked(const pb::StreamOpen& open, const Digest& hash, ParkedStream parked,
                              bool from_store);
  // ContinueResumeLocked of the stored `open`; its error ends the call.
  void ContinueOrFailLocked(const Digest& hash, ParkedStream parked, bool from_store);
  // Counts a refused resume by `failure` and returns `status`, the refusal. With API keys, a
  // token that names no stream of this caller (unknown, or another identity's) gets one answer,
  // PERMISSION_DENIED, whichever it was: a token's existence is never confirmed to another.
  Status RefuseResume(ResumeFailure failure, const Status& status) const;
  // The caller's key id ("" anonymous).
  const std::string& owner() const { return identity_->id(); }
  // After a keys reload: ends the call if its key was revoked or lost its model; returns
  // whether it did (the caller cancels the call with `*status` outside mu_).
  bool CheckIdentityLocked(grpc::Status* status);
  std::string ModelFingerprints() const;  // "name (fingerprint), ..." for messages
  // The stream is open on `stream` of `model`: records it and answers `opened`; for a resumed
  // stream also the held outputs from `resume_from_frame` on.
  void OpenedLocked(const ServedModel* model, int stream, PayloadFormat format,
                    const std::string& label, const StreamSnapshot* resumed,
                    int64_t resume_from_frame);
  // A chunk's OK result was applied to the stream: remember its outputs (resumable calls).
  void HoldLocked(uint64_t sequence, const ChunkResult& result);
  // Whether a call ending for `reason` parks its stream.
  bool ParksLocked(CloseReason reason) const;
  // On the scheduler's worker, the stream's last state: park it (or say why it is not kept).
  void Park(StatusOr<StreamSnapshot> snapshot);
  // Adds what the reactor knows to a snapshot the engine took: next sequence, held outputs.
  Status FillSnapshotLocked(StatusOr<StreamSnapshot>* snapshot);
  // Encodes, counting the snapshot (taken from `start`) in `metrics` (may be nullptr).
  static std::string EncodeCounted(const StreamSnapshot& snapshot,
                                   std::chrono::steady_clock::time_point start,
                                   ResumeMetrics* metrics);
  // EncodeCounted of `snapshot` as the store's thread will run it.
  std::function<std::string()> Encoder(StreamSnapshot snapshot) const;
  // With a store and --checkpoint-interval: a checkpoint once that much signal has passed.
  void MaybeCheckpointLocked();
  void Checkpoint(StatusOr<StreamSnapshot> snapshot);  // worker
  // On the store's thread: the checkpoint of `bytes` bytes up to `sequence` was written, or not.
  void CheckpointDone(uint64_t sequence, size_t bytes, const Status& written);
  // Draining with a store: save the stream, then end the call (HandOffDoneLocked).
  void StartHandOffLocked();
  void HandOffDoneLocked(const Status& stored);
  // Asynchronous work (scheduler snapshots, store operations) holds the reactor: OnDone's work
  // waits for the last of it (pending_async_), which calls AsyncDone.
  void AsyncDone();
  void CompleteDone();  // the rest of OnDone: close (or park) the stream, delete the reactor
  Status HandleRequestLocked(const pb::StreamRequest& request);
  // Bad input: reads no more, and ends the call with `status` once every accepted chunk is
  // answered (at once when none is waiting).
  void FailInputLocked(const Status& status);
  void OnResult(ChunkResult result);  // scheduler worker thread
  // Updates the chunk metrics for an answered chunk that arrived at `arrival`.
  void RecordResultLocked(const ChunkResult& result, std::chrono::steady_clock::time_point arrival,
                          std::chrono::steady_clock::time_point now);
  void QueueWriteLocked(const pb::StreamResponse& response, bool completes_chunk);
  void StartWriteLocked();  // writes writes_.front()
  // Drops queued writes not yet started (the client is gone).
  void DropQueuedWritesLocked();
  void MaybeReadLocked();      // starts a read if allowed (see backpressure above)
  void MaybeCompleteLocked();  // ends the call once its input is over and all is answered
  // Ends the call after the queued writes; the first status (and reason) requested wins.
  void FinishLocked(const grpc::Status& status, CloseReason reason);
  void MaybeFinishLocked();

  CallShared* const shared_;
  const std::unique_ptr<CallPort> port_;
  const Behaviour behaviour_;
  grpc::ByteBuffer read_buffer_;  // target of the read in flight
  pb::StreamRequest request_;     // the last message read, parsed
  std::deque<Write> writes_;      // front is in flight when write_in_flight_
  std::deque<ChunkMeta> chunks_;  // submitted, awaiting their result, in order
  uint64_t messages_read_ = 0;    // request messages received, `open` included
  int in_flight_ = 0;             // chunks submitted and not yet written back
  bool read_in_flight_ = false;
  bool write_in_flight_ = false;
  bool input_ended_ = false;  // half-close, a failed read, or bad input (input_error_)
  Status input_error_;        // bad input: the call's final status once all is answered
  bool cancelled_ = false;    // OnCancel ran: the call ends CANCELLED unless already failed
  bool draining_ = false;
  bool finish_requested_ = false;
  bool finished_ = false;  // Finish called
  grpc::Status finish_status_;
  CloseReason close_reason_ = CloseReason::kError;  // with finish_status_
  bool cancel_sent_ = false;                        // the call was cancelled for --write-timeout
  std::chrono::steady_clock::time_point last_activity_;  // last read, result or write done
  std::chrono::steady_clock::time_point write_started_;  // of the write in flight
  std::chrono::steady_clock::time_point opened_at_;      // when `open` was accepted
  // Asynchronous work in flight, and OnDone has run (its work waits for pending_async_ == 0).
  int pending_async_ = 0;
  bool done_ = false;
  pb::StreamOpen pending_open_;  // the `open` of a resume waiting for the store
  bool store_lookup_ = false;
  bool resume_attempt_ = false;               // `open` carried a resume token
  std::shared_ptr<Identity> identity_;        // who called; set by Start (refused: nullptr)
  uint64_t identity_generation_ = 0;          // identity_->generation() last checked
  CallLease lease_;                           // the call's place in its key's stream limit
  LiveStream live_;                           // the stream, once `open` is accepted
  std::shared_ptr<CallCanceller> canceller_;  // lets a resume cancel this call
};

}  // namespace ssm
