#include "clients/lib/connect_diagnosis.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace ssm::client {
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// Blocks SIGPIPE on this thread while it lives (OpenSSL writes with write(2), and the server may
// have closed the connection), and discards one raised meanwhile.
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~NoSigpipe() {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_, old_;
};

bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  return true;
}

// A connected blocking socket with send and receive timeouts, or why not.
std::string Connect(const std::string& host, const std::string& port, double timeout_s, Fd* out) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) return fmt::format("cannot resolve \"{}\": {}", host, gai_strerror(rc));
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Fd fd;
    fd.fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd.fd < 0) continue;
    int r = connect(fd.fd, a->ai_addr, a->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      pollfd p{fd.fd, POLLOUT, 0};
      r = poll(&p, 1, int(timeout_s * 1000));
      if (r == 0) {
        error = fmt::format("no answer within {:g} s", timeout_s);
        continue;
      }
      int so_error = 0;
      socklen_t len = sizeof so_error;
      getsockopt(fd.fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      r = so_error == 0 ? 0 : -1;
      errno = so_error;
    }
    if (r != 0) {
      error = std::strerror(errno);
      continue;
    }
    fcntl(fd.fd, F_SETFL, fcntl(fd.fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{};
    tv.tv_sec = long(timeout_s);
    tv.tv_usec = long((timeout_s - double(tv.tv_sec)) * 1e6);
    setsockopt(fd.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::swap(out->fd, fd.fd);
    freeaddrinfo(found);
    return "";
  }
  freeaddrinfo(found);
  return error;
}

// The first queued OpenSSL error's reason code (0 if none); clears the queue.
int ErrorReason(std::string* text) {
  const unsigned long e = ERR_peek_error();
  if (e != 0 && text != nullptr) {
    char buffer[256];
    ERR_error_string_n(e, buffer, sizeof buffer);
    *text = buffer;
  }
  ERR_clear_error();
  return e == 0 ? 0 : ERR_GET_REASON(e);
}

// What a failure with OpenSSL reason `reason` means for the user.
std::string Explain(int reason, const std::string& text, const TlsClientOptions& tls) {
  switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      return "the server does not speak TLS (it runs without --tls-cert): connect without --tls";
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      if (tls.cert_file.empty())
        return "the server requires a client certificate (mutual TLS): pass --tls-cert and "
               "--tls-key";
      return "the server refused the TLS handshake: " + text;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
      return fmt::format(
          "the server does not accept the client certificate {} (is it signed by the server's "
          "--tls-client-ca, and still valid?)",
          tls.cert_file);
    default:
      return text.empty() ? "" : "the TLS handshake failed: " + text;
  }
}

std::string VerifyFailure(long result, const std::string& name, const TlsClientOptions& tls) {
  const char* what = X509_verify_cert_error_string(result);
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "the server's certificate has expired: the server must renew it";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "the server's certificate is not valid yet (check both machines' clocks)";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return fmt::format(
          "the server's certificate is not for \"{}\": connect by a name the certificate lists, "
          "or pass --tls-server-name",
          name);
    default:
      return fmt::format(
          "the server's certificate is not trusted ({}): pass the CA that signed "
          "it with --tls-ca{}",
          what, tls.ca_file.empty() ? "" : " (not " + tls.ca_file + ")");
  }
}

}  // namespace

std::string DiagnoseConnection(const std::string& address, const TlsClientOptions& tls,
                               double timeout_s) {
  timeout_s = std::clamp(timeout_s, 0.2, 5.0);
  const NoSigpipe no_sigpipe;
  std::string host, port;
  if (!SplitAddress(address, &host, &port)) return "expected HOST:PORT, e.g. localhost:50051";
  Fd fd;
  const std::string unreachable = Connect(host, port, timeout_s, &fd);
  if (!unreachable.empty())
    return fmt::format("{}; check that the server is running and that the address is right",
                       unreachable);

  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) return "";
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof kAlpn);
  const std::string name = tls.server_name.empty() ? host : tls.server_name;
  if (tls.on()) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (tls.ca_file.empty()
            ? SSL_CTX_set_default_verify_paths(ctx.get()) != 1
            : SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr) != 1) {
      ERR_clear_error();
      return fmt::format("cannot load the CA certificates of --tls-ca {}", tls.ca_file);
    }
    if (!tls.cert_file.empty() &&
        (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
      ERR_clear_error();
      return fmt::format("cannot use the client certificate {} with the key {}", tls.cert_file,
                         tls.key_file);
    }
  }
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  if (ssl == nullptr) return "";
  SSL_set_fd(ssl.get(), fd.fd);
  if (tls.on()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) {
      ERR_clear_error();
      X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
      SSL_set_tlsext_host_name(ssl.get(), name.c_str());
    }
  }
  std::string text;
  if (SSL_connect(ssl.get()) != 1) {
    const long verify = SSL_get_verify_result(ssl.get());
    const int reason = ErrorReason(&text);
    if (!tls.on()) {
      // A plain-text server answers a ClientHello with HTTP/2 bytes, not a ServerHello.
      return "";
    }
    if (verify != X509_V_OK) return VerifyFailure(verify, name, tls);
    return Explain(reason, text, tls);
  }
  if (!tls.on())
    return "the server speaks TLS: connect with --tls (and --tls-ca when its certificate is "
           "signed by a private CA)";
  // TLS 1.3: the server judges the client's certificate after the client's handshake is done;
  // a refusal arrives as an alert on the first read.
  char buffer[64];
  if (SSL_read(ssl.get(), buffer, sizeof buffer) <= 0) {
    const bool timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
    const int reason = ErrorReason(&text);
    if (reason != 0 && reason != SSL_R_UNEXPECTED_EOF_WHILE_READING)
      return Explain(reason, text, tls);
    // Closed right after the handshake, without an alert: what a server does with a client
    // certificate it requires and did not get, or does not accept.
    if (!timed_out)
      return tls.cert_file.empty()
                 ? "the server closed the connection after the TLS handshake: it requires a "
                   "client certificate (mutual TLS): pass --tls-cert and --tls-key"
                 : fmt::format(
                       "the server closed the connection after the TLS handshake: it "
                       "does not accept the client certificate {} (is it signed by the "
                       "server's --tls-client-ca, and still valid?)",
                       tls.cert_file);
  }
  ERR_clear_error();
  return "";
}

}  // namespace ssm::client
