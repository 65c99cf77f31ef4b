// ssm-server's HTTP endpoint (--metrics-listen), on GNU libmicrohttpd: Prometheus metrics at
// /metrics and the live web dashboard (clients/dashboard) at / and /static/<file>, which polls
// /metrics, and /healthz for probes that cannot speak gRPC over TLS (kubelet's): 200 SERVING while
// the server takes calls, 503 NOT_SERVING before and from the start of its drain. GET and HEAD
// only, no keep-alive.
//
// One event thread (epoll) serves every connection, so a slow or silent client holds only a
// connection slot, never a thread: scrapes stay prompt however many such clients there are, up
// to the connection limit, and each of them is closed after kConnectionTimeoutS without progress.
//
// Security (docs/design.md §8): with a certificate it serves HTTPS only (GnuTLS, inside
// libmicrohttpd), and re-reads the files every reload interval: a changed pair restarts the
// daemon on the same socket (a scrape in progress then fails and is retried on the next poll).
// With an authorizer, /metrics needs "Authorization: Bearer KEY" (401 otherwise); the dashboard's
// page and scripts and /healthz hold no data and stay open, and the page asks for the key.
#pragma once

#include <prometheus/registry.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"

struct MHD_Daemon;

namespace ssm {

struct HttpOptions {
  std::string tls_cert, tls_key;  // PEM files; "" = plain HTTP
  int tls_reload_interval_s = 10;
  // Set: /metrics answers only a request whose bearer key it accepts.
  std::function<bool(std::string_view key)> authorize;
  // Whether the server takes calls, for /healthz; unset: always.
  std::function<bool()> serving;
  // Called before each /metrics scrape is collected (series read rather than counted); may be
  // unset.
  std::function<void()> before_scrape;
};

class HttpServer {
 public:
  // A connection that sends or accepts nothing for this long is closed (a scrape sends its
  // request at once, so only stalled clients reach it).
  static constexpr int kConnectionTimeoutS = 3;
  // Connections served at once, at most; fewer when RLIMIT_NOFILE is low (see ConnectionLimit).
  static constexpr unsigned kMaxConnections = 1000;

  // Listens on `address` (HOST:PORT; port 0 picks a free port) and serves `registry`.
  static StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address,
                                                     std::shared_ptr<prometheus::Registry> registry,
                                                     const HttpOptions& options = {});

  // The connection limit Start uses: kMaxConnections, but at most a quarter of the soft
  // RLIMIT_NOFILE, so that HTTP clients can never take the file descriptors gRPC needs.
  static unsigned ConnectionLimit();

  // Stops serving at once: closes every connection, a response in progress included.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  bool tls() const { return !options_.tls_cert.empty(); }

  // Read by the event thread (the request handler).
  const std::shared_ptr<prometheus::Registry> registry_;
  const HttpOptions options_;

 private:
  HttpServer(std::shared_ptr<prometheus::Registry> registry, const HttpOptions& options)
      : registry_(std::move(registry)), options_(options) {}
  // Starts the daemon on `fd` with the certificate in cert_pem_/key_pem_ (when TLS).
  Status StartDaemon(int fd, const std::string& address);
  // Reads the TLS files into *cert, *key and their stamp; false if unreadable.
  bool ReadTlsFiles(std::string* cert, std::string* key, std::string* stamp) const;
  void WatchLoop();  // TLS: restarts the daemon when the files change

  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
  std::string cert_pem_, key_pem_, stamp_;  // of the running daemon (it reads the PEM strings)
  std::mutex watch_mu_;                     // guards stop_
  std::condition_variable watch_cv_;
  bool stop_ = false;
  std::thread watcher_;
};

}  // namespace ssm
