#include "server/service/transport_security.h"

#include <fmt/format.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <vector>

namespace ssm {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data found";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

Status OpenFile(const std::string& path, const char* flag, Bio* bio) {
  bio->reset(BIO_new_file(path.c_str(), "r"));
  if (*bio == nullptr) {
    ERR_clear_error();
    return InvalidArgumentError(
        fmt::format("{} {}: cannot read the file: {}", flag, path, std::strerror(errno)));
  }
  return OkStatus();
}

// Every certificate of a PEM file (at least one).
Status ReadCerts(const std::string& path, const char* flag, std::vector<Cert>* certs) {
  Bio bio;
  SSM_RETURN_IF_ERROR(OpenFile(path, flag, &bio));
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs->emplace_back(x);
  ERR_clear_error();  // the end of the file reads as an error
  if (certs->empty())
    return InvalidArgumentError(fmt::format(
        "{} {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it", flag, path));
  return OkStatus();
}

std::string Subject(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(n));
}

}  // namespace

Status CheckTlsFiles(const TlsFiles& files, std::string* summary) {
  if (!files.enabled()) {
    if (!files.key.empty() || !files.client_ca.empty())
      return InvalidArgumentError(
          "--tls-key and --tls-client-ca need --tls-cert (the server's certificate chain)");
    return OkStatus();
  }
  if (files.key.empty())
    return InvalidArgumentError("--tls-cert needs --tls-key (the certificate's private key)");
  if (files.reload_interval_s < 1)
    return InvalidArgumentError("--tls-reload-interval must be at least 1 second");
  std::vector<Cert> chain;
  SSM_RETURN_IF_ERROR(ReadCerts(files.cert, "--tls-cert", &chain));
  Bio key_bio;
  SSM_RETURN_IF_ERROR(OpenFile(files.key, "--tls-key", &key_bio));
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr)
    return InvalidArgumentError(fmt::format(
        "--tls-key {}: no unencrypted PEM private key in it ({})", files.key, OpenSslError()));
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgumentError(
        fmt::format("--tls-key {} is not the private key of the first certificate of --tls-cert {}",
                    files.key, files.cert));
  }
  X509* leaf = chain.front().get();
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
    return InvalidArgumentError(fmt::format(
        "--tls-cert {}: the certificate \"{}\" has expired; renew it", files.cert, Subject(leaf)));
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
    return InvalidArgumentError(
        fmt::format("--tls-cert {}: the certificate \"{}\" is not valid yet (check the clock)",
                    files.cert, Subject(leaf)));
  std::vector<Cert> cas;
  if (!files.client_ca.empty()) {
    SSM_RETURN_IF_ERROR(ReadCerts(files.client_ca, "--tls-client-ca", &cas));
  }
  if (summary != nullptr)
    *summary = fmt::format("TLS with certificate \"{}\" ({} in the chain), re-read every {} s{}",
                           Subject(leaf), chain.size(), files.reload_interval_s,
                           cas.empty() ? ""
                                       : fmt::format("; client certificates required, verified "
                                                     "against {} CA certificates",
                                                     cas.size()));
  return OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  using grpc::experimental::FileWatcherCertificateProvider;
  auto provider = std::make_shared<FileWatcherCertificateProvider>(
      files.key, files.cert, files.client_ca, unsigned(files.reload_interval_s));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!files.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace ssm
