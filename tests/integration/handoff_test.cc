// Streams that outlive their replica (docs/design.md §7), through real ssm-server processes and a
// real redis-server: a draining replica saves its streams to the store and another replica
// resumes them; a replica killed with SIGKILL is replaced from the streams' last checkpoints;
// Redis down or paused never stalls a step or a drain.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "clients/lib/ssm_client.h"
#include "server/model/digest.h"
#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/fault_proxy.h"
#include "tests/integration/http_get.h"
#include "tests/integration/raw_stream.h"
#include "tests/integration/redis_process.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

using testing::Call;
using testing::Open;
using testing::Payloads;
namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kF32 = pb::SAMPLE_FORMAT_PCM_F32LE;

// One stream as the client keeps it: its chunks, and the frames received so far.
struct ClientStream {
  std::vector<float> values;
  std::vector<std::string> payloads;
  std::unique_ptr<Call> call;
  std::string token;
  uint64_t sent = 0;
  std::vector<float> got;
  int64_t have = 0;
  uint64_t checkpointed = 0;
  int64_t duplicates = 0;  // frames received twice (after a resume from a checkpoint)

  void Take(const pb::StreamOutput& out, int d_out) {
    checkpointed = std::max(checkpointed, out.checkpointed_sequence());
    const int64_t skip = std::max<int64_t>(0, have - out.first_frame());
    duplicates += std::min<int64_t>(skip, out.frames());
    if (skip >= out.frames()) return;
    EXPECT_EQ(out.first_frame() + skip, have);
    got.insert(got.end(), out.values().begin() + skip * d_out, out.values().end());
    have = out.first_frame() + out.frames();
  }
};

class HandOffTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_handoff_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 41)->Save(*dir_ + "/audio").ok());
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 42)->Save(*dir_ + "/other").ok());
    model_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/audio"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete model_;
  }
  void SetUp() override {
    std::string error;
    redis_ = testing::RedisProcess::Start(&error);
    ASSERT_NE(redis_, nullptr) << error;
  }

  // A replica serving `model_dir` (as `name`) with the store and `extra` flags.
  // `store_url` replaces the store's plain URL, and the server's log goes to `log_path` if given.
  std::unique_ptr<testing::ServerProcess> StartReplica(const std::string& name,
                                                       const std::string& model_dir,
                                                       std::vector<std::string> extra = {},
                                                       const std::string& store_url = "",
                                                       const std::string& log_path = "") {
    std::vector<std::string> args{"--model",       name + "=" + model_dir,
                                  "--listen",      "127.0.0.1:0",
                                  "--threads",     "1",
                                  "--state-store", store_url.empty() ? redis_->url() : store_url};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    auto server = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error,
                                                seconds(30), log_path);
    EXPECT_NE(server, nullptr) << error;
    return server;
  }
  static std::unique_ptr<pb::Ssm::Stub> Stub(const testing::ServerProcess& server) {
    return pb::Ssm::NewStub(
        grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  }
  static double Metric(const testing::ServerProcess& server, const std::string& series) {
    return testing::Sample(testing::HttpGet(server.metrics_port(), "/metrics").body, series);
  }
  ClientStream NewStream(int64_t rows, int max_chunk) {
    ClientStream s;
    s.values = testing::RandomInput(rng_, (*model_)->config(), rows);
    s.payloads = Payloads(s.values, testing::Chunking(rng_, rows, "random", max_chunk), 1);
    return s;
  }
  static std::vector<float> Offline(const std::vector<float>& values) {
    auto engine = testing::MakeEngine(*model_, testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, values);
  }
  // Sends chunks [sent, end) on s.call and reads one output each.
  static void SendAndRead(ClientStream* s, uint64_t end, int d_out) {
    for (; s->sent < end; ++s->sent) {
      ASSERT_TRUE(s->call->Send(s->sent, s->payloads[s->sent]));
      pb::StreamOutput out;
      ASSERT_TRUE(s->call->Read(&out));
      s->Take(out, d_out);
    }
  }
  // Resumes s on `stub` and streams the rest to the end; the server's next_sequence is checked
  // against [min_sequence, s.sent].
  static void ResumeAndFinish(pb::Ssm::Stub& stub, ClientStream* s, uint64_t min_sequence,
                              int d_out) {
    s->call = std::make_unique<Call>(stub);
    pb::StreamOutput replay;
    ASSERT_TRUE(s->call->Open(Open("", kF32, s->token, s->have), &replay))
        << s->call->Finish().error_message();
    const pb::StreamOpened& opened = s->call->opened();
    EXPECT_TRUE(opened.resumed());
    EXPECT_GE(opened.next_sequence(), min_sequence);
    EXPECT_LE(opened.next_sequence(), s->sent);
    if (replay.frames() > 0) s->Take(replay, d_out);
    s->sent = opened.next_sequence();
    for (uint64_t i = s->sent; i < s->payloads.size(); ++i)
      ASSERT_TRUE(s->call->Send(i, s->payloads[i]));
    std::vector<pb::StreamOutput> outs;
    const grpc::Status status = s->call->Close(&outs);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const auto& out : outs) s->Take(out, d_out);
  }

  static std::string* dir_;
  static std::shared_ptr<const Model>* model_;
  testing::Rng rng_{testing::TestSeed()};
  std::unique_ptr<testing::RedisProcess> redis_;
};

std::string* HandOffTest::dir_ = nullptr;
std::shared_ptr<const Model>* HandOffTest::model_ = nullptr;

TEST_F(HandOffTest, DrainHandsEveryLiveStreamToAnotherReplica) {
  auto a = StartReplica("audio", *dir_ + "/audio");
  auto b = StartReplica("vad", *dir_ + "/audio");  // the same model under another name
  ASSERT_TRUE(a && b);
  auto stub_a = Stub(*a), stub_b = Stub(*b);
  const int d_out = (*model_)->config().d_out;
  std::vector<ClientStream> streams;
  for (int i = 0; i < 32; ++i) {
    streams.push_back(NewStream(rng_.Int(8000, 40000), rng_.Int(400, 3200)));
    ClientStream& s = streams.back();
    s.call = std::make_unique<Call>(*stub_a);
    ASSERT_TRUE(s.call->Open(Open("audio", kF32)));
    s.token = s.call->opened().resume_token();
    ASSERT_NO_FATAL_FAILURE(
        SendAndRead(&s, uint64_t(rng_.Int(1, int(s.payloads.size()) - 1)), d_out));
  }
  ASSERT_TRUE(a->Signal(SIGTERM));
  for (ClientStream& s : streams) {
    std::vector<pb::StreamOutput> outs;
    const grpc::Status status = s.call->Await(&outs);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find("the stream was saved"), std::string::npos)
        << status.error_message();
    const auto& trailers = s.call->context().GetServerTrailingMetadata();
    auto it = trailers.find("ssm-resume-token");
    ASSERT_NE(it, trailers.end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), s.token);
  }
  EXPECT_EQ(a->Wait(seconds(15)), 0);
  for (ClientStream& s : streams) {
    ASSERT_NO_FATAL_FAILURE(ResumeAndFinish(*stub_b, &s, s.sent, d_out));
    EXPECT_EQ(s.got, Offline(s.values));  // bitwise: nothing lost or repeated
    EXPECT_EQ(s.duplicates, 0);
  }
  EXPECT_EQ(Metric(*b, "ssm_stream_resumes_total{source=\"store\"}"), 32);
  EXPECT_EQ(b->Terminate(), 0);
}

TEST_F(HandOffTest, AfterSigkillAnotherReplicaResumesFromTheLastCheckpoint) {
  auto a = StartReplica("audio", *dir_ + "/audio", {"--checkpoint-interval", "1"});
  auto b = StartReplica("audio", *dir_ + "/audio");
  ASSERT_TRUE(a && b);
  auto stub_a = Stub(*a), stub_b = Stub(*b);
  const int d_out = (*model_)->config().d_out;
  ClientStream s = NewStream(64000, 1);  // 4 s in 100 ms chunks below
  s.payloads = Payloads(s.values, std::vector<int64_t>(40, 1600), 1);
  s.call = std::make_unique<Call>(*stub_a);
  ASSERT_TRUE(s.call->Open(Open("audio", kF32)));
  EXPECT_EQ(s.call->opened().checkpoint_interval_ms(), 1000u);
  s.token = s.call->opened().resume_token();
  // The first checkpoint is due after 1 s of signal (chunk 10). Chunks 0-10 go at once; then
  // the test waits for the snapshot to be in Redis and sends single chunks, slowly, until an
  // output confirms it (a loaded machine under a sanitizer took longer to write it than 20 more
  // chunks took to stream). At most chunk 15 goes before the confirmation and 3 after it: the
  // second checkpoint is due only after chunk 20, so those chunks are in no checkpoint.
  ASSERT_NO_FATAL_FAILURE(SendAndRead(&s, 11, d_out));
  const std::string key = "ssm:stream:" + Hex(Sha256Of(s.token));
  const auto written_by = Clock::now() + seconds(10);
  while (redis_->Command("EXISTS " + key) != ":1" && Clock::now() < written_by)
    std::this_thread::sleep_for(milliseconds(10));
  while (s.sent < 16 && s.checkpointed == 0) {
    std::this_thread::sleep_for(milliseconds(50));
    ASSERT_NO_FATAL_FAILURE(SendAndRead(&s, s.sent + 1, d_out));
  }
  ASSERT_GE(s.checkpointed, 9u);
  ASSERT_NO_FATAL_FAILURE(SendAndRead(&s, s.sent + 3, d_out));
  const uint64_t checkpointed = s.checkpointed;
  ASSERT_TRUE(a->Signal(SIGKILL));
  a->Wait(seconds(5));
  std::vector<pb::StreamOutput> outs;
  EXPECT_FALSE(s.call->Await(&outs).ok());
  ASSERT_NO_FATAL_FAILURE(ResumeAndFinish(*stub_b, &s, checkpointed, d_out));
  EXPECT_EQ(s.got, Offline(s.values));  // each frame once, bitwise
  EXPECT_GT(s.duplicates, 0);  // the frames after the checkpoint came twice and were dropped
  EXPECT_EQ(b->Terminate(), 0);
}

// The client library on its own, through a "balancer" (the tests' proxy) that sends it to
// replica B once A is killed: it resumes from A's last checkpoint, re-sends the chunks after it
// from its replay buffer, drops the frames it already had, and its caller sees every frame
// once, exactly as without the crash.
TEST_F(HandOffTest, TheClientLibraryCarriesAStreamOverAKilledReplica) {
  auto a = StartReplica("audio", *dir_ + "/audio", {"--checkpoint-interval", "1"});
  auto b = StartReplica("audio", *dir_ + "/audio");
  ASSERT_TRUE(a && b);
  auto proxy = testing::FaultProxy::To(a->address());
  ASSERT_NE(proxy, nullptr);
  auto client = client::Client::Connect(proxy->address());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<float> values = testing::RandomInput(rng_, (*model_)->config(), 64000);
  std::mutex mu;
  std::vector<float> got;
  int64_t next_frame = 0;
  bool contiguous = true;
  client::StreamOptions options;
  options.format = kF32;
  options.resume_timeout_s = 20;
  options.on_output = [&](const client::Output& out) {
    std::lock_guard<std::mutex> lock(mu);
    contiguous &= out.first_frame == next_frame;
    next_frame = out.first_frame + out.frames;
    got.insert(got.end(), out.values.begin(), out.values.end());
  };
  auto stream = (*client)->OpenStream(options);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ((*stream)->WaitOpened()->checkpoint_interval_ms(), 1000u);
  constexpr size_t kChunk = 1600;  // 100 ms
  size_t sent = 0;
  auto send = [&](size_t end) {
    for (; sent < end; ++sent)
      ASSERT_TRUE((*stream)->SendSamples(values.data() + sent * kChunk, kChunk).ok());
  };
  // Two checkpoints (after about 1 s and 2 s of signal), then answers past the last one. The
  // chunks go in two halves, each waited for: sent at once, all 25 could be answered while the
  // first checkpoint is still being written, and a stream has one checkpoint in flight at most.
  const auto deadline = Clock::now() + seconds(10);
  const auto wait_for = [&](double checkpoints, uint64_t answered) {
    while ((Metric(*a, "ssm_checkpoints_total{outcome=\"written\"}") < checkpoints ||
            (*stream)->stats().chunks_answered < answered) &&
           Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(10));
  };
  ASSERT_NO_FATAL_FAILURE(send(12));
  wait_for(1, 12);
  ASSERT_NO_FATAL_FAILURE(send(25));
  wait_for(2, 25);
  ASSERT_GE(Metric(*a, "ssm_checkpoints_total{outcome=\"written\"}"), 2);
  ASSERT_TRUE(proxy->SetTarget(b->address()));
  ASSERT_TRUE(a->Signal(SIGKILL));
  a->Wait(seconds(5));
  ASSERT_NO_FATAL_FAILURE(send(values.size() / kChunk));
  const Status status = (*stream)->Close();
  ASSERT_TRUE(status.ok()) << status.ToString();
  const client::StreamStats stats = (*stream)->stats();
  EXPECT_GE(stats.resumes, 1u);
  EXPECT_GT(stats.duplicate_frames, 0);  // recomputed after the checkpoint, dropped
  EXPECT_GT(stats.replayed_chunks, 0u);  // answered on A, re-sent to B from the replay buffer
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(contiguous);
  EXPECT_EQ(got, Offline(values));
  EXPECT_EQ(Metric(*b, "ssm_stream_resumes_total{source=\"store\"}"), 1);
  EXPECT_EQ(b->Terminate(), 0);
}

// A store that needs a password: the default user's (requirepass) and an ACL user's with only
// the keys and commands the servers use (the README's rules), each read from
// --store-password-file. Streams handed off through it resume exactly; a replica with a
// wrong password cannot save its streams, says why in its log, and never logs a password.
TEST_F(HandOffTest, AStoreWithPasswordsServesOnlyReplicasThatHaveThem) {
  std::string error;
  redis_ = testing::RedisProcess::Start(
      &error,
      {"--requirepass", "default-pass-1", "--user", "ssm", "on", ">ssm-pass-2", "~ssm:stream:*",
       "+set", "+getdel", "+del", "+select"},
      "default-pass-1");
  ASSERT_NE(redis_, nullptr) << error;
  auto password_file = [&](const std::string& name, const std::string& password) {
    const std::string path = *dir_ + "/" + name;
    std::ofstream(path) << password << "\n";
    return path;
  };
  const std::string port = std::to_string(redis_->port());
  auto a = StartReplica("audio", *dir_ + "/audio",
                        {"--store-password-file", password_file("default", "default-pass-1")});
  auto b = StartReplica("audio", *dir_ + "/audio",
                        {"--store-password-file", password_file("ssm", "ssm-pass-2")},
                        "redis://ssm@127.0.0.1:" + port);
  const std::string log_path = *dir_ + "/wrong.log";
  auto wrong = StartReplica(
      "audio", *dir_ + "/audio",
      {"--store-password-file", password_file("wrong", "not-the-pass-3"), "--drain-timeout", "5"},
      "redis://ssm@127.0.0.1:" + port, log_path);
  ASSERT_TRUE(a && b && wrong);
  const int d_out = (*model_)->config().d_out;
  auto open_streams = [&](testing::ServerProcess& server, int n) {
    auto stub = Stub(server);
    std::vector<ClientStream> streams;
    for (int i = 0; i < n; ++i) {
      streams.push_back(NewStream(16000, 1600));
      streams.back().call = std::make_unique<Call>(*stub);
      EXPECT_TRUE(streams.back().call->Open(Open("audio", kF32)));
      streams.back().token = streams.back().call->opened().resume_token();
      SendAndRead(&streams.back(), 3, d_out);
    }
    return streams;
  };
  std::vector<ClientStream> handed = open_streams(*a, 4), refused = open_streams(*wrong, 2);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());

  ASSERT_TRUE(a->Signal(SIGTERM));
  for (ClientStream& s : handed) {
    std::vector<pb::StreamOutput> outs;
    const grpc::Status status = s.call->Await(&outs);
    EXPECT_NE(status.error_message().find("the stream was saved"), std::string::npos)
        << status.error_message();
  }
  EXPECT_EQ(a->Wait(seconds(15)), 0);
  auto stub_b = Stub(*b);
  for (ClientStream& s : handed) {
    ASSERT_NO_FATAL_FAILURE(ResumeAndFinish(*stub_b, &s, s.sent, d_out));
    EXPECT_EQ(s.got, Offline(s.values));
  }

  ASSERT_TRUE(wrong->Signal(SIGTERM));
  for (ClientStream& s : refused) {
    std::vector<pb::StreamOutput> outs;
    const grpc::Status status = s.call->Await(&outs);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find("could not save the stream"), std::string::npos)
        << status.error_message();
  }
  EXPECT_EQ(wrong->Wait(seconds(15)), 0);
  std::ifstream in(log_path);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("AUTH failed: WRONGPASS"), std::string::npos) << log;
  for (const char* password : {"default-pass-1", "ssm-pass-2", "not-the-pass-3"})
    EXPECT_EQ(log.find(password), std::string::npos) << log;
  EXPECT_EQ(b->Terminate(), 0);
}

TEST_F(HandOffTest, RedisDownBeforeTheDrainEndsStreamsCleanly) {
  auto a = StartReplica("audio", *dir_ + "/audio", {"--drain-timeout", "5"});
  ASSERT_TRUE(a);
  auto stub = Stub(*a);
  const int d_out = (*model_)->config().d_out;
  std::vector<ClientStream> streams;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(NewStream(16000, 1600));
    streams.back().call = std::make_unique<Call>(*stub);
    ASSERT_TRUE(streams.back().call->Open(Open("audio", kF32)));
    ASSERT_NO_FATAL_FAILURE(SendAndRead(&streams.back(), 2, d_out));
  }
  redis_->Stop();
  const auto start = Clock::now();
  ASSERT_TRUE(a->Signal(SIGTERM));
  for (ClientStream& s : streams) {
    std::vector<pb::StreamOutput> outs;
    const grpc::Status status = s.call->Await(&outs);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find("could not save the stream"), std::string::npos)
        << status.error_message();
    EXPECT_EQ(s.call->context().GetServerTrailingMetadata().count("ssm-resume-token"), 0u);
  }
  EXPECT_EQ(a->Wait(seconds(15)), 0);
  EXPECT_LT(Clock::now() - start, seconds(5));
}

TEST_F(HandOffTest, RedisPausedDuringCheckpointsNeverDelaysAStep) {
  auto a = StartReplica("audio", *dir_ + "/audio",
                        {"--checkpoint-interval", "0.1", "--store-timeout", "1"});
  ASSERT_TRUE(a);
  auto stub = Stub(*a);
  const int d_out = (*model_)->config().d_out;
  ClientStream s = NewStream(48000, 1);
  s.payloads = Payloads(s.values, std::vector<int64_t>(30, 1600), 1);
  redis_->Pause();
  s.call = std::make_unique<Call>(*stub);
  ASSERT_TRUE(s.call->Open(Open("audio", kF32)));
  double worst_ms = 0;
  for (; s.sent < s.payloads.size(); ++s.sent) {
    ASSERT_TRUE(s.call->Send(s.sent, s.payloads[s.sent]));
    pb::StreamOutput out;
    ASSERT_TRUE(s.call->Read(&out));
    worst_ms = std::max(worst_ms, out.server_latency_ms());
    s.Take(out, d_out);
    std::this_thread::sleep_for(milliseconds(30));
  }
  std::vector<pb::StreamOutput> outs;
  ASSERT_TRUE(s.call->Close(&outs).ok());
  for (const auto& out : outs) s.Take(out, d_out);
  EXPECT_EQ(s.got, Offline(s.values));
  // A step that waited for Redis would take the store timeout (1000 ms) at least.
  EXPECT_LT(worst_ms, 500) << "a chunk waited for the paused store";
  EXPECT_EQ(s.checkpointed, 0u);  // nothing reached the store
  // The store's first operation times out (--store-timeout 1), and those queued behind it fail.
  const auto deadline = Clock::now() + seconds(5);
  while (Metric(*a, "ssm_checkpoints_total{outcome=\"failed\"}") < 1 && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_GE(Metric(*a, "ssm_checkpoints_total{outcome=\"failed\"}"), 1);
  redis_->Continue();
  EXPECT_EQ(a->Terminate(), 0);
}

TEST_F(HandOffTest, AReplicaWithAnotherModelLeavesTheStreamForOneWithIt) {
  auto a = StartReplica("audio", *dir_ + "/audio");
  auto other = StartReplica("audio", *dir_ + "/other");  // same name, other weights
  ASSERT_TRUE(a && other);
  auto stub_a = Stub(*a), stub_other = Stub(*other);
  const int d_out = (*model_)->config().d_out;
  ClientStream s = NewStream(24000, 1600);
  s.call = std::make_unique<Call>(*stub_a);
  ASSERT_TRUE(s.call->Open(Open("audio", kF32)));
  s.token = s.call->opened().resume_token();
  ASSERT_NO_FATAL_FAILURE(SendAndRead(&s, 3, d_out));
  ASSERT_TRUE(a->Signal(SIGTERM));
  std::vector<pb::StreamOutput> outs;
  EXPECT_EQ(s.call->Await(&outs).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(a->Wait(seconds(15)), 0);
  {
    Call call(*stub_other);
    EXPECT_FALSE(call.Open(Open("", kF32, s.token, s.have)));
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(status.error_message().find("is not served here"), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find(Hex((*model_)->fingerprint(), 16)), std::string::npos)
        << status.error_message();
  }
  // The snapshot went back to the store: a replica with the model resumes it.
  auto b = StartReplica("audio", *dir_ + "/audio");
  ASSERT_TRUE(b);
  auto stub_b = Stub(*b);
  const auto deadline = Clock::now() + seconds(5);
  while (redis_->Command("DBSIZE") != ":1" && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  ASSERT_NO_FATAL_FAILURE(ResumeAndFinish(*stub_b, &s, 3, d_out));
  EXPECT_EQ(s.got, Offline(s.values));
  EXPECT_EQ(other->Terminate(), 0);
  EXPECT_EQ(b->Terminate(), 0);
}

}  // namespace
}  // namespace ssm
