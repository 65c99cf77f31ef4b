// ssm-server's HTTP endpoint (--metrics-listen), on civetweb: Prometheus metrics at /metrics
// and the live web dashboard (clients/dashboard) at / and /static/<file>, which polls
// /metrics. GET and HEAD only; a few worker threads, no keep-alive.
#pragma once

#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "kernels/base/status.h"

struct mg_connection;
struct mg_context;

namespace ssm {

class HttpServer {
 public:
  // Listens on `address` (HOST:PORT; port 0 picks a free port) and serves `registry`.
  static StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);

  // Stops serving; requests in progress finish first.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

 private:
  HttpServer(std::string host, std::shared_ptr<prometheus::Registry> registry)
      : host_(std::move(host)), registry_(std::move(registry)) {}

  // civetweb's request handler (worker threads); returns the HTTP status sent.
  static int Handle(mg_connection* connection, void* self);
  int HandleRequest(mg_connection* connection);

  const std::string host_;  // as given in the address, for the stop (see the .cc)
  const std::shared_ptr<prometheus::Registry> registry_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace ssm
