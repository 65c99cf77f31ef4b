// ssm-server's HTTP endpoint (--metrics-listen) through the real binary on loopback: Prometheus
// scrapes keep working while many clients hold half-open requests, the server closes such a
// connection after its timeout, and the protocol details clients rely on (methods, headers, a
// port in use) hold.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/engine/engine_test_util.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// HttpServer's kConnectionTimeout (server/service/http_server.h): a connection that makes no
// progress for this long is closed.
constexpr auto kServerConnectionTimeout = std::chrono::seconds(3);

struct HttpResponse {
  int status = 0;  // 0: no complete response before the deadline
  std::string headers;
  std::string body;
  double seconds = 0;  // from connect to the server's close
};

// A non-blocking TCP connection to 127.0.0.1:port, being established; -1 on failure.
int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// Waits until `fd` is ready for `events` or `deadline` passes; false on timeout.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd{fd, events, 0};
    const int n = poll(&pfd, 1, int(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// Sends `request` to 127.0.0.1:port and reads the response until the server closes, all within
// `timeout` (connect included).
HttpResponse Exchange(int port, const std::string& request, milliseconds timeout) {
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  HttpResponse result;
  const int fd = ConnectLoopback(port);
  if (fd < 0) return result;
  std::string response;
  size_t sent = 0;
  bool closed = false;
  while (sent < request.size() && WaitFor(fd, POLLOUT, deadline)) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) break;
    if (n > 0) sent += size_t(n);
  }
  while (sent == request.size() && !closed && WaitFor(fd, POLLIN, deadline)) {
    char buffer[16384];
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) response.append(buffer, size_t(n));
    closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  }
  close(fd);
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const size_t body = response.find("\r\n\r\n");
  if (!closed || body == std::string::npos || response.compare(0, 9, "HTTP/1.1 ") != 0)
    return result;
  result.status = std::atoi(response.c_str() + 9);
  result.headers = response.substr(0, body + 2);  // each header line ends in \r\n
  result.body = response.substr(body + 4);
  return result;
}

HttpResponse Get(int port, const std::string& path, const char* method = "GET") {
  return Exchange(port, std::string(method) + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                  milliseconds(5000));
}

bool HasHeader(const HttpResponse& r, const std::string& line) {
  return r.headers.find("\r\n" + line + "\r\n") != std::string::npos;
}

// Holds `count` connections to 127.0.0.1:port that each send the start of a request line and
// then nothing, and reopens each one the server closes, until Stop().
class HalfOpenClients {
 public:
  HalfOpenClients(int port, int count) : port_(port), count_(count) {
    thread_ = std::thread([this] { Run(); });
  }
  ~HalfOpenClients() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int opened() const { return opened_; }  // connections made, reopens included

 private:
  static constexpr char kPartialRequest[] = "GET /metr";  // no line end, ever

  void Run() {
    std::vector<int> fds(size_t(count_), -1);
    std::vector<bool> sent(fds.size(), false);
    while (!stop_) {
      std::vector<pollfd> pfds;
      for (size_t i = 0; i < fds.size(); ++i) {
        if (fds[i] < 0) {
          fds[i] = ConnectLoopback(port_);
          sent[i] = false;
          if (fds[i] >= 0) ++opened_;
        }
        if (fds[i] >= 0) pfds.push_back({fds[i], short(sent[i] ? POLLIN : POLLOUT), 0});
      }
      if (poll(pfds.data(), pfds.size(), 50) <= 0) continue;
      for (const pollfd& p : pfds) {
        if (p.revents == 0) continue;
        const size_t i = size_t(std::find(fds.begin(), fds.end(), p.fd) - fds.begin());
        bool lost = (p.revents & (POLLERR | POLLHUP)) != 0;
        if (!lost && !sent[i]) {  // connected: send the partial request once
          sent[i] = send(p.fd, kPartialRequest, sizeof kPartialRequest - 1, MSG_NOSIGNAL) > 0;
          lost = !sent[i];
        } else if (!lost) {  // readable: the server answered or closed; either way, reopen
          char buffer[4096];
          lost = read(p.fd, buffer, sizeof buffer) >= 0 || errno != EAGAIN;
        }
        if (lost) {
          close(p.fd);
          fds[i] = -1;
        }
      }
    }
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }

  const int port_;
  const int count_;
  std::atomic<bool> stop_{false};
  std::atomic<int> opened_{0};
  std::thread thread_;
};

class HttpEndpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_http_endpoint_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 23)->Save(*dir_ + "/audio").ok());
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

  std::unique_ptr<testing::ServerProcess> StartServer(const std::string& metrics_listen,
                                                      std::string* error) {
    return testing::ServerProcess::Start(testing::DefaultServerBinary(),
                                         {"--model", *dir_ + "/audio", "--listen", "127.0.0.1:0",
                                          "--threads", "1", "--metrics-listen", metrics_listen},
                                         error);
  }
  void StartServer() {
    std::string error;
    server_ = StartServer("127.0.0.1:0", &error);
    ASSERT_NE(server_, nullptr) << error;
  }

  static std::string* dir_;
  std::unique_ptr<testing::ServerProcess> server_;
};

std::string* HttpEndpointTest::dir_ = nullptr;

TEST_F(HttpEndpointTest, ScrapesStayPromptWhileManyClientsHoldHalfOpenRequests) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const int port = server_->metrics_port();
  constexpr int kSlowClients = 64;  // more than a thread-per-connection server's pool
  constexpr auto kDuration = std::chrono::seconds(9);
  constexpr auto kScrapePeriod = milliseconds(500);
  constexpr auto kScrapeTimeout = milliseconds(2000);
  constexpr double kPromptSeconds = 1.0;

  HalfOpenClients clients(port, kSlowClients);
  std::this_thread::sleep_for(milliseconds(300));  // let them connect first
  int scrapes = 0, ok = 0;
  double worst = 0;
  const auto end = Clock::now() + kDuration;
  for (auto next = Clock::now(); Clock::now() < end; next += kScrapePeriod) {
    std::this_thread::sleep_until(next);
    const HttpResponse r =
        Exchange(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 kScrapeTimeout);
    ++scrapes;
    const bool good = r.status == 200 && r.body.find("ssm_build_info") != std::string::npos;
    ok += good && r.seconds < kPromptSeconds;
    worst = std::max(worst, r.seconds);
    EXPECT_TRUE(good) << "scrape " << scrapes << ": status " << r.status << " after " << r.seconds
                      << " s";
    EXPECT_LT(r.seconds, kPromptSeconds) << "scrape " << scrapes;
  }
  clients.Stop();
  std::printf(
      "%d of %d scrapes ok under %d half-open clients (%d connections made); worst "
      "%.3f s\n",
      ok, scrapes, kSlowClients, clients.opened(), worst);
  EXPECT_EQ(ok, scrapes);
  EXPECT_GE(clients.opened(), kSlowClients);
}

TEST_F(HttpEndpointTest, HalfOpenRequestIsClosedAfterTheConnectionTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const auto margin = std::chrono::seconds(2);
  const HttpResponse r =
      Exchange(server_->metrics_port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n",
               kServerConnectionTimeout + margin);
  // Closed by the server (with or without a 4xx/5xx), not by the deadline.
  EXPECT_LT(r.seconds, std::chrono::duration<double>(kServerConnectionTimeout + margin).count());
  EXPECT_NE(r.status, 200);
}

TEST_F(HttpEndpointTest, GetAndHeadOnlyWithTheSameHeaders) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const int port = server_->metrics_port();
  const HttpResponse metrics = Get(port, "/metrics?x=1");  // the query string is ignored
  EXPECT_EQ(metrics.status, 200);
  EXPECT_TRUE(HasHeader(metrics, "Content-Type: text/plain; version=0.0.4; charset=utf-8"))
      << metrics.headers;
  EXPECT_TRUE(HasHeader(metrics, "Cache-Control: no-store")) << metrics.headers;
  EXPECT_TRUE(HasHeader(metrics, "X-Content-Type-Options: nosniff")) << metrics.headers;
  EXPECT_TRUE(HasHeader(metrics, "Content-Length: " + std::to_string(metrics.body.size())))
      << metrics.headers;

  const HttpResponse page = Get(port, "/");
  const HttpResponse head = Get(port, "/", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_TRUE(HasHeader(head, "Content-Length: " + std::to_string(page.body.size())))
      << head.headers;
  EXPECT_TRUE(HasHeader(head, "Cache-Control: no-store")) << head.headers;

  const HttpResponse post = Get(port, "/metrics", "POST");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.body, "only GET and HEAD are served\n");
  const HttpResponse missing = Get(port, "/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(HasHeader(missing, "Content-Type: text/plain; charset=utf-8")) << missing.headers;
  EXPECT_NE(missing.body.find("/metrics"), std::string::npos);
}

TEST_F(HttpEndpointTest, PortInUseIsAStartError) {
  const int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(holder, 1), 0);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &length), 0);
  std::string error;
  const auto start = Clock::now();
  EXPECT_EQ(StartServer("127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), &error), nullptr);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10)) << "it should exit, not hang";
  close(holder);
}

}  // namespace
}  // namespace ssm
