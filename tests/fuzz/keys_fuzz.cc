// The --auth-keys file (server/service/api_keys.*) on any text:
// - ParseKeyFile fails with INVALID_ARGUMENT naming "SOURCE line N: ", or gives entries whose
//   ids, credentials and limits are in range and unique;
// - every entry's FormatKeyLine parses back to the same entry, and the whole file formatted
//   line by line parses to the same entries (formatting is a fixed point).
#include <set>
#include <string>

#include "server/service/api_keys.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

bool SameEntry(const KeyEntry& a, const KeyEntry& b) {
  return a.id == b.id && a.SameCredential(b) && a.models == b.models &&
         a.max_streams == b.max_streams && a.max_opens_per_minute == b.max_opens_per_minute;
}

void Check(const std::string& text) {
  auto parsed = ParseKeyFile(text, "keys");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == StatusCode::kInvalidArgument, "{}",
               parsed.status().ToString());
    FUZZ_CHECK(parsed.status().message().rfind("keys line ", 0) == 0, "{}",
               parsed.status().message());
    return;
  }
  std::set<std::string> ids;
  std::string formatted;
  for (const KeyEntry& e : *parsed) {
    FUZZ_CHECK(!e.id.empty() && e.id.size() <= kMaxKeyIdBytes, "id {}", e.id);
    FUZZ_CHECK(ids.insert(e.id).second, "id {} twice", e.id);
    FUZZ_CHECK(e.max_streams >= 0 && e.max_opens_per_minute >= 0);
    FUZZ_CHECK(e.kind == KeyEntry::Kind::kSecret || !e.subject.empty());
    for (const std::string& m : e.models) FUZZ_CHECK(!m.empty() && m != "*");
    const std::string line = FormatKeyLine(e);
    auto again = ParseKeyFile(line, "line");
    FUZZ_CHECK(again.ok() && again->size() == 1, "{} does not parse back: {}", line,
               again.ok() ? "" : again.status().ToString());
    FUZZ_CHECK(SameEntry(again->front(), e), "{} parses back to another entry", line);
    formatted += line + "\n";
  }
  auto whole = ParseKeyFile(formatted, "formatted");
  FUZZ_CHECK(whole.ok() && whole->size() == parsed->size(), "the formatted file does not parse");
  for (size_t i = 0; i < parsed->size(); ++i) FUZZ_CHECK(SameEntry((*whole)[i], (*parsed)[i]));
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::Check(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
