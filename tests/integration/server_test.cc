// ssm-server end to end: the real binary on loopback, driven through the generated stubs. Outputs
// must equal an in-process offline run of the same model bitwise, however the input is chunked
// and whatever else the server is doing.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/http_get.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr int kSampleRate = 16000;  // SmallAudioConfig's

// ---- payload encodings -------------------------------------------------------------------------

std::string F32Bytes(const float* values, size_t n) {
  return std::string(reinterpret_cast<const char*>(values), n * sizeof(float));
}

// Quantises samples to int16 in place (so the reference sees exactly what the server decodes)
// and returns their PCM S16LE bytes.
std::string S16Bytes(float* samples, size_t n) {
  std::string bytes(2 * n, '\0');
  for (size_t i = 0; i < n; ++i) {
    const auto s = int16_t(std::lround(std::clamp(samples[i], -1.0f, 32767.0f / 32768.0f) * 32768));
    samples[i] = float(s) / 32768.0f;
    std::memcpy(&bytes[2 * i], &s, 2);
  }
  return bytes;
}

pb::StreamRequest OpenRequest(const std::string& model, pb::SampleFormat format,
                              int sample_rate = 0) {
  pb::StreamRequest r;
  r.mutable_open()->set_model(model);
  r.mutable_open()->set_format(format);
  r.mutable_open()->set_sample_rate(sample_rate);
  return r;
}

pb::StreamRequest ChunkRequest(uint64_t sequence, std::string payload) {
  pb::StreamRequest r;
  r.mutable_chunk()->set_sequence(sequence);
  r.mutable_chunk()->set_payload(std::move(payload));
  return r;
}

// ---- calls -------------------------------------------------------------------------------------

enum class Rpc { kStream, kProcessFile };

struct CallResult {
  grpc::Status status;
  bool opened = false;
  int outputs = 0;            // output responses
  std::vector<float> values;  // all output values in order
  bool frames_consecutive = true;
};

// Sends `requests` (then half-closes) on a writer thread while reading every response; returns
// the final status and the concatenated outputs.
CallResult RunCall(pb::Ssm::Stub& stub, Rpc rpc, const std::vector<pb::StreamRequest>& requests,
                   grpc::ClientContext* context = nullptr) {
  grpc::ClientContext own_context;
  if (context == nullptr) context = &own_context;
  auto call = rpc == Rpc::kStream ? stub.Stream(context) : stub.ProcessFile(context);
  std::thread writer([&] {
    for (const auto& r : requests)
      if (!call->Write(r)) break;
    call->WritesDone();
  });
  CallResult result;
  pb::StreamResponse response;
  int64_t next_frame = 0;
  while (call->Read(&response)) {
    if (response.has_opened()) result.opened = true;
    if (!response.has_output()) continue;
    ++result.outputs;
    const pb::StreamOutput& out = response.output();
    if (out.first_frame() != next_frame) result.frames_consecutive = false;
    next_frame = out.first_frame() + out.frames();
    result.values.insert(result.values.end(), out.values().begin(), out.values().end());
  }
  writer.join();
  result.status = call->Finish();
  return result;
}

// The requests of one stream: open, then `values` cut at the given row counts.
std::vector<pb::StreamRequest> StreamRequests(const std::string& model, pb::SampleFormat format,
                                              std::vector<float>* values,
                                              const std::vector<int64_t>& chunks, size_t per_row) {
  std::vector<pb::StreamRequest> requests{OpenRequest(model, format)};
  size_t pos = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const size_t n = size_t(chunks[i]) * per_row;
    std::string bytes = format == pb::SAMPLE_FORMAT_PCM_S16LE ? S16Bytes(values->data() + pos, n)
                                                              : F32Bytes(values->data() + pos, n);
    requests.push_back(ChunkRequest(i, std::move(bytes)));
    pos += n;
  }
  return requests;
}

// grpc.health.v1.Health/Check for the whole server, without generated stubs: the request is an
// empty HealthCheckRequest, the response's bytes are field 1 (status) as a varint.
const std::string kServing("\x08\x01", 2), kNotServing("\x08\x02", 2);
std::string HealthStatus(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) { done.set_value(s); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) return "error: " + status.error_message();
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return "error: bad response";
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

// ---- fixture -----------------------------------------------------------------------------------

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_server_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ModelConfig audio = testing::SmallAudioConfig();
    audio.labels = {"background", "speech"};
    ModelConfig frames = testing::SmallFrameConfig();
    ASSERT_TRUE(testing::RandomModel(audio, 11)->Save(*dir_ + "/audio").ok());
    ASSERT_TRUE(testing::RandomModel(frames, 12)->Save(*dir_ + "/frames").ok());
    // Mamba-1, Mamba-2, GLA, RetNet and linear attention layers in one stack: every layer type
    // through the server.
    ASSERT_TRUE(
        testing::RandomModel(testing::SmallFamilyConfig(), 13)->Save(*dir_ + "/hybrid").ok());
    // The reference runs on the saved files, exactly what the server loads.
    audio_model_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/audio"));
    frames_model_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/frames"));
    hybrid_model_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/hybrid"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete audio_model_;
    delete frames_model_;
    delete hybrid_model_;
  }

  // Every server drains and exits 0 (under a sanitizer build a leak would make this fail).
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
  }

  // Starts ssm-server with the three models (audio is the default) and `extra` flags.
  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--model",   *dir_ + "/audio",
                                  "--model",   "frames=" + *dir_ + "/frames",
                                  "--model",   "hybrid=" + *dir_ + "/hybrid",
                                  "--listen",  "127.0.0.1:0",
                                  "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error);
    ASSERT_NE(server_, nullptr) << error;
    stub_ = NewStub();
  }
  std::unique_ptr<pb::Ssm::Stub> NewStub() {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    return pb::Ssm::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
  }

  // Offline outputs of the in-process engine: the truth.
  static std::vector<float> Offline(const std::shared_ptr<const Model>& model,
                                    const std::vector<float>& values) {
    auto engine = testing::MakeEngine(model, testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, values);
  }

  static std::string* dir_;
  static std::shared_ptr<const Model>* audio_model_;
  static std::shared_ptr<const Model>* frames_model_;
  static std::shared_ptr<const Model>* hybrid_model_;
  testing::Rng rng_{testing::TestSeed()};
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<pb::Ssm::Stub> stub_;
};

std::string* ServerTest::dir_ = nullptr;
std::shared_ptr<const Model>* ServerTest::audio_model_ = nullptr;
std::shared_ptr<const Model>* ServerTest::frames_model_ = nullptr;
std::shared_ptr<const Model>* ServerTest::hybrid_model_ = nullptr;

// ---- tests -------------------------------------------------------------------------------------

TEST_F(ServerTest, StreamEqualsOfflineForRandomChunkSizes) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  struct Case {
    const char* model;
    pb::SampleFormat format;
    int64_t rows;
    int max_chunk;
  };
  for (const Case& c : {Case{"audio", pb::SAMPLE_FORMAT_PCM_F32LE, 9000, 1500},
                        Case{"audio", pb::SAMPLE_FORMAT_PCM_S16LE, 7000, 400},
                        Case{"", pb::SAMPLE_FORMAT_PCM_F32LE, 3000, 37},  // default model
                        Case{"frames", pb::SAMPLE_FORMAT_FRAMES_F32LE, 120, 9},
                        Case{"hybrid", pb::SAMPLE_FORMAT_FRAMES_F32LE, 150, 11}}) {
    SCOPED_TRACE(std::string(c.model) + " max_chunk " + std::to_string(c.max_chunk));
    const std::string name = c.model;
    const bool audio = name != "frames" && name != "hybrid";
    const auto& model = audio ? *audio_model_ : name == "frames" ? *frames_model_ : *hybrid_model_;
    auto values = testing::RandomInput(rng_, model->config(), c.rows);
    const auto chunks = testing::Chunking(rng_, c.rows, "random", c.max_chunk);
    const auto requests =
        StreamRequests(c.model, c.format, &values, chunks, audio ? 1 : model->config().d_in);
    const CallResult r = RunCall(*stub_, Rpc::kStream, requests);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(r.opened);
    EXPECT_EQ(r.outputs, int(chunks.size()));  // one response per chunk, even with no frames
    EXPECT_TRUE(r.frames_consecutive);
    EXPECT_EQ(r.values, Offline(model, values));
  }
}

TEST_F(ServerTest, ProcessFileEqualsOfflineAndStreamsOutputsInPieces) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--file-segment-frames", "64"}));
  for (const bool audio : {true, false}) {
    SCOPED_TRACE(audio ? "audio" : "frames");
    const auto& model = audio ? *audio_model_ : *frames_model_;
    const int64_t rows = audio ? 80000 : 900;  // 5 s: ~500 frames, 900 frames
    auto values = testing::RandomInput(rng_, model->config(), rows);
    const auto uploads = testing::Chunking(rng_, rows, "random", audio ? 30000 : 400);
    const auto requests =
        StreamRequests(audio ? "audio" : "frames",
                       audio ? pb::SAMPLE_FORMAT_PCM_F32LE : pb::SAMPLE_FORMAT_FRAMES_F32LE,
                       &values, uploads, audio ? 1 : model->config().d_in);
    const CallResult r = RunCall(*stub_, Rpc::kProcessFile, requests);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(r.opened);
    EXPECT_GE(r.outputs, 7);  // segments of <= 64 frames
    EXPECT_TRUE(r.frames_consecutive);
    EXPECT_EQ(r.values, Offline(model, values));
  }
}

// 64 streams and 4 files at once, on both models: every output equals its solo offline run.
TEST_F(ServerTest, ConcurrentStreamsAndFilesEachEqualTheirSoloResult) {
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--file-segment-frames", "100", "--max-batch-streams", "24"}));
  constexpr int kStreams = 64, kFiles = 4;
  struct Job {
    Rpc rpc;
    std::vector<pb::StreamRequest> requests;
    std::vector<float> expected;
  };
  std::vector<Job> jobs;
  for (int i = 0; i < kStreams + kFiles; ++i) {
    const bool audio = i % 2 == 0;
    const Rpc rpc = i < kStreams ? Rpc::kStream : Rpc::kProcessFile;
    const auto& model = audio ? *audio_model_ : *frames_model_;
    const int64_t rows = audio ? rng_.Int(2000, 12000) : rng_.Int(20, 200);
    auto values = testing::RandomInput(rng_, model->config(), rows);
    const auto chunks =
        testing::Chunking(rng_, rows, "random", audio ? rng_.Int(100, 3000) : rng_.Int(1, 30));
    Job job{rpc,
            StreamRequests(audio ? "audio" : "frames",
                           audio ? pb::SAMPLE_FORMAT_PCM_S16LE : pb::SAMPLE_FORMAT_FRAMES_F32LE,
                           &values, chunks, audio ? 1 : model->config().d_in),
            {}};
    job.expected = Offline(model, values);
    jobs.push_back(std::move(job));
  }
  std::vector<std::future<CallResult>> results;
  for (const Job& job : jobs)
    results.push_back(
        std::async(std::launch::async, [&] { return RunCall(*stub_, job.rpc, job.requests); }));
  for (size_t i = 0; i < jobs.size(); ++i) {
    const CallResult r = results[i].get();
    ASSERT_TRUE(r.status.ok()) << "call " << i << ": " << r.status.error_message();
    EXPECT_EQ(r.values, jobs[i].expected) << "call " << i;
  }
}

// Each bad request ends its own call with its code and a message naming the problem, while a
// healthy stream running alongside stays exact.
TEST_F(ServerTest, BadInputsGetTheirCodeWhileAHealthyStreamStaysExact) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-chunk-ms", "500"}));
  const auto& audio = *audio_model_;
  auto healthy_values = testing::RandomInput(rng_, audio->config(), 40000);
  const auto healthy_chunks = testing::Chunking(rng_, 40000, "random", 800);
  const auto healthy_requests =
      StreamRequests("audio", pb::SAMPLE_FORMAT_PCM_F32LE, &healthy_values, healthy_chunks, 1);
  // The healthy stream writes slowly, so the bad calls below overlap it.
  grpc::ClientContext healthy_context;
  auto healthy = stub_->Stream(&healthy_context);
  std::thread healthy_writer([&] {
    for (const auto& r : healthy_requests) {
      if (!healthy->Write(r)) break;
      std::this_thread::sleep_for(milliseconds(2));
    }
    healthy->WritesDone();
  });

  std::vector<float> ok_audio(1600, 0.1f);
  std::vector<float> nan_audio = ok_audio;
  nan_audio[77] = std::nanf("");
  std::vector<float> long_audio(kSampleRate * 6 / 10, 0.1f);  // 600 ms > 500 ms
  const std::string big(5 << 20, '\0');                       // 5 MiB > 4 MiB message limit
  const std::string ok_bytes = F32Bytes(ok_audio.data(), ok_audio.size());
  const auto f32 = pb::SAMPLE_FORMAT_PCM_F32LE;
  struct Bad {
    const char* what;
    std::vector<pb::StreamRequest> requests;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Bad> bads = {
      {"chunk before open",
       {ChunkRequest(0, ok_bytes)},
       grpc::FAILED_PRECONDITION,
       "chunk before open"},
      {"second open",
       {OpenRequest("audio", f32), OpenRequest("audio", f32)},
       grpc::INVALID_ARGUMENT,
       "second `open`"},
      {"unknown model", {OpenRequest("nope", f32)}, grpc::NOT_FOUND, "unknown model \"nope\""},
      {"wrong sample rate",
       {OpenRequest("audio", f32, 8000)},
       grpc::INVALID_ARGUMENT,
       "sample_rate 8000 Hz does not match the model's 16000 Hz"},
      {"frames to an audio model",
       {OpenRequest("audio", pb::SAMPLE_FORMAT_FRAMES_F32LE)},
       grpc::INVALID_ARGUMENT,
       "takes audio"},
      {"audio to a frames model",
       {OpenRequest("frames", pb::SAMPLE_FORMAT_PCM_S16LE)},
       grpc::INVALID_ARGUMENT,
       "takes frames"},
      {"no format",
       {OpenRequest("audio", pb::SAMPLE_FORMAT_UNSPECIFIED)},
       grpc::INVALID_ARGUMENT,
       "set StreamOpen.format"},
      {"odd s16 payload",
       {OpenRequest("audio", pb::SAMPLE_FORMAT_PCM_S16LE), ChunkRequest(0, "abc")},
       grpc::INVALID_ARGUMENT,
       "not a whole number of PCM_S16LE samples"},
      {"partial frame",
       {OpenRequest("frames", pb::SAMPLE_FORMAT_FRAMES_F32LE), ChunkRequest(0, std::string(28, 0))},
       grpc::INVALID_ARGUMENT,
       "not a whole number of frames"},
      {"NaN sample",
       {OpenRequest("audio", f32), ChunkRequest(0, F32Bytes(nan_audio.data(), nan_audio.size()))},
       grpc::INVALID_ARGUMENT,
       "must be finite"},
      {"sequence gap",
       {OpenRequest("audio", f32), ChunkRequest(0, ok_bytes), ChunkRequest(2, ok_bytes)},
       grpc::INVALID_ARGUMENT,
       "chunk sequence 2 but expected 1"},
      {"sequence repeat",
       {OpenRequest("audio", f32), ChunkRequest(0, ok_bytes), ChunkRequest(0, ok_bytes)},
       grpc::INVALID_ARGUMENT,
       "chunk sequence 0 but expected 1"},
      {"chunk too long",
       {OpenRequest("audio", f32), ChunkRequest(0, F32Bytes(long_audio.data(), long_audio.size()))},
       grpc::INVALID_ARGUMENT,
       "--max-chunk-ms"},
      {"message too large",
       {OpenRequest("audio", f32), ChunkRequest(0, big)},
       grpc::RESOURCE_EXHAUSTED,
       ""},
  };
  for (const Bad& bad : bads) {
    const CallResult r = RunCall(*stub_, Rpc::kStream, bad.requests);
    EXPECT_EQ(r.status.error_code(), bad.code) << bad.what << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(bad.message), std::string::npos)
        << bad.what << ": " << r.status.error_message();
  }
  // A NaN in an upload ends a ProcessFile call the same way.
  const CallResult file = RunCall(
      *stub_, Rpc::kProcessFile,
      {OpenRequest("audio", f32), ChunkRequest(0, F32Bytes(nan_audio.data(), nan_audio.size()))});
  EXPECT_EQ(file.status.error_code(), grpc::INVALID_ARGUMENT) << file.status.error_message();

  std::vector<float> healthy_out;
  pb::StreamResponse response;
  while (healthy->Read(&response))
    if (response.has_output())
      healthy_out.insert(healthy_out.end(), response.output().values().begin(),
                         response.output().values().end());
  healthy_writer.join();
  const grpc::Status healthy_status = healthy->Finish();
  ASSERT_TRUE(healthy_status.ok()) << healthy_status.error_message();
  EXPECT_EQ(healthy_out, Offline(audio, healthy_values));
}

// Opens a Stream and waits for `opened` (or the call's end); the call stays open.
struct OpenStream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>> call;
  bool opened = false;

  OpenStream(pb::Ssm::Stub& stub, const std::string& model = "audio", Rpc rpc = Rpc::kStream) {
    call = rpc == Rpc::kStream ? stub.Stream(&context) : stub.ProcessFile(&context);
    call->Write(OpenRequest(
        model, model == "frames" ? pb::SAMPLE_FORMAT_FRAMES_F32LE : pb::SAMPLE_FORMAT_PCM_F32LE));
    pb::StreamResponse response;
    opened = call->Read(&response) && response.has_opened();
  }
  grpc::Status Close() {
    call->WritesDone();
    pb::StreamResponse response;
    while (call->Read(&response)) {
    }
    return call->Finish();
  }
};

// Retries opening for up to `timeout`: a freed slot returns to the pool on the scheduler's worker,
// a moment after the call that held it ended.
std::unique_ptr<OpenStream> OpenWithin(pb::Ssm::Stub& stub, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto stream = std::make_unique<OpenStream>(stub);
    if (stream->opened || Clock::now() > deadline) return stream;
    stream->Close();
    std::this_thread::sleep_for(milliseconds(20));
  }
}

TEST_F(ServerTest, RefusesStreamsBeyondCapacityWithTheLimitInTheMessage) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-streams", "2"}));
  OpenStream a(*stub_), b(*stub_);
  ASSERT_TRUE(a.opened && b.opened);
  OpenStream c(*stub_);
  EXPECT_FALSE(c.opened);
  const grpc::Status refused = c.Close();
  EXPECT_EQ(refused.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("all 2 stream slots"), std::string::npos)
      << refused.error_message();
  // The other model has its own slots.
  OpenStream other(*stub_, "frames");
  EXPECT_TRUE(other.opened);
  EXPECT_TRUE(a.Close().ok());
  auto d = OpenWithin(*stub_, seconds(2));
  EXPECT_TRUE(d->opened);
  EXPECT_TRUE(b.Close().ok());
  EXPECT_TRUE(d->Close().ok());
  EXPECT_TRUE(other.Close().ok());
}

TEST_F(ServerTest, IdleStreamIsClosedAndItsSlotFreed) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--idle-timeout", "1", "--max-streams", "1"}));
  OpenStream a(*stub_);
  ASSERT_TRUE(a.opened);
  std::vector<float> samples(800, 0.2f);
  ASSERT_TRUE(a.call->Write(ChunkRequest(0, F32Bytes(samples.data(), samples.size()))));
  const auto start = Clock::now();
  pb::StreamResponse response;
  int outputs = 0;
  while (a.call->Read(&response)) outputs += response.has_output();
  const grpc::Status status = a.call->Finish();
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(outputs, 1);
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_NE(status.error_message().find("no chunk for 1 s"), std::string::npos)
      << status.error_message();
  EXPECT_GT(waited, 0.8);
  EXPECT_LT(waited, 3.0);
  auto b = OpenWithin(*stub_, seconds(2));
  EXPECT_TRUE(b->opened);
  b->Close();
}

// The client sends large frame chunks and never reads its responses, so they back up behind
// HTTP/2 flow control when it cancels: the call must still end and free its slot.
TEST_F(ServerTest, CancelWithAWriteInFlightFreesTheSlot) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-streams", "1", "--max-chunk-ms", "10000"}));
  auto a = std::make_unique<OpenStream>(*stub_, "frames");
  ASSERT_TRUE(a->opened);
  const int d_in = (*frames_model_)->config().d_in;
  // 10 s per chunk: 12 kB of outputs each.
  const std::vector<float> frames = rng_.Uniform(size_t(1000) * d_in, -1.0f, 1.0f);
  const std::string bytes = F32Bytes(frames.data(), frames.size());
  std::thread writer([&] {
    for (uint64_t sequence = 0; sequence < 4000; ++sequence)
      if (!a->call->Write(ChunkRequest(sequence, bytes))) break;  // false once cancelled
  });
  std::this_thread::sleep_for(seconds(1));  // the server's writes stall meanwhile
  a->context.TryCancel();
  writer.join();
  EXPECT_EQ(a->call->Finish().error_code(), grpc::CANCELLED);
  a.reset();
  auto b = OpenWithin(*stub_, seconds(3));
  EXPECT_TRUE(b->opened) << "the cancelled call still holds the only slot";
  b->Close();
}

TEST_F(ServerTest, ClientCancelFreesTheSlotForTheNextStream) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-streams", "1"}));
  auto a = std::make_unique<OpenStream>(*stub_);
  ASSERT_TRUE(a->opened);
  std::vector<float> samples(1000, 0.3f);
  a->call->Write(ChunkRequest(0, F32Bytes(samples.data(), samples.size())));
  a->context.TryCancel();
  EXPECT_EQ(a->call->Finish().error_code(), grpc::CANCELLED);
  a.reset();
  auto b = OpenWithin(*stub_, seconds(2));
  ASSERT_TRUE(b->opened);
  // The reused slot starts from zero state.
  auto values = testing::RandomInput(rng_, (*audio_model_)->config(), 5000);
  std::vector<pb::StreamRequest> chunks =
      StreamRequests("audio", pb::SAMPLE_FORMAT_PCM_F32LE, &values, {2000, 3000}, 1);
  std::vector<float> out;
  pb::StreamResponse response;
  for (size_t i = 1; i < chunks.size(); ++i) {
    ASSERT_TRUE(b->call->Write(chunks[i]));
    ASSERT_TRUE(b->call->Read(&response));
    out.insert(out.end(), response.output().values().begin(), response.output().values().end());
  }
  EXPECT_TRUE(b->Close().ok());
  EXPECT_EQ(out, Offline(*audio_model_, values));
}

// SIGTERM: the open stream gets the outputs of every chunk it sent, then UNAVAILABLE; new streams
// are refused with UNAVAILABLE and health says NOT_SERVING (gRPC's, and /healthz for probes
// that cannot speak gRPC over TLS); a file being uploaded completes; the server exits 0.
TEST_F(ServerTest, SigtermDrainsOpenCallsAndExitsZero) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--file-segment-frames", "50"}));
  OpenStream a(*stub_);
  ASSERT_TRUE(a.opened);
  OpenStream file(*stub_, "audio", Rpc::kProcessFile);
  ASSERT_TRUE(file.opened);
  auto file_values = testing::RandomInput(rng_, (*audio_model_)->config(), 30000);
  const auto file_requests =
      StreamRequests("audio", pb::SAMPLE_FORMAT_PCM_F32LE, &file_values, {10000, 20000}, 1);
  ASSERT_TRUE(file.call->Write(file_requests[1]));

  std::vector<float> samples(1600, 0.1f);
  constexpr int kChunks = 3;
  for (int i = 0; i < kChunks; ++i)
    ASSERT_TRUE(a.call->Write(ChunkRequest(i, F32Bytes(samples.data(), samples.size()))));
  pb::StreamResponse response;
  ASSERT_TRUE(a.call->Read(&response));  // the first output: the server is busy with the stream
  int outputs = 1;
  const testing::HttpResponse serving = testing::HttpGet(server_->metrics_port(), "/healthz");
  EXPECT_EQ(serving.status, 200);
  EXPECT_EQ(serving.body, "SERVING\n");
  ASSERT_TRUE(server_->Signal(SIGTERM));
  while (a.call->Read(&response)) outputs += response.has_output();
  const grpc::Status status = a.call->Finish();
  EXPECT_EQ(outputs, kChunks);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos)
      << status.error_message();

  // Still draining: the file call is open.
  OpenStream late(*stub_);
  EXPECT_FALSE(late.opened);
  const grpc::Status refused = late.Close();
  EXPECT_EQ(refused.error_code(), grpc::UNAVAILABLE) << refused.error_message();
  EXPECT_NE(refused.error_message().find("shutting down"), std::string::npos);
  EXPECT_EQ(HealthStatus(server_->address()), kNotServing);
  const testing::HttpResponse health = testing::HttpGet(server_->metrics_port(), "/healthz");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.body, "NOT_SERVING\n");

  ASSERT_TRUE(file.call->Write(file_requests[2]));
  file.call->WritesDone();
  std::vector<float> file_out;
  while (file.call->Read(&response))
    file_out.insert(file_out.end(), response.output().values().begin(),
                    response.output().values().end());
  const grpc::Status file_status = file.call->Finish();
  EXPECT_TRUE(file_status.ok()) << file_status.error_message();
  EXPECT_EQ(file_out, Offline(*audio_model_, file_values));
  EXPECT_EQ(server_->Wait(seconds(15)), 0);
}

TEST_F(ServerTest, ListModelsAndGetModelInfoDescribeEveryModel) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  grpc::ClientContext list_context;
  pb::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&list_context, pb::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 3);
  EXPECT_EQ(list.default_model(), "audio");
  EXPECT_EQ(list.models(0).name(), "audio");
  EXPECT_EQ(list.models(1).name(), "frames");
  EXPECT_EQ(list.models(2).name(), "hybrid");

  for (const std::string name : {"", "audio", "frames", "hybrid"}) {
    grpc::ClientContext context;
    pb::GetModelInfoRequest request;
    request.set_name(name);
    pb::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&context, request, &info).ok()) << name;
    const bool audio = name != "frames" && name != "hybrid";
    const Model& model = audio              ? **audio_model_
                         : name == "frames" ? **frames_model_
                                            : **hybrid_model_;
    const ModelConfig& c = model.config();
    EXPECT_EQ(info.name(), audio ? "audio" : name);
    EXPECT_EQ(info.frontend(), audio ? "log_mel" : "none");
    EXPECT_EQ(info.sample_rate(), audio ? kSampleRate : 0);
    EXPECT_EQ(info.d_in(), c.d_in);
    EXPECT_EQ(info.d_out(), c.d_out);
    EXPECT_EQ(std::vector<std::string>(info.labels().begin(), info.labels().end()), c.labels);
    EXPECT_EQ(info.frame_rate(), c.frame_rate());
    EXPECT_EQ(info.hop_length(), audio ? c.frontend.hop_length : 0);
    EXPECT_EQ(info.win_length(), audio ? c.frontend.win_length : 0);
    EXPECT_EQ(info.head_activation(), c.head_activation);
    EXPECT_EQ(info.parameters(), model.parameter_count());
    EXPECT_EQ(info.state_bytes_per_stream(), int64_t(model.state_bytes_per_stream()));
    auto parsed = ModelConfig::FromJson(info.config_json());
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->ToJson(), c.ToJson());
  }
  grpc::ClientContext context;
  pb::GetModelInfoRequest request;
  request.set_name("nope");
  pb::ModelInfo info;
  const grpc::Status unknown = stub_->GetModelInfo(&context, request, &info);
  EXPECT_EQ(unknown.error_code(), grpc::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("audio, frames, hybrid"), std::string::npos);
}

// The standard health service answers SERVING (grpc.health.v1, called without generated stubs:
// an empty HealthCheckRequest; the response is field 1 = 1, bytes 08 01).
TEST_F(ServerTest, HealthCheckSaysServing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  EXPECT_EQ(HealthStatus(server_->address()), kServing);
}

// A bad configuration is refused before anything starts: exit code 2 and a message naming the flag.
TEST_F(ServerTest, InvalidFlagsExitWithCodeTwo) {
  const std::string out = *dir_ + "/stderr.txt";
  for (const std::string flags :
       {"--max-streams 0", "--batch-wait-ms -1", "--listen nowhere", "--device gpu",
        "--no-such-flag", "--parallel-min-mflop -1", "--worker-spin-us 100001"}) {
    const std::string command = testing::DefaultServerBinary() + " --model " + *dir_ + "/audio " +
                                flags + " > /dev/null 2> " + out;
    const int status = std::system(command.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << flags << ": " << status;
    std::ifstream err(out);
    const std::string message((std::istreambuf_iterator<char>(err)), {});
    const std::string flag = flags.substr(0, flags.find(' '));
    EXPECT_NE(message.find(flag), std::string::npos) << flags << ": " << message;
  }
}

}  // namespace
}  // namespace ssm
