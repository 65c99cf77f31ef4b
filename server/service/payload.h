// Chunk payloads: how the bytes of StreamChunk.payload become the floats a model's frontend
// consumes (PCM S16LE / F32LE samples or F32LE feature frames), and which formats a model takes.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/model/model_config.h"

namespace ssm {

// Mirrors ssmserve.v1.SampleFormat (same numbers), so this file needs no protobuf.
enum class PayloadFormat {
  kUnspecified = 0,
  kPcmS16le = 1,    // mono int16 samples, value / 32768
  kPcmF32le = 2,    // mono float32 samples
  kFramesF32le = 3  // frames of d_in float32 values
};

const char* PayloadFormatName(PayloadFormat format);

// OK when `model` reads `format` at `sample_rate` Hz (0 = the model's rate); otherwise
// INVALID_ARGUMENT saying what the model expects.
Status CheckPayloadFormat(PayloadFormat format, int sample_rate, const ModelConfig& model);

// Decodes `bytes` into *values (replacing its contents): samples for PCM, row-major frames of
// `frame_dim` floats for frames. INVALID_ARGUMENT if the bytes are not a whole number of samples
// or frames. Values are not checked for NaN/Inf here: the frontend does that per chunk.
Status DecodePayload(PayloadFormat format, const std::string& bytes, int frame_dim,
                     std::vector<float>* values);

}  // namespace ssm
