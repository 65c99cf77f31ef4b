#include "server/service/api_keys.h"

#include <fmt/format.h>

#include <cstdlib>
#include <set>

namespace ssm {
namespace {

// Largest limit accepted in the file (a typo such as 1e9 streams is more likely than intent).
constexpr long kMaxLimit = 1000000;
constexpr size_t kMaxSubjectBytes = 1024;
constexpr size_t kMaxLineBytes = 8192;

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Splits a line into fields (quotes and comments as in api_keys.h).
Status SplitFields(std::string_view line, std::vector<std::string>* fields) {
  size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (c == ' ' || c == '\t' || c == '\r') {
      ++i;
      continue;
    }
    if (c == '#') break;
    std::string field;
    bool quoted = false;
    while (i < line.size()) {
      const char d = line[i];
      if (!quoted && (d == ' ' || d == '\t' || d == '\r' || d == '#')) break;
      if (d == '"') {
        quoted = !quoted;
        ++i;
        continue;
      }
      if (quoted && d == '\\' && i + 1 < line.size() &&
          (line[i + 1] == '"' || line[i + 1] == '\\')) {
        field.push_back(line[i + 1]);
        i += 2;
        continue;
      }
      field.push_back(d);
      ++i;
    }
    if (quoted) return InvalidArgumentError("a quote is not closed");
    fields->push_back(std::move(field));
  }
  return OkStatus();
}

// "-" is 0 (no limit); otherwise a whole number in [1, kMaxLimit].
Status ParseLimit(const std::string& text, const char* what, int* out) {
  if (text == "-") {
    *out = 0;
    return OkStatus();
  }
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || text[0] == '+' || text[0] == '-' || v < 1 || v > kMaxLimit)
    return InvalidArgumentError(
        fmt::format("{} \"{}\": expected a whole number from 1 to {}, or - for no limit", what,
                    text, kMaxLimit));
  *out = int(v);
  return OkStatus();
}

Status ParseHexDigest(const std::string& hex, Digest* out) {
  if (hex.size() != 64)
    return InvalidArgumentError(fmt::format(
        "sha256: expects 64 hex digits, got {} (write the hash of the secret, never the secret; "
        "`ssm-keys new` prints the line)",
        hex.size()));
  for (size_t i = 0; i < 32; ++i) {
    int v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      int d;
      if (c >= '0' && c <= '9')
        d = c - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
      else
        return InvalidArgumentError(fmt::format("sha256: \"{}\" is not a hex digit", c));
      v = v * 16 + d;
    }
    (*out)[i] = uint8_t(v);
  }
  return OkStatus();
}

Status ParseLine(const std::vector<std::string>& f, KeyEntry* e) {
  if (f.size() != 5)
    return InvalidArgumentError(fmt::format(
        "{} fields; expected 5: ID CREDENTIAL MODELS MAX_STREAMS OPENS_PER_MINUTE", f.size()));
  e->id = f[0];
  if (e->id.empty() || e->id.size() > kMaxKeyIdBytes)
    return InvalidArgumentError(fmt::format("key id must be 1 to {} characters", kMaxKeyIdBytes));
  for (char c : e->id)
    if (!IsIdChar(c))
      return InvalidArgumentError(
          fmt::format("key id \"{}\": only letters, digits, '.', '_' and '-' are allowed", e->id));
  const std::string& cred = f[1];
  if (cred.rfind("sha256:", 0) == 0) {
    e->kind = KeyEntry::Kind::kSecret;
    SSM_RETURN_IF_ERROR(ParseHexDigest(cred.substr(7), &e->secret_hash));
  } else if (cred.rfind("subject:", 0) == 0) {
    e->kind = KeyEntry::Kind::kCertSubject;
    e->subject = cred.substr(8);
    if (e->subject.empty() || e->subject.size() > kMaxSubjectBytes)
      return InvalidArgumentError(
          fmt::format("subject: expects a certificate subject of 1 to {} bytes, e.g. "
                      "subject:\"CN=camera-7,O=Example\"",
                      kMaxSubjectBytes));
  } else {
    return InvalidArgumentError(
        "credential must be sha256:HEX (the hash of a secret) or subject:SUBJECT (a client "
        "certificate)");
  }
  if (f[2] != "*") {
    size_t start = 0;
    while (start <= f[2].size()) {
      const size_t comma = std::min(f[2].find(',', start), f[2].size());
      const std::string name = f[2].substr(start, comma - start);
      if (name.empty() || name == "*")
        return InvalidArgumentError(
            fmt::format("models \"{}\": expected * or comma-separated model names", f[2]));
      e->models.push_back(name);
      start = comma + 1;
    }
  }
  SSM_RETURN_IF_ERROR(ParseLimit(f[3], "MAX_STREAMS", &e->max_streams));
  return ParseLimit(f[4], "OPENS_PER_MINUTE", &e->max_opens_per_minute);
}

std::string Quoted(const std::string& s) {
  bool plain = !s.empty();
  for (char c : s) plain &= c != ' ' && c != '\t' && c != '\r' && c != '"' && c != '#' && c != '\\';
  if (plain) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

bool KeyEntry::MayUse(const std::string& model) const {
  if (models.empty()) return true;
  for (const std::string& m : models)
    if (m == model) return true;
  return false;
}

bool KeyEntry::SameCredential(const KeyEntry& other) const {
  if (kind != other.kind) return false;
  return kind == Kind::kSecret ? DigestsEqual(secret_hash, other.secret_hash)
                               : subject == other.subject;
}

std::string KeyEntry::ModelsText() const {
  if (models.empty()) return "every model";
  std::string text = models.size() == 1 ? "model " : "models ";
  for (size_t i = 0; i < models.size(); ++i) text += (i ? "," : "") + models[i];
  return text;
}

StatusOr<std::vector<KeyEntry>> ParseKeyFile(std::string_view text, const std::string& source) {
  std::vector<KeyEntry> entries;
  std::set<std::string> ids, subjects;
  std::set<Digest> hashes;
  int number = 0;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++number;
    auto fail = [&](const Status& why) {
      return InvalidArgumentError(fmt::format("{} line {}: {}", source, number, why.message()));
    };
    if (line.size() > kMaxLineBytes)
      return fail(InvalidArgumentError(
          fmt::format("{} bytes long; at most {} are expected", line.size(), kMaxLineBytes)));
    if (line.find('\0') != std::string_view::npos)
      return fail(InvalidArgumentError("contains a NUL byte"));
    std::vector<std::string> fields;
    Status split = SplitFields(line, &fields);
    if (!split.ok()) return fail(split);
    if (fields.empty()) continue;
    KeyEntry entry;
    entry.line = number;
    Status parsed = ParseLine(fields, &entry);
    if (!parsed.ok()) return fail(parsed);
    if (!ids.insert(entry.id).second)
      return fail(InvalidArgumentError(fmt::format("key id \"{}\" appears twice", entry.id)));
    const bool unique = entry.kind == KeyEntry::Kind::kSecret
                            ? hashes.insert(entry.secret_hash).second
                            : subjects.insert(entry.subject).second;
    if (!unique)
      return fail(InvalidArgumentError(
          fmt::format("key \"{}\" has the credential of an earlier line", entry.id)));
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::string CredentialField(const KeyEntry& e) {
  return e.kind == KeyEntry::Kind::kSecret ? "sha256:" + Hex(e.secret_hash)
                                           : "subject:" + Quoted(e.subject);
}

std::string FormatKeyLine(const KeyEntry& e) {
  const std::string credential = CredentialField(e);
  std::string models;
  for (size_t i = 0; i < e.models.size(); ++i) models += (i ? "," : "") + e.models[i];
  auto limit = [](int v) { return v == 0 ? std::string("-") : std::to_string(v); };
  return fmt::format("{} {} {} {} {}", e.id, credential, e.models.empty() ? "*" : Quoted(models),
                     limit(e.max_streams), limit(e.max_opens_per_minute));
}

StatusOr<std::string> NewSecret() {
  uint8_t bytes[32];
  if (!RandomBytes(bytes, sizeof bytes))
    return UnavailableError("the random source failed; cannot make a secret");
  return "ssk_" + Base64Url(bytes, sizeof bytes);
}

}  // namespace ssm
