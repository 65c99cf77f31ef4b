#include "server/model/digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/status.h"

namespace ssm {

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  SSM_CHECK_MSG(ctx_->md != nullptr && EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) == 1,
                "OpenSSL: cannot start a SHA-256 digest");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_->md); }

Sha256& Sha256::Update(const void* data, size_t n) {
  SSM_CHECK_MSG(EVP_DigestUpdate(ctx_->md, data, n) == 1, "OpenSSL: SHA-256 update failed");
  return *this;
}

Digest Sha256::Final() {
  Digest digest;
  unsigned int size = 0;
  SSM_CHECK_MSG(EVP_DigestFinal_ex(ctx_->md, digest.data(), &size) == 1 && size == digest.size(),
                "OpenSSL: SHA-256 final failed");
  return digest;
}

Digest Sha256Of(const void* data, size_t n) { return Sha256().Update(data, n).Final(); }

std::string Hex(const Digest& digest, size_t bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < bytes && i < digest.size(); ++i) {
    hex += kDigits[digest[i] >> 4];
    hex += kDigits[digest[i] & 15];
  }
  return hex;
}

bool DigestsEqual(const Digest& a, const Digest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool RandomBytes(uint8_t* out, size_t n) { return RAND_bytes(out, int(n)) == 1; }

std::string Base64Url(const uint8_t* data, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (size_t i = 0; i < n; ++i) {
    bits = (bits << 8) | data[i];
    count += 8;
    while (count >= 6) {
      count -= 6;
      out += kAlphabet[(bits >> count) & 63];
    }
  }
  if (count > 0) out += kAlphabet[(bits << (6 - count)) & 63];
  return out;
}

}  // namespace ssm
