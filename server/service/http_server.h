// ssm-server's HTTP endpoint (--metrics-listen), on GNU libmicrohttpd: Prometheus metrics at
// /metrics and the live web dashboard (clients/dashboard) at / and /static/<file>, which polls
// /metrics. GET and HEAD only, no keep-alive.
//
// One event thread (epoll) serves every connection, so a slow or silent client holds only a
// connection slot, never a thread: scrapes stay prompt however many such clients there are, up
// to the connection limit, and each of them is closed after kConnectionTimeoutS without progress.
#pragma once

#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "kernels/base/status.h"

struct MHD_Daemon;

namespace ssm {

class HttpServer {
 public:
  // A connection that sends or accepts nothing for this long is closed (a scrape sends its
  // request at once, so only stalled clients reach it).
  static constexpr int kConnectionTimeoutS = 3;
  // Connections served at once, at most; fewer when RLIMIT_NOFILE is low (see ConnectionLimit).
  static constexpr unsigned kMaxConnections = 1000;

  // Listens on `address` (HOST:PORT; port 0 picks a free port) and serves `registry`.
  static StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);

  // The connection limit Start uses: kMaxConnections, but at most a quarter of the soft
  // RLIMIT_NOFILE, so that HTTP clients can never take the file descriptors gRPC needs.
  static unsigned ConnectionLimit();

  // Stops serving at once: closes every connection, a response in progress included.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

 private:
  explicit HttpServer(std::shared_ptr<prometheus::Registry> registry)
      : registry_(std::move(registry)) {}

  const std::shared_ptr<prometheus::Registry> registry_;  // read by the event thread
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace ssm
