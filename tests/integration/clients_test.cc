// The client library and tools (ssm-stream, ssm-batch, ssm-loadgen, the Python example) against
// the real ssm-server on loopback; ssm-run --mode offline on the same input is the truth.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clients/lib/client_input.h"
#include "clients/lib/latency_summary.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/ssm_client.h"
#include "common/io/audio_file.h"
#include "common/io/npy.h"
#include "common/io/resample.h"
#include "tests/integration/http_get.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;
namespace pb = ssmserve::v1;

const std::string kBin = SSM_BIN_DIR;
const std::string kSpeech = std::string(SSM_SOURCE_DIR) + "/models/samples/speech.wav";  // 16 kHz
const std::string kPython = "/usr/bin/python3";

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command under `timeout`, so a hanging tool fails the test instead of blocking it.
CommandResult RunCommand(const std::string& command, int timeout_s = 60) {
  CommandResult result;
  const std::string wrapped = "timeout -k 5 " + std::to_string(timeout_s) + " " + command + " 2>&1";
  FILE* pipe = popen(wrapped.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// Element-wise equality of two .npy files (shape and every float bit for bit).
::testing::AssertionResult NpyEqual(const std::string& expected_path, const std::string& path) {
  auto expected = ReadNpy(expected_path);
  auto actual = ReadNpy(path);
  if (!expected.ok()) return ::testing::AssertionFailure() << expected.status().ToString();
  if (!actual.ok()) return ::testing::AssertionFailure() << actual.status().ToString();
  if (expected->shape != actual->shape)
    return ::testing::AssertionFailure() << path << ": shape differs from " << expected_path;
  for (size_t i = 0; i < expected->data.size(); ++i) {
    if (expected->data[i] != actual->data[i])
      return ::testing::AssertionFailure() << path << ": value " << i << " is " << actual->data[i]
                                           << ", " << expected_path << " has " << expected->data[i];
  }
  return ::testing::AssertionSuccess();
}

// A loopback port nothing listens on (bound, then released).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// ---------------------------------------------------------------------------------------------
// Library pieces that need no server.

TEST(PcmEncodingTest, S16CarriesSixteenBitValuesExactly) {
  const std::vector<float> values = {0.0f, 1 / 32768.0f, -1.0f, 32767 / 32768.0f,
                                     -12345 / 32768.0f};
  ASSERT_TRUE(client::FitsPcmS16Exactly(values.data(), values.size()));
  std::string bytes;
  ASSERT_TRUE(
      client::EncodePayload(values.data(), values.size(), pb::SAMPLE_FORMAT_PCM_S16LE, &bytes)
          .ok());
  ASSERT_EQ(bytes.size(), 2 * values.size());
  auto decoded = client::DecodePayload(bytes, pb::SAMPLE_FORMAT_PCM_S16LE);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, values);
}

TEST(PcmEncodingTest, S16RoundsAndClips) {
  const std::vector<float> values = {1.0f, 2.5f, -3.0f, 0.4f / 32768.0f, 0.6f / 32768.0f};
  EXPECT_FALSE(client::FitsPcmS16Exactly(values.data(), values.size()));
  std::string bytes;
  ASSERT_TRUE(
      client::EncodePayload(values.data(), values.size(), pb::SAMPLE_FORMAT_PCM_S16LE, &bytes)
          .ok());
  auto decoded = client::DecodePayload(bytes, pb::SAMPLE_FORMAT_PCM_S16LE);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded,
            (std::vector<float>{32767 / 32768.0f, 32767 / 32768.0f, -1.0f, 0.0f, 1 / 32768.0f}));
}

TEST(PcmEncodingTest, FloatFormatsAreBitExact) {
  const std::vector<float> values = {0.1f, -0.7f, 3.5e-8f, 1e6f};
  for (pb::SampleFormat format : {pb::SAMPLE_FORMAT_PCM_F32LE, pb::SAMPLE_FORMAT_FRAMES_F32LE}) {
    std::string bytes;
    ASSERT_TRUE(client::EncodePayload(values.data(), values.size(), format, &bytes).ok());
    auto decoded = client::DecodePayload(bytes, format);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, values);
  }
}

TEST(PcmEncodingTest, NonFiniteValuesAreRejectedAndNothingIsAppended) {
  const std::vector<float> values = {0.0f, NAN, 0.5f};
  std::string bytes = "xy";
  const Status status =
      client::EncodePayload(values.data(), values.size(), pb::SAMPLE_FORMAT_PCM_F32LE, &bytes);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("value 1"), std::string::npos) << status.message();
  EXPECT_EQ(bytes, "xy");
  EXPECT_FALSE(client::DecodePayload("abc", pb::SAMPLE_FORMAT_PCM_S16LE).ok());
}

TEST(PcmEncodingTest, AutoFormatIsS16OnlyWhenLossless) {
  EXPECT_EQ(*client::ChoosePayloadFormat("auto", true, true), pb::SAMPLE_FORMAT_PCM_S16LE);
  EXPECT_EQ(*client::ChoosePayloadFormat("auto", true, false), pb::SAMPLE_FORMAT_PCM_F32LE);
  EXPECT_EQ(*client::ChoosePayloadFormat("s16", true, false), pb::SAMPLE_FORMAT_PCM_S16LE);
  EXPECT_EQ(*client::ChoosePayloadFormat("auto", false, false), pb::SAMPLE_FORMAT_FRAMES_F32LE);
  EXPECT_FALSE(client::ChoosePayloadFormat("s16", false, true).ok());
  EXPECT_FALSE(client::ChoosePayloadFormat("s24", true, true).ok());
}

TEST(ResampleTest, EightToSixteenKhzDoublesTheLengthAndKeepsATone) {
  const int n = 8000;  // 1 s
  std::vector<float> tone(n);
  for (int i = 0; i < n; ++i) tone[i] = 0.5f * std::sin(2 * M_PI * 440.0 * i / 8000.0);
  auto up = Resample(tone, 8000, 16000);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  ASSERT_EQ(up->size(), 16000u);
  double max_error = 0;  // away from the edges, where the filter sees the signal start and stop
  for (int i = 1000; i < 15000; ++i)
    max_error =
        std::max(max_error, std::abs((*up)[i] - 0.5 * std::sin(2 * M_PI * 440.0 * i / 16000.0)));
  EXPECT_LT(max_error, 2e-3);
  auto down = Resample(tone, 8000, 11025);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->size(), 11025u);
}

TEST(ResampleTest, EqualRatesReturnTheInputAndBadRatesAreErrors) {
  const std::vector<float> x = {0.1f, 0.2f, 0.3f};
  EXPECT_EQ(*Resample(x, 16000, 16000), x);
  EXPECT_EQ(Resample(x, 0, 16000).status().code(), StatusCode::kInvalidArgument);
}

TEST(LatencySummaryTest, NearestRankPercentiles) {
  std::vector<double> ms;
  for (int i = 1; i <= 100; ++i) ms.push_back(i);
  const client::LatencySummary s = client::Summarize(ms);
  EXPECT_EQ(s.p50, 50);
  EXPECT_EQ(s.p90, 90);
  EXPECT_EQ(s.p99, 99);
  EXPECT_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_EQ(client::Summarize({}).count, 0u);
}

TEST(ExpectedFramesTest, LogMelCountsWholeWindows) {
  pb::ModelInfo model;
  model.set_frontend("log_mel");
  model.set_win_length(400);
  model.set_hop_length(160);
  EXPECT_EQ(client::ExpectedFrames(model, 399), 0);
  EXPECT_EQ(client::ExpectedFrames(model, 400), 1);
  EXPECT_EQ(client::ExpectedFrames(model, 16000), 98);
  model.set_frontend("none");
  EXPECT_EQ(client::ExpectedFrames(model, 7), 7);
}

TEST(ClientToolsTest, ArgumentErrorsAreReportedWithoutContactingAServer) {
  CommandResult r = RunCommand(kBin + "/ssm-stream --input " + kSpeech + " --output x.npy");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--server"), std::string::npos) << r.output;
  r = RunCommand(kBin + "/ssm-stream --server 127.0.0.1:1 --input " + kSpeech + " --output x.txt");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(".npy or .jsonl"), std::string::npos) << r.output;
  r = RunCommand(kBin + "/ssm-loadgen --server 127.0.0.1:1 --duration 2 --ramp-s 3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--ramp-s"), std::string::npos) << r.output;
  r = RunCommand(kBin + "/ssm-batch --server 127.0.0.1:1 --output-dir /tmp");
  EXPECT_NE(r.exit_code, 0);
  for (const char* tool : {"ssm-stream", "ssm-batch", "ssm-loadgen"}) {
    r = RunCommand(kBin + "/" + tool + " --help");
    EXPECT_EQ(r.exit_code, 0) << tool;
    EXPECT_NE(r.output.find("--server"), std::string::npos) << tool;
  }
}

TEST(ClientToolsTest, UnreachableServerFailsFastWithAClearMessage) {
  const std::string address = "127.0.0.1:" + std::to_string(UnusedPort());
  const std::vector<std::string> commands = {
      kBin + "/ssm-stream --connect-timeout-s 1 --server " + address + " --input " + kSpeech +
          " --output " + ::testing::TempDir() + "/unreachable.npy",
      kBin + "/ssm-batch --connect-timeout-s 1 --server " + address + " --output-dir " +
          ::testing::TempDir() + "/unreachable " + kSpeech,
      kBin + "/ssm-loadgen --connect-timeout-s 1 --json --streams 2 --duration 1 --server " +
          address,
      kPython + " " + SSM_SOURCE_DIR + "/clients/python/ssm_client.py --timeout-s 1 --server " +
          address + " --input " + kSpeech + " --output " + ::testing::TempDir() + "/u.npy"};
  for (const std::string& command : commands) {
    const auto start = std::chrono::steady_clock::now();
    const CommandResult r = RunCommand(command, 30);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(r.exit_code, 0) << command;
    EXPECT_NE(r.exit_code, 124) << "timed out: " << command;
    EXPECT_LT(s, 10) << command;
    EXPECT_NE(r.output.find("cannot reach ssm-server at " + address), std::string::npos)
        << command << "\n"
        << r.output;
  }
  client::ConnectOptions quick;
  quick.connect_timeout_s = 0.5;
  auto client = client::Client::Connect(address, quick);
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
}

TEST(ClientToolsTest, SilentServerDoesNotHang) {
  // A socket that completes TCP handshakes (the kernel's backlog) but never speaks HTTP/2.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  const CommandResult r =
      RunCommand(kBin + "/ssm-stream --connect-timeout-s 1 --server " + address + " --input " +
                     kSpeech + " --output " + ::testing::TempDir() + "/silent.npy",
                 30);
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot reach ssm-server"), std::string::npos) << r.output;
}

// ---------------------------------------------------------------------------------------------
// Against a real server: an audio model (log-mel, 16 kHz) and a frame model (frontend none).

constexpr char kAudioConfig[] = R"({
  "format": "ssmserve/v1",
  "frontend": {"type": "log_mel", "sample_rate": 16000, "win_length": 400, "hop_length": 160,
               "n_fft": 512, "n_mels": 40, "f_min": 0.0, "f_max": 8000.0, "log_floor": 1e-10},
  "d_in": 40, "d_model": 32, "n_layer": 2,
  "layer": {"type": "mamba", "d_state": 8, "d_conv": 4, "expand": 2, "dt_rank": 4,
            "conv_bias": true, "bias": false},
  "norm": {"type": "rmsnorm", "eps": 1e-5},
  "d_out": 3, "head_activation": "softmax", "labels": ["low", "mid", "high"]
})";

constexpr char kFrameConfig[] = R"({
  "format": "ssmserve/v1",
  "frontend": {"type": "none", "frame_rate": 50},
  "d_in": 6, "d_model": 16, "n_layer": 2,
  "layer": {"type": "mamba", "d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": 2,
            "conv_bias": true, "bias": false},
  "norm": {"type": "rmsnorm", "eps": 1e-5},
  "d_out": 2, "head_activation": "sigmoid"
})";

// One value per frame (a single sensor channel): frames that look like samples.
constexpr char kSensorConfig[] = R"({
  "format": "ssmserve/v1",
  "frontend": {"type": "none", "frame_rate": 50},
  "d_in": 1, "d_model": 8, "n_layer": 1,
  "layer": {"type": "mamba", "d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": 1},
  "norm": {"type": "rmsnorm", "eps": 1e-5},
  "d_out": 1, "head_activation": "sigmoid"
})";

class ClientsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = ::testing::TempDir() + "/ssm_clients_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = new std::string(pattern);
    for (const auto& [name, config] : {std::pair<std::string, const char*>{"audio", kAudioConfig},
                                       {"frames", kFrameConfig},
                                       {"sensor", kSensorConfig}}) {
      std::ofstream(Path(name + ".json")) << config;
      const CommandResult r = RunCommand(kBin + "/ssm-model random --config " +
                                         Path(name + ".json") + " --seed 7 --out " + Path(name));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    std::string error;
    server_ =
        testing::ServerProcess::Start(
            kBin + "/ssm-server",
            {"--model", "audio=" + Path("audio"), "--model", "frames=" + Path("frames"), "--model",
             "sensor=" + Path("sensor"), "--listen", "127.0.0.1:0", "--threads", "2"},
            &error)
            .release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    if (dir_) fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the server did not start"; }

  static std::string Path(const std::string& name) { return *dir_ + "/" + name; }
  static const std::string& Address() { return server_->address(); }

  // ssm-run --mode offline on `input` with model `model`: the expected outputs' .npy path.
  static std::string Offline(const std::string& model, const std::string& input,
                             const std::string& name) {
    const std::string out = Path(name + ".offline.npy");
    const CommandResult r =
        RunCommand(kBin + "/ssm-run --mode offline --model " + Path(model) + " --input " + input +
                   " --output " + out + " --device " + testing::TestDevice());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }

  static std::string* dir_;
  static testing::ServerProcess* server_;
};

std::string* ClientsTest::dir_ = nullptr;
testing::ServerProcess* ClientsTest::server_ = nullptr;

TEST_F(ClientsTest, StreamToolMatchesOfflineRunExactlyForSeveralChunkSizes) {
  const std::string expected = Offline("audio", kSpeech, "speech");
  for (const char* flags : {"--chunk-ms 100", "--chunk-ms 37", "--chunk-ms 250 --format f32"}) {
    const std::string out = Path("stream.npy");
    const CommandResult r =
        RunCommand(kBin + "/ssm-stream --server " + Address() + " --model audio --input " +
                   kSpeech + " --output " + out + " " + flags);
    ASSERT_EQ(r.exit_code, 0) << flags << "\n" << r.output;
    EXPECT_TRUE(NpyEqual(expected, out)) << flags;
    EXPECT_NE(r.output.find("server latency ms"), std::string::npos) << r.output;
  }
}

TEST_F(ClientsTest, StreamToolWritesJsonlWithLabels) {
  const std::string out = Path("stream.jsonl");
  const CommandResult r = RunCommand(kBin + "/ssm-stream --server " + Address() + " --input " +
                                     kSpeech + " --output " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto expected = ReadNpy(Offline("audio", kSpeech, "speech"));
  ASSERT_TRUE(expected.ok());
  std::ifstream in(out);
  std::string line;
  int64_t frames = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_EQ(j["frame"].get<int64_t>(), frames);
    EXPECT_DOUBLE_EQ(j["time_s"].get<double>(), frames / 100.0);
    const std::vector<float> outputs = j["outputs"].get<std::vector<float>>();
    ASSERT_EQ(outputs.size(), 3u);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(outputs[k], expected->data[frames * 3 + k]);
    EXPECT_TRUE(j["label"] == "low" || j["label"] == "mid" || j["label"] == "high");
    ++frames;
  }
  EXPECT_EQ(frames, expected->shape[0]);
}

TEST_F(ClientsTest, StreamToolResamplesAnEightKhzFile) {
  auto speech = ReadAudio(kSpeech);
  ASSERT_TRUE(speech.ok());
  auto low = Resample(speech->samples, 16000, 8000);
  ASSERT_TRUE(low.ok());
  const std::string wav8k = Path("speech8k.wav");
  ASSERT_TRUE(WriteWav(wav8k, low->data(), low->size(), 8000).ok());
  const std::string out = Path("resampled.npy");
  const CommandResult r = RunCommand(kBin + "/ssm-stream --server " + Address() + " --input " +
                                     wav8k + " --output " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("from 8000 Hz to 16000 Hz"), std::string::npos) << r.output;
  auto outputs = ReadNpy(out);
  ASSERT_TRUE(outputs.ok());
  const int64_t expected = (int64_t(low->size()) * 2 - 400) / 160 + 1;
  EXPECT_NEAR(double(outputs->shape[0]), double(expected), 1.0);
  EXPECT_EQ(outputs->shape[1], 3);
}

TEST_F(ClientsTest, StreamToolSendsFramesToAFrameModel) {
  std::vector<float> frames(300 * 6);
  for (size_t i = 0; i < frames.size(); ++i) frames[i] = float(std::sin(0.37 * double(i)));
  const std::string input = Path("frames_in.npy");
  ASSERT_TRUE(WriteNpy(input, {300, 6}, frames.data()).ok());
  const std::string expected = Offline("frames", input, "frames");
  const std::string out = Path("frames_out.npy");
  CommandResult r =
      RunCommand(kBin + "/ssm-stream --server " + Address() +
                 " --model frames --chunk-ms 70 --input " + input + " --output " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(NpyEqual(expected, out));
  // Audio to a frame model: refused before anything is sent, naming what the model takes.
  r = RunCommand(kBin + "/ssm-stream --server " + Address() + " --model frames --input " + kSpeech +
                 " --output " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("(T, 6)"), std::string::npos) << r.output;
}

TEST_F(ClientsTest, LibraryStreamAndProcessFileMatchOfflineRun) {
  auto expected = ReadNpy(Offline("audio", kSpeech, "speech"));
  ASSERT_TRUE(expected.ok());
  auto client = client::Client::Connect(Address());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto models = (*client)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  EXPECT_EQ(models->default_model(), "audio");
  EXPECT_EQ(models->models_size(), 3);
  auto info = (*client)->GetModelInfo("audio");
  ASSERT_TRUE(info.ok());
  auto input = client::ReadClientInput(kSpeech, *info);
  ASSERT_TRUE(input.ok());
  EXPECT_TRUE(input->fits_s16);

  client::StreamOptions options;  // blocking Next() on this thread
  options.model = "audio";
  auto stream = (*client)->OpenStream(options);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  for (size_t pos = 0; pos < input->values.size(); pos += 1234)
    ASSERT_TRUE((*stream)
                    ->SendSamples(input->values.data() + pos,
                                  std::min<size_t>(1234, input->values.size() - pos))
                    .ok());
  (*stream)->CloseSend();
  std::vector<float> values;
  client::Output out;
  while ((*stream)->Next(&out)) values.insert(values.end(), out.values.begin(), out.values.end());
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ(values, expected->data);
  const client::StreamStats stats = (*stream)->stats();
  EXPECT_EQ(stats.frame_errors, 0) << stats.first_frame_error;
  EXPECT_EQ(stats.outputs_received, stats.chunks_sent);
  EXPECT_EQ(stats.frames, expected->shape[0]);

  client::FileRequest request;
  request.model = "audio";
  request.chunk_bytes = 10000;  // many upload pieces
  int64_t last_frames = 0;
  auto file = (*client)->ProcessFile(request, input->values, [&](const client::FileProgress& p) {
    EXPECT_GE(p.frames_received, last_frames);
    last_frames = p.frames_received;
  });
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->frames, expected->shape[0]);
  EXPECT_EQ(file->values, expected->data);
  EXPECT_EQ(last_frames, file->frames);
}

TEST_F(ClientsTest, LibraryReportsServerAndInputErrors) {
  auto client = client::Client::Connect(Address());
  ASSERT_TRUE(client.ok());
  client::StreamOptions options;
  options.model = "no-such-model";
  auto stream = (*client)->OpenStream(options);
  EXPECT_EQ(stream.status().code(), StatusCode::kNotFound) << stream.status().ToString();
  EXPECT_NE(stream.status().message().find("no-such-model"), std::string::npos);
  EXPECT_EQ((*client)->GetModelInfo("no-such-model").status().code(), StatusCode::kNotFound);

  options.model = "audio";
  auto good = (*client)->OpenStream(options);
  ASSERT_TRUE(good.ok());
  const float bad[] = {0.0f, INFINITY};
  EXPECT_EQ((*good)->SendSamples(bad, 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*good)->SendFrames(bad, 1).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*good)->Close().ok());  // the bad chunk never left: the stream is intact

  // A payload the server must refuse (odd byte count for s16) ends the call with its message.
  auto refused = (*client)->OpenStream(options);
  ASSERT_TRUE(refused.ok());
  EXPECT_TRUE((*refused)->SendPayload("abc").ok());
  const Status end = (*refused)->Close();
  EXPECT_EQ(end.code(), StatusCode::kInvalidArgument) << end.ToString();
  EXPECT_FALSE(end.message().empty());
  EXPECT_FALSE((*refused)->SendPayload("ab").ok());
}

TEST_F(ClientsTest, BatchToolProcessesGoodFilesReportsBadOnesAndSkipsOnRerun) {
  const std::string in_dir = Path("batch_in"), out_dir = Path("batch_out");
  fs::create_directories(in_dir);
  fs::copy_file(kSpeech, in_dir + "/one.wav");
  auto speech = ReadAudio(kSpeech);
  ASSERT_TRUE(speech.ok());
  ASSERT_TRUE(WriteWav(in_dir + "/two.wav", speech->samples.data(), 16000 * 3, 16000).ok());
  std::ofstream(in_dir + "/bad.wav") << "not a wav file";
  const std::string files = in_dir + "/one.wav " + in_dir + "/bad.wav " + in_dir + "/two.wav";
  const std::string command =
      kBin + "/ssm-batch --server " + Address() + " --output-dir " + out_dir + " --jobs 2 " + files;
  CommandResult r = RunCommand(command);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("bad.wav"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2 done"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_dir + "/bad.npy"));
  EXPECT_TRUE(NpyEqual(Offline("audio", in_dir + "/one.wav", "one"), out_dir + "/one.npy"));
  EXPECT_TRUE(NpyEqual(Offline("audio", in_dir + "/two.wav", "two"), out_dir + "/two.npy"));

  const auto written = fs::last_write_time(out_dir + "/one.npy");
  r = RunCommand(command);
  EXPECT_EQ(r.exit_code, 1) << r.output;  // bad.wav still fails
  EXPECT_NE(r.output.find("2 skipped"), std::string::npos) << r.output;
  EXPECT_EQ(fs::last_write_time(out_dir + "/one.npy"), written);

  r = RunCommand(kBin + "/ssm-batch --force --server " + Address() + " --output-dir " + out_dir +
                 " " + in_dir + "/one.wav " + in_dir + "/two.wav");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 done"), std::string::npos) << r.output;
}

TEST_F(ClientsTest, LoadgenHoldsEightStreamsWithoutFrameErrors) {
  const CommandResult r =
      RunCommand(kBin + "/ssm-loadgen --server " + Address() +
                 " --model audio --streams 8 --duration 3 --ramp-s 0.5 --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["streams_requested"], 8);
  EXPECT_EQ(report["streams_held"], 8);
  EXPECT_EQ(report["frame_errors"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_GT(report["chunks_sent"].get<int64_t>(), 8 * 20);
  EXPECT_EQ(report["chunks_answered"], report["chunks_sent"]);
  EXPECT_GT(report["frames_per_s"].get<double>(), 8 * 60.0);  // 8 real-time streams of 100 frames/s
  for (const char* p : {"p50", "p90", "p99", "max"})
    EXPECT_GT(report["latency_ms"][p].get<double>(), 0) << p;
  EXPECT_GE(report["max_lag_ms"].get<double>(), 0);
}

// A frame model with one value per frame is sent frames, paced at its frame rate (they were
// once taken for audio samples: every send was refused and nothing was reported).
TEST_F(ClientsTest, LoadgenDrivesAFrameModelWithOneValuePerFrame) {
  const CommandResult r = RunCommand(kBin + "/ssm-loadgen --server " + Address() +
                                     " --model sensor --streams 4 --duration 2 --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["streams_held"], 4);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  // 100 ms chunks of 5 frames at 50 frames/s: about 20 per stream in 2 s.
  EXPECT_GE(report["chunks_sent"].get<int64_t>(), 4 * 15);
  EXPECT_EQ(report["chunks_answered"], report["chunks_sent"]);
  EXPECT_EQ(report["frames"].get<int64_t>(), 5 * report["chunks_answered"].get<int64_t>());
}

// --streams-per-call carries the streams on StreamMany calls: each held, every chunk answered,
// and the outputs of all of them (two calls of three and one of two) bitwise those of offline
// processing in the load generator's own engine.
TEST_F(ClientsTest, LoadgenOnStreamManyCallsEqualsOffline) {
  const CommandResult r = RunCommand(kBin + "/ssm-loadgen --server " + Address() +
                                     " --model audio --streams 8 --streams-per-call 3 "
                                     "--duration 2 --verify-offline " +
                                     Path("audio") + " --verify-streams 8 --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["streams_per_call"], 3);
  EXPECT_EQ(report["streams_held"], 8);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"].dump();
  EXPECT_EQ(report["frame_errors"], 0);
  EXPECT_GE(report["chunks_sent"].get<int64_t>(), 8 * 15);
  EXPECT_EQ(report["chunks_answered"], report["chunks_sent"]);
  EXPECT_EQ(report["offline"]["streams_verified"], 8);
  EXPECT_EQ(report["offline"]["streams_differing"], 0);
  EXPECT_GT(report["offline"]["frames_verified"].get<int64_t>(), 8 * 100);
  EXPECT_EQ(RunCommand(kBin + "/ssm-loadgen --server " + Address() +
                       " --streams-per-call 2 --chaos-disconnect-s 1 2>&1")
                .exit_code,
            2);
}

// Streams that open together send in step with --phases even (every step carries all eight
// chunks) and at unrelated moments with --phases random, the default (as separate clients
// would: a step rarely finds more than one or two ready). Read from the server's batch sizes.
TEST_F(ClientsTest, LoadgenPhasesAreRandomUnlessEvenIsAsked) {
  const auto mean_batch = [&](const std::string& phases) {
    const auto batches = [&] {
      const std::string text = testing::HttpGet(server_->metrics_port(), "/metrics").body;
      return std::pair<double, double>(
          testing::Sample(text, "ssm_batch_streams_sum{model=\"sensor\"}"),
          testing::Sample(text, "ssm_batch_streams_count{model=\"sensor\"}"));
    };
    const auto [sum_before, count_before] = batches();
    const CommandResult r = RunCommand(kBin + "/ssm-loadgen --server " + Address() +
                                       " --model sensor --streams 8 --duration 2 --ramp-s 0 " +
                                       "--phases " + phases + " --json 2>/dev/null");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const nlohmann::json report = nlohmann::json::parse(r.output);
    EXPECT_EQ(report["phases"], phases);
    EXPECT_EQ(report["streams_held"], 8);
    const auto [sum, count] = batches();
    EXPECT_GT(count, count_before);
    return (sum - sum_before) / std::max(1.0, count - count_before);
  };
  EXPECT_GT(mean_batch("even"), 4);
  EXPECT_LT(mean_batch("random"), 3);
  EXPECT_NE(
      RunCommand(kBin + "/ssm-loadgen --server " + Address() + " --phases sometimes").exit_code, 0);
}

TEST_F(ClientsTest, PythonClientMatchesOfflineRun) {
  if (RunCommand(kPython + " -c 'import grpc, numpy'").exit_code != 0)
    GTEST_SKIP() << "python3-grpcio / python3-numpy are not installed";
  const std::string stubs = kBin + "/../clients/python/gen";
  if (!fs::exists(stubs + "/ssmserve/v1/ssmserve_pb2_grpc.py"))
    GTEST_SKIP() << "Python stubs not generated (target ssm_python_stubs)";
  const std::string out = Path("python.npy");
  const CommandResult r =
      RunCommand(kPython + " " + SSM_SOURCE_DIR + "/clients/python/ssm_client.py --stubs " + stubs +
                 " --server " + Address() + " --model audio --chunk-ms 60 " + "--input " + kSpeech +
                 " --output " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(NpyEqual(Offline("audio", kSpeech, "speech"), out));
}

}  // namespace
}  // namespace ssm
