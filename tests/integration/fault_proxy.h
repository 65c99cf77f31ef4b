// A TCP proxy for tests that breaks connections on purpose: it listens on a free port of
// 127.0.0.1 and forwards every connection it accepts to a target HOST:PORT, both directions, on
// one thread with poll(). It can cut every current connection at once (CutAll), cut each
// connection after a random number of forwarded bytes (CutRandomly: the cut lands anywhere,
// mid-message included; seeded, so the byte positions repeat), refuse new connections (the
// target seems down) or hold them without forwarding a byte (the target seems hung). A cut
// closes both sides, with an RST (SO_LINGER 0) or a plain close (FIN). Header-only; POSIX.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace ssm::testing {

class FaultProxy {
 public:
  // How a cut closes the two sockets of a connection.
  enum class CutKind { kReset, kClose };

  // Forwards to `target_host` (an IPv4 address) : `target_port`. error() says why when the
  // listening socket could not be set up (then port() is 0).
  FaultProxy(const std::string& target_host, int target_port) {
    if (!ToSockaddr(target_host, target_port, &target_)) {
      error_ = "not an IPv4 address: " + target_host;
      return;
    }
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        listen(listen_fd_, 64) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      error_ = std::string("listening socket: ") + std::strerror(errno);
      return;
    }
    port_ = ntohs(addr.sin_port);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    thread_ = std::thread([this] { Run(); });
  }

  // "HOST:PORT" of the target, split: the address of a ServerProcess.
  static std::unique_ptr<FaultProxy> To(const std::string& address) {
    const size_t colon = address.rfind(':');
    return std::make_unique<FaultProxy>(address.substr(0, colon),
                                        std::stoi(address.substr(colon + 1)));
  }

  ~FaultProxy() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
    for (Connection& c : connections_) CloseConnection(c, CutKind::kClose);
    if (listen_fd_ >= 0) close(listen_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  const std::string& error() const { return error_; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // New connections go to `address` ("HOST:PORT", IPv4) from now on: a balancer that sends a
  // client to another replica. False for an address it cannot parse.
  bool SetTarget(const std::string& address) {
    const size_t colon = address.rfind(':');
    sockaddr_in target{};
    if (colon == std::string::npos ||
        !ToSockaddr(address.substr(0, colon), std::stoi(address.substr(colon + 1)), &target))
      return false;
    std::lock_guard<std::mutex> lock(target_mu_);
    target_ = target;
    return true;
  }

  // Closes every current connection, both sides, and returns once they are closed.
  void CutAll(CutKind kind = CutKind::kReset) {
    std::unique_lock<std::mutex> lock(mu_);
    cut_all_kind_ = kind;
    const uint64_t request = ++cut_all_requested_;
    Wake();
    done_cv_.wait(lock, [&] { return cut_all_done_ >= request || stop_; });
  }

  // From now on, each connection (current ones counting from now) is cut once it has forwarded
  // a number of bytes (both directions together) drawn uniformly from [min_bytes, max_bytes]
  // with a generator seeded by `seed`, one draw per connection in the order they are accepted.
  void CutRandomly(uint64_t min_bytes, uint64_t max_bytes, uint64_t seed,
                   CutKind kind = CutKind::kReset) {
    std::lock_guard<std::mutex> lock(mu_);
    random_ = true;
    random_min_ = min_bytes;
    random_max_ = std::max(min_bytes, max_bytes);
    random_kind_ = kind;
    rng_.seed(seed);
    ++random_epoch_;
    Wake();
  }
  void StopCutting() {
    std::lock_guard<std::mutex> lock(mu_);
    random_ = false;
    ++random_epoch_;
    Wake();
  }

  // Refusing: each new connection is closed (RST) as soon as it is accepted.
  void Refuse(bool on) {
    refuse_.store(on);
    Wake();
  }
  // Holding: new connections are accepted and kept open, and nothing is forwarded on them (nor
  // connected to the target) until Hold(false).
  void Hold(bool on) {
    hold_.store(on);
    Wake();
  }

  int64_t connections() const { return connections_accepted_.load(); }  // accepted, in all
  int64_t cuts() const { return cuts_.load(); }    // connections cut (CutAll, random, refused)
  int64_t bytes() const { return bytes_.load(); }  // forwarded, both directions

 private:
  static constexpr size_t kBuffer = 64 << 10;

  struct Connection {
    int client = -1, server = -1;      // server: -1 while held
    std::string to_server, to_client;  // read, not yet written
    bool client_eof = false, server_eof = false;
    uint64_t forwarded = 0;
    uint64_t cut_at = UINT64_MAX;  // cut once `forwarded` reaches it
    uint64_t epoch = 0;            // of the random settings cut_at was drawn under
    bool dead = false;
  };

  // `host` (an IPv4 address) and `port` as a socket address; false for another host.
  static bool ToSockaddr(const std::string& host, int port, sockaddr_in* out) {
    *out = sockaddr_in{};
    out->sin_family = AF_INET;
    out->sin_port = htons(uint16_t(port));
    return inet_pton(AF_INET, host.c_str(), &out->sin_addr) == 1;
  }

  void Wake() {
    if (wake_fd_ < 0) return;
    const uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof(one));
    (void)ignored;
  }

  static void CloseConnection(Connection& c, CutKind kind) {
    for (int* fd : {&c.client, &c.server}) {
      if (*fd < 0) continue;
      if (kind == CutKind::kReset) {
        linger l{1, 0};
        setsockopt(*fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      }
      close(*fd);
      *fd = -1;
    }
    c.dead = true;
  }

  void Cut(Connection& c, CutKind kind) {
    if (c.dead) return;
    ++cuts_;  // before the close: a peer that sees it finds it counted
    CloseConnection(c, kind);
  }

  bool ConnectTarget(Connection& c) {
    c.server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // loopback: connects at once
    sockaddr_in target;
    {
      std::lock_guard<std::mutex> lock(target_mu_);
      target = target_;
    }
    if (c.server < 0 ||
        connect(c.server, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0) {
      CloseConnection(c, CutKind::kReset);
      return false;
    }
    fcntl(c.server, F_SETFL, fcntl(c.server, F_GETFL) | O_NONBLOCK);
    const int one = 1;
    setsockopt(c.server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return true;
  }

  void Accept() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      ++connections_accepted_;
      Connection c;
      c.client = fd;
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (refuse_.load()) {
        Cut(c, CutKind::kReset);
        continue;
      }
      if (!hold_.load() && !ConnectTarget(c)) continue;  // the target is down: the client sees EOF
      connections_.push_back(std::move(c));
    }
  }

  // Moves bytes from `from` into `buffer`, and from `buffer` to `to`, within the cut budget.
  // Returns false when the connection is over (a side closed and everything was delivered, or
  // an error).
  bool Pump(Connection& c, int from, int to, std::string& buffer, bool& from_eof) {
    char data[16 << 10];
    while (!from_eof && buffer.size() < kBuffer) {
      const ssize_t n = read(from, data, std::min(sizeof(data), kBuffer - buffer.size()));
      if (n > 0) {
        buffer.append(data, size_t(n));
      } else if (n == 0) {
        from_eof = true;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        break;
      } else if (errno != EINTR) {
        return false;
      }
    }
    while (!buffer.empty()) {
      const uint64_t budget = c.cut_at - c.forwarded;
      if (budget == 0) return true;  // the caller cuts
      const size_t len = size_t(std::min<uint64_t>(buffer.size(), budget));
      const ssize_t n = send(to, buffer.data(), len, MSG_NOSIGNAL);
      if (n > 0) {
        buffer.erase(0, size_t(n));
        c.forwarded += uint64_t(n);
        bytes_ += n;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return false;
      }
    }
    if (from_eof && buffer.empty()) shutdown(to, SHUT_WR);
    return true;
  }

  void Run() {
    std::vector<pollfd> fds;
    for (;;) {
      CutKind cut_all_kind = CutKind::kReset;
      bool cut_all = false;
      uint64_t cut_all_request = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) break;
        if (cut_all_requested_ > cut_all_done_) {
          cut_all = true;
          cut_all_kind = cut_all_kind_;
          cut_all_request = cut_all_requested_;
        }
        // (Re)draw the cut points of connections not drawn under the current settings.
        for (Connection& c : connections_) {
          if (c.dead || c.epoch == random_epoch_) continue;
          c.epoch = random_epoch_;
          c.cut_at = random_ ? c.forwarded + std::uniform_int_distribution<uint64_t>(
                                                 random_min_, random_max_)(rng_)
                             : UINT64_MAX;
        }
      }
      if (cut_all) {
        for (Connection& c : connections_) Cut(c, cut_all_kind);
        std::lock_guard<std::mutex> lock(mu_);
        cut_all_done_ = cut_all_request;
        done_cv_.notify_all();
      }
      // Held connections are connected once holding ends.
      if (!hold_.load())
        for (Connection& c : connections_)
          if (!c.dead && c.server < 0) ConnectTarget(c);
      CutKind random_kind;
      {
        std::lock_guard<std::mutex> lock(mu_);
        random_kind = random_kind_;
      }
      for (Connection& c : connections_) {
        if (c.dead || c.server < 0) continue;
        if (!Pump(c, c.client, c.server, c.to_server, c.client_eof) ||
            !Pump(c, c.server, c.client, c.to_client, c.server_eof) ||
            (c.client_eof && c.server_eof && c.to_server.empty() && c.to_client.empty())) {
          CloseConnection(c, CutKind::kClose);  // ended by one side: not a cut
        } else if (c.forwarded >= c.cut_at) {
          Cut(c, random_kind);
        }
      }
      connections_.erase(std::remove_if(connections_.begin(), connections_.end(),
                                        [](const Connection& c) { return c.dead; }),
                         connections_.end());

      fds.clear();
      fds.push_back({wake_fd_, POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});
      for (const Connection& c : connections_) {
        if (c.server < 0) {
          fds.push_back({c.client, 0, 0});  // held: only notice a close
          continue;
        }
        const bool budget = c.forwarded < c.cut_at;
        fds.push_back({c.client,
                       short((!c.client_eof && c.to_server.size() < kBuffer ? POLLIN : 0) |
                             (budget && !c.to_client.empty() ? POLLOUT : 0)),
                       0});
        fds.push_back({c.server,
                       short((!c.server_eof && c.to_client.size() < kBuffer ? POLLIN : 0) |
                             (budget && !c.to_server.empty() ? POLLOUT : 0)),
                       0});
      }
      poll(fds.data(), nfds_t(fds.size()), 100);
      if (fds[0].revents & POLLIN) {
        uint64_t value;
        ssize_t ignored = read(wake_fd_, &value, sizeof(value));
        (void)ignored;
      }
      if (fds[1].revents & POLLIN) Accept();
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_cv_.notify_all();
  }

  std::mutex target_mu_;  // guards target_ (SetTarget from the test thread)
  sockaddr_in target_{};
  std::string error_;
  int listen_fd_ = -1, wake_fd_ = -1, port_ = 0;
  std::thread thread_;
  std::vector<Connection> connections_;  // the proxy thread's alone

  std::mutex mu_;  // guards the members below
  std::condition_variable done_cv_;
  bool stop_ = false;
  uint64_t cut_all_requested_ = 0, cut_all_done_ = 0;
  CutKind cut_all_kind_ = CutKind::kReset;
  bool random_ = false;
  uint64_t random_min_ = 0, random_max_ = 0, random_epoch_ = 0;
  CutKind random_kind_ = CutKind::kReset;
  std::mt19937_64 rng_;

  std::atomic<bool> refuse_{false}, hold_{false};
  std::atomic<int64_t> connections_accepted_{0}, cuts_{0}, bytes_{0};
};

}  // namespace ssm::testing
