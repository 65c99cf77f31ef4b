// The API keys file of --auth-keys (docs/design.md §8): who may call the server, on which models,
// with which limits. One identity per line:
//
//   # ID        CREDENTIAL                          MODELS             MAX_STREAMS  OPENS/MIN
//   alice       sha256:9f86d081884c7d659a2feaa0...  speech-activity    10           60
//   batch-jobs  sha256:60303ae22b998861bce3b28f...  *                  -            -
//   camera-7    subject:"CN=camera-7,O=Example"     vad,speech-activity 4           30
//
// Fields are separated by spaces or tabs; a field may be double-quoted (for a subject with
// spaces; \" and \\ escape inside quotes). `#` starts a comment outside quotes.
// - ID: [A-Za-z0-9._-], 1 to 64 characters, unique. Logs and metrics name a caller by it.
// - CREDENTIAL: `sha256:HEX`, the SHA-256 of the secret a client sends as `authorization:
//   Bearer SECRET` (the file never holds the secret), or `subject:SUBJECT`, the subject of a
//   verified client certificate (mutual TLS) as RFC 2253 text, e.g. CN=camera-7,O=Example.
// - MODELS: comma-separated served-model names, or `*` for every model.
// - MAX_STREAMS: calls (Stream and ProcessFile) open at once; `-` for no limit.
// - OPENS/MIN: calls opened in any 60 s; `-` for no limit. A resume is not an open.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "server/model/digest.h"

namespace ssm {

// Longest key id; ids are metric label values and snapshot owners.
inline constexpr size_t kMaxKeyIdBytes = 64;

struct KeyEntry {
  enum class Kind { kSecret, kCertSubject };
  std::string id;
  Kind kind = Kind::kSecret;
  Digest secret_hash{};             // kSecret: SHA-256 of the secret
  std::string subject;              // kCertSubject: the client certificate's RFC 2253 subject
  std::vector<std::string> models;  // empty: every model (`*`)
  int max_streams = 0;              // 0: no limit
  int max_opens_per_minute = 0;     // 0: no limit
  int line = 0;                     // in the file, for messages

  bool MayUse(const std::string& model) const;
  // Same kind and same hash or subject.
  bool SameCredential(const KeyEntry& other) const;
  // "models a,b" or "every model", for messages.
  std::string ModelsText() const;
};

// Parses a whole keys file; `source` names it in messages. INVALID_ARGUMENT naming the line and
// field for the first bad line; also for a repeated id or credential. An empty file (or only
// comments) is valid: nobody may call.
StatusOr<std::vector<KeyEntry>> ParseKeyFile(std::string_view text, const std::string& source);

// The line ParseKeyFile reads back as `entry` (quoting the subject when needed).
std::string FormatKeyLine(const KeyEntry& entry);
// Its CREDENTIAL field: sha256:HEX or subject:SUBJECT.
std::string CredentialField(const KeyEntry& entry);

// A new secret: "ssk_" and 256 random bits, base64url. UNAVAILABLE if the random source fails.
StatusOr<std::string> NewSecret();

// The digest a secret is stored as.
inline Digest SecretHash(std::string_view secret) { return Sha256Of(secret.data(), secret.size()); }

}  // namespace ssm
