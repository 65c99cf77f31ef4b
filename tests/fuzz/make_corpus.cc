// Writes the committed seed corpora, tests/fuzz/corpus/<target>/, with the project's own writers
// and a few hand-made malformed files each (regress-* inputs are added by hand and never
// rewritten). Deterministic: run again, git shows no change.
//   build/fuzz/bin/make_corpus tests/fuzz/corpus
#include <sndfile.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "common/io/audio_file.h"
#include "common/io/npy.h"
#include "server/engine/engine.h"
#include "server/engine/snapshot.h"
#include "server/model/model.h"
#include "server/model/random_model.h"
#include "server/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

std::string Le(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(char((value >> (8 * i)) & 0xff));
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FUZZ_CHECK(in.good(), "cannot read {}", path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class Corpus {
 public:
  Corpus(const std::string& root, const std::string& target) : dir_(root + "/" + target) {
    fs::create_directories(dir_);
  }
  void Add(const std::string& name, const std::string& bytes) {
    std::ofstream out(dir_ + "/" + name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    FUZZ_CHECK(out.good(), "cannot write {}/{}", dir_, name);
  }

 private:
  std::string dir_;
};

// ---- safetensors ---------------------------------------------------------------------------

std::string Safetensors(const std::string& header, const std::string& data) {
  return Le(header.size(), 8) + header + data;
}

std::string Floats(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

void SafetensorsSeeds(const std::string& root, const fuzz::ScratchDir& tmp) {
  Corpus c(root, "safetensors");
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f}, b = {42.0f};
  const std::string path = tmp.File("seed.safetensors");
  FUZZ_CHECK(WriteSafetensors(path,
                              {{"w", {2, 3}, a.data()},
                               {"b", {1}, b.data()},
                               {"empty", {0, 5}, nullptr},
                               {"scalar", {}, b.data()}},
                              {{"note", "seed"}})
                 .ok());
  c.Add("f32-written", ReadFile(path));
  c.Add("f16", Safetensors(R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})",
                           Le(0x3c00, 2) + Le(0xc000, 2) + Le(0x7c00, 2) + Le(0x0001, 2)));
  c.Add("bf16-and-f32",
        Safetensors(R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
                    R"("z":{"dtype":"F32","shape":[1,1],"data_offsets":[6,10]},)"
                    R"("__metadata__":{"format":"pt"}})",
                    Le(0x3f80, 2) + Le(0x7fc0, 2) + Le(0xff80, 2) + Floats({-0.5f})));
  c.Add("no-tensors", Safetensors("{}", ""));
  c.Add("bad-overlap", Safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                   Floats({1, 2})));
  c.Add("bad-hole",
        Safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", Floats({1, 2})));
  c.Add("bad-dtype",
        Safetensors(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", Le(1, 8)));
  c.Add("bad-shape-overflow",
        Safetensors(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],)"
                    R"("data_offsets":[0,4]}})",
                    Floats({1})));
  c.Add("bad-header-length", Le(uint64_t(1) << 40, 8) + "{}");
  c.Add("bad-json", Safetensors(R"({"a":{"dtype":"F32",)", ""));
  c.Add("bad-duplicate-key", Safetensors(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                                         R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                                         Floats({1})));
  c.Add("bad-deep", Safetensors(std::string(70, '[') + std::string(70, ']'), ""));
}

// ---- config.json ---------------------------------------------------------------------------

void ConfigSeeds(const std::string& root) {
  Corpus c(root, "config");
  c.Add("speech-activity", ReadFile(SSM_SOURCE_DIR "/models/speech-activity/config.json"));
  c.Add("random-demo", ReadFile(SSM_SOURCE_DIR "/models/random-demo/config.json"));
  c.Add("tiny-audio", fuzz::TinyAudioConfig().ToJson());
  c.Add("tiny-frames", fuzz::TinyFrameConfig().ToJson());
  c.Add("minimal", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1})");
  c.Add("mamba2", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,)"
                  R"("layer":{"type":"mamba2","d_state":8,"headdim":8,"ngroups":2,)"
                  R"("norm_before_gate":true}})");
  c.Add("layers", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":2,"d_out":1,)"
                  R"("layers":[{"type":"mamba","d_state":4},{"type":"mamba2","headdim":4}]})");
  c.Add("linear_attn", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,)"
                       R"("layer":{"type":"linear_attn","num_heads":2,"feature_map":"relu",)"
                       R"("output_norm":"identity","intermediate_size":0}})");
  c.Add("retnet", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,)"
                  R"("layer":{"type":"retnet","num_heads":4,"expand_v":1.5,)"
                  R"("use_output_gate":false,"hidden_ratio":2}})");
  c.Add("gla", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,)"
               R"("layer":{"type":"gla","num_heads":2,"expand_k":0.5,"clamp_min":-8,)"
               R"("gate_low_rank_dim":4,"gate_logit_normalizer":8,"intermediate_size":24,)"
               R"("chunk_size":16}})");
  c.Add("family", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":3,"d_out":1,)"
                  R"("layers":[{"type":"gla","num_heads":2},{"type":"mamba2","headdim":4},)"
                  R"({"type":"retnet","num_heads":2,"intermediate_size":"auto"}]})");
  c.Add("bad-unknown-field",
        R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,"d_modle":3})");
  c.Add("bad-type", R"({"format":"ssmserve/v1","d_in":"80","d_model":16,"n_layer":1,"d_out":1})");
  c.Add("bad-range", R"({"format":"ssmserve/v1","d_in":80,"d_model":16,"n_layer":1,"d_out":1,)"
                     R"("norm":{"eps":1e-60},"layer":{"d_state":-3}})");
  c.Add("bad-number", R"({"format":"ssmserve/v1","d_in":1e999})");
  c.Add("bad-duplicate-key", R"({"format":"ssmserve/v1","format":"x"})");
  c.Add("bad-deep", R"({"frontend":)" + std::string(80, '[') + std::string(80, ']') + "}");
  c.Add("bad-frontend-mix",
        R"({"format":"ssmserve/v1","d_in":2,"d_model":4,"n_layer":1,"d_out":1,)"
        R"("frontend":{"type":"none","mean":[0,0],"std":[1,0],"hop_length":3}})");
}

// ---- .npy ----------------------------------------------------------------------------------

std::string Npy(int major, const std::string& dict, const std::string& data) {
  const size_t length_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  const size_t preamble = 8 + length_bytes;
  header.resize((preamble + header.size() + 1 + 63) / 64 * 64 - preamble - 1, ' ');
  header += '\n';
  return std::string("\x93NUMPY", 6) + char(major) + '\0' + Le(header.size(), int(length_bytes)) +
         header + data;
}

void NpySeeds(const std::string& root, const fuzz::ScratchDir& tmp) {
  Corpus c(root, "npy");
  const std::vector<float> frames = {0.5f, -1.0f, 2.0f, 1e10f, -0.0f, 3.0f};
  const std::string path = tmp.File("seed.npy");
  FUZZ_CHECK(WriteNpy(path, {3, 2}, frames.data()).ok());
  c.Add("f4-written", ReadFile(path));
  double d[3] = {0.25, -1e300, 1e-300};
  c.Add("f8-v2", Npy(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                     std::string(reinterpret_cast<const char*>(d), sizeof d)));
  c.Add("i2-pcm", Npy(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (4,), }",
                      Le(0x7fff, 2) + Le(0x8000, 2) + Le(1, 2) + Le(0, 2)));
  c.Add("scalar-v3",
        Npy(3, "{\"descr\": \"<f4\", \"shape\": (), \"fortran_order\": False}", Floats({7.0f})));
  c.Add("empty", Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", ""));
  c.Add("empty-huge-dims", Npy(1,
                               "{'descr': '<f4', 'fortran_order': False, 'shape': "
                               "(4294967296, 4294967296, 0), }",
                               ""));
  c.Add("bad-fortran",
        Npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", Floats({1})));
  c.Add("bad-dtype",
        Npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", Floats({1})));
  c.Add("bad-size", Npy(1,
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775,"
                        " 4096), }",
                        Floats({1})));
  c.Add("bad-magic", std::string("\x93NUMPZ\x01\x00\x00\x00", 10));
  c.Add("bad-truncated",
        Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", Floats({1}))
            .substr(0, 40));
}

// ---- audio ---------------------------------------------------------------------------------

// `frames` frames of `channels` channels through libsndfile in `format`.
std::string Sound(const fuzz::ScratchDir& tmp, int format, int channels, int rate, int frames) {
  const std::string path = tmp.File("seed.audio");
  SF_INFO info;
  std::memset(&info, 0, sizeof info);
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  FUZZ_CHECK(f != nullptr, "{}", sf_strerror(nullptr));
  sf_command(f, SFC_SET_ADD_PEAK_CHUNK, nullptr, SF_FALSE);  // its timestamp changes every run
  std::vector<float> x(size_t(frames) * channels);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * std::sin(0.1f * float(i));
  FUZZ_CHECK(sf_writef_float(f, x.data(), frames) == frames);
  sf_close(f);
  return ReadFile(path);
}

void AudioSeeds(const std::string& root, const fuzz::ScratchDir& tmp) {
  Corpus c(root, "audio");
  const std::string path = tmp.File("seed.wav");
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i) * 512 - 16384) / 32768.0f;
  FUZZ_CHECK(WriteWav(path, x.data(), x.size(), 16000).ok());
  const std::string wav = ReadFile(path);
  c.Add("wav-s16-written", wav);
  c.Add("wav-float-stereo", Sound(tmp, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 2, 8000, 32));
  c.Add("wav-ulaw", Sound(tmp, SF_FORMAT_WAV | SF_FORMAT_ULAW, 1, 8000, 64));
  c.Add("flac", Sound(tmp, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1, 16000, 200));
  c.Add("aiff-s24", Sound(tmp, SF_FORMAT_AIFF | SF_FORMAT_PCM_24, 1, 22050, 32));
  c.Add("au-s8", Sound(tmp, SF_FORMAT_AU | SF_FORMAT_PCM_S8, 3, 11025, 16));
  c.Add("bad-truncated-wav", wav.substr(0, 30));
  std::string zero_rate = wav;  // the fmt chunk's sample rate, at byte 24
  std::memset(zero_rate.data() + 24, 0, 4);
  c.Add("bad-zero-rate", zero_rate);
  c.Add("bad-not-audio", "this is not audio at all, only some text of forty-odd bytes");
}

// ---- payload -------------------------------------------------------------------------------

// payload_fuzz's input: the payload bytes, then its settings, which FuzzedDataProvider takes
// from the end (one byte each here): the format, "small frame", frame_dim, log_mel, the model's
// rate (3 bytes) and "same rate".
std::string Payload(const std::string& bytes, int format, int frame_dim) {
  std::string settings;
  settings += char(1);           // the chunk's rate is the model's
  settings += Le(16000 - 1, 3);  // the model's rate (any: the same rate is used)
  settings += char(1);           // log_mel
  settings += char(frame_dim - 1);
  settings += char(1);           // a small frame (1..16 floats)
  settings += char(format + 1);  // in [-1, 4]
  return bytes + settings;
}

void PayloadSeeds(const std::string& root) {
  Corpus c(root, "payload");
  const std::string samples = Le(0x7fff, 2) + Le(0x8000, 2) + Le(0x1234, 2) + Le(0, 2);
  c.Add("s16", Payload(samples, 1, 2));
  c.Add("f32", Payload(Floats({0.5f, -1.0f, 1e30f}), 2, 2));
  c.Add("frames", Payload(Floats({1, 2, 3, 4, 5, 6}), 3, 2));
  c.Add("bad-odd-s16", Payload(samples.substr(0, 5), 1, 2));
  c.Add("bad-partial-frame", Payload(Floats({1, 2, 3, 4, 5}), 3, 2));
  c.Add("bad-format", Payload(samples, 0, 2));
}

// ---- snapshots -----------------------------------------------------------------------------

void SnapshotSeeds(const std::string& root, Corpus* model_dirs, const fuzz::ScratchDir& tmp) {
  Corpus c(root, "snapshot");
  int index = 0;
  for (const ModelConfig& config : {fuzz::TinyAudioConfig(), fuzz::TinyFrameConfig()}) {
    const std::string name = index == 0 ? "audio" : "frames";
    auto model = MakeRandomModel(config, /*seed=*/7);  // the model snapshot_fuzz restores into
    FUZZ_CHECK(model.ok(), "{}", model.status().ToString());
    EngineOptions options;
    options.threads = 1;
    options.max_streams = 1;
    auto engine = Engine::Create(*model, options);
    FUZZ_CHECK(engine.ok(), "{}", engine.status().ToString());
    auto stream = (*engine)->OpenStream();
    FUZZ_CHECK(stream.ok());
    auto fresh = (*engine)->SnapshotStream(*stream);
    FUZZ_CHECK(fresh.ok());
    c.Add(name + "-fresh", EncodeSnapshot(*fresh));
    // A stream part way: a non-empty carry, several frames held.
    std::vector<float> input(config.frontend.is_log_mel() ? 45 : 8);
    for (size_t i = 0; i < input.size(); ++i) input[i] = 0.3f * std::cos(0.2f * float(i));
    StepResult step;
    (*engine)->Step({{*stream, input.data(), input.size()}}, &step);
    FUZZ_CHECK(step.chunks[0].status.ok(), "{}", step.chunks[0].status.ToString());
    auto later = (*engine)->SnapshotStream(*stream);
    FUZZ_CHECK(later.ok());
    later->next_sequence = 3;
    later->held_first_frame = 0;
    later->held_outputs = step.outputs;
    c.Add(name + "-streamed", EncodeSnapshot(*later));
    std::string bad = EncodeSnapshot(*later);
    if (index == 0) {
      c.Add("bad-magic", "SSMSNAQ" + bad.substr(7));
      c.Add("bad-truncated", bad.substr(0, bad.size() / 2));
      bad[8] = 2;
      c.Add("bad-version", bad);
    } else {
      bad[bad.size() / 2] ^= 0x40;
      c.Add("bad-checksum", bad);
    }

    // model_dir seeds: this model's files behind their 4-byte config length.
    const std::string dir = tmp.File("model-" + name);
    FUZZ_CHECK((*model)->Save(dir).ok());
    const std::string json = ReadFile(dir + "/" + kModelConfigFile);
    const std::string weights = ReadFile(dir + "/" + kModelWeightsFile);
    model_dirs->Add(name, Le(json.size(), 4) + json + weights);
    if (index == 0) {
      model_dirs->Add("bad-missing-tensor", Le(json.size(), 4) + json + weights.substr(0, 200));
      std::string nan = weights;
      std::memcpy(nan.data() + nan.size() - 4, "\x00\x00\xc0\x7f", 4);  // the last weight: NaN
      model_dirs->Add("bad-nan-weight", Le(json.size(), 4) + json + nan);
    } else {
      const std::string other = fuzz::TinyAudioConfig().ToJson();
      model_dirs->Add("bad-config-mismatch", Le(other.size(), 4) + other + weights);
    }
    ++index;
  }
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  using namespace ssm;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR  (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  fuzz::ScratchDir tmp("make-corpus");
  SafetensorsSeeds(root, tmp);
  ConfigSeeds(root);
  NpySeeds(root, tmp);
  AudioSeeds(root, tmp);
  PayloadSeeds(root);
  Corpus model_dirs(root, "model_dir");
  SnapshotSeeds(root, &model_dirs, tmp);
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
