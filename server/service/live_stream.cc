#include "server/service/live_stream.h"

#include <fmt/format.h>

namespace ssm {

void HeldOutputs::Reset(int64_t first_frame, std::vector<float> outputs, int d_out) {
  chunks_.clear();
  first_frame_ = first_frame;
  d_out_ = d_out;
  floats_ = outputs.size();
  if (!outputs.empty()) chunks_.push_back(std::move(outputs));
}

void HeldOutputs::Add(int64_t first_frame, int frames, std::vector<float> outputs) {
  if (frames == 0) return;
  d_out_ = int(outputs.size() / size_t(frames));
  if (chunks_.empty()) first_frame_ = first_frame;
  floats_ += outputs.size();
  chunks_.push_back(std::move(outputs));
  while (chunks_.size() > 1 && floats_ - chunks_.front().size() >= kMinFloats) {
    first_frame_ += int64_t(chunks_.front().size() / size_t(d_out_));
    floats_ -= chunks_.front().size();
    chunks_.pop_front();
  }
}

void HeldOutputs::AppendTo(std::vector<float>* out) const {
  out->reserve(out->size() + floats_);
  for (const std::vector<float>& chunk : chunks_)
    out->insert(out->end(), chunk.begin(), chunk.end());
}

void LiveStream::Applied(uint64_t sequence, int64_t first_frame, int frames,
                         std::vector<float> outputs) {
  applied = sequence + 1;
  if (frames == 0) return;
  frames_done = first_frame + frames;
  held.Add(first_frame, frames, std::move(outputs));
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
