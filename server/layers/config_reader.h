// Strict reading of config.json objects, shared by the model config and every layer type's
// section: unknown fields, wrong JSON types and out-of-range values are errors that name the
// field by its path ("layer.d_state", "layers[2].headdim").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm {

using ConfigJson = nlohmann::ordered_json;

// Sanity limit on every dimension: far above any real model, low enough that shapes and byte
// counts cannot overflow.
inline constexpr int kMaxConfigDim = 1 << 16;

// "path: expected <expected>, found a string ("abc")".
Status ConfigTypeError(const std::string& path, const char* expected, const ConfigJson& found);

// OK if `value` is one of `allowed`, else "field: expected "a" | "b", found "c"".
Status CheckOneOf(const std::string& field, const std::string& value,
                  std::initializer_list<const char*> allowed);
Status CheckOneOf(const std::string& field, const std::string& value,
                  const std::vector<std::string>& allowed);
// OK if lo <= value <= hi, else "field: expected an integer in [lo, hi], found value".
Status CheckIntRange(const std::string& field, int64_t value, int64_t lo, int64_t hi);

// Reads the members of one JSON object into struct fields. An absent optional member leaves the
// struct's default; every key asked for is remembered so that leftovers are reported as unknown.
class ConfigReader {
 public:
  // prefix: the object's path with a trailing dot ("layer."), "" for the root.
  ConfigReader(const ConfigJson& object, std::string prefix)
      : object_(object), prefix_(std::move(prefix)) {}

  const std::string& prefix() const { return prefix_; }
  std::string Path(const std::string& key) const { return prefix_ + key; }
  bool Has(const char* key) const { return object_.contains(key); }
  const ConfigJson& object() const { return object_; }

  Status Required(const char* key);
  Status Get(const char* key, int* out);
  Status Get(const char* key, double* out);
  Status Get(const char* key, bool* out);
  Status Get(const char* key, std::string* out);
  Status Get(const char* key, std::vector<float>* out);
  Status Get(const char* key, std::vector<std::string>* out);
  // A nested object; *out stays null when the member is absent.
  Status GetObject(const char* key, const ConfigJson** out);
  // An array of objects; *out stays null when the member is absent.
  Status GetObjectArray(const char* key, const ConfigJson** out);
  // A member that is a known field, but not allowed here (`reason` says why).
  Status Forbid(const char* key, const std::string& reason);
  // Every member not asked for is an unknown field; suggests the nearest known name.
  Status CheckNoUnknownFields() const;

 private:
  using TypeCheck = bool (ConfigJson::*)() const noexcept;
  template <typename T>
  Status GetScalar(const char* key, TypeCheck is_type, const char* expected, T* out);
  template <typename T>
  Status GetArray(const char* key, TypeCheck is_item, const char* item_expected,
                  const char* array_expected, std::vector<T>* out);
  const ConfigJson* Find(const char* key);

  const ConfigJson& object_;
  std::string prefix_;
  std::set<std::string> known_;
};

}  // namespace ssm
