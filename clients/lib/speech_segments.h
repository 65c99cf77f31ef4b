// Turns a per-frame speech probability into speech segments with start and end times.
//
// A frame is speech when its probability is >= threshold. A segment starts at the first frame of
// a run of at least min_speech_s of speech frames (shorter runs are dropped) and ends at the
// first frame of a run of at least min_silence_s of non-speech frames (shorter gaps are bridged).
// Frame t covers [t, t + 1) / frame_rate seconds of the stream.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace ssm::client {

struct SegmenterOptions {
  double frame_rate = 100;      // frames per second
  double threshold = 0.5;       // speech probability at or above which a frame is speech
  double min_speech_s = 0.10;   // shorter speech runs are not segments
  double min_silence_s = 0.30;  // shorter pauses do not end a segment

  Status Validate() const;  // names the bad field
  std::string ToString() const;
};

struct SpeechSegment {
  int64_t first_frame = 0, end_frame = 0;  // frames [first_frame, end_frame)
  double start_s = 0, end_s = 0;
  double mean_probability = 0, peak_probability = 0;  // over the segment's frames
};

// Not thread-safe; feed it from one thread, frames in order.
class SpeechSegmenter {
 public:
  explicit SpeechSegmenter(const SegmenterOptions& options);

  // Takes the next frame's speech probability; returns the segment it closes, if any (it closes
  // min_silence_s after the segment's end).
  std::optional<SpeechSegment> Push(float probability);
  // End of the stream: closes an open segment at the last speech frame (a speech run shorter
  // than min_speech_s is dropped). The segmenter starts afresh afterwards.
  std::optional<SpeechSegment> Finish();

  bool in_speech() const { return state_ == State::kSpeech; }  // a segment is open
  int64_t frames() const { return frames_; }
  const SegmenterOptions& options() const { return options_; }

 private:
  enum class State { kSilence, kSpeech };
  // Frame counts of the current run of speech (in silence) or of silence (in a segment), with
  // the sum and peak of its probabilities.
  struct Run {
    int64_t first = -1, length = 0;
    double sum = 0, peak = 0;
    void Add(int64_t frame, float p);
  };
  SpeechSegment Close(int64_t end_frame) const;

  SegmenterOptions options_;
  int64_t min_speech_frames_, min_silence_frames_;
  State state_ = State::kSilence;
  int64_t frames_ = 0;
  Run segment_;  // the open segment up to its last speech frame (gaps bridged so far included)
  Run pending_;  // in silence: a speech run not yet long enough; in speech: the current gap
};

}  // namespace ssm::client
