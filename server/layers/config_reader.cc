#include "server/layers/config_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "server/model/json_check.h"

namespace ssm {
namespace {

// "a string (\"abc\")": what a JSON value is, for "found ..." in messages.
std::string Describe(const ConfigJson& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  switch (v.type()) {
    case ConfigJson::value_t::null:
      return "null";
    case ConfigJson::value_t::boolean:
      return text;
    case ConfigJson::value_t::string:
      return "a string (" + text + ")";
    case ConfigJson::value_t::number_integer:
    case ConfigJson::value_t::number_unsigned:
      return "an integer (" + text + ")";
    case ConfigJson::value_t::number_float:
      return "a number (" + text + ")";
    case ConfigJson::value_t::array:
      return "an array (" + text + ")";
    case ConfigJson::value_t::object:
      return "an object (" + text + ")";
    default:
      return text;
  }
}

// Levenshtein distance, to suggest the field a typo meant.
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

Status ConfigTypeError(const std::string& path, const char* expected, const ConfigJson& found) {
  return InvalidArgumentError(
      fmt::format("{}: expected {}, found {}", path, expected, Describe(found)));
}

Status CheckOneOf(const std::string& field, const std::string& value,
                  const std::vector<std::string>& allowed) {
  std::string list;
  for (const std::string& a : allowed) {
    if (value == a) return OkStatus();
    list += fmt::format("{}\"{}\"", list.empty() ? "" : " | ", a);
  }
  return InvalidArgumentError(
      fmt::format("{}: expected {}, found \"{}\"", field, list, Excerpt(value)));
}

Status CheckOneOf(const std::string& field, const std::string& value,
                  std::initializer_list<const char*> allowed) {
  return CheckOneOf(field, value, std::vector<std::string>(allowed.begin(), allowed.end()));
}

Status CheckIntRange(const std::string& field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return InvalidArgumentError(
        fmt::format("{}: expected an integer in [{}, {}], found {}", field, lo, hi, value));
  }
  return OkStatus();
}

Status ConfigReader::Required(const char* key) {
  known_.insert(key);
  if (!Has(key)) return InvalidArgumentError(Path(key) + ": required field is missing");
  return OkStatus();
}

Status ConfigReader::Get(const char* key, int* out) {
  const ConfigJson* v = Find(key);
  if (v == nullptr) return OkStatus();
  if (!v->is_number_integer()) return ConfigTypeError(Path(key), "an integer", *v);
  const bool fits =
      v->is_number_unsigned()
          ? v->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max())
          : v->get<int64_t>() >= std::numeric_limits<int>::min();
  if (!fits) return ConfigTypeError(Path(key), "a 32-bit integer", *v);
  *out = v->get<int>();
  return OkStatus();
}

Status ConfigReader::Get(const char* key, double* out) {
  return GetScalar(key, &ConfigJson::is_number, "a number", out);
}
Status ConfigReader::Get(const char* key, bool* out) {
  return GetScalar(key, &ConfigJson::is_boolean, "true or false", out);
}
Status ConfigReader::Get(const char* key, std::string* out) {
  return GetScalar(key, &ConfigJson::is_string, "a string", out);
}
Status ConfigReader::Get(const char* key, std::vector<float>* out) {
  return GetArray(key, &ConfigJson::is_number, "a number", "an array of numbers", out);
}
Status ConfigReader::Get(const char* key, std::vector<std::string>* out) {
  return GetArray(key, &ConfigJson::is_string, "a string", "an array of strings", out);
}

Status ConfigReader::GetObject(const char* key, const ConfigJson** out) {
  const ConfigJson* v = Find(key);
  if (v == nullptr) return OkStatus();
  if (!v->is_object()) return ConfigTypeError(Path(key), "an object", *v);
  *out = v;
  return OkStatus();
}

Status ConfigReader::GetObjectArray(const char* key, const ConfigJson** out) {
  const ConfigJson* v = Find(key);
  if (v == nullptr) return OkStatus();
  if (!v->is_array()) return ConfigTypeError(Path(key), "an array of objects", *v);
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_object())
      return ConfigTypeError(fmt::format("{}[{}]", Path(key), i), "an object", (*v)[i]);
  }
  *out = v;
  return OkStatus();
}

Status ConfigReader::Forbid(const char* key, const std::string& reason) {
  known_.insert(key);
  if (Has(key)) return InvalidArgumentError(fmt::format("{}: {}", Path(key), reason));
  return OkStatus();
}

Status ConfigReader::CheckNoUnknownFields() const {
  for (const auto& item : object_.items()) {
    if (known_.count(item.key())) continue;
    std::string message = Path(Excerpt(item.key())) + ": unknown field";
    const std::string* nearest = nullptr;
    size_t best = 3;  // suggest only close matches (distance <= 2)
    for (const std::string& k : known_) {
      const size_t d = EditDistance(item.key(), k);
      if (d < best) best = d, nearest = &k;
    }
    if (nearest != nullptr) message += fmt::format(" (did you mean \"{}\"?)", *nearest);
    return InvalidArgumentError(message);
  }
  return OkStatus();
}

template <typename T>
Status ConfigReader::GetScalar(const char* key, TypeCheck is_type, const char* expected, T* out) {
  const ConfigJson* v = Find(key);
  if (v == nullptr) return OkStatus();
  if (!(v->*is_type)()) return ConfigTypeError(Path(key), expected, *v);
  *out = v->get<T>();
  return OkStatus();
}

template <typename T>
Status ConfigReader::GetArray(const char* key, TypeCheck is_item, const char* item_expected,
                              const char* array_expected, std::vector<T>* out) {
  const ConfigJson* v = Find(key);
  if (v == nullptr) return OkStatus();
  if (!v->is_array()) return ConfigTypeError(Path(key), array_expected, *v);
  out->clear();
  for (size_t i = 0; i < v->size(); ++i) {
    const ConfigJson& item = (*v)[i];
    if (!(item.*is_item)()) {
      return ConfigTypeError(fmt::format("{}[{}]", Path(key), i), item_expected, item);
    }
    out->push_back(item.get<T>());
  }
  return OkStatus();
}

const ConfigJson* ConfigReader::Find(const char* key) {
  known_.insert(key);
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

}  // namespace ssm
