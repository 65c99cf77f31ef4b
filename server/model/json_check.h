// Untrusted JSON text (config.json, safetensors headers): a streaming check before it is parsed
// into a tree, since nlohmann::json throws on numbers that overflow a double and recurses (in
// dump(), used for error messages) once per nesting level; and quoting its text in messages.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace ssm {

// Arrays and objects inside each other: model files need 4 levels; 64 leaves room and keeps
// every recursive walk of the parsed tree far from the stack's end.
inline constexpr int kMaxJsonDepth = 64;

// OK if `text` is one valid JSON value with nesting at most kMaxJsonDepth, every number finite
// as a double and no key twice in one object. Otherwise INVALID_ARGUMENT naming the value by its
// path ("layer.d_state", "__metadata__.note[3]"; `root` when it is the whole text), e.g.
// "d_model: the number 1e999999 is out of range (...)", or "invalid JSON: ..." for a syntax error.
Status CheckJson(std::string_view text, const std::string& root);

// `text` from a model file (a key, a tensor name, a string value) as quoted in an error message:
// whole up to `max_chars`, else its start, cut on a UTF-8 boundary, and "...(N bytes)".
std::string Excerpt(std::string_view text, size_t max_chars = 64);

}  // namespace ssm
