#include "clients/lib/client_input.h"

#include <fmt/format.h>

#include "clients/lib/pcm_encoding.h"
#include "clients/lib/resample.h"
#include "server/io/audio_file.h"
#include "server/io/npy.h"

namespace ssm::client {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

StatusOr<ClientInput> ReadFrames(const std::string& path, const ssmserve::v1::ModelInfo& model) {
  if (!EndsWith(path, ".npy"))
    return InvalidArgumentError(fmt::format(
        "{}: model '{}' takes feature frames (frontend none); give a .npy float32 of shape "
        "(T, {})",
        path, model.name(), model.d_in()));
  SSM_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path));
  if (array.shape.size() != 2 || array.shape[1] != model.d_in())
    return InvalidArgumentError(
        fmt::format("{}: model '{}' takes frames of {} values; expected shape (T, {}), found ({})",
                    path, model.name(), model.d_in(), model.d_in(), fmt::join(array.shape, ", ")));
  ClientInput input;
  input.rows = array.shape[0];
  input.values = std::move(array.data);
  return input;
}

}  // namespace

StatusOr<ClientInput> ReadClientInput(const std::string& path, const ssmserve::v1::ModelInfo& model,
                                      const ClientInputOptions& options) {
  if (model.frontend() != "log_mel") return ReadFrames(path, model);
  if (model.sample_rate() <= 0)
    return InternalError(fmt::format("model '{}' reports no sample rate", model.name()));
  ClientInput input;
  input.file_rate = options.raw_rate > 0 ? options.raw_rate : model.sample_rate();
  if (EndsWith(path, ".npy")) {
    SSM_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path, {/*int16_as_pcm=*/true}));
    if (array.shape.size() != 1)
      return InvalidArgumentError(fmt::format(
          "{}: model '{}' takes audio; expected a 1-D .npy of samples, found shape ({})", path,
          model.name(), fmt::join(array.shape, ", ")));
    input.values = std::move(array.data);
  } else if (EndsWith(path, ".raw")) {
    SSM_ASSIGN_OR_RETURN(input.values, ReadRawPcm(path, "s16le"));
  } else {
    SSM_ASSIGN_OR_RETURN(Audio audio, ReadAudio(path));
    input.file_rate = audio.sample_rate;
    input.values = std::move(audio.samples);
  }
  if (input.file_rate != model.sample_rate()) {
    auto resampled = Resample(input.values, input.file_rate, model.sample_rate());
    if (!resampled.ok()) return resampled.status().WithContext(path);
    input.values = std::move(*resampled);
    input.resampled = true;
  }
  input.rows = int64_t(input.values.size());
  input.fits_s16 = FitsPcmS16Exactly(input.values.data(), input.values.size());
  return input;
}

}  // namespace ssm::client
