#include "clients/lib/speech_segments.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace ssm::client {

Status SegmenterOptions::Validate() const {
  if (!(frame_rate > 0))
    return InvalidArgumentError(fmt::format("frame_rate must be > 0, not {}", frame_rate));
  if (!(threshold > 0 && threshold <= 1))
    return InvalidArgumentError(fmt::format("threshold must be in (0, 1], not {}", threshold));
  if (!(min_speech_s >= 0) || !(min_silence_s >= 0))
    return InvalidArgumentError(fmt::format(
        "min_speech_s and min_silence_s must be >= 0, not {} and {}", min_speech_s, min_silence_s));
  return OkStatus();
}

std::string SegmenterOptions::ToString() const {
  return fmt::format("threshold {}, min speech {} ms, min silence {} ms, {} frames/s", threshold,
                     min_speech_s * 1000, min_silence_s * 1000, frame_rate);
}

void SpeechSegmenter::Run::Add(int64_t frame, float p) {
  if (length == 0) first = frame;
  ++length;
  sum += p;
  peak = std::max(peak, double(p));
}

SpeechSegmenter::SpeechSegmenter(const SegmenterOptions& options)
    : options_(options),
      // At least one frame: a segment needs a speech frame, and a gap a silent one.
      min_speech_frames_(std::max<int64_t>(
          1, int64_t(std::ceil(options.min_speech_s * options.frame_rate - 1e-9)))),
      min_silence_frames_(std::max<int64_t>(
          1, int64_t(std::ceil(options.min_silence_s * options.frame_rate - 1e-9)))) {}

std::optional<SpeechSegment> SpeechSegmenter::Push(float probability) {
  const int64_t frame = frames_++;
  const bool speech = probability >= options_.threshold;
  if (state_ == State::kSilence) {
    if (!speech) {
      pending_ = Run();
      return std::nullopt;
    }
    pending_.Add(frame, probability);
    if (pending_.length >= min_speech_frames_) {
      state_ = State::kSpeech;
      segment_ = pending_;
      pending_ = Run();
    }
    return std::nullopt;
  }
  if (speech) {  // a gap shorter than min_silence: bridged
    if (pending_.length > 0) {
      segment_.length += pending_.length;
      segment_.sum += pending_.sum;
      segment_.peak = std::max(segment_.peak, pending_.peak);
      pending_ = Run();
    }
    segment_.Add(frame, probability);
    return std::nullopt;
  }
  pending_.Add(frame, probability);
  if (pending_.length < min_silence_frames_) return std::nullopt;
  const SpeechSegment closed = Close(pending_.first);
  state_ = State::kSilence;
  segment_ = pending_ = Run();
  return closed;
}

std::optional<SpeechSegment> SpeechSegmenter::Finish() {
  std::optional<SpeechSegment> closed;
  if (state_ == State::kSpeech) closed = Close(segment_.first + segment_.length);
  state_ = State::kSilence;
  segment_ = pending_ = Run();
  frames_ = 0;
  return closed;
}

SpeechSegment SpeechSegmenter::Close(int64_t end_frame) const {
  SpeechSegment s;
  s.first_frame = segment_.first;
  s.end_frame = end_frame;
  s.start_s = double(s.first_frame) / options_.frame_rate;
  s.end_s = double(s.end_frame) / options_.frame_rate;
  s.mean_probability = segment_.sum / double(std::max<int64_t>(1, segment_.length));
  s.peak_probability = segment_.peak;
  return s;
}

}  // namespace ssm::client
