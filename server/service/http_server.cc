#include "server/service/http_server.h"

#include <fmt/format.h>
#include <microhttpd.h>
#include <netdb.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string_view>
#include <vector>

#include "server/service/dashboard_assets.h"
#include "server/service/listener.h"
#include "server/service/log.h"
#include "server/service/transport_security.h"

namespace ssm {
namespace {

constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextContentType = "text/plain; charset=utf-8";

// libmicrohttpd's messages, into the server log. Most are about one misbehaving client (e.g.
// "closed by remote side with incomplete request"), so at most one a second is logged, with a
// count of those dropped: a flood of bad clients cannot flood the log.
void LogMessage(void*, const char* format, va_list args) {
  static std::mutex mutex;  // guards last and dropped
  static std::chrono::steady_clock::time_point last;
  static int dropped = 0;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex);
  if (last.time_since_epoch().count() != 0 && now - last < std::chrono::seconds(1)) {
    ++dropped;
    return;
  }
  char text[512];
  std::vsnprintf(text, sizeof text, format, args);
  std::string_view message = text;
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  if (dropped > 0)
    log::Warning("http: {} ({} more http messages in the last {:.0f} s not logged)", message,
                 dropped, std::chrono::duration<double>(now - last).count());
  else
    log::Warning("http: {}", message);
  last = now;
  dropped = 0;
}

// Queues a whole response; the library sends only its headers to a HEAD request. `body` must
// outlive the response unless `memory` is MHD_RESPMEM_MUST_COPY.
MHD_Result Respond(MHD_Connection* connection, unsigned status, std::string_view content_type,
                   std::string_view body, MHD_ResponseMemoryMode memory) {
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), memory);
  if (response == nullptr) return MHD_NO;  // out of memory: the connection is closed
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                          std::string(content_type).c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  if (status == MHD_HTTP_UNAUTHORIZED)
    MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                            "Bearer realm=\"ssm-server metrics\"");
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);  // the connection holds it until it is sent
  return queued;
}

// The request handler (the event thread), called once a request's headers are in; `url` is the
// path without the query string. `server` is the HttpServer.
MHD_Result Handle(void* server, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  size_t* /*upload_data_size*/, void** /*request_state*/) {
  const std::string_view m = method;
  if (m != MHD_HTTP_METHOD_GET && m != MHD_HTTP_METHOD_HEAD)
    return Respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, kTextContentType,
                   "only GET and HEAD are served\n", MHD_RESPMEM_PERSISTENT);
  const std::string_view path = url;
  const HttpServer& http = *static_cast<const HttpServer*>(server);
  if (path == "/metrics") {
    if (http.options_.authorize) {
      const char* header =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
      std::string_view value = header != nullptr ? header : "";
      const bool bearer =
          value.size() > 7 && (value.substr(0, 7) == "Bearer " || value.substr(0, 7) == "bearer ");
      if (!bearer || !http.options_.authorize(value.substr(7)))
        return Respond(connection, MHD_HTTP_UNAUTHORIZED, kTextContentType,
                       "this endpoint needs an API key of the server (--metrics-auth): send "
                       "\"Authorization: Bearer KEY\"\n",
                       MHD_RESPMEM_PERSISTENT);
    }
    // Serialised in the event thread: about 10 KB, a whole loopback scrape takes under 1 ms.
    if (http.options_.before_scrape) http.options_.before_scrape();
    const std::string body = prometheus::TextSerializer().Serialize(http.registry_->Collect());
    return Respond(connection, MHD_HTTP_OK, kMetricsContentType, body, MHD_RESPMEM_MUST_COPY);
  }
  if (path == "/healthz") {
    const bool serving = !http.options_.serving || http.options_.serving();
    return Respond(connection, serving ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                   kTextContentType, serving ? "SERVING\n" : "NOT_SERVING\n",
                   MHD_RESPMEM_PERSISTENT);
  }
  for (size_t i = 0; i < kDashboardAssetCount; ++i) {
    const DashboardAsset& asset = kDashboardAssets[i];
    if (asset.path == path)
      return Respond(connection, MHD_HTTP_OK, asset.content_type, asset.body,
                     MHD_RESPMEM_PERSISTENT);
  }
  return Respond(connection, MHD_HTTP_NOT_FOUND, kTextContentType,
                 "not found: the dashboard is at /, Prometheus metrics at /metrics, health at "
                 "/healthz\n",
                 MHD_RESPMEM_PERSISTENT);
}

}  // namespace

unsigned HttpServer::ConnectionLimit() {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY)
    return kMaxConnections;
  return unsigned(std::clamp<rlim_t>(files.rlim_cur / 4, 16, kMaxConnections));
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry,
    const HttpOptions& options) {
  auto fds = ListenSockets(address);
  if (!fds.ok()) return fds.status().WithContext("metrics endpoint");
  // libmicrohttpd takes one socket: of a name's addresses (localhost: ::1 and 127.0.0.1), the
  // first IPv4 one, which is what "localhost" scrapers try first or fall back to.
  int fd = fds->front();
  for (int candidate : *fds) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (getsockname(candidate, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
        addr.ss_family == AF_INET) {
      fd = candidate;
      break;
    }
  }
  for (int other : *fds)
    if (other != fd) close(other);
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(registry), options));
  server->port_ = BoundPort(fd);
  if (server->tls() &&
      !server->ReadTlsFiles(&server->cert_pem_, &server->key_pem_, &server->stamp_)) {
    close(fd);
    return InvalidArgumentError(
        fmt::format("metrics endpoint: cannot read {} and {}", options.tls_cert, options.tls_key));
  }
  SSM_RETURN_IF_ERROR(server->StartDaemon(fd, address));
  if (server->tls()) server->watcher_ = std::thread([s = server.get()] { s->WatchLoop(); });
  return server;
}

Status HttpServer::StartDaemon(int fd, const std::string& address) {
  // MHD_USE_ITC: the destructor wakes the event thread at once instead of at its next event;
  // it also lets WatchLoop quiesce the daemon to restart it on the same socket.
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  std::vector<MHD_OptionItem> tls_options;
  if (tls()) {
    flags |= MHD_USE_TLS;
    tls_options.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(key_pem_.c_str())});
    tls_options.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(cert_pem_.c_str())});
  }
  tls_options.push_back({MHD_OPTION_END, 0, nullptr});
  daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &Handle, this, MHD_OPTION_EXTERNAL_LOGGER,
                             &LogMessage, nullptr, MHD_OPTION_LISTEN_SOCKET, fd,
                             MHD_OPTION_CONNECTION_TIMEOUT, unsigned(kConnectionTimeoutS),
                             MHD_OPTION_CONNECTION_LIMIT, ConnectionLimit(), MHD_OPTION_ARRAY,
                             tls_options.data(), MHD_OPTION_END);
  if (daemon_ == nullptr)  // it has closed `fd` on nearly every such path: no close here
    return UnavailableError(fmt::format("cannot serve HTTP{} on {}: libmicrohttpd failed to start",
                                        tls() ? "S" : "", address));
  return OkStatus();
}

bool HttpServer::ReadTlsFiles(std::string* cert, std::string* key, std::string* stamp) const {
  auto read = [](const std::string& path, std::string* out) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    *out = text.str();
    return bool(in) && !out->empty();
  };
  if (!read(options_.tls_cert, cert) || !read(options_.tls_key, key)) return false;
  *stamp = *cert + *key;
  return true;
}

void HttpServer::WatchLoop() {
  std::unique_lock<std::mutex> lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, std::chrono::seconds(options_.tls_reload_interval_s),
                             [this] { return stop_; })) {
    std::string cert, key, stamp;
    if (!ReadTlsFiles(&cert, &key, &stamp) || stamp == stamp_) continue;
    // Only a pair that loads replaces the one in use (files caught mid-write are not).
    const Status usable = CheckTlsFiles({options_.tls_cert, options_.tls_key, "", 1});
    if (!usable.ok()) {
      log::Warning("metrics endpoint: keeping the TLS certificate in use: {}", usable.message());
      continue;
    }
    // The event thread reads cert_pem_/key_pem_ only while the daemon runs: swap them between.
    const MHD_socket fd = MHD_quiesce_daemon(daemon_);
    if (fd == MHD_INVALID_SOCKET) continue;
    MHD_stop_daemon(daemon_);
    daemon_ = nullptr;
    cert_pem_ = std::move(cert);
    key_pem_ = std::move(key);
    stamp_ = std::move(stamp);
    const Status restarted = StartDaemon(fd, "the metrics port");
    if (restarted.ok())
      log::Info("metrics endpoint: TLS certificate reloaded from {}", options_.tls_cert);
    else
      log::Error("metrics endpoint: {}; metrics are off until a restart", restarted.message());
  }
}

HttpServer::~HttpServer() {
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stop_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);  // joins the event thread, closes the socket
}

}  // namespace ssm
