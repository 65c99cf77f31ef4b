#include "clients/lib/audio_capture.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <portaudio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace ssm::client {
namespace {

// Sends this process's stderr to /dev/null while alive (when `active`), so that the noise of
// ALSA and JACK probing absent hardware does not bury the tool's own messages.
class StderrSilencer {
 public:
  explicit StderrSilencer(bool active) {
    if (!active) return;
    std::fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    const int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved_ < 0 || null_fd < 0 || dup2(null_fd, STDERR_FILENO) < 0) Restore();
    if (null_fd >= 0) close(null_fd);
  }
  ~StderrSilencer() { Restore(); }

 private:
  void Restore() {
    if (saved_ < 0) return;
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    saved_ = -1;
  }
  int saved_ = -1;
};

std::string PaText(PaError error) {
  std::string text = Pa_GetErrorText(error);
  if (error == paUnanticipatedHostError) {
    const PaHostErrorInfo* host = Pa_GetLastHostErrorInfo();
    if (host != nullptr && host->errorText != nullptr && *host->errorText != '\0')
      text += std::string(" (") + host->errorText + ")";
  }
  return text;
}

std::string Lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

InputDevice Describe(int index) {
  const PaDeviceInfo* info = Pa_GetDeviceInfo(index);
  InputDevice device;
  device.index = index;
  device.name = info->name != nullptr ? info->name : "";
  const PaHostApiInfo* api = Pa_GetHostApiInfo(info->hostApi);
  device.host_api = api != nullptr && api->name != nullptr ? api->name : "?";
  device.max_input_channels = info->maxInputChannels;
  device.default_rate = info->defaultSampleRate;
  device.is_default = index == Pa_GetDefaultInputDevice();
  return device;
}

std::string DeviceLabel(const InputDevice& device) {
  return "input device " + std::to_string(device.index) + " \"" + device.name + "\"";
}

}  // namespace

void DownmixS16(const int16_t* interleaved, size_t frames, int channels, float* mono) {
  for (size_t f = 0; f < frames; ++f) {
    const int16_t* frame = interleaved + f * size_t(channels);
    if (channels == 1) {
      mono[f] = float(frame[0]) / 32768.0f;
    } else {
      double sum = 0;
      for (int c = 0; c < channels; ++c) sum += frame[c];
      mono[f] = float(sum / channels / 32768.0);
    }
  }
}

StatusOr<std::unique_ptr<AudioSystem>> AudioSystem::Start(bool quiet) {
  // alsa-lib without any readable configuration makes PortAudio abort while listing devices.
  if (const char* paths = std::getenv("ALSA_CONFIG_PATH"); paths != nullptr && *paths != '\0') {
    std::stringstream list(paths);
    for (std::string path; std::getline(list, path, ':');)
      if (!path.empty() && access(path.c_str(), R_OK) != 0)
        return NotFoundError("ALSA_CONFIG_PATH names " + path +
                             ", which cannot be read; fix or unset ALSA_CONFIG_PATH");
  }
  PaError error;
  {
    StderrSilencer silence(quiet);
    error = Pa_Initialize();
  }
  if (error != paNoError) return InternalError("cannot initialise PortAudio: " + PaText(error));
  return std::unique_ptr<AudioSystem>(new AudioSystem(quiet));
}

AudioSystem::~AudioSystem() {
  StderrSilencer silence(quiet_);
  Pa_Terminate();
}

int AudioSystem::device_count() const { return std::max(0, int(Pa_GetDeviceCount())); }

std::vector<InputDevice> AudioSystem::InputDevices() const {
  std::vector<InputDevice> devices;
  for (int i = 0; i < device_count(); ++i) {
    const PaDeviceInfo* info = Pa_GetDeviceInfo(i);
    if (info != nullptr && info->maxInputChannels > 0) devices.push_back(Describe(i));
  }
  return devices;
}

StatusOr<InputDevice> AudioSystem::FindInputDevice(const std::string& spec) const {
  const std::vector<InputDevice> devices = InputDevices();
  std::string inventory =
      "there are " + std::to_string(devices.size()) + " input devices: see --list-devices";
  if (devices.size() == 1) inventory = "there is 1 input device: see --list-devices";
  if (devices.empty())
    inventory =
        "PortAudio found no input devices" +
        (device_count() > 0 ? " (only " + std::to_string(device_count()) + " output devices)"
                            : std::string()) +
        "; connect a microphone or check the sound system";
  if (spec.empty()) {
    for (const InputDevice& device : devices)
      if (device.is_default) return device;
    return NotFoundError("no default input device: " + inventory);
  }
  if (std::all_of(spec.begin(), spec.end(), [](unsigned char c) { return std::isdigit(c); })) {
    for (const InputDevice& device : devices)
      if (std::to_string(device.index) == spec) return device;
    return NotFoundError("no input device with index " + spec + ": " + inventory);
  }
  const std::string wanted = Lower(spec);
  for (const InputDevice& device : devices)
    if (Lower(device.name) == wanted) return device;
  for (const InputDevice& device : devices)
    if (Lower(device.name).find(wanted) != std::string::npos) return device;
  return NotFoundError("no input device whose name contains \"" + spec + "\": " + inventory);
}

StatusOr<std::unique_ptr<AudioCapture>> AudioCapture::Open(const AudioSystem& audio,
                                                           const InputDevice& device,
                                                           const CaptureOptions& options) {
  const int rate =
      options.sample_rate > 0 ? options.sample_rate : int(std::lround(device.default_rate));
  if (rate <= 0)
    return UnavailableError(DeviceLabel(device) + " reports no default sample rate; give one");
  const PaDeviceInfo* info = Pa_GetDeviceInfo(device.index);
  if (info == nullptr || info->maxInputChannels <= 0)
    return NotFoundError(DeviceLabel(device) + " has no input channels");
  std::vector<int> channel_choices = {1};
  if (info->maxInputChannels >= 2) channel_choices.push_back(2);
  if (info->maxInputChannels > 2) channel_choices.push_back(info->maxInputChannels);

  PaError error = paNoError;
  for (int channels : channel_choices) {
    PaStreamParameters input{};
    input.device = device.index;
    input.channelCount = channels;
    input.sampleFormat = paInt16;
    input.suggestedLatency = info->defaultHighInputLatency;  // room for a late reader
    PaStream* stream = nullptr;
    {
      StderrSilencer silence(audio.quiet());
      error = Pa_OpenStream(&stream, &input, /*outputParameters=*/nullptr, double(rate),
                            paFramesPerBufferUnspecified, paClipOff, /*streamCallback=*/nullptr,
                            /*userData=*/nullptr);
    }
    if (error == paNoError)
      return std::unique_ptr<AudioCapture>(
          new AudioCapture(stream, device, rate, channels, options));
    if (error != paInvalidChannelCount) break;
  }
  std::string hint;
  if (error == paInvalidSampleRate)
    hint = "; its default rate is " + std::to_string(int(std::lround(device.default_rate))) + " Hz";
  else if (error == paDeviceUnavailable || error == paUnanticipatedHostError)
    hint = "; is another program using it?";
  return UnavailableError("cannot open " + DeviceLabel(device) + " at " + std::to_string(rate) +
                          " Hz: " + PaText(error) + hint);
}

AudioCapture::AudioCapture(void* stream, const InputDevice& device, int sample_rate, int channels,
                           const CaptureOptions& options)
    : stream_(stream),
      device_(device),
      sample_rate_(sample_rate),
      channels_(channels),
      options_(options) {}

AudioCapture::~AudioCapture() {
  Stop();
  Pa_CloseStream(stream_);
}

Status AudioCapture::Start() {
  const PaError error = Pa_StartStream(stream_);
  if (error != paNoError)
    return UnavailableError("cannot start " + DeviceLabel(device_) + ": " + PaText(error));
  started_ = true;
  return OkStatus();
}

void AudioCapture::Stop() {
  if (!started_) return;
  started_ = false;
  Pa_AbortStream(stream_);  // drop what is buffered: nobody reads it
}

StatusOr<size_t> AudioCapture::Read(float* mono, size_t n, const std::atomic<bool>& stop) {
  using Clock = std::chrono::steady_clock;
  if (!started_) return FailedPreconditionError("AudioCapture::Read before Start");
  const auto stall = std::chrono::duration<double>(options_.stall_timeout_s);
  Clock::time_point last_audio = Clock::now();
  size_t done = 0;
  while (done < n && !stop.load()) {
    // Poll instead of a blocking read of n frames, so that `stop` and a dead device are noticed.
    long available = Pa_GetStreamReadAvailable(stream_);
    if (available == paInputOverflowed) {  // an overrun PortAudio has not recovered from yet
      ++overflows_;
      available = 0;
    }
    if (available < 0)
      return UnavailableError("reading " + DeviceLabel(device_) +
                              " failed: " + PaText(PaError(available)));
    if (available == 0) {
      if (Clock::now() - last_audio > stall)
        return UnavailableError(
            fmt::format("{} delivered no audio for {} s (unplugged, or "
                        "muted by the sound system?)",
                        DeviceLabel(device_), options_.stall_timeout_s));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    const size_t frames = std::min(n - done, size_t(available));
    interleaved_.resize(frames * size_t(channels_));
    const PaError error = Pa_ReadStream(stream_, interleaved_.data(), frames);
    if (error == paInputOverflowed) {
      ++overflows_;  // the frames read are still valid
    } else if (error != paNoError) {
      return UnavailableError("reading " + DeviceLabel(device_) + " failed: " + PaText(error));
    }
    DownmixS16(interleaved_.data(), frames, channels_, mono + done);
    done += frames;
    last_audio = Clock::now();
  }
  return done;
}

}  // namespace ssm::client
