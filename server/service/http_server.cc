#include "server/service/http_server.h"

#include <civetweb.h>
#include <fmt/format.h>
#include <netdb.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string_view>
#include <thread>

#include "server/service/dashboard_assets.h"
#include "server/service/log.h"

namespace ssm {
namespace {

constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextContentType = "text/plain; charset=utf-8";

// Opens and closes one TCP connection to host:port (a wildcard host means this machine).
void Knock(const std::string& host, int port) {
  std::string target = host.empty() || host == "0.0.0.0" || host == "[::]" ? "localhost" : host;
  if (target.size() > 2 && target.front() == '[') target = target.substr(1, target.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(target.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd >= 0) {
    connect(fd, found->ai_addr, found->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(found);
}

// Sends a whole response (HEAD: its headers only) and returns `status`.
int Respond(mg_connection* connection, int status, const char* reason,
            std::string_view content_type, std::string_view body, bool head) {
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            "Connection: close\r\n\r\n",
            status, reason, int(content_type.size()), content_type.data(), body.size());
  if (!head) mg_write(connection, body.data(), body.size());
  return status;
}

}  // namespace

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry) {
  static std::once_flag library_initialised;
  std::call_once(library_initialised, [] { mg_init_library(0); });

  std::unique_ptr<HttpServer> server(
      new HttpServer(address.substr(0, address.rfind(':')), std::move(registry)));
  // Enough threads, and a short timeout, that a few idle or slow clients cannot hold every
  // thread and make Prometheus scrapes fail.
  const char* options[] = {"listening_ports",    address.c_str(), "num_threads", "16",
                           "request_timeout_ms", "3000",          nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* message) {
    log::Warning("http: {}", message);
    return 1;  // logged here, not by civetweb
  };
  mg_init_data init{&callbacks, server.get(), options};
  unsigned error_code = 0;
  char error_text[256] = "";
  mg_error_data error{&error_code, error_text, sizeof error_text};
  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr)
    return UnavailableError(fmt::format("cannot serve HTTP on {}: {}", address,
                                        error_text[0] != '\0' ? error_text : "civetweb failed"));
  mg_server_port ports[4];
  if (mg_get_server_ports(server->context_, 4, ports) < 1)
    return UnavailableError(fmt::format("cannot serve HTTP on {}: no listening port", address));
  server->port_ = ports[0].port;
  mg_set_request_handler(server->context_, "/", &HttpServer::Handle, server.get());
  return server;
}

HttpServer::~HttpServer() {
  if (context_ == nullptr) return;
  // civetweb's listener sees the stop only when its poll returns, which takes up to 2 s on an
  // idle port, so a connection is made every 20 ms until it has stopped: without it every
  // shutdown would take up to 2 s longer.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    mg_stop(context_);
    stopped = true;
  });
  while (!stopped) {
    if (port_ > 0) Knock(host_, port_);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stopper.join();
}

int HttpServer::Handle(mg_connection* connection, void* self) {
  return static_cast<HttpServer*>(self)->HandleRequest(connection);
}

int HttpServer::HandleRequest(mg_connection* connection) {
  const mg_request_info* request = mg_get_request_info(connection);
  const std::string_view method = request->request_method;
  const bool head = method == "HEAD";
  if (method != "GET" && !head)
    return Respond(connection, 405, "Method Not Allowed", kTextContentType,
                   "only GET and HEAD are served\n", false);
  const std::string_view path = request->local_uri;  // without the query string
  if (path == "/metrics") {
    const std::string body = prometheus::TextSerializer().Serialize(registry_->Collect());
    return Respond(connection, 200, "OK", kMetricsContentType, body, head);
  }
  for (size_t i = 0; i < kDashboardAssetCount; ++i) {
    const DashboardAsset& asset = kDashboardAssets[i];
    if (asset.path == path)
      return Respond(connection, 200, "OK", asset.content_type, asset.body, head);
  }
  return Respond(connection, 404, "Not Found", kTextContentType,
                 "not found: the dashboard is at /, Prometheus metrics at /metrics\n", head);
}

}  // namespace ssm
