// Minimal HTTP/1.0 GET and Prometheus text lookup for the integration tests that read the
// server's metrics endpoint. Header-only; POSIX.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>

namespace ssm::testing {

struct HttpResponse {
  int status = 0;  // 0: no response
  std::string headers;
  std::string body;
};

// GET http://127.0.0.1:port/path (HTTP/1.0: the server closes after the response), with
// `headers` ("Name: value\r\n" each) added; with `tls_ca`, https:// verified against that CA
// file (status 0 when the handshake fails).
inline HttpResponse HttpGet(int port, const std::string& path, const std::string& headers = "",
                            const std::string& tls_ca = "") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
  if (!tls_ca.empty()) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_load_verify_locations(ctx, tls_ca.c_str(), nullptr);
    SSL* ssl = SSL_new(ctx);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) == 1 && SSL_write(ssl, request.data(), int(request.size())) > 0) {
        char buffer[4096];
        for (int n; (n = SSL_read(ssl, buffer, sizeof buffer)) > 0;)
          response.append(buffer, size_t(n));
      }
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  } else if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    if (write(fd, request.data(), request.size()) == ssize_t(request.size())) {
      char buffer[4096];
      for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;)
        response.append(buffer, size_t(n));
    }
  }
  close(fd);
  HttpResponse result;
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos || response.compare(0, 9, "HTTP/1.1 ") != 0) return result;
  result.status = std::atoi(response.c_str() + 9);
  result.headers = response.substr(0, body);
  result.body = response.substr(body + 4);
  return result;
}

// The value of the sample `series` (name and labels exactly as exposed, labels sorted by name)
// in a Prometheus text exposition; NaN when absent.
inline double Sample(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);)
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  return std::nan("");
}

}  // namespace ssm::testing
