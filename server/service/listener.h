// ssm-server's TCP listener: owns the listening sockets and the accept loop, and hands each new
// connection to gRPC (its external-connection acceptor), which does the HTTP/2 handshake with the
// server's credentials and --handshake-timeout.
//
// Why not gRPC's own listener: when accept() fails with EMFILE/ENFILE (out of file descriptors),
// the listener of the gRPC release this builds against stops listening for good, and the server
// serves nothing more even once descriptors are free. This loop never stops: while descriptors
// are exhausted it accepts each new connection on a reserved descriptor and refuses it at once
// (an HTTP/2 GOAWAY, ENHANCE_YOUR_CALM, then close), so clients fail fast with UNAVAILABLE
// instead of waiting in the accept queue, and it serves again as soon as descriptors are free
// (with a warning in the log while refusing, and a line when it recovers).
//
// Threading: one accept thread; Start and Stop from the owner's thread.
#pragma once

#include <grpcpp/server_builder.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace ssm {

// Listening sockets (non-blocking, close-on-exec) for HOST:PORT: port 0 picks a free port; a
// wildcard host ("0.0.0.0", "[::]", "*" or "") gives one socket for every address, IPv6 and IPv4;
// a name such as "localhost" one socket for each address it resolves to, all on one port.
StatusOr<std::vector<int>> ListenSockets(const std::string& address);
// Splits HOST:PORT ("[v6]:PORT" too, without the brackets); INVALID_ARGUMENT without a port.
Status SplitHostPort(const std::string& address, std::string* host, std::string* port);
// The port a socket is bound to; 0 if unknown.
int BoundPort(int fd);

class Listener {
 public:
  using Acceptor = grpc::experimental::ExternalConnectionAcceptor;

  // Binds and listens on HOST:PORT (see ListenSockets). Accepting starts with StartAccepting.
  static StatusOr<std::unique_ptr<Listener>> Bind(const std::string& address);
  ~Listener();  // Stop()

  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int port() const { return port_; }

  // Starts the accept thread; every accepted connection goes to `acceptor` (which must outlive
  // Stop). `acceptor` comes from ServerBuilder::experimental().AddExternalConnectionAcceptor and
  // the server must already be started.
  void StartAccepting(std::unique_ptr<Acceptor> acceptor);
  // Stops accepting and closes the listening sockets; connections already handed over stay.
  void Stop();

 private:
  Listener() = default;
  enum class AcceptResult {
    kDrained,  // the accept queue is empty
    kRefused,  // out of descriptors: every pending connection was refused
    kStuck,    // out of descriptors, and not even one could be accepted to refuse it
    kFailed,   // accept failed for a reason that will not pass by itself (logged)
  };
  void Run();  // the accept thread
  // Accepts every pending connection of `listen_fd` and hands it to gRPC (*accepted is set if
  // any was); out of descriptors, refuses the rest (RefusePending).
  AcceptResult AcceptAll(int listen_fd, bool* accepted);
  // Out of descriptors: accepts each pending connection on the reserved descriptor, refuses it
  // and reserves the descriptor again.
  AcceptResult RefusePending(int listen_fd);

  std::vector<int> fds_;  // listening sockets
  int port_ = 0;
  int wake_fd_ = -1;     // eventfd: Stop wakes the accept thread
  int reserve_fd_ = -1;  // /dev/null, given up to accept-and-refuse when out of descriptors
  std::unique_ptr<Acceptor> acceptor_;
  int64_t refused_ = 0;   // connections refused for want of descriptors (accept thread)
  int failed_errno_ = 0;  // of the last kFailed accept (accept thread)
  std::thread thread_;
};

}  // namespace ssm
