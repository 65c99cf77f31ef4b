// SHA-256 (OpenSSL's libcrypto) for model fingerprints, snapshot checksums and resume-token
// hashes (docs/design.md §7), and the small encodings those travel in.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ssm {

using Digest = std::array<uint8_t, 32>;

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& Update(const void* data, size_t n);
  Sha256& Update(const std::string& bytes) { return Update(bytes.data(), bytes.size()); }
  Digest Final();  // the hasher is spent afterwards

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

Digest Sha256Of(const void* data, size_t n);
inline Digest Sha256Of(const std::string& bytes) { return Sha256Of(bytes.data(), bytes.size()); }

// Lower-case hex of the first `bytes` bytes of `digest`.
std::string Hex(const Digest& digest, size_t bytes = 32);

// Compares two digests in time independent of where they differ.
bool DigestsEqual(const Digest& a, const Digest& b);

// `n` bytes from the operating system's random source (OpenSSL RAND_bytes); false on failure.
bool RandomBytes(uint8_t* out, size_t n);

// base64url (RFC 4648 §5) without padding.
std::string Base64Url(const uint8_t* data, size_t n);

}  // namespace ssm
