// Writes a mono WAV file piece by piece (libsndfile), for recordings of unknown length.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm::client {

class WavRecorder {
 public:
  // Creates `path` at `sample_rate` Hz: 16-bit PCM when `pcm16` (samples k / 32768 are stored
  // exactly), else 32-bit float. INVALID_ARGUMENT naming the path when it cannot be created.
  static StatusOr<std::unique_ptr<WavRecorder>> Create(const std::string& path, int sample_rate,
                                                       bool pcm16);
  ~WavRecorder();  // closes the file if Close was not called

  // Appends samples; an error (disk full?) naming the path when not all were written.
  Status Write(const float* samples, size_t n);
  // Finishes the header and closes the file; an error when closing fails (write errors are
  // Write's).
  Status Close();

  int64_t samples_written() const { return written_; }

 private:
  WavRecorder(void* file, std::string path, bool pcm16)
      : file_(file), path_(std::move(path)), pcm16_(pcm16) {}
  void* file_;  // SNDFILE; nullptr once closed
  std::string path_;
  bool pcm16_;
  std::vector<int16_t> pcm_;  // conversion buffer
  int64_t written_ = 0;
};

}  // namespace ssm::client
