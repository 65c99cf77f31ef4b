// One call to the server: a live stream (the Stream rpc) or a file upload (ProcessFile rpc).
//
// A live stream survives a broken connection (docs/design.md §7): when its call breaks, the
// library starts a new call that resumes the stream where the server left it, re-sends the chunks
// the server had not applied, and hands the caller one continuous stream, each frame once and in
// order. StreamOptions::resume says when.
//
// Thread-safety: Send*, CloseSend, Close and WaitOpened may be called from one thread at a time
// (the writer); Next from one thread at a time (the reader, which may be the writer); Cancel,
// done and stats from any thread. StreamOptions::on_output runs on gRPC threads, one output at a
// time, in order. No thread is created per stream (resumes are timed by one thread that all
// streams share), so thousands of streams are cheap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace ssm::client {

class StreamCall;  // the state of the gRPC call behind a Stream (stream.cc)

// Outputs of consecutive frames: one StreamOutput response. After a resume, the frames of the
// chunks whose answers the break lost come in one Output (the sequence of the last of them,
// server_latency_ms 0); chunks that completed no frame then get no Output of their own.
struct Output {
  int64_t first_frame = 0;  // stream-wide index of the first frame
  int frames = 0;
  int d_out = 0;
  std::vector<float> values;     // frames x d_out, row-major, after the head activation
  uint64_t sequence = 0;         // chunk these frames complete (Stream rpc only)
  double server_latency_ms = 0;  // server: chunk arrival -> response handed to gRPC
  // client: Send* of chunk `sequence` -> response received (across a resume: from the first
  // Send*); -1 unknown
  double round_trip_ms = -1;
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
  // CloseSend, a resume), this many seconds without any progress cancel the call with
  // DEADLINE_EXCEEDED; that ends the stream (no resume). 0 = wait forever.
  double idle_timeout_s = 60;

  // Resuming a broken Stream call (ProcessFile never resumes). A call is broken when it ends
  // with UNAVAILABLE (the connection failed or reset, the server drained), UNKNOWN (a transport
  // failure without a status), CANCELLED that this Stream did not ask for (the server or a proxy
  // reset it), or DEADLINE_EXCEEDED that this Stream's idle timeout did not cause (the server's
  // idle or write timeout): the server parks such a stream. Every other code is the server's
  // verdict on the stream and ends it. The stream resumes when a resume token is held (the
  // server's `opened` gives one unless it runs with --resume-ttl 0; a call that breaks before
  // its first `opened` ends the stream), on a new call on the same channel: gRPC reconnects the
  // channel, which behind a balancer may reach another replica.
  bool resume = true;
  // After a break, how long to keep trying to resume: attempts that fail with UNAVAILABLE,
  // UNKNOWN, CANCELLED or DEADLINE_EXCEEDED (e.g. the server still holds the old call, or is
  // restarting) are retried, the first at once, then after a back-off from resume_backoff_s,
  // doubling, at most resume_backoff_max_s, each with +-25 % jitter. Past this time the stream
  // ends with the last error. An attempt answered NOT_FOUND (the token is unknown, used or
  // expired), OUT_OF_RANGE (the server no longer holds the frames this client lacks) or any other
  // code ends the stream at once. 0 = never resume.
  double resume_timeout_s = 30;
  double resume_backoff_s = 0.01;
  double resume_backoff_max_s = 2;
  // With resume: the replay buffer. Each chunk stays in memory until the server has answered it
  // (an output for it or a later chunk arrived), so that a resume can re-send it; Send* blocks
  // while this many chunks are unanswered. 0 = unbounded. Without resume a chunk is freed once
  // written.
  size_t max_unanswered_chunks = 256;
  // When the server checkpoints the stream (StreamOpened.checkpoint_interval_ms > 0), answered
  // chunks since its last checkpoint are kept too, so that a resume after a crash can re-send
  // them: at most this many; beyond, the oldest are dropped, and such a resume fails DATA_LOSS.
  size_t max_checkpoint_chunks = 4096;
  // Sent as "authorization: Bearer <api_key>" on every call of the stream. Client::StartStream
  // fills it from ConnectOptions::api_key when empty.
  std::string api_key;
};

// Per-stream counters over all its calls, consistent at any moment.
struct StreamStats {
  uint64_t chunks_sent = 0;       // by Send*, each once (re-sends are replayed_chunks)
  uint64_t chunks_answered = 0;   // chunks 0 .. chunks_answered-1 have all their outputs
  uint64_t outputs_received = 0;  // Outputs handed to the caller (Next or on_output)
  int64_t frames = 0;             // frames in them
  // Responses whose first_frame is not where the previous one ended (a gap or a repeat) or whose
  // values are not frames x d_out floats; the first one is described in first_frame_error.
  // Frames a resumed call repeats from before the resume are dropped (duplicate_frames), not
  // errors.
  int64_t frame_errors = 0;
  std::string first_frame_error;

  // Resumes (see StreamOptions::resume).
  uint64_t resumes = 0;          // broken calls the stream was resumed from
  uint64_t resume_attempts = 0;  // calls started to resume, successful or not
  int64_t duplicate_frames = 0;  // frames a resumed call sent again, dropped by frame index
  uint64_t replayed_chunks = 0;  // chunks written again on a resumed call
  // From noticing a break to the resumed call's `opened`, milliseconds: the last one and the
  // largest (0 before the first resume).
  double last_resume_ms = 0;
  double max_resume_ms = 0;
  double total_resume_ms = 0;  // of all resumes: the mean is total_resume_ms / resumes
};

class Stream {
 public:
  ~Stream();  // cancels a call still running and waits for it to end (outputs stop)
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Blocks until the server has answered `opened` (the first call's: resumed calls do not change
  // it); an error if the call ended first (e.g. NOT_FOUND for an unknown model,
  // RESOURCE_EXHAUSTED when the server is full).
  StatusOr<ssmserve::v1::StreamOpened> WaitOpened();

  // Sends `n` mono samples as the next chunk (PCM formats), or `n_frames` frames of d_in floats
  // (FRAMES_F32LE; waits for `opened` to learn d_in). Sequence numbers are assigned here. Returns
  // the call's error once it has ended (with the server's message), INVALID_ARGUMENT for
  // non-finite values (nothing is sent), FAILED_PRECONDITION after CloseSend. While the stream
  // resumes, chunks queue (within max_pending_chunks and max_unanswered_chunks).
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
  // final status, carrying the server's message (OK for a clean end). DATA_LOSS when a resume
  // needs chunks the replay buffer no longer holds.
  Status Close();
  // Ends the call now (CANCELLED; never resumed); outputs in flight are dropped.
  void Cancel();
  // Ends the current call as a broken connection would: with resume on, the stream resumes on
  // a new call (the server parks it); without, it ends CANCELLED. For fault tests (ssm-loadgen
  // --chaos-disconnect-s). False when no call is running (between calls, or at the end).
  bool Interrupt();

  bool done() const;  // the stream has ended (its last call, not resumed)
  StreamStats stats() const;

 private:
  friend class Client;
  explicit Stream(std::shared_ptr<StreamCall> call);
  std::shared_ptr<StreamCall> call_;
};

}  // namespace ssm::client
