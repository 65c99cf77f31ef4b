#include "common/io/model_input.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/io/audio_file.h"
#include "common/io/npy.h"
#include "common/io/resample.h"
#include "common/strings.h"

namespace ssm {
namespace {

std::string Named(const InputSpec& spec) {
  return spec.model_name.empty() ? "this model" : "model '" + spec.model_name + "'";
}

StatusOr<ModelInput> ReadFrames(const std::string& path, const InputSpec& spec) {
  if (!EndsWith(path, ".npy"))
    return InvalidArgumentError(fmt::format(
        "{}: {} takes feature frames (frontend none); give a .npy float32 of shape (T, {})", path,
        Named(spec), spec.d_in));
  SSM_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path));
  if (array.shape.size() != 2 || array.shape[1] != spec.d_in)
    return InvalidArgumentError(
        fmt::format("{}: {} takes frames of {} values; expected shape (T, {}), found ({})", path,
                    Named(spec), spec.d_in, spec.d_in, fmt::join(array.shape, ", ")));
  ModelInput input;
  input.rows = array.shape[0];
  input.values = std::move(array.data);
  return input;
}

}  // namespace

StatusOr<ModelInput> ReadModelInput(const std::string& path, const InputSpec& spec,
                                    const ModelInputOptions& options) {
  if (!spec.audio) return ReadFrames(path, spec);
  if (spec.sample_rate <= 0)
    return InternalError(fmt::format("{} reports no sample rate", Named(spec)));
  ModelInput input;
  input.file_rate = options.raw_rate > 0 ? options.raw_rate : spec.sample_rate;
  if (EndsWith(path, ".npy")) {
    SSM_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path, {/*int16_as_pcm=*/true}));
    if (array.shape.size() != 1)
      return InvalidArgumentError(
          fmt::format("{}: {} takes audio; expected a 1-D .npy of samples, found shape ({})", path,
                      Named(spec), fmt::join(array.shape, ", ")));
    input.values = std::move(array.data);
  } else if (EndsWith(path, ".raw")) {
    SSM_ASSIGN_OR_RETURN(input.values, ReadRawPcm(path, "s16le"));
  } else {
    SSM_ASSIGN_OR_RETURN(Audio audio, ReadAudio(path));
    input.file_rate = audio.sample_rate;
    input.values = std::move(audio.samples);
  }
  if (input.file_rate != spec.sample_rate) {
    auto resampled = Resample(input.values, input.file_rate, spec.sample_rate);
    if (!resampled.ok()) return resampled.status().WithContext(path);
    input.values = std::move(*resampled);
    input.resampled = true;
  }
  input.rows = int64_t(input.values.size());
  return input;
}

}  // namespace ssm
