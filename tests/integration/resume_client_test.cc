// Streams that survive a broken connection, seen from the client library (docs/design.md §7):
// the real ssm-server behind a proxy that cuts connections (random points, mid-message
// included), and an in-process fake server that answers resumes in ways the real one does not
// yet (recomputed frames, a lost replay buffer, a refused token). Whatever breaks, the caller
// sees each frame once, in order, bitwise equal to an uninterrupted run, or a clear error.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clients/lib/ssm_client.h"
#include "common/io/npy.h"
#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/fault_proxy.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::FaultProxy;

const std::string kModelDir = std::string(SSM_SOURCE_DIR) + "/models/speech-activity";
constexpr int kRate = 16000;
constexpr int kHop = 160;  // samples per frame of the model: 10 ms

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Waits up to `timeout` for `done()`.
template <typename Pred>
bool WaitFor(Pred done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// What a stream handed to its caller, collected by on_output (gRPC threads).
struct Collected {
  std::mutex mu;
  std::vector<float> values;
  int64_t frames = 0;
  int64_t outputs = 0;
  int64_t multi_frame_outputs = 0;  // more than one frame: catch-ups after a resume
  std::string index_error;          // the first output not starting where the last one ended

  void Add(const client::Output& out) {
    std::lock_guard<std::mutex> lock(mu);
    ++outputs;
    if (out.frames > 1) ++multi_frame_outputs;
    if (out.frames > 0 && out.first_frame != frames && index_error.empty())
      index_error = "output " + std::to_string(outputs) + " starts at frame " +
                    std::to_string(out.first_frame) + " after " + std::to_string(frames);
    values.insert(values.end(), out.values.begin(), out.values.end());
    frames += out.frames;
  }
  int64_t Frames() {
    std::lock_guard<std::mutex> lock(mu);
    return frames;
  }
};

// ---- the proxy itself -----------------------------------------------------------------------

// A loopback echo server for one connection at a time, on its own thread, until destroyed.
class EchoServer {
 public:
  EchoServer() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), len);
    listen(fd_, 8);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // the listening socket was shut down
        char buffer[4096];
        ssize_t n;
        while ((n = read(c, buffer, sizeof(buffer))) > 0)
          if (send(c, buffer, size_t(n), MSG_NOSIGNAL) != n) break;
        close(c);
      }
    });
  }
  ~EchoServer() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1, port_ = 0;
  std::thread thread_;
};

// A client socket connected to 127.0.0.1:`port`, or -errno.
int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(uint16_t(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

// Writes `out` on a thread while reading until EOF or an error; returns what was read.
std::string EchoThrough(int fd, const std::string& out) {
  std::thread writer([&] {
    for (size_t pos = 0; pos < out.size();) {
      const ssize_t n = send(fd, out.data() + pos, out.size() - pos, MSG_NOSIGNAL);
      if (n <= 0) return;
      pos += size_t(n);
    }
    shutdown(fd, SHUT_WR);
  });
  std::string in;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) in.append(buffer, size_t(n));
  writer.join();
  return in;
}

TEST(ResumeClientFaultProxyTest, ForwardsBothWaysAndCutsAtTheDrawnByteCount) {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  ASSERT_TRUE(proxy.error().empty()) << proxy.error();
  std::string data(300000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 7919 % 251);

  int fd = ConnectTo(proxy.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, data), data);  // intact, and ended by the target's close
  close(fd);
  EXPECT_EQ(proxy.cuts(), 0);
  EXPECT_EQ(proxy.bytes(), int64_t(2 * data.size()));

  // Cut after exactly 12345 bytes (both directions): what came back is a prefix of what went
  // out, shorter than the budget.
  proxy.CutRandomly(12345, 12345, /*seed=*/1);
  const int64_t before = proxy.bytes();
  fd = ConnectTo(proxy.port());
  ASSERT_GE(fd, 0);
  const std::string back = EchoThrough(fd, data);
  close(fd);
  ASSERT_TRUE(WaitFor([&] { return proxy.cuts() == 1; }));
  EXPECT_EQ(proxy.bytes() - before, 12345);
  EXPECT_LT(back.size(), 12345u);
  EXPECT_EQ(back, data.substr(0, back.size()));

  // CutAll closes a connection that is idle; refused connections count as cuts.
  proxy.StopCutting();
  fd = ConnectTo(proxy.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WaitFor([&] { return proxy.connections() == 3; }));
  proxy.CutAll(FaultProxy::CutKind::kClose);
  char byte;
  EXPECT_LE(read(fd, &byte, 1), 0);
  close(fd);
  // A refused connection is reset as soon as it is accepted. The reset can reach the client
  // before its connect() has returned (the handshake completed, then the socket was reset while
  // the caller was still waking up), so connect may itself fail with ECONNRESET.
  proxy.Refuse(true);
  fd = ConnectTo(proxy.port());
  if (fd >= 0) {
    EXPECT_LE(read(fd, &byte, 1), 0);
    close(fd);
  } else {
    EXPECT_EQ(fd, -ECONNRESET) << strerror(-fd);
  }
  ASSERT_TRUE(WaitFor([&] { return proxy.connections() == 4; }));
  EXPECT_EQ(proxy.cuts(), 3);
  EXPECT_EQ(proxy.connections(), 4);
}

// ---- the real server behind a FaultProxy --------------------------------------------------

class ResumeClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = Model::Load(kModelDir);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = new std::shared_ptr<const Model>(*model);
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void TearDown() override {
    client_.reset();
    proxy_.reset();
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
  }

  // ssm-server with the speech-activity model and `extra` flags, a proxy to it, a client of the
  // proxy.
  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--model",     kModelDir,   "--listen",
                                  "127.0.0.1:0", "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error);
    ASSERT_NE(server_, nullptr) << error;
    proxy_ = FaultProxy::To(server_->address());
    ASSERT_TRUE(proxy_->error().empty()) << proxy_->error();
    auto client = client::Client::Connect(proxy_->address());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
  }

  static std::vector<float> Signal(size_t samples, uint64_t seed) {
    testing::Rng rng(seed);
    return testing::RandomInput(rng, (*model_)->config(), int64_t(samples));
  }
  // Offline outputs of the in-process engine: the truth.
  static std::vector<float> Offline(const std::vector<float>& samples) {
    auto engine = testing::MakeEngine(*model_, testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, samples);
  }

  client::StreamOptions Options(Collected* got) {
    client::StreamOptions options;
    options.format = pb::SAMPLE_FORMAT_PCM_F32LE;  // the samples as they are: outputs bitwise
    options.label = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    options.idle_timeout_s = 15;
    options.resume_timeout_s = 10;
    options.on_output = [got](const client::Output& out) { got->Add(out); };
    return options;
  }

  static std::shared_ptr<const Model>* model_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<FaultProxy> proxy_;
  std::unique_ptr<client::Client> client_;
};

std::shared_ptr<const Model>* ResumeClientTest::model_ = nullptr;

// One long stream sent as fast as the server takes it, its connection cut after a random
// number of bytes again and again (RSTs, mid-message): the caller gets exactly the offline
// outputs, each frame once, and every cut was survived by a resume. The client keeps at most 16
// chunks unanswered, so that each connection's budget (at least 16 KB) outlasts the handshake
// and the re-sent chunks, and the stream advances on every connection: cuts by byte count that
// always land before the server applied a chunk would stop it forever.
TEST_F(ResumeClientTest, RandomCutsMidMessageLoseAndRepeatNoFrame) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr size_t kChunks = 2000;  // 20 s in 10 ms chunks
  const std::vector<float> samples = Signal(kChunks * kHop, 1234);
  const std::vector<float> expected = Offline(samples);
  ASSERT_EQ(expected.size(), ((samples.size() - 400) / kHop + 1) * 2);  // 25 ms windows, 2 outputs

  Collected got;
  client::StreamOptions options = Options(&got);
  options.max_unanswered_chunks = 16;
  auto stream = client_->OpenStream(options);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  const auto opened = (*stream)->WaitOpened();
  ASSERT_TRUE(opened.ok());
  EXPECT_FALSE(opened->resume_token().empty());
  EXPECT_FALSE(opened->resumed());
  proxy_->CutRandomly(16 << 10, 48 << 10, /*seed=*/42);
  const auto start = Clock::now();
  for (size_t i = 0; i < kChunks; ++i)
    ASSERT_TRUE((*stream)->SendSamples(samples.data() + i * kHop, kHop).ok()) << "chunk " << i;
  const Status status = (*stream)->Close();
  proxy_->StopCutting();
  const client::StreamStats stats = (*stream)->stats();
  ASSERT_TRUE(status.ok()) << status.ToString() << " after " << stats.resumes << " resumes";
  std::printf(
      "%lld cuts, %llu resumes in %llu attempts, %llu chunks replayed, resume ms last "
      "%.1f max %.1f, %.1f s\n",
      (long long)proxy_->cuts(), (unsigned long long)stats.resumes,
      (unsigned long long)stats.resume_attempts, (unsigned long long)stats.replayed_chunks,
      stats.last_resume_ms, stats.max_resume_ms, SecondsSince(start));

  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.index_error, "");
  EXPECT_EQ(got.values.size(), expected.size());
  EXPECT_TRUE(got.values == expected) << "outputs differ from the uninterrupted run";
  EXPECT_EQ(stats.frame_errors, 0) << stats.first_frame_error;
  EXPECT_EQ(stats.frames, got.frames);
  EXPECT_EQ(stats.outputs_received, uint64_t(got.outputs));
  EXPECT_EQ(stats.chunks_sent, kChunks);
  EXPECT_EQ(stats.chunks_answered, kChunks);
  EXPECT_EQ(stats.duplicate_frames, 0);  // this server re-sends from resume_from_frame exactly

  EXPECT_GE(proxy_->cuts(), 50);
  EXPECT_GE(stats.resumes, 50u);
  EXPECT_LE(stats.resumes, uint64_t(proxy_->cuts()));  // one per cut of an opened call at most
  // Every connection after the first carried at least one attempt; all but the last were cut
  // (the last one may be too, after the stream ended).
  EXPECT_GE(stats.resume_attempts + 1, uint64_t(proxy_->cuts()));
  EXPECT_GE(proxy_->connections(), proxy_->cuts());
  EXPECT_GT(stats.replayed_chunks, 0u);   // cuts landed while chunks were in flight
  EXPECT_GT(got.multi_frame_outputs, 0);  // and while outputs were: caught up after resuming
  EXPECT_GT(stats.max_resume_ms, 0);
  EXPECT_LE(stats.last_resume_ms, stats.max_resume_ms);
}

// Cuts after a few hundred bytes land in the resume handshake itself: after the server accepted
// a resume but before the client has its `opened` (and so the new token). The token the client
// presented must still name the stream (ParkedStreams::Alias), or the stream would be lost with
// "already used". Cut like that for a while, then let the stream finish: exact outputs.
TEST_F(ResumeClientTest, CutsInsideTheResumeHandshakeLoseNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr size_t kChunks = 600;
  const std::vector<float> samples = Signal(kChunks * kHop, 777);
  const std::vector<float> expected = Offline(samples);
  Collected got;
  client::StreamOptions options = Options(&got);
  options.max_unanswered_chunks = 16;
  auto stream = client_->OpenStream(options);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  ASSERT_TRUE((*stream)->WaitOpened().ok());
  proxy_->CutRandomly(200, 3000, /*seed=*/7);
  // Such small budgets may stop the stream from advancing: after enough cuts, the rest goes
  // through uncut.
  bool enough_cuts = false;
  std::thread stopper([&] {
    enough_cuts = WaitFor([&] { return proxy_->cuts() >= 30; }, std::chrono::seconds(20));
    proxy_->StopCutting();
  });
  for (size_t i = 0; i < kChunks; ++i) {
    if (!(*stream)->SendSamples(samples.data() + i * kHop, kHop).ok()) {
      ADD_FAILURE() << "chunk " << i;
      break;
    }
  }
  const Status status = (*stream)->Close();
  stopper.join();
  EXPECT_TRUE(enough_cuts);
  const client::StreamStats stats = (*stream)->stats();
  ASSERT_TRUE(status.ok()) << status.ToString() << " after " << stats.resumes << " resumes";
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.index_error, "");
  EXPECT_TRUE(got.values == expected) << "outputs differ from the uninterrupted run";
  EXPECT_GE(stats.resume_attempts, 30u);
}

// CutAll, alternately with an RST and a plain close, while a paced stream runs: exactly one
// resume per cut, and the outputs are still the offline ones.
TEST_F(ResumeClientTest, EveryCutAllIsOneResumeForResetsAndCloses) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr size_t kChunks = 300, kCuts = 6;
  const std::vector<float> samples = Signal(kChunks * kHop, 99);
  const std::vector<float> expected = Offline(samples);
  Collected got;
  auto stream = client_->OpenStream(Options(&got));
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  size_t cuts = 0;
  for (size_t i = 0; i < kChunks; ++i) {
    const bool cut_now = i % 40 == 20 && cuts < kCuts;
    int64_t frames = 0;
    if (cut_now) {
      // Cut once the previous cut's resume is done and outputs flow on the new call. The count
      // is read before this chunk goes out: a server may answer it before the next read.
      ASSERT_TRUE(WaitFor([&] { return (*stream)->stats().resumes == cuts; }));
      frames = got.Frames();
    }
    ASSERT_TRUE((*stream)->SendSamples(samples.data() + i * kHop, kHop).ok()) << "chunk " << i;
    if (cut_now) {
      ASSERT_TRUE(WaitFor([&] { return got.Frames() > frames; })) << "cut " << cuts;
      proxy_->CutAll(cuts % 2 == 0 ? FaultProxy::CutKind::kReset : FaultProxy::CutKind::kClose);
      ++cuts;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  const Status status = (*stream)->Close();
  ASSERT_TRUE(status.ok()) << status.ToString();
  const client::StreamStats stats = (*stream)->stats();
  EXPECT_EQ(proxy_->cuts(), int64_t(kCuts));
  EXPECT_EQ(stats.resumes, kCuts);
  EXPECT_GE(stats.resume_attempts, kCuts);
  EXPECT_EQ(stats.frame_errors, 0) << stats.first_frame_error;
  EXPECT_EQ(stats.chunks_answered, kChunks);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.index_error, "");
  EXPECT_TRUE(got.values == expected) << "outputs differ from the uninterrupted run";
}

// Sends chunks until the stream has ended (at most `chunks`), cutting the connection once
// outputs flow; returns the stream's final status.
Status SendAndCutOnce(client::Stream& stream, FaultProxy& proxy, const std::vector<float>& samples,
                      Collected& got) {
  const size_t chunks = samples.size() / kHop;
  bool cut = false;
  for (size_t i = 0; i < chunks; ++i) {
    if (!stream.SendSamples(samples.data() + i * kHop, kHop).ok()) break;
    if (!cut && i >= 20 && got.Frames() > 0) {
      proxy.CutAll();
      cut = true;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return stream.Close();
}

TEST_F(ResumeClientTest, WithoutResumeTheFirstCutEndsTheStreamWithTheTransportError) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> samples = Signal(200 * kHop, 5);
  Collected got;
  client::StreamOptions options = Options(&got);
  options.resume = false;
  auto stream = client_->OpenStream(options);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  const Status status = SendAndCutOnce(**stream, *proxy_, samples, got);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  const client::StreamStats stats = (*stream)->stats();
  EXPECT_EQ(stats.resumes, 0u);
  EXPECT_EQ(stats.resume_attempts, 0u);
  EXPECT_EQ(proxy_->cuts(), 1);
  EXPECT_EQ(proxy_->connections(), 1);  // no new call was tried
  EXPECT_TRUE((*stream)->done());
}

TEST_F(ResumeClientTest, ServerWithoutResumeTtlGivesNoTokenAndTheCutIsFinal) {
  ASSERT_NO_FATAL_FAILURE(Start({"--resume-ttl", "0"}));
  const std::vector<float> samples = Signal(200 * kHop, 6);
  Collected got;
  auto stream = client_->OpenStream(Options(&got));
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ((*stream)->WaitOpened()->resume_token(), "");
  const Status status = SendAndCutOnce(**stream, *proxy_, samples, got);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  EXPECT_NE(status.message().find("gave no resume token"), std::string::npos) << status.message();
  EXPECT_EQ((*stream)->stats().resume_attempts, 0u);
  EXPECT_EQ(proxy_->connections(), 1);
}

// The server stays away (connections refused, or accepted and never answered) longer than
// resume_timeout_s: the stream ends with a clear error about that long after the cut.
TEST_F(ResumeClientTest, AServerAwayLongerThanTheResumeTimeoutEndsTheStreamInThatTime) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (const bool hang : {false, true}) {
    SCOPED_TRACE(hang ? "hung" : "refusing");
    proxy_->Refuse(false);
    proxy_->Hold(false);
    auto client = client::Client::Connect(proxy_->address());  // a channel not backing off
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    const std::vector<float> samples = Signal(100 * kHop, 7);
    Collected got;
    client::StreamOptions options = Options(&got);
    options.resume_timeout_s = 1.5;
    auto stream = client_->OpenStream(options);
    ASSERT_TRUE(stream.ok()) << stream.status().ToString();
    for (size_t i = 0; i < 50; ++i)
      ASSERT_TRUE((*stream)->SendSamples(samples.data() + i * kHop, kHop).ok());
    ASSERT_TRUE(WaitFor([&] { return (*stream)->stats().chunks_answered == 50; }));
    proxy_->Hold(hang);
    proxy_->Refuse(!hang);
    const int64_t cuts = proxy_->cuts();
    const auto cut = Clock::now();
    proxy_->CutAll();
    ASSERT_TRUE(WaitFor([&] { return (*stream)->done(); }, std::chrono::seconds(6)));
    const double s = SecondsSince(cut);
    const Status status = (*stream)->Close();
    EXPECT_GE(s, 1.4);
    EXPECT_LE(s, 3.0);
    EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
    EXPECT_NE(status.message().find("could not be resumed within 1.5 s"), std::string::npos)
        << status.message();
    const client::StreamStats stats = (*stream)->stats();
    EXPECT_EQ(stats.resumes, 0u);
    EXPECT_GE(stats.resume_attempts, hang ? 1u : 3u);
    if (!hang) {
      EXPECT_GT(proxy_->cuts(), cuts + 1);  // refused reconnections
    }
  }
}

// Runs a shell command under `timeout`; its exit code and its stdout and stderr together.
std::pair<int, std::string> RunCommand(const std::string& command, int timeout_s = 30) {
  const std::string wrapped = "timeout -k 5 " + std::to_string(timeout_s) + " " + command + " 2>&1";
  FILE* pipe = popen(wrapped.c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

// ssm-stream, real-time paced, while the proxy cuts its connection three times: the output file
// equals the offline run and the summary counts the resumes; with --no-resume the first cut
// fails it.
TEST_F(ResumeClientTest, StreamToolResumesByDefaultAndReportsIt) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::vector<float> samples = Signal(kRate * 2, 11);  // 2 s
  const std::string dir = ::testing::TempDir();
  const std::string input = dir + "/resume_tool_input.npy";
  ASSERT_TRUE(WriteNpy(input, {int64_t(samples.size())}, samples.data()).ok());
  const std::vector<float> expected = Offline(samples);
  for (const bool resume : {true, false}) {
    SCOPED_TRACE(resume ? "resume" : "--no-resume");
    const std::string output = dir + "/resume_tool_output.npy";
    std::remove(output.c_str());
    const int64_t cuts = proxy_->cuts();
    auto run = std::async(std::launch::async, [&] {
      return RunCommand(std::string(SSM_BIN_DIR) + "/ssm-stream --server " + proxy_->address() +
                        " --input " + input + " --output " + output + " --chunk-ms 20 --realtime" +
                        (resume ? "" : " --no-resume"));
    });
    for (int cut = 0; cut < 3; ++cut) {
      std::this_thread::sleep_for(milliseconds(450));
      proxy_->CutAll(cut % 2 == 0 ? FaultProxy::CutKind::kReset : FaultProxy::CutKind::kClose);
    }
    const auto [code, log] = run.get();
    if (resume) {
      EXPECT_EQ(code, 0) << log;
      EXPECT_GE(proxy_->cuts() - cuts, 3);  // and the connection of this test's own client
      EXPECT_NE(log.find("  resumes 3 ("), std::string::npos) << log;
      auto written = ReadNpy(output);
      ASSERT_TRUE(written.ok()) << written.status().ToString() << "\n" << log;
      EXPECT_TRUE(written->data == expected) << "outputs differ from the uninterrupted run";
    } else {
      EXPECT_EQ(code, 1) << log;
      EXPECT_NE(log.find("UNAVAILABLE"), std::string::npos) << log;
      EXPECT_NE(log.find("  resumes 0 (0 attempts"), std::string::npos) << log;
      EXPECT_NE(log.find("(--no-resume)"), std::string::npos) << log;
    }
  }
}

// ---- an in-process fake server ------------------------------------------------------------

// A Stream service for one stream at a time of an identity "model": FRAMES_F32LE, d_in 1, d_out
// 1, each input value one output frame. Scripted to break calls and to answer resumes as told.
class FakeSsm final : public pb::Ssm::Service {
 public:
  struct Script {
    // Call c (0 = the first) breaks with UNAVAILABLE once it has applied break_after[c] chunks
    // (none past the list's end), leaving the last `unanswered` of them without an answer.
    std::vector<int> break_after;
    int unanswered = 0;
    int still_attached = 0;      // first resume attempts answered UNAVAILABLE "still attached"
    bool not_found = false;      // resume attempts answered NOT_FOUND
    bool not_resumed = false;    // `opened` of a resume attempt says resumed = false
    int rewind_frames = 0;       // a resume reports next_frame this far back, re-sends those frames
    bool forget_chunks = false;  // a resume asks for the stream again from chunk 0
    // The first call's final OK is lost (UNAVAILABLE instead), and a resume then hears the
    // stream completed (NOT_FOUND with the trailer ssm-stream-ended: completed).
    bool lost_ok = false;
  };

  explicit FakeSsm(Script script) : script_(std::move(script)) {}

  int resume_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return resume_calls_;
  }

  grpc::Status Stream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<pb::StreamResponse, pb::StreamRequest>* rw) override {
    pb::StreamRequest request;
    if (!rw->Read(&request) || !request.has_open())
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "open first");
    std::unique_lock<std::mutex> lock(mu_);
    const int call = calls_++;
    pb::StreamResponse response;
    pb::StreamOpened* opened = response.mutable_opened();
    opened->set_stream_id("fake");
    opened->mutable_model()->set_name("identity");
    opened->mutable_model()->set_frontend("none");
    opened->mutable_model()->set_d_in(1);
    opened->mutable_model()->set_d_out(1);
    int rewind = 0;
    int64_t catch_up_from = -1;
    if (!request.open().resume_token().empty()) {
      ++resume_calls_;
      if (script_.lost_ok) {
        context->AddTrailingMetadata("ssm-stream-ended", "completed");
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "the stream has ended (it completed)");
      }
      if (request.open().resume_token() != token_)
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown resume token");
      if (script_.still_attached > 0) {
        --script_.still_attached;
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "still attached to its previous call");
      }
      if (script_.not_found)
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "resume token expired");
      opened->set_resumed(!script_.not_resumed);
      rewind = script_.rewind_frames;
      opened->set_next_sequence(script_.forget_chunks ? 0 : next_sequence_);
      opened->set_next_frame(int64_t(frames_.size()) - rewind);
      catch_up_from = request.open().resume_from_frame();
    } else {
      next_sequence_ = 0;
      frames_.clear();
    }
    token_ = "token-" + std::to_string(call);
    opened->set_resume_token(token_);
    rw->Write(response);
    if (catch_up_from >= 0 && catch_up_from < int64_t(frames_.size()) - rewind) {
      const int64_t end = int64_t(frames_.size()) - rewind;
      rw->Write(Output(catch_up_from, end, next_sequence_ - 1));
    }
    const int break_after =
        size_t(call) < script_.break_after.size() ? script_.break_after[size_t(call)] : -1;
    int applied = 0;
    lock.unlock();
    while (rw->Read(&request)) {
      lock.lock();
      if (!request.has_chunk() || request.chunk().sequence() != next_sequence_)
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "chunk sequence " + std::to_string(request.chunk().sequence()) +
                                " but expected " + std::to_string(next_sequence_));
      const std::string& payload = request.chunk().payload();
      const int64_t first = int64_t(frames_.size()) - rewind;
      for (size_t i = 0; i + 4 <= payload.size(); i += 4) {
        float v;
        std::memcpy(&v, payload.data() + i, 4);
        frames_.push_back(v);
      }
      ++next_sequence_;
      ++applied;
      rewind = 0;
      const bool answer = break_after < 0 || applied <= break_after - script_.unanswered;
      const pb::StreamResponse out = Output(first, int64_t(frames_.size()), next_sequence_ - 1);
      lock.unlock();
      if (answer) rw->Write(out);
      if (applied == break_after) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake break");
    }
    if (script_.lost_ok) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake lost OK");
    return grpc::Status::OK;
  }

 private:
  pb::StreamResponse Output(int64_t from, int64_t to, uint64_t sequence) const {
    pb::StreamResponse r;
    pb::StreamOutput* o = r.mutable_output();
    o->set_first_frame(from);
    o->set_frames(int(to - from));
    o->set_d_out(1);
    for (int64_t f = from; f < to; ++f) o->add_values(frames_[size_t(f)]);
    o->set_sequence(sequence);
    return r;
  }

  std::mutex mu_;  // guards the members below
  Script script_;
  int calls_ = 0, resume_calls_ = 0;
  std::string token_;
  uint64_t next_sequence_ = 0;
  std::vector<float> frames_;  // every output frame of the stream
};

class ResumeClientFakeServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
  }

  void Start(FakeSsm::Script script) {
    service_ = std::make_unique<FakeSsm>(std::move(script));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto client = client::Client::Connect("127.0.0.1:" + std::to_string(port));
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
  }

  // Streams 1, 2, 3, ... `chunks` chunks of 5 frames, then closes; returns the final status.
  Status Run(size_t chunks, Collected* got, client::StreamOptions options = {}) {
    options.format = pb::SAMPLE_FORMAT_FRAMES_F32LE;
    options.idle_timeout_s = 10;
    options.resume_timeout_s = 5;
    options.on_output = [got](const client::Output& out) { got->Add(out); };
    stream_ = client_->StartStream(options);
    for (size_t c = 0; c < chunks; ++c) {
      std::vector<float> frames(5);
      for (size_t i = 0; i < 5; ++i) frames[i] = float(c * 5 + i + 1);
      expected_.insert(expected_.end(), frames.begin(), frames.end());
      if (!stream_->SendFrames(frames.data(), frames.size()).ok()) break;
    }
    return stream_->Close();
  }

  std::unique_ptr<FakeSsm> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<client::Stream> stream_;
  std::vector<float> expected_;
};

TEST_F(ResumeClientFakeServerTest, LostAnswersComeInOneCatchUpOutputAndChunksAreReplayed) {
  ASSERT_NO_FATAL_FAILURE(Start({/*break_after=*/{10, 7, 12}, /*unanswered=*/3}));
  Collected got;
  const Status status = Run(60, &got);
  ASSERT_TRUE(status.ok()) << status.ToString();
  const client::StreamStats stats = stream_->stats();
  EXPECT_EQ(stats.resumes, 3u);
  EXPECT_EQ(stats.resume_attempts, 3u);
  EXPECT_EQ(stats.duplicate_frames, 0);
  EXPECT_EQ(stats.frame_errors, 0) << stats.first_frame_error;
  EXPECT_EQ(stats.chunks_sent, 60u);
  EXPECT_EQ(stats.chunks_answered, 60u);
  // Each break lost 3 answers, caught up in one output: 60 - 3 * 2 outputs.
  EXPECT_EQ(stats.outputs_received, 54u);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.multi_frame_outputs, 54);  // 5 frames each, 15 in the catch-ups
  EXPECT_EQ(got.index_error, "");
  EXPECT_EQ(got.values, expected_);
}

TEST_F(ResumeClientFakeServerTest, FramesRecomputedAfterAResumeAreDroppedByIndex) {
  FakeSsm::Script script;
  script.break_after = {10, 10};
  script.rewind_frames = 7;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(30, &got);
  ASSERT_TRUE(status.ok()) << status.ToString();
  const client::StreamStats stats = stream_->stats();
  EXPECT_EQ(stats.resumes, 2u);
  EXPECT_EQ(stats.duplicate_frames, 14);
  EXPECT_EQ(stats.frame_errors, 0) << stats.first_frame_error;
  EXPECT_EQ(stats.frames, 150);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.index_error, "");
  EXPECT_EQ(got.values, expected_);
}

TEST_F(ResumeClientFakeServerTest, AResumeBeforeTheReplayBufferIsDataLoss) {
  FakeSsm::Script script;
  script.break_after = {10};
  script.forget_chunks = true;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(30, &got);
  EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status.ToString();
  EXPECT_NE(status.message().find("resumed the stream at chunk 0"), std::string::npos)
      << status.message();
  EXPECT_EQ(stream_->stats().resumes, 0u);
}

TEST_F(ResumeClientFakeServerTest, StillAttachedIsRetriedAfterABackOff) {
  FakeSsm::Script script;
  script.break_after = {10};
  script.still_attached = 2;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(20, &got);
  ASSERT_TRUE(status.ok()) << status.ToString();
  const client::StreamStats stats = stream_->stats();
  EXPECT_EQ(stats.resumes, 1u);
  EXPECT_EQ(stats.resume_attempts, 3u);
  EXPECT_EQ(service_->resume_calls(), 3);
  // Attempts at once, then after ~10 ms and ~20 ms more (resume_backoff_s, doubling, +-25 %).
  EXPECT_GE(stats.last_resume_ms, 0.75 * (10 + 20));
  EXPECT_LT(stats.last_resume_ms, 1000);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.values, expected_);
}

TEST_F(ResumeClientFakeServerTest, AnUnknownTokenIsFinalAndNotRetried) {
  FakeSsm::Script script;
  script.break_after = {10};
  script.not_found = true;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(20, &got);
  EXPECT_EQ(status.code(), StatusCode::kNotFound) << status.ToString();
  EXPECT_NE(status.message().find("resuming it failed: resume token expired"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("fake break"), std::string::npos) << status.message();
  EXPECT_EQ(stream_->stats().resume_attempts, 1u);
  EXPECT_EQ(service_->resume_calls(), 1);
}

// Every chunk answered after the half-close, then the OK lost to a break: the resume attempt
// hears that the stream completed, and the stream ends OK instead of failing.
TEST_F(ResumeClientFakeServerTest, AStreamThatCompletedBeforeTheBreakEndsOk) {
  FakeSsm::Script script;
  script.lost_ok = true;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(20, &got);
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(service_->resume_calls(), 1);
  EXPECT_EQ(stream_->stats().resumes, 0u);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.values, expected_);
}

TEST_F(ResumeClientFakeServerTest, ANewStreamInsteadOfTheResumedOneIsAnError) {
  FakeSsm::Script script;
  script.break_after = {10};
  script.not_resumed = true;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  const Status status = Run(20, &got);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.ToString();
  EXPECT_NE(status.message().find("instead of resuming"), std::string::npos) << status.message();
  EXPECT_EQ(stream_->stats().resumes, 0u);
}

// Cancel while the stream waits to retry a resume: it ends at once, CANCELLED, never resumed.
TEST_F(ResumeClientFakeServerTest, CancelDuringTheBackOffEndsTheStreamAtOnce) {
  FakeSsm::Script script;
  script.break_after = {3};
  script.still_attached = 1000;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  Collected got;
  client::StreamOptions options;
  options.format = pb::SAMPLE_FORMAT_FRAMES_F32LE;
  options.resume_backoff_s = 1;  // the second attempt waits ~1 s
  options.on_output = [&got](const client::Output& out) { got.Add(out); };
  stream_ = client_->StartStream(options);
  const std::vector<float> frames(5, 1.0f);
  for (int c = 0; c < 3; ++c) ASSERT_TRUE(stream_->SendFrames(frames.data(), 5).ok());
  ASSERT_TRUE(WaitFor([&] { return service_->resume_calls() == 1; }));
  std::this_thread::sleep_for(milliseconds(100));  // its answer arrived: in the back-off now
  const auto start = Clock::now();
  stream_->Cancel();
  EXPECT_TRUE(stream_->done());
  EXPECT_LT(SecondsSince(start), 0.1);
  const Status status = stream_->Close();
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status.ToString();
  std::this_thread::sleep_for(milliseconds(1200));  // the scheduled attempt does nothing
  EXPECT_EQ(service_->resume_calls(), 1);
  EXPECT_EQ(stream_->stats().resume_attempts, 1u);
}

// A resume in progress is time owed by the server: the idle timeout ends a stream whose resume
// attempts keep failing, when it is shorter than resume_timeout_s, with its own message.
TEST_F(ResumeClientFakeServerTest, TheIdleTimeoutCountsWhileResuming) {
  FakeSsm::Script script;
  script.break_after = {3};
  script.still_attached = 1000;
  ASSERT_NO_FATAL_FAILURE(Start(script));
  client::StreamOptions options;
  options.format = pb::SAMPLE_FORMAT_FRAMES_F32LE;
  options.idle_timeout_s = 0.6;
  options.resume_timeout_s = 20;
  stream_ = client_->StartStream(options);
  const std::vector<float> frames(5, 1.0f);
  for (int c = 0; c < 3; ++c) ASSERT_TRUE(stream_->SendFrames(frames.data(), 5).ok());
  const auto start = Clock::now();
  const Status status = stream_->Close();  // waits: the idle timeout is checked here
  EXPECT_LT(SecondsSince(start), 1.2);     // failed attempts are no progress
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.ToString();
  EXPECT_NE(status.message().find("idle timeout) while resuming"), std::string::npos)
      << status.message();
  EXPECT_GE(stream_->stats().resume_attempts, 3u);
  EXPECT_EQ(stream_->stats().resumes, 0u);
}

}  // namespace
}  // namespace ssm
