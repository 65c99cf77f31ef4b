#include "server/service/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "server/service/log.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;

// How long the accept loop waits before trying again when it could not even refuse a
// connection (no descriptor at all to accept one on).
constexpr int kStuckBackoffMs = 50;
// At most one "out of file descriptors" warning per this many seconds.
constexpr std::chrono::seconds kWarningPeriod(10);

// What a refused connection gets before it is closed: GOAWAY(last stream 0, ENHANCE_YOUR_CALM)
// with the reason as debug data, for whoever looks at the bytes. It comes without the server's
// SETTINGS preface on purpose: gRPC clients then count the attempt as a failed connection and
// fail the call with UNAVAILABLE at once (after a SETTINGS they would retry on a new connection
// until their deadline).
// Frame header: 24-bit length, 8-bit type, 8-bit flags, 31-bit stream id (RFC 9113 §4.1).
std::string RefusalBytes() {
  static const std::string bytes = [] {
    const std::string reason = "server out of file descriptors; retry later";
    std::string b;
    auto put32 = [&b](uint32_t v) {
      for (int shift = 24; shift >= 0; shift -= 8) b.push_back(char((v >> shift) & 0xff));
    };
    const uint32_t length = 8 + uint32_t(reason.size());
    b.push_back(char(length >> 16));
    b.push_back(char(length >> 8));
    b.push_back(char(length));
    b.append("\x07\x00\x00\x00\x00\x00", 6);  // GOAWAY, no flags, stream 0
    put32(0);                                 // last stream id
    put32(0xb);                               // ENHANCE_YOUR_CALM
    b += reason;
    return b;
  }();
  return bytes;
}

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::" || host == "*";
}

// A listening socket bound to `addr`, or -1 with *error set.
int ListenOn(const sockaddr* addr, socklen_t len, bool dual_stack, std::string* error) {
  const int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return -1;
  }
  const int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->sa_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &zero : &one, sizeof one);
  if (bind(fd, addr, len) != 0 || listen(fd, SOMAXCONN) != 0) {
    *error = std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

void SetPort(sockaddr* addr, int port) {
  if (addr->sa_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(addr)->sin6_port = htons(uint16_t(port));
  else
    reinterpret_cast<sockaddr_in*>(addr)->sin_port = htons(uint16_t(port));
}

uint64_t DescriptorLimit() {
  rlimit limit{};
  return getrlimit(RLIMIT_NOFILE, &limit) == 0 ? uint64_t(limit.rlim_cur) : 0;
}

}  // namespace

Status SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size())
    return InvalidArgumentError(
        fmt::format("\"{}\": expected HOST:PORT, e.g. 0.0.0.0:50051", address));
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  return OkStatus();
}

StatusOr<std::vector<int>> ListenSockets(const std::string& address) {
  std::string host, port_text;
  SSM_RETURN_IF_ERROR(SplitHostPort(address, &host, &port_text));
  std::vector<int> fds;
  std::string error;
  if (IsWildcard(host)) {
    // [::] with IPV6_V6ONLY off takes IPv4 too; 0.0.0.0 where IPv6 is off.
    char* end = nullptr;
    const long port = std::strtol(port_text.c_str(), &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
      return InvalidArgumentError(fmt::format("\"{}\": bad port", address));
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    sockaddr_in any4{};
    any4.sin_family = AF_INET;
    any4.sin_addr.s_addr = htonl(INADDR_ANY);
    SetPort(reinterpret_cast<sockaddr*>(&any6), int(port));
    SetPort(reinterpret_cast<sockaddr*>(&any4), int(port));
    int fd = ListenOn(reinterpret_cast<sockaddr*>(&any6), sizeof any6, true, &error);
    if (fd < 0) fd = ListenOn(reinterpret_cast<sockaddr*>(&any4), sizeof any4, false, &error);
    if (fd >= 0) fds.push_back(fd);
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &found);
    if (rc != 0)
      return InvalidArgumentError(
          fmt::format("cannot resolve \"{}\": {}", address, gai_strerror(rc)));
    // Every address of the name, all on the port the first one got (port 0: a free port).
    int port = 0;
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      if (port != 0) SetPort(a->ai_addr, port);
      std::string this_error;
      const int fd = ListenOn(a->ai_addr, a->ai_addrlen, false, &this_error);
      if (fd < 0) {
        if (error.empty()) error = this_error;
        continue;
      }
      fds.push_back(fd);
      if (port == 0) port = BoundPort(fd);
    }
    freeaddrinfo(found);
  }
  if (fds.empty()) return UnavailableError(fmt::format("cannot listen on {}: {}", address, error));
  return fds;
}

int BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return 0;
}

StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& address) {
  std::unique_ptr<Listener> listener(new Listener());
  SSM_ASSIGN_OR_RETURN(listener->fds_, ListenSockets(address));
  listener->port_ = BoundPort(listener->fds_.front());
  listener->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  listener->reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (listener->wake_fd_ < 0 || listener->reserve_fd_ < 0)
    return UnavailableError(fmt::format("cannot listen on {}: {}", address, std::strerror(errno)));
  return listener;
}

Listener::~Listener() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void Listener::StartAccepting(std::unique_ptr<Acceptor> acceptor) {
  acceptor_ = std::move(acceptor);
  thread_ = std::thread([this] { Run(); });
}

void Listener::Stop() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int fd : fds_) close(fd);
  fds_.clear();
}

void Listener::Run() {
  std::vector<pollfd> polled;
  for (int fd : fds_) polled.push_back({fd, POLLIN, 0});
  polled.push_back({wake_fd_, POLLIN, 0});
  bool stuck = false;       // the last pass could not accept even to refuse: back off
  bool out_of_fds = false;  // refusing since the last pass that accepted normally
  Clock::time_point last_warning{};
  for (;;) {
    // While stuck only the wake-up is watched, so a full accept queue cannot spin the loop.
    pollfd* watched = stuck ? &polled.back() : polled.data();
    const nfds_t count = stuck ? 1 : nfds_t(polled.size());
    if (poll(watched, count, stuck ? kStuckBackoffMs : -1) < 0 && errno != EINTR) {
      log::Error("listener: poll failed: {}", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(kStuckBackoffMs));
      continue;
    }
    if (polled.back().revents != 0) return;  // Stop
    // The reserve is given up to refuse a connection; if another thread took the descriptor
    // before it could be re-reserved, take it back as soon as there is one.
    if (reserve_fd_ < 0) reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    bool short_of_fds = false, accepted = false, failing = false;
    for (size_t i = 0; i + 1 < polled.size(); ++i) {
      const short events = stuck ? short(POLLIN) : polled[i].revents;
      if ((events & (POLLERR | POLLHUP | POLLNVAL)) != 0 && (events & POLLIN) == 0) {
        failing = true;  // a broken socket would wake every poll at once: back off
        continue;
      }
      if ((events & POLLIN) == 0) continue;
      const AcceptResult r = AcceptAll(polled[i].fd, &accepted);
      short_of_fds |= r == AcceptResult::kRefused || r == AcceptResult::kStuck;
      failing |= r == AcceptResult::kFailed;
    }
    stuck = (short_of_fds && !accepted) || failing;
    const Clock::time_point now = Clock::now();
    if (failing && now - last_warning >= kWarningPeriod) {
      last_warning = now;
      log::Error("listener: accept keeps failing ({}); retrying every {} ms",
                 failed_errno_ != 0 ? std::strerror(failed_errno_) : "socket error",
                 kStuckBackoffMs);
    }
    if (short_of_fds) {
      out_of_fds = true;
      if (now - last_warning >= kWarningPeriod) {
        last_warning = now;
        log::Warning(
            "listener: out of file descriptors (limit {}): refusing new connections "
            "until some close ({} refused so far)",
            DescriptorLimit(), refused_);
      }
    } else if (out_of_fds && accepted) {
      out_of_fds = false;
      log::Info(
          "listener: accepting connections again ({} refused in all while out of file "
          "descriptors)",
          refused_);
    }
  }
}

Listener::AcceptResult Listener::AcceptAll(int listen_fd, bool* accepted) {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as gRPC's own listener
      Acceptor::NewConnectionParameters p;
      p.listener_fd = listen_fd;
      p.fd = fd;  // gRPC owns it from here
      acceptor_->HandleNewConnection(&p);
      *accepted = true;
      continue;
    }
    switch (errno) {
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
        return AcceptResult::kDrained;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        return RefusePending(listen_fd);
      case ECONNABORTED:
      case EINTR:
      case EPROTO:
      case EPERM:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
        continue;  // that connection is gone (accept(2) says to retry): go on
      default:     // EBADF, EINVAL, ENOTSOCK, ...: the listening socket itself is broken
        failed_errno_ = errno;
        return AcceptResult::kFailed;
    }
  }
}

Listener::AcceptResult Listener::RefusePending(int listen_fd) {
  const std::string& refusal = RefusalBytes();
  for (;;) {
    if (reserve_fd_ >= 0) {
      close(reserve_fd_);
      reserve_fd_ = -1;
    }
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int accept_errno = errno;
    if (fd >= 0) {
      (void)!send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(fd);
      ++refused_;
    }
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (accept_errno == EAGAIN || accept_errno == EWOULDBLOCK) return AcceptResult::kRefused;
      if (accept_errno == ECONNABORTED || accept_errno == EINTR) continue;
      return AcceptResult::kStuck;
    }
    if (reserve_fd_ < 0) return AcceptResult::kStuck;  // another thread took the descriptor
  }
}

}  // namespace ssm
