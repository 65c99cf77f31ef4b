// Raw TCP connections to the server for the tests of misbehaving clients: one that connects and
// sends nothing, and a wait for the server to close it. Header-only; POSIX.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace ssm::testing {

// A TCP connection to 127.0.0.1:port that sends nothing; -1 if it could not connect.
inline int ConnectSilently(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Waits up to `timeout` for the peer to close `fd` (reading and discarding what it sends);
// true when it did.
inline bool ClosedByPeerWithin(int fd, std::chrono::milliseconds timeout,
                               std::string* received = nullptr) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, int(left)) <= 0) continue;
    char buffer[4096];
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return true;  // EOF or reset
    if (received != nullptr) received->append(buffer, size_t(n));
  }
}

}  // namespace ssm::testing
