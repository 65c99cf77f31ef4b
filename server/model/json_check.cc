// CheckJson: one SAX pass over the text (nlohmann::json::sax_parse, which keeps its own stack
// and never recurses), tracking the path of the value being read.
#include "server/model/json_check.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

namespace ssm {
namespace {

using Json = nlohmann::json;

constexpr int kOutOfRangeNumber = 406;  // nlohmann's out_of_range id for "number overflow"
constexpr size_t kMaxQuoted = 40;       // characters of a token or path quoted in a message

class Checker : public nlohmann::json_sax<Json> {
 public:
  explicit Checker(const std::string& root) : root_(root) {}
  const Status& status() const { return status_; }

  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override { return Value(); }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }

  bool start_object(std::size_t) override { return Open(/*array=*/false); }
  bool start_array(std::size_t) override { return Open(/*array=*/true); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }

  bool key(string_t& key) override {
    Level& level = levels_.back();
    level.key = key;
    if (!level.keys.insert(key).second) {
      return Fail(fmt::format("{}: the key appears twice in one object", Path()));
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string& token, const Json::exception& e) override {
    if (e.id == kOutOfRangeNumber) {
      NextValue();  // the number that failed is the value being read
      return Fail(fmt::format(
          "{}: the number {} is out of range (numbers in model files must fit a double, "
          "magnitude up to 1.797e308)",
          Path(), Excerpt(token, kMaxQuoted)));
    }
    return Fail(fmt::format("{}: invalid JSON: {}", root_, Excerpt(e.what(), 240)));
  }

 private:
  struct Level {
    bool array = false;
    size_t items = 0;                      // array: values begun so far
    std::string key;                       // object: key of the value being read
    std::unordered_set<std::string> keys;  // object: keys seen, to refuse duplicates
  };

  // A value begins: in an array it is the next item.
  void NextValue() {
    if (!levels_.empty() && levels_.back().array) ++levels_.back().items;
  }
  bool Value() {
    NextValue();
    return true;
  }
  bool Open(bool array) {
    NextValue();
    if (levels_.size() >= size_t(kMaxJsonDepth)) {
      return Fail(fmt::format(
          "{}: arrays and objects nested deeper than {} levels (the limit for model files)", Path(),
          kMaxJsonDepth));
    }
    levels_.push_back(Level{array, 0, "", {}});
    return true;
  }
  bool Close() {
    levels_.pop_back();
    return true;
  }

  // "layer.d_state", "__metadata__.note[3]": the value being read; root_ for the whole text.
  std::string Path() const {
    std::string path;
    for (const Level& level : levels_) {
      if (level.array) {
        if (level.items > 0) path += fmt::format("[{}]", level.items - 1);
      } else {
        path += (path.empty() ? "" : ".") + level.key;
      }
    }
    if (path.empty()) return root_;
    if (path.size() <= 2 * kMaxQuoted) return path;
    // A deep path keeps its start, which names the field: "d_model[0][0][0][0]...".
    const size_t cut = path.find_last_of("[.", kMaxQuoted);
    if (cut == std::string::npos || cut == 0) return Excerpt(path, 2 * kMaxQuoted);  // a long key
    return path.substr(0, cut) + "...";
  }

  bool Fail(std::string message) {
    status_ = InvalidArgumentError(std::move(message));
    return false;
  }

  const std::string& root_;
  std::vector<Level> levels_;  // the arrays and objects open around the current value
  Status status_;
};

}  // namespace

std::string Excerpt(std::string_view text, size_t max_chars) {
  if (text.size() <= max_chars) return std::string(text);
  size_t cut = max_chars > 16 ? max_chars - 16 : max_chars;  // room for "...(N bytes)"
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
  return fmt::format("{}...({} bytes)", text.substr(0, cut), text.size());
}

Status CheckJson(std::string_view text, const std::string& root) {
  Checker checker(root);
  const bool ok = Json::sax_parse(text.begin(), text.end(), &checker);
  if (!ok && checker.status().ok()) {
    return InvalidArgumentError(fmt::format("{}: invalid JSON", root));  // not expected
  }
  return checker.status();
}

}  // namespace ssm
