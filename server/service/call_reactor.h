// The common part of the two streaming rpcs (Stream and ProcessFile): one reactor per call that
// reads `open` then chunks, hands decoded input to its model's scheduler, and writes the outputs.
//
// Threading: gRPC callbacks (OnReadDone, OnWriteDone, OnCancel, OnDone), scheduler results (worker
// thread) and the call registry (idle sweep, drain) all enter through mu_, which guards every
// field below it. Nothing blocks under mu_: StartRead/StartWrite/Finish only queue operations.
// At most one read and one write are in flight; further outputs wait in writes_.
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
#include <mutex>
#include <string>
#include <vector>

#include "kernels/base/status.h"
#include "server/service/call_registry.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/payload.h"
#include "server/service/scheduler.h"
#include "server/service/server_config.h"
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
  std::map<std::string, pb::ModelInfo> model_infos;  // by model name, immutable
  std::atomic<uint64_t> next_stream_id{1};
};

class CallReactor : public grpc::ServerBidiReactor<pb::StreamRequest, pb::StreamResponse>,
                    public LiveCall {
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
  };
  // Subclasses are created by the service with `new` and call Start() last in their
  // constructor (callbacks may run at once); OnDone deletes them.
  CallReactor(CallShared* shared, const Behaviour& behaviour);
  ~CallReactor() override = default;
  void Start();  // registers the call and starts the first read

  // Subclass hooks, called with mu_ held. A chunk passed the sequence check and was decoded;
  // submit it (or parts of it) with SubmitLocked. An error ends the call.
  virtual Status HandleChunkLocked(uint64_t sequence, std::vector<float> values) = 0;
  // The client half-closed after an open; submit whatever input is still held.
  virtual void HandleInputEndLocked() = 0;

  // Queues values as the next chunk of the stream; `sequence` tags its output.
  void SubmitLocked(uint64_t sequence, std::vector<float> values);
  const ServedModel& model() const { return *model_; }  // valid after open
  const ServerConfig& config() const { return *shared_->config; }
  // Input values per output frame: hop samples (audio) or d_in floats (frames).
  size_t values_per_frame() const;

  std::mutex mu_;  // guards everything below and the subclasses' fields

 private:
  struct Write {
    pb::StreamResponse response;
    bool completes_chunk;  // its write ends a chunk's time in flight
  };
  struct ChunkMeta {
    uint64_t sequence;
    std::chrono::steady_clock::time_point arrival;
  };

  Status HandleOpenLocked(const pb::StreamRequest& request);
  Status HandleRequestLocked(const pb::StreamRequest& request);
  void OnResult(ChunkResult result);  // scheduler worker thread
  // Updates the chunk metrics for an answered chunk that arrived at `arrival`.
  void RecordResultLocked(const ChunkResult& result, std::chrono::steady_clock::time_point arrival,
                          std::chrono::steady_clock::time_point now);
  void QueueWriteLocked(pb::StreamResponse response, bool completes_chunk);
  // Drops queued writes not yet started (the client is gone).
  void DropQueuedWritesLocked();
  void MaybeReadLocked();      // starts a read if allowed (see backpressure above)
  void MaybeCompleteLocked();  // ends the call once its input is over and all is answered
  void FinishLocked(const grpc::Status& status);  // ends the call after the queued writes
  void MaybeFinishLocked();

  CallShared* const shared_;
  const Behaviour behaviour_;
  pb::StreamRequest request_;     // target of the read in flight
  std::deque<Write> writes_;      // front is in flight when write_in_flight_
  std::deque<ChunkMeta> chunks_;  // submitted, awaiting their result, in order
  const ServedModel* model_ = nullptr;
  Scheduler* scheduler_ = nullptr;
  PayloadFormat format_ = PayloadFormat::kUnspecified;
  std::string stream_id_, label_;
  int stream_ = -1;  // scheduler stream id once open
  uint64_t next_sequence_ = 0;
  int in_flight_ = 0;  // chunks submitted and not yet written back
  bool read_in_flight_ = false;
  bool write_in_flight_ = false;
  bool input_ended_ = false;  // half-close (or a failed read)
  bool draining_ = false;
  bool finish_requested_ = false;
  bool finished_ = false;  // Finish called
  grpc::Status finish_status_;
  std::chrono::steady_clock::time_point last_activity_;  // last read, result or write done
  std::chrono::steady_clock::time_point opened_at_;      // when `open` was accepted
};

}  // namespace ssm
