// One call to the server: a live stream (the Stream rpc) or a file upload (ProcessFile rpc).
//
// Thread-safety: Send*, CloseSend, Close and WaitOpened may be called from one thread at a time
// (the writer); Next from one thread at a time (the reader, which may be the writer); Cancel,
// done and stats from any thread. StreamOptions::on_output runs on gRPC threads, one output at
// a time, in order. No thread is created per stream, so thousands of streams are cheap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/base/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace ssm::client {

class StreamCall;  // the state of the gRPC call behind a Stream (stream.cc)

// Outputs of consecutive frames: one StreamOutput response.
struct Output {
  int64_t first_frame = 0;  // stream-wide index of the first frame
  int frames = 0;
  int d_out = 0;
  std::vector<float> values;     // frames x d_out, row-major, after the head activation
  uint64_t sequence = 0;         // chunk these frames complete (Stream rpc only)
  double server_latency_ms = 0;  // server: chunk arrival -> response handed to gRPC
  double round_trip_ms = -1;  // client: Send* of chunk `sequence` -> response received; -1 unknown
};

struct StreamOptions {
  std::string model;  // empty selects the server's default model
  ssmserve::v1::SampleFormat format = ssmserve::v1::SAMPLE_FORMAT_PCM_S16LE;
  int sample_rate = 0;  // Hz of audio payloads; 0 = the model's
  std::string label;    // free-form, for server logs (at most 128 bytes)
  // Called for each output on a gRPC thread; must return quickly and must not destroy the
  // Stream. Unset: outputs queue up for Next().
  std::function<void(const Output&)> on_output;
  // Send* blocks while this many chunks wait to be written (backpressure); 0 = never blocks.
  size_t max_pending_chunks = 64;
  // While the client waits for the server (opened, answers to sent chunks, the end after
  // CloseSend), this many seconds without any progress cancel the call with DEADLINE_EXCEEDED.
  // 0 = wait forever.
  double idle_timeout_s = 60;
};

// Per-call counters, consistent at any moment.
struct StreamStats {
  uint64_t chunks_sent = 0;
  uint64_t outputs_received = 0;  // StreamOutput responses
  int64_t frames = 0;             // frames in them
  // Responses whose first_frame is not where the previous one ended (a gap or a repeat) or whose
  // values are not frames x d_out floats; the first one is described in first_frame_error.
  int64_t frame_errors = 0;
  std::string first_frame_error;
};

class Stream {
 public:
  ~Stream();  // cancels a call still running and waits for it to end (outputs stop)
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Blocks until the server has answered `opened`; an error if the call ended first (e.g.
  // NOT_FOUND for an unknown model, RESOURCE_EXHAUSTED when the server is full).
  StatusOr<ssmserve::v1::StreamOpened> WaitOpened();

  // Sends `n` mono samples as the next chunk (PCM formats), or `n_frames` frames of d_in floats
  // (FRAMES_F32LE; waits for `opened` to learn d_in). Sequence numbers are assigned here. Returns
  // the call's error once it has ended (with the server's message), INVALID_ARGUMENT for
  // non-finite values (nothing is sent), FAILED_PRECONDITION after CloseSend.
  Status SendSamples(const float* samples, size_t n);
  Status SendFrames(const float* frames, size_t n_frames);
  // Sends already encoded payload bytes as the next chunk.
  Status SendPayload(std::string payload);

  // Takes the next output in order, blocking until one arrives (only without on_output). False
  // once the call has ended and every output was taken; then Close() gives the status. Blocks
  // indefinitely if nothing is owed (no chunk unanswered and no CloseSend): the server has
  // nothing to say.
  bool Next(Output* output);

  // Half-closes: no more chunks. Returns at once; the server flushes and ends the call.
  void CloseSend();
  // CloseSend, then waits until every output has arrived and the call has ended; returns its
  // final status, carrying the server's message (OK for a clean end).
  Status Close();
  // Ends the call now (CANCELLED); outputs in flight are dropped.
  void Cancel();

  bool done() const;  // the call has ended
  StreamStats stats() const;

 private:
  friend class Client;
  explicit Stream(std::shared_ptr<StreamCall> call);
  std::shared_ptr<StreamCall> call_;
};

}  // namespace ssm::client
