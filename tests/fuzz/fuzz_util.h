// What the fuzz targets share: a failed property aborts (libFuzzer records the input as a crash),
// an in-memory file for readers that take a path, a scratch directory for round trips, and the
// two small models the engine targets run.
#pragma once

#include <fmt/format.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "server/layers/mamba/mamba.h"
#include "server/model/model_config.h"

// A property every input must keep; a violation aborts with the message, so libFuzzer saves the
// input as crash-<sha1> and ctest fails.
#define FUZZ_CHECK(cond, ...)                                                               \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, \
                   fmt::format("" __VA_ARGS__).c_str());                                    \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace ssm::fuzz {

// A file in memory (memfd) rewritten for each input and read through /proc/self/fd/N, so the
// readers open it by path like any file and nothing touches a disk; a temporary file in
// $TMPDIR (or /tmp) where memfd_create is missing.
class InputFile {
 public:
  explicit InputFile(const char* name) {
    fd_ = memfd_create(name, MFD_CLOEXEC);
    if (fd_ >= 0) {
      path_ = fmt::format("/proc/self/fd/{}", fd_);
      return;
    }
    const char* tmp = std::getenv("TMPDIR");
    path_ = fmt::format("{}/ssm-fuzz-{}-XXXXXX", tmp != nullptr ? tmp : "/tmp", name);
    fd_ = mkstemp(path_.data());
    FUZZ_CHECK(fd_ >= 0, "cannot create {}", path_);
    unlink_ = true;
  }
  ~InputFile() {
    ::close(fd_);
    if (unlink_) ::unlink(path_.c_str());
  }

  // Replaces the file's contents with the input; returns its path.
  const std::string& Write(const uint8_t* data, size_t size) {
    FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, off_t(done));
      FUZZ_CHECK(n > 0, "write to {} failed", path_);
      done += size_t(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  bool unlink_ = false;
  std::string path_;
};

// A directory of this process for files the writers create (they rename into place, which a
// memfd cannot do); removed at exit.
class ScratchDir {
 public:
  explicit ScratchDir(const char* name) {
    const char* tmp = std::getenv("TMPDIR");
    path_ = fmt::format("{}/ssm-fuzz-{}-XXXXXX", tmp != nullptr ? tmp : "/tmp", name);
    FUZZ_CHECK(mkdtemp(path_.data()) != nullptr, "cannot create {}", path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A log_mel model with every dimension tiny: 1 kHz, 10-sample windows every 16 samples (hop >
// win, so a stream's carry may hold a skip), 3 mels, 2 Mamba layers.
inline ModelConfig TinyAudioConfig() {
  ModelConfig c;
  c.frontend.type = "log_mel";
  c.frontend.sample_rate = 1000;
  c.frontend.win_length = 10;
  c.frontend.hop_length = 16;
  c.frontend.n_fft = 16;
  c.frontend.n_mels = 3;
  c.frontend.f_max = 500;
  c.d_in = 3;
  c.d_model = 4;
  c.n_layer = 2;
  c.layer.as<MambaParams>().d_state = 2;
  c.layer.as<MambaParams>().d_conv = 3;
  c.layer.as<MambaParams>().expand = 1;
  c.layer.as<MambaParams>().dt_rank = 1;
  c.d_out = 2;
  c.head_activation = "softmax";
  c.labels = {"background", "speech"};
  return c;
}

// A frame-input model (frontend none, normalised): 2 floats per frame, one Mamba layer.
inline ModelConfig TinyFrameConfig() {
  ModelConfig c;
  c.frontend.type = "none";
  c.frontend.mean = {0.5f, -0.25f};
  c.frontend.std = {2.0f, 0.5f};
  c.frontend.frame_rate = 50;
  c.d_in = 2;
  c.d_model = 4;
  c.n_layer = 1;
  c.layer.as<MambaParams>().d_state = 3;
  c.layer.as<MambaParams>().d_conv = 2;
  c.layer.as<MambaParams>().expand = 2;
  c.layer.as<MambaParams>().dt_rank = 2;
  c.layer.as<MambaParams>().bias = true;
  c.d_out = 3;
  c.head_activation = "sigmoid";
  return c;
}

}  // namespace ssm::fuzz
