#include "clients/lib/client_input.h"

#include "clients/lib/pcm_encoding.h"
#include "common/io/model_input.h"

namespace ssm::client {

StatusOr<ClientInput> ReadClientInput(const std::string& path, const ssmserve::v1::ModelInfo& model,
                                      const ClientInputOptions& options) {
  InputSpec spec;
  spec.model_name = model.name();
  spec.audio = model.frontend() == "log_mel";
  spec.d_in = model.d_in();
  spec.sample_rate = model.sample_rate();
  SSM_ASSIGN_OR_RETURN(ModelInput read, ReadModelInput(path, spec, {options.raw_rate}));
  ClientInput input;
  input.values = std::move(read.values);
  input.rows = read.rows;
  input.file_rate = read.file_rate;
  input.resampled = read.resampled;
  input.fits_s16 = FitsPcmS16Exactly(input.values.data(), input.values.size());
  return input;
}

}  // namespace ssm::client
