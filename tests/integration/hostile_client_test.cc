// ssm-server against clients that misbehave: unparseable and oversized messages, sequence gaps,
// clients that stop reading, cancel or die, hostile names and labels, and more connections than
// the server has file descriptors. Each must get its own clear status and metrics, and harm
// nothing else: the server keeps serving and recovers by itself.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/io/npy.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/http_get.h"
#include "tests/integration/raw_call.h"
#include "tests/integration/raw_socket.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

using testing::ClosedByPeerWithin;
using testing::ConnectSilently;

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kChunkSamples = 1600;  // 100 ms at SmallAudioConfig's 16 kHz

std::string Serialize(const pb::StreamRequest& request) {
  std::string bytes;
  EXPECT_TRUE(request.SerializeToString(&bytes));
  return bytes;
}

std::string OpenBytes(const std::string& model = "audio", const std::string& label = "") {
  pb::StreamRequest r;
  r.mutable_open()->set_model(model);
  r.mutable_open()->set_format(pb::SAMPLE_FORMAT_PCM_F32LE);
  r.mutable_open()->set_label(label);
  return Serialize(r);
}

std::string ChunkBytes(uint64_t sequence, size_t samples = kChunkSamples) {
  std::vector<float> values(samples);
  for (size_t i = 0; i < samples; ++i) values[i] = 0.3f * float((i * 7919 + sequence) % 13) / 13;
  pb::StreamRequest r;
  r.mutable_chunk()->set_sequence(sequence);
  r.mutable_chunk()->set_payload(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return Serialize(r);
}

using testing::RawCall;

// Reads every response until the server ends the call; returns the number of outputs.
int ReadAll(RawCall& call) {
  int outputs = 0;
  std::string bytes;
  while (call.Read(&bytes)) {
    pb::StreamResponse response;
    EXPECT_TRUE(response.ParseFromString(bytes));
    outputs += response.has_output();
  }
  return outputs;
}

// grpc.health.v1.Health/Check within `timeout`; the gRPC status.
grpc::Status HealthCheck(const std::string& address, milliseconds timeout) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) { done.set_value(s); });
  return done.get_future().get();
}

class HostileClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_hostile_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 31)->Save(*dir_ + "/audio").ok());
    ASSERT_TRUE(
        testing::RandomModel(testing::SmallFrameConfig(), 32)->Save(*dir_ + "/frames").ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
  }

  // Starts ssm-server (binary `wrapper...` first when given, e.g. prlimit) with the audio
  // model as default, the frames model, and `extra` flags; its log goes to log_path().
  void StartServer(std::vector<std::string> extra = {}, std::vector<std::string> wrapper = {}) {
    std::vector<std::string> args = wrapper;
    std::string binary = testing::DefaultServerBinary();
    if (!wrapper.empty()) {
      args.erase(args.begin());
      args.push_back(binary);
      binary = wrapper.front();
    }
    args.insert(args.end(), {"--model", *dir_ + "/audio", "--model", "frames=" + *dir_ + "/frames",
                             "--listen", "127.0.0.1:0", "--threads", "1"});
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(binary, args, &error, seconds(30), log_path());
    ASSERT_NE(server_, nullptr) << error << "\n" << Log();
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    generic_ = std::make_unique<grpc::GenericStub>(channel_);
    stub_ = pb::Ssm::NewStub(channel_);
  }

  std::string log_path() const {
    return *dir_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log";
  }
  std::string Log() const {
    std::ifstream in(log_path(), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string Scrape() { return testing::HttpGet(server_->metrics_port(), "/metrics").body; }
  // Scrapes until `series` reaches `value` or 5 s pass; returns the last value seen.
  double WaitForSample(const std::string& series, double value) {
    const auto deadline = Clock::now() + seconds(5);
    double seen = testing::Sample(Scrape(), series);
    while (seen != value && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(20));
      seen = testing::Sample(Scrape(), series);
    }
    return seen;
  }
  static std::string Closed(const std::string& reason, const std::string& model = "audio") {
    return "ssm_streams_closed_total{model=\"" + model + "\",reason=\"" + reason + "\"}";
  }
  static std::string Errors(const std::string& code) {
    return "ssm_errors_total{code=\"" + code + "\"}";
  }

  static std::string* dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> generic_;
  std::unique_ptr<pb::Ssm::Stub> stub_;
};

std::string* HostileClientTest::dir_ = nullptr;

// ---- malformed and oversized messages, sequence gaps -------------------------------------------

TEST_F(HostileClientTest, UnparseableMessageInAStreamEndsWithInvalidArgumentAfterItsAnswers) {
  // A long batch wait keeps the accepted chunks in the scheduler when the bad message arrives.
  ASSERT_NO_FATAL_FAILURE(StartServer({"--batch-wait-ms", "50"}));
  for (const std::string rpc : {"Stream", "ProcessFile"}) {
    SCOPED_TRACE(rpc);
    RawCall call(generic_.get(), rpc, seconds(30));
    ASSERT_TRUE(call.Write(OpenBytes()));
    for (uint64_t s = 0; s < 3; ++s) ASSERT_TRUE(call.Write(ChunkBytes(s)));
    const std::string whole = ChunkBytes(3);
    call.Write(whole.substr(0, whole.size() / 2));  // the payload's length runs past the end
    for (uint64_t s = 3; s < 6; ++s) call.Write(ChunkBytes(s));
    call.WritesDone();
    const int outputs = ReadAll(call);
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find("could not be parsed"), std::string::npos)
        << status.error_message();
    // Stream answers each chunk; ProcessFile answers the 48 frames uploaded before it, in one
    // segment (it held them as its tail).
    EXPECT_EQ(outputs, rpc == "Stream" ? 3 : 1);
  }
  EXPECT_EQ(WaitForSample(Closed("error"), 2), 2);
  EXPECT_EQ(WaitForSample(Closed("completed"), 0), 0);
  EXPECT_EQ(WaitForSample(Errors("INVALID_ARGUMENT"), 2), 2);
}

TEST_F(HostileClientTest, UnparseableFirstMessageSaysSo) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  RawCall call(generic_.get(), "Stream", seconds(30));
  const std::string open = OpenBytes("audio", "a label long enough to cut");
  call.Write(open.substr(0, open.size() - 5));
  call.WritesDone();
  EXPECT_EQ(ReadAll(call), 0);
  const grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("first request message"), std::string::npos)
      << status.error_message();
  EXPECT_NE(status.error_message().find("could not be parsed"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(status.error_message().find("ended before"), std::string::npos)
      << status.error_message();
}

TEST_F(HostileClientTest, SequenceGapAnswersTheChunkBeforeIt) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--batch-wait-ms", "50"}));
  RawCall call(generic_.get(), "Stream", seconds(30));
  ASSERT_TRUE(call.Write(OpenBytes()));
  ASSERT_TRUE(call.Write(ChunkBytes(0)));
  call.Write(ChunkBytes(2));
  call.WritesDone();
  EXPECT_EQ(ReadAll(call), 1);
  const grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("chunk sequence 2 but expected 1"), std::string::npos)
      << status.error_message();
}

TEST_F(HostileClientTest, OversizedMessageIsAnErrorNotACompletion) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  RawCall call(generic_.get(), "Stream", seconds(30));
  ASSERT_TRUE(call.Write(OpenBytes()));
  ASSERT_TRUE(call.Write(ChunkBytes(0)));
  call.Write(ChunkBytes(1, size_t(5 << 20) / sizeof(float)));  // 5 MiB > the 4 MiB limit
  call.WritesDone();
  EXPECT_EQ(ReadAll(call), 1);
  const grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("limit of"), std::string::npos) << status.error_message();
  EXPECT_EQ(WaitForSample(Closed("error"), 1), 1);
  EXPECT_EQ(WaitForSample(Errors("RESOURCE_EXHAUSTED"), 1), 1);
  EXPECT_EQ(WaitForSample(Closed("completed"), 0), 0);
}

// ---- how calls end, in the metrics -------------------------------------------------------------

TEST_F(HostileClientTest, CancelAndKilledClientAreCountedAsCancelled) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  {  // cancel: after its chunks are answered, with the read of the next message pending
    grpc::ClientContext context;
    auto call = stub_->Stream(&context);
    pb::StreamRequest open, chunk;
    ASSERT_TRUE(open.ParseFromString(OpenBytes()));
    ASSERT_TRUE(call->Write(open));
    pb::StreamResponse response;
    ASSERT_TRUE(call->Read(&response));
    for (uint64_t s = 0; s < 3; ++s) {
      ASSERT_TRUE(chunk.ParseFromString(ChunkBytes(s)));
      ASSERT_TRUE(call->Write(chunk));
      ASSERT_TRUE(call->Read(&response));
    }
    context.TryCancel();
    EXPECT_EQ(call->Finish().error_code(), grpc::CANCELLED);
  }
  EXPECT_EQ(WaitForSample(Closed("cancelled"), 1), 1);
  // A killed client: ssm-stream paced in real time, SIGKILLed mid-stream.
  const std::string input = *dir_ + "/ten_seconds.npy";
  std::vector<float> samples(16000 * 10, 0.1f);
  ASSERT_TRUE(WriteNpy(input, {int64_t(samples.size())}, samples.data()).ok());
  const pid_t client = fork();
  ASSERT_GE(client, 0);
  if (client == 0) {
    const std::string binary = std::string(SSM_BIN_DIR) + "/ssm-stream";
    execl(binary.c_str(), binary.c_str(), "--server", server_->address().c_str(), "--input",
          input.c_str(), "--output", (*dir_ + "/killed.jsonl").c_str(), "--realtime",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string active = "ssm_streams_active{model=\"audio\"}";
  EXPECT_EQ(WaitForSample(active, 1), 1) << "ssm-stream did not open its stream";
  std::this_thread::sleep_for(milliseconds(500));
  kill(client, SIGKILL);
  waitpid(client, nullptr, 0);
  EXPECT_EQ(WaitForSample(Closed("cancelled"), 2), 2);
  EXPECT_EQ(WaitForSample(Closed("completed"), 0), 0);
  EXPECT_EQ(WaitForSample(active, 0), 0);
}

// ---- a client that stops reading ---------------------------------------------------------------

TEST_F(HostileClientTest, ClientThatStopsReadingLosesItsSlotAfterTheWriteTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-streams", "2", "--idle-timeout", "3",
                                       "--write-timeout", "2", "--max-chunk-ms", "10000"}));
  const int d_in = testing::SmallFrameConfig().d_in;
  // 10 s of frames per chunk: each answer is far larger than what the transport buffers, so a
  // client that never reads stalls the server's writes within a few chunks.
  std::vector<float> frames(size_t(1000) * d_in, 0.25f);
  pb::StreamRequest open, chunk;
  open.mutable_open()->set_model("frames");
  open.mutable_open()->set_format(pb::SAMPLE_FORMAT_FRAMES_F32LE);
  chunk.mutable_chunk()->set_payload(
      std::string(reinterpret_cast<const char*>(frames.data()), frames.size() * sizeof(float)));
  struct Stalled {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>> call;
    std::thread writer;
  };
  std::vector<std::unique_ptr<Stalled>> stalled;
  const auto start = Clock::now();
  for (int i = 0; i < 2; ++i) {
    auto s = std::make_unique<Stalled>();
    s->call = stub_->Stream(&s->context);
    Stalled* raw = s.get();
    s->writer = std::thread([raw, open, chunk]() mutable {
      if (!raw->call->Write(open)) return;
      for (uint64_t sequence = 0; sequence < 2000; ++sequence) {
        chunk.mutable_chunk()->set_sequence(sequence);
        if (!raw->call->Write(chunk)) return;  // false once the server ended the call
      }
    });
    stalled.push_back(std::move(s));
  }
  // Both slots are taken; within the write timeout (+ the sweep) they are freed.
  const std::string active = "ssm_streams_active{model=\"frames\"}";
  EXPECT_EQ(WaitForSample(active, 2), 2);
  EXPECT_EQ(WaitForSample(Closed("write_timeout", "frames"), 2), 2);
  const double freed_after = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(freed_after, 8.0);
  EXPECT_EQ(WaitForSample(active, 0), 0);
  // A new client gets a slot and is served.
  {
    grpc::ClientContext context;
    auto call = stub_->Stream(&context);
    ASSERT_TRUE(call->Write(open));
    pb::StreamResponse response;
    ASSERT_TRUE(call->Read(&response));
    EXPECT_TRUE(response.has_opened());
    call->WritesDone();
    while (call->Read(&response)) {
    }
    EXPECT_TRUE(call->Finish().ok());
  }
  // The stalled clients, reading at last, learn why.
  for (auto& s : stalled) {
    s->writer.join();
    pb::StreamResponse response;
    while (s->call->Read(&response)) {
    }
    const grpc::Status status = s->call->Finish();
    EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_NE(status.error_message().find("--write-timeout"), std::string::npos)
        << status.error_message();
  }
}

// ---- names and labels --------------------------------------------------------------------------

TEST_F(HostileClientTest, LongModelNameIsRefusedAndClientTextCannotForgeLogLines) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string long_name(10000, 'm');
  {
    RawCall call(generic_.get(), "Stream", seconds(30));
    call.Write(OpenBytes(long_name));
    call.WritesDone();
    ReadAll(call);
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find("model name of 10000 bytes"), std::string::npos)
        << status.error_message();
  }
  {
    grpc::ClientContext context;
    pb::GetModelInfoRequest request;
    request.set_name(long_name);
    pb::ModelInfo info;
    EXPECT_EQ(stub_->GetModelInfo(&context, request, &info).error_code(), grpc::INVALID_ARGUMENT);
  }
  // A label and a model name carrying a forged log line and terminal escape codes; both calls
  // fail, so the server logs them.
  const std::string forged = "\n2026-01-01 00:00:00.000 E forged line\x1b[2J\x1b]0;title\x07";
  {
    RawCall call(generic_.get(), "Stream", seconds(30));
    ASSERT_TRUE(call.Write(OpenBytes("audio", "label" + forged.substr(0, 60))));
    call.Write(ChunkBytes(5));  // a sequence error ends it
    call.WritesDone();
    ReadAll(call);
    EXPECT_EQ(call.Finish().error_code(), grpc::INVALID_ARGUMENT);
  }
  {
    RawCall call(generic_.get(), "Stream", seconds(30));
    call.Write(OpenBytes("no-such-model" + forged));
    call.WritesDone();
    ReadAll(call);
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::NOT_FOUND);
  }
  ASSERT_EQ(server_->Terminate(), 0);
  server_.reset();
  const std::string log = Log();
  EXPECT_NE(log.find("label\\x0a2026-01-01"), std::string::npos) << log;
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "an escape code reached the log";
  EXPECT_EQ(log.find('\x07'), std::string::npos);
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.rfind("2026-01-01 00:00:00.000 E forged", 0), 0u) << "a forged line: " << line;
    EXPECT_LT(line.size(), 4000u) << "a client string was logged unbounded";
  }
}

// A string field that is not UTF-8 fails to parse (proto3); libprotobuf's own message about it
// reaches the log in the server's format, like every other line.
TEST_F(HostileClientTest, StringFieldThatIsNotUtf8IsRefusedAndLoggedInTheServersFormat) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  {
    RawCall call(generic_.get(), "Stream", seconds(30));
    call.Write(OpenBytes("audio\xff\xfe"));  // the client's libprotobuf complains, and sends it
    call.WritesDone();
    EXPECT_EQ(ReadAll(call), 0);
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find("could not be parsed"), std::string::npos)
        << status.error_message();
  }
  ASSERT_EQ(server_->Terminate(), 0);
  server_.reset();
  const std::string log = Log();
  EXPECT_NE(log.find(" W protobuf: String field 'ssmserve.v1.StreamOpen.model' contains invalid "
                     "UTF-8"),
            std::string::npos)
      << log;
  const std::regex format(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [IWE] .*)");
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    EXPECT_TRUE(std::regex_match(line, format)) << "not in the log format: " << line;
}

// ---- file descriptors and silent connections ---------------------------------------------------

TEST_F(HostileClientTest, RecoversByItselfAfterRunningOutOfFileDescriptors) {
  // The server's descriptor limit is 256; this test opens 400 idle connections.
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 1024) {
    limit.rlim_cur = std::min<rlim_t>(1024, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  ASSERT_NO_FATAL_FAILURE(StartServer({}, {"/usr/bin/prlimit", "--nofile=256:256", "--"}));
  ASSERT_TRUE(HealthCheck(server_->address(), seconds(5)).ok());
  std::vector<int> idle;
  for (int i = 0; i < 400; ++i) {
    const int fd = ConnectSilently(server_->port());
    if (fd >= 0) idle.push_back(fd);
  }
  ASSERT_GT(idle.size(), 300u);
  // While out of descriptors, new connections are refused at once (closed after a GOAWAY),
  // not left waiting in the accept queue.
  const int late = ConnectSilently(server_->port());
  ASSERT_GE(late, 0);
  std::string refusal;
  EXPECT_TRUE(ClosedByPeerWithin(late, seconds(5), &refusal));
  EXPECT_NE(refusal.find("out of file descriptors"), std::string::npos);
  close(late);
  const auto before = Clock::now();
  const grpc::Status refused = HealthCheck(server_->address(), seconds(5));
  EXPECT_EQ(refused.error_code(), grpc::UNAVAILABLE) << refused.error_message();
  EXPECT_LT(Clock::now() - before, seconds(4)) << "the refusal took as long as a timeout";
  for (int fd : idle) close(fd);
  // Once they are closed the server serves again by itself.
  const auto deadline = Clock::now() + seconds(10);
  grpc::Status status;
  do {
    status = HealthCheck(server_->address(), seconds(2));
  } while (!status.ok() && Clock::now() < deadline);
  EXPECT_TRUE(status.ok()) << status.error_message() << "\n" << Log();
  EXPECT_NE(Log().find("out of file descriptors"), std::string::npos);
}

TEST_F(HostileClientTest, SilentAndPrefaceOnlyConnectionsAreClosedAfterTheHandshakeTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--handshake-timeout", "2"}));
  const int silent = ConnectSilently(server_->port());
  const int preface_only = ConnectSilently(server_->port());
  ASSERT_GE(silent, 0);
  ASSERT_GE(preface_only, 0);
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  ASSERT_EQ(send(preface_only, preface.data(), preface.size(), MSG_NOSIGNAL),
            ssize_t(preface.size()));
  const auto start = Clock::now();
  EXPECT_TRUE(ClosedByPeerWithin(silent, seconds(6)));
  EXPECT_TRUE(ClosedByPeerWithin(preface_only, seconds(6)));
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GT(waited, 1.5);
  close(silent);
  close(preface_only);
  EXPECT_TRUE(HealthCheck(server_->address(), seconds(5)).ok());
}

}  // namespace
}  // namespace ssm
