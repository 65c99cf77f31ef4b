#include "server/service/live_stream.h"

#include <fmt/format.h>

#include <algorithm>

namespace ssm {

void HeldOutputs::Reset(int64_t first_frame, const std::vector<float>& outputs, int d_out) {
  start_ = 0;
  frames_ = 0;
  first_frame_ = first_frame;
  d_out_ = std::max(d_out, 1);
  const size_t frames = outputs.size() / size_t(d_out_);
  Push(outputs.data(), frames);
  first_frame_ = first_frame + int64_t(frames) - int64_t(frames_);
}

void HeldOutputs::Add(int64_t first_frame, int frames, const std::vector<float>& outputs) {
  if (frames <= 0) return;
  const int d_out = int(outputs.size() / size_t(frames));
  if (frames_ == 0 || d_out != d_out_) {  // the first outputs (d_out never changes otherwise)
    start_ = 0;
    frames_ = 0;
    d_out_ = std::max(d_out, 1);
    first_frame_ = first_frame;
  }
  const size_t before = frames_;
  Push(outputs.data(), size_t(frames));
  // Frames pushed beyond the ring's size replaced as many of the oldest.
  first_frame_ += int64_t(before + size_t(frames) - frames_);
}

void HeldOutputs::Push(const float* values, size_t frames) {
  if (frames == 0) return;
  const size_t d = size_t(d_out_);
  const size_t capacity = HeldFrames(d_out_);
  if (ring_.size() != capacity * d) ring_.assign(capacity * d, 0.0f);  // once per stream
  if (frames >= capacity) {  // only the latest `capacity` frames stay
    values += (frames - capacity) * d;
    std::copy(values, values + capacity * d, ring_.begin());
    start_ = 0;
    frames_ = capacity;
    return;
  }
  while (frames > 0) {
    // The next free slot (the oldest frame's once full), and the frames that fit from there to
    // the end of the ring; those beyond the capacity replace the oldest.
    const size_t end = (start_ + frames_) % capacity;
    const size_t n = std::min(frames, capacity - end);
    std::copy(values, values + n * d, ring_.begin() + ptrdiff_t(end * d));
    frames_ += n;
    if (frames_ > capacity) {
      start_ = (start_ + frames_ - capacity) % capacity;
      frames_ = capacity;
    }
    values += n * d;
    frames -= n;
  }
}

void HeldOutputs::AppendTo(std::vector<float>* out) const {
  if (frames_ == 0) return;
  const size_t d = size_t(d_out_);
  const size_t capacity = ring_.size() / d;
  const size_t first = std::min(frames_, capacity - start_);  // up to the end of the ring
  out->reserve(out->size() + floats());
  const auto from = ring_.begin() + ptrdiff_t(start_ * d);
  out->insert(out->end(), from, from + ptrdiff_t(first * d));
  out->insert(out->end(), ring_.begin(), ring_.begin() + ptrdiff_t((frames_ - first) * d));
}

void LiveStream::Applied(uint64_t sequence, int64_t first_frame, int frames,
                         const std::vector<float>& outputs) {
  applied = sequence + 1;
  if (frames == 0) return;
  frames_done = first_frame + frames;
  held.Add(first_frame, frames, outputs);
}

Status LiveStream::FillSnapshot(StreamSnapshot* s) const {
  s->next_sequence = applied;
  s->held_first_frame = held.floats() == 0 ? s->frontend.frames : held.first_frame();
  held.AppendTo(&s->held_outputs);
  const size_t d_out = size_t(s->d_out);
  const int64_t held_end = s->held_first_frame + int64_t(s->held_outputs.size() / d_out);
  if (held_end != s->frontend.frames)
    return InternalError(
        fmt::format("the held outputs end at frame {}, the stream's state at frame {}; not saved",
                    held_end, s->frontend.frames));
  return OkStatus();
}

}  // namespace ssm
