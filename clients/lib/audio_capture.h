// Microphone capture through PortAudio: list input devices, pick one, read mono 16-bit audio.
//
//   auto audio = AudioSystem::Start();
//   auto device = (*audio)->FindInputDevice("");        // "" = the default input device
//   auto capture = AudioCapture::Open(*device, {});     // at the device's default rate
//   (*capture)->Start();
//   (*capture)->Read(samples, n, stop);                 // blocks until n frames or `stop`
//
// Errors: NOT_FOUND (no such input device), UNAVAILABLE (the device cannot be opened, e.g. busy,
// or stopped delivering audio), INTERNAL (PortAudio itself failed). Messages say what to do.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm::client {

struct InputDevice {
  int index = -1;  // PortAudio device index (what --input-device takes)
  std::string name, host_api;
  int max_input_channels = 0;
  double default_rate = 0;  // Hz
  bool is_default = false;  // the default input device
};

// `frames` frames of `channels` interleaved 16-bit samples -> mono floats: s / 32768, the mean
// of the channels when several (so one channel, or equal channels, give exactly s / 32768).
void DownmixS16(const int16_t* interleaved, size_t frames, int channels, float* mono);

// PortAudio for the process: initialised on Start, terminated on destruction. Create one, before
// any AudioCapture, and keep it alive while captures run. Not thread-safe.
class AudioSystem {
 public:
  // `quiet`: hide what the host libraries (ALSA, JACK) print on stderr while PortAudio probes
  // devices; their messages rarely matter and PortAudio's errors are reported anyway.
  static StatusOr<std::unique_ptr<AudioSystem>> Start(bool quiet = true);
  ~AudioSystem();
  AudioSystem(const AudioSystem&) = delete;
  AudioSystem& operator=(const AudioSystem&) = delete;

  int device_count() const;  // all devices, with or without inputs
  // Devices with at least one input channel, in index order.
  std::vector<InputDevice> InputDevices() const;
  // "" = the default input device; digits = a device index; otherwise the first input device
  // whose name equals `spec` or else contains it (case-insensitive). NOT_FOUND says what exists.
  StatusOr<InputDevice> FindInputDevice(const std::string& spec) const;
  bool quiet() const { return quiet_; }

 private:
  explicit AudioSystem(bool quiet) : quiet_(quiet) {}
  bool quiet_;
};

struct CaptureOptions {
  int sample_rate = 0;         // Hz; 0 = the device's default rate
  double stall_timeout_s = 3;  // Read fails (UNAVAILABLE) after this long without any audio
};

// One open input stream (blocking reads, 16-bit samples, mono after down-mixing). Read from one
// thread; stopped and closed on destruction.
class AudioCapture {
 public:
  // Opens `device` with one channel, or, where the device refuses mono, with 2 or all its
  // channels (Read averages them).
  static StatusOr<std::unique_ptr<AudioCapture>> Open(const AudioSystem& audio,
                                                      const InputDevice& device,
                                                      const CaptureOptions& options);
  ~AudioCapture();
  AudioCapture(const AudioCapture&) = delete;
  AudioCapture& operator=(const AudioCapture&) = delete;

  Status Start();
  // Reads the next `n` frames into `mono` (s16 / 32768; the channel mean when several), blocking
  // until they have arrived. Returns fewer only once `stop` is set (checked every few ms).
  StatusOr<size_t> Read(float* mono, size_t n, const std::atomic<bool>& stop);
  void Stop();  // stops the stream; Read must not be called afterwards

  const InputDevice& device() const { return device_; }
  int sample_rate() const { return sample_rate_; }
  int channels() const { return channels_; }
  // Samples are exactly k / 32768 (one channel, no averaging): PCM_S16LE carries them losslessly.
  bool exact_s16() const { return channels_ == 1; }
  // Reads that found the device's buffer had overflowed (audio was lost: the reader was late).
  int64_t overflows() const { return overflows_; }

 private:
  AudioCapture(void* stream, const InputDevice& device, int sample_rate, int channels,
               const CaptureOptions& options);

  void* stream_;  // PaStream
  InputDevice device_;
  int sample_rate_, channels_;
  CaptureOptions options_;
  std::vector<int16_t> interleaved_;  // one read, frames x channels_
  bool started_ = false;
  int64_t overflows_ = 0;
};

}  // namespace ssm::client
