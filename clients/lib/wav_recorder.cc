#include "clients/lib/wav_recorder.h"

#include <sndfile.h>

#include <algorithm>
#include <cmath>

namespace ssm::client {

StatusOr<std::unique_ptr<WavRecorder>> WavRecorder::Create(const std::string& path, int sample_rate,
                                                           bool pcm16) {
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | (pcm16 ? SF_FORMAT_PCM_16 : SF_FORMAT_FLOAT);
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  if (file == nullptr)
    return InvalidArgumentError("cannot create " + path + ": " + sf_strerror(nullptr));
  return std::unique_ptr<WavRecorder>(new WavRecorder(file, path, pcm16));
}

WavRecorder::~WavRecorder() { (void)Close(); }

Status WavRecorder::Write(const float* samples, size_t n) {
  if (file_ == nullptr) return FailedPreconditionError("WavRecorder::Write after Close");
  SNDFILE* file = static_cast<SNDFILE*>(file_);
  sf_count_t put;
  if (pcm16_) {  // x * 32768, rounded and clipped: k / 32768 is stored as k (as WriteWav does)
    pcm_.resize(n);
    for (size_t i = 0; i < n; ++i)
      pcm_[i] = int16_t(std::clamp(std::nearbyint(samples[i] * 32768.0f), -32768.0f, 32767.0f));
    put = sf_write_short(file, pcm_.data(), sf_count_t(n));
  } else {
    put = sf_write_float(file, samples, sf_count_t(n));
  }
  written_ += put;
  if (put != sf_count_t(n))
    return InternalError("writing " + path_ + " failed (disk full?): " + sf_strerror(file));
  return OkStatus();
}

Status WavRecorder::Close() {
  if (file_ == nullptr) return OkStatus();
  const int error = sf_close(static_cast<SNDFILE*>(file_));
  file_ = nullptr;
  if (error != 0) return InternalError("closing " + path_ + " failed: " + sf_error_number(error));
  return OkStatus();
}

}  // namespace ssm::client
