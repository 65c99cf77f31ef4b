// ssm-server's HTTP endpoint: the real binary on loopback, one stream through the generated stubs,
// then GET /metrics over a plain socket and check the counters against what the client saw; the
// web dashboard's files on the same port.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/http_get.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using testing::HttpGet;
using testing::HttpResponse;
using testing::Sample;

constexpr int kMaxStreams = 3;
constexpr int kChunks = 8;
constexpr int kChunkSamples = 1600;  // 100 ms at SmallAudioConfig's 16 kHz

class MetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_metrics_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 21)->Save(*dir_ + "/audio").ok());
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

  void StartServer(const std::string& metrics_listen) {
    std::string error;
    server_ = testing::ServerProcess::Start(
        testing::DefaultServerBinary(),
        {"--model", *dir_ + "/audio", "--listen", "127.0.0.1:0", "--threads", "1", "--max-streams",
         std::to_string(kMaxStreams), "--metrics-listen", metrics_listen},
        &error);
    ASSERT_NE(server_, nullptr) << error;
  }

  std::string Scrape() { return HttpGet(server_->metrics_port(), "/metrics").body; }

  // Scrapes until `series` has `value` (the server updates some series just after the client
  // sees the call's status) or 5 s pass; returns the last value seen.
  double WaitForSample(const std::string& series, double value) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    double seen = Sample(Scrape(), series);
    while (seen != value && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      seen = Sample(Scrape(), series);
    }
    return seen;
  }

  static std::string* dir_;
  std::unique_ptr<testing::ServerProcess> server_;
};

std::string* MetricsTest::dir_ = nullptr;

// User + system CPU seconds of process `pid` so far, from /proc/PID/stat.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double ticks = 0;
  for (int i = 0; i < 13 && fields >> field; ++i)
    if (i >= 11) ticks += std::stod(field);  // utime and stime, fields 14 and 15 of stat
  return ticks / double(sysconf(_SC_CLK_TCK));
}

pb::StreamRequest OpenRequest(const std::string& label = "") {
  pb::StreamRequest r;
  r.mutable_open()->set_model("audio");
  r.mutable_open()->set_format(pb::SAMPLE_FORMAT_PCM_F32LE);
  r.mutable_open()->set_label(label);
  return r;
}

// Streams kChunks chunks of a tone and returns the output frames received; fails the test if
// the call does not end OK.
int64_t StreamTone(pb::Ssm::Stub& stub) {
  grpc::ClientContext context;
  auto call = stub.Stream(&context);
  std::vector<pb::StreamRequest> requests{OpenRequest()};
  std::vector<float> samples(kChunkSamples);
  for (int c = 0; c < kChunks; ++c) {
    for (int i = 0; i < kChunkSamples; ++i)
      samples[size_t(i)] = 0.3f * std::sin(0.05f * float(c * kChunkSamples + i));
    pb::StreamRequest r;
    r.mutable_chunk()->set_sequence(uint64_t(c));
    r.mutable_chunk()->set_payload(
        std::string(reinterpret_cast<const char*>(samples.data()), samples.size() * sizeof(float)));
    requests.push_back(std::move(r));
  }
  std::thread writer([&] {
    for (const auto& r : requests)
      if (!call->Write(r)) break;
    call->WritesDone();
  });
  int64_t frames = 0;
  pb::StreamResponse response;
  while (call->Read(&response))
    if (response.has_output()) frames += response.output().frames();
  writer.join();
  const grpc::Status status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  return frames;
}

TEST_F(MetricsTest, CountersMatchWhatTheClientSawAndStreamsReturnToZero) {
  ASSERT_NO_FATAL_FAILURE(StartServer("127.0.0.1:0"));
  ASSERT_GT(server_->metrics_port(), 0);
  auto stub =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));

  const std::string before = Scrape();
  ASSERT_FALSE(before.empty()) << "no response from " << server_->metrics_address();
  EXPECT_EQ(Sample(before, "ssm_streams_opened_total{model=\"audio\"}"), 0);
  EXPECT_EQ(Sample(before, "ssm_state_slots{model=\"audio\",state=\"free\"}"), kMaxStreams);
  EXPECT_GT(Sample(before, "ssm_state_bytes_per_stream{model=\"audio\"}"), 0);
  EXPECT_NE(before.find("ssm_build_info{backend=\"cpu\",device=\"cpu\",version=\""),
            std::string::npos);

  const int64_t frames = StreamTone(*stub);
  ASSERT_GT(frames, 0);
  EXPECT_EQ(WaitForSample("ssm_streams_active{model=\"audio\"}", 0), 0);
  EXPECT_EQ(WaitForSample("ssm_streams_closed_total{model=\"audio\",reason=\"completed\"}", 1), 1);
  const std::string after = Scrape();
  EXPECT_EQ(Sample(after, "ssm_streams_opened_total{model=\"audio\"}"), 1);
  EXPECT_EQ(Sample(after, "ssm_chunks_total{model=\"audio\"}"), kChunks);
  EXPECT_EQ(Sample(after, "ssm_frames_total{model=\"audio\"}"), double(frames));
  EXPECT_EQ(Sample(after, "ssm_chunk_latency_seconds_count{model=\"audio\"}"), kChunks);
  EXPECT_EQ(Sample(after, "ssm_chunk_latency_seconds_bucket{model=\"audio\",le=\"+Inf\"}"),
            kChunks);
  EXPECT_EQ(Sample(after, "ssm_stream_lag_seconds_count{model=\"audio\"}"), kChunks);
  EXPECT_GE(Sample(after, "ssm_batch_streams_count{model=\"audio\"}"), 1);
  EXPECT_EQ(Sample(after, "ssm_batch_frames_sum{model=\"audio\"}"), double(frames));
  EXPECT_GE(Sample(after, "ssm_engine_step_seconds_count{backend=\"cpu\",model=\"audio\"}"), 1);
  EXPECT_EQ(Sample(after, "ssm_queue_depth{model=\"audio\"}"), 0);
  // The engine's CPU: the scheduler thread's in its steps, within what the whole process used;
  // with --threads 1 no step uses the worker pool, so its threads never start.
  const double engine_cpu = Sample(after, "ssm_engine_cpu_seconds_total{model=\"audio\"}");
  EXPECT_GT(engine_cpu, 0);
  EXPECT_LE(engine_cpu, ProcessCpuSeconds(server_->pid()) + 0.02);  // /proc counts in ticks
  EXPECT_EQ(Sample(after, "ssm_worker_pool_cpu_seconds_total"), 0);
  EXPECT_EQ(Sample(after, "ssm_worker_pool_idle_spin_seconds_total"), 0);
  const double used = Sample(after, "ssm_state_slots{model=\"audio\",state=\"used\"}");
  const double free = Sample(after, "ssm_state_slots{model=\"audio\",state=\"free\"}");
  EXPECT_EQ(used, 0);
  EXPECT_EQ(used + free, kMaxStreams);

  // A refused open (label too long) is an INVALID_ARGUMENT error but opens no stream.
  grpc::ClientContext context;
  auto bad = stub->Stream(&context);
  ASSERT_TRUE(bad->Write(OpenRequest(std::string(200, 'x'))));
  bad->WritesDone();
  pb::StreamResponse response;
  while (bad->Read(&response)) {
  }
  EXPECT_EQ(bad->Finish().error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(WaitForSample("ssm_errors_total{code=\"INVALID_ARGUMENT\"}", 1), 1);
  const std::string last = Scrape();
  EXPECT_EQ(Sample(last, "ssm_streams_opened_total{model=\"audio\"}"), 1);
  EXPECT_EQ(Sample(last, "ssm_errors_total{code=\"NOT_FOUND\"}"), 0);
}

TEST_F(MetricsTest, DashboardIsServedBesideTheMetrics) {
  ASSERT_NO_FATAL_FAILURE(StartServer("127.0.0.1:0"));
  const int port = server_->metrics_port();
  const HttpResponse metrics = HttpGet(port, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers.find("Content-Type: text/plain; version=0.0.4"), std::string::npos)
      << metrics.headers;
  const HttpResponse page = HttpGet(port, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.headers.find("Content-Type: text/html"), std::string::npos) << page.headers;
  EXPECT_NE(page.body.find("<title>ssm-server dashboard</title>"), std::string::npos);
  // Every file the page loads is there, uPlot included (no network needed).
  for (const char* file : {"app.js", "charts.js", "derive.js", "prometheus.js", "style.css",
                           "uPlot.iife.min.js", "uPlot.min.css", "uPlot-LICENSE.txt"}) {
    const HttpResponse asset = HttpGet(port, std::string("/static/") + file);
    EXPECT_EQ(asset.status, 200) << file;
    EXPECT_GT(asset.body.size(), 100u) << file;
  }
  EXPECT_NE(page.body.find("src=\"/static/app.js\""), std::string::npos);
  EXPECT_NE(page.body.find("src=\"/static/uPlot.iife.min.js\""), std::string::npos);
  EXPECT_EQ(HttpGet(port, "/static/missing.js").status, 404);
  EXPECT_EQ(HttpGet(port, "/metrics/extra").status, 404);
}

TEST_F(MetricsTest, EmptyMetricsListenTurnsMetricsOffAndStreamsStillWork) {
  ASSERT_NO_FATAL_FAILURE(StartServer(""));
  EXPECT_EQ(server_->metrics_port(), 0);
  // Nothing is collected: every metric update on the stream's path is skipped.
  auto stub =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  EXPECT_GT(StreamTone(*stub), 0);
  // Once the server has exited, its stdout held nothing after the "listening on" line.
  EXPECT_EQ(server_->Terminate(), 0);
  EXPECT_EQ(server_->ReadLine(std::chrono::seconds(2)), "");
  server_.reset();
}

}  // namespace
}  // namespace ssm
