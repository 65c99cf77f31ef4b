#include "server/io/model_input.h"

#include <fmt/format.h>

#include "server/io/audio_file.h"
#include "server/io/npy.h"

namespace ssm {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

StatusOr<ModelInput> ReadModelInput(const std::string& path, const ModelConfig& config) {
  ModelInput input;
  const bool audio = config.frontend.is_log_mel();
  if (EndsWith(path, ".npy")) {
    SSM_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path));
    if (audio && array.shape.size() != 1)
      return InvalidArgumentError(fmt::format(
          "{}: this model takes audio; expected a 1-D .npy of samples, found {} dimensions", path,
          array.shape.size()));
    if (!audio && (array.shape.size() != 2 || array.shape[1] != config.d_in))
      return InvalidArgumentError(fmt::format(
          "{}: this model takes frames; expected a .npy of shape (T, {}), found {} dimensions{}",
          path, config.d_in, array.shape.size(),
          array.shape.size() == 2 ? fmt::format(" with {} columns", array.shape[1]) : ""));
    input.rows = array.shape[0];
    input.values = std::move(array.data);
    return input;
  }
  if (!audio)
    return InvalidArgumentError(fmt::format(
        "{}: this model (frontend none) takes a .npy of shape (T, {})", path, config.d_in));
  if (EndsWith(path, ".raw")) {
    SSM_ASSIGN_OR_RETURN(input.values, ReadRawPcm(path, "s16le"));
  } else {
    SSM_ASSIGN_OR_RETURN(Audio a, ReadAudio(path));
    if (a.sample_rate != config.frontend.sample_rate)
      return InvalidArgumentError(fmt::format(
          "{}: sample rate is {} Hz but the model expects {} Hz; resample it first (e.g. "
          "sox in.wav -r {} out.wav)",
          path, a.sample_rate, config.frontend.sample_rate, config.frontend.sample_rate));
    input.values = std::move(a.samples);
  }
  input.rows = int64_t(input.values.size());
  return input;
}

}  // namespace ssm
