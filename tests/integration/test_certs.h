// Certificates made at run time with OpenSSL's libcrypto, for the TLS tests: a CA, and leaf
// certificates it signs (servers for localhost and 127.0.0.1, clients with a subject) valid over
// any window, expired ones included. Written as PEM files into a directory. Header-only.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <string>

namespace ssm::testing {

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* c) const { X509_free(c); }
};

// A key pair and its certificate, kept for signing others.
struct Issued {
  std::unique_ptr<EVP_PKEY, KeyFree> key;
  std::unique_ptr<X509, CertFree> cert;
  std::string cert_path, key_path;  // where they were written
};

struct CertSpec {
  std::string common_name = "localhost";
  std::string organization;   // "" = none
  long valid_from_s = -3600;  // relative to now
  long valid_to_s = 86400;
  bool is_ca = false;
  bool server = true;  // SANs DNS:localhost and IP:127.0.0.1, server auth; false: client auth
};

inline void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext != nullptr) {
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
}

// Makes `spec`, signed by `issuer` (nullptr: self-signed), and writes NAME.pem and NAME.key
// into `dir`. Returns an Issued with null members on failure.
inline Issued MakeCert(const std::string& dir, const std::string& name, const CertSpec& spec,
                       const Issued* issuer) {
  Issued out;
  out.key.reset(EVP_EC_gen("P-256"));
  out.cert.reset(X509_new());
  X509* cert = out.cert.get();
  X509_set_version(cert, 2);
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), spec.valid_from_s);
  X509_gmtime_adj(X509_getm_notAfter(cert), spec.valid_to_s);
  X509_set_pubkey(cert, out.key.get());
  X509_NAME* subject = X509_get_subject_name(cert);
  if (!spec.organization.empty())
    X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(spec.organization.c_str()),
                               -1, -1, 0);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1,
                             -1, 0);
  X509* signer = issuer != nullptr ? issuer->cert.get() : cert;
  X509_set_issuer_name(cert, X509_get_subject_name(signer));
  if (spec.is_ca) {
    AddExtension(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(cert, signer, NID_basic_constraints, "CA:FALSE");
    if (spec.server) {
      AddExtension(cert, signer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
      AddExtension(cert, signer, NID_ext_key_usage, "serverAuth");
    } else {
      AddExtension(cert, signer, NID_ext_key_usage, "clientAuth");
    }
  }
  EVP_PKEY* signing_key = issuer != nullptr ? issuer->key.get() : out.key.get();
  if (X509_sign(cert, signing_key, EVP_sha256()) == 0) return Issued{};
  out.cert_path = dir + "/" + name + ".pem";
  out.key_path = dir + "/" + name + ".key";
  FILE* f = std::fopen(out.cert_path.c_str(), "w");
  if (f == nullptr) return Issued{};
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen(out.key_path.c_str(), "w");
  if (f == nullptr) return Issued{};
  PEM_write_PrivateKey(f, out.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  return out;
}

}  // namespace ssm::testing
