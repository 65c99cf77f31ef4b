#include "server/service/file_reactor.h"

#include <algorithm>
#include <utility>

namespace ssm {

FileReactor::FileReactor(CallShared* shared, std::unique_ptr<CallPort> port)
    : CallReactor(shared, std::move(port),
                  {"ProcessFile", Priority::kFile, /*write_empty_outputs=*/false,
                   /*ends_on_drain=*/false, /*resumable=*/false}) {
  Start();
}

size_t FileReactor::segment_values() const {
  return size_t(config().file_segment_frames) * values_per_frame();
}

Status FileReactor::HandleChunkLocked(uint64_t sequence, std::vector<float> values) {
  const size_t segment = segment_values();
  last_sequence_ = sequence;
  if (carry_.empty() && values.size() < segment) {
    carry_ = std::move(values);
    return OkStatus();
  }
  carry_.insert(carry_.end(), values.begin(), values.end());
  size_t pos = 0;
  for (; carry_.size() - pos >= segment; pos += segment)
    SubmitLocked(sequence,
                 std::vector<float>(carry_.begin() + pos, carry_.begin() + pos + segment));
  carry_.erase(carry_.begin(), carry_.begin() + pos);
  return OkStatus();
}

void FileReactor::HandleInputEndLocked() {
  if (!carry_.empty()) SubmitLocked(last_sequence_, std::move(carry_));
  carry_.clear();
}

}  // namespace ssm
