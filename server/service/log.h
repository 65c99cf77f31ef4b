// Server log lines on stderr: "2024-05-01 12:00:00.123 I message". STDOUT is kept for the
// "listening on HOST:PORT" line that tools and tests read.
//
// Messages often carry client-supplied text (model names, labels, error details), so every line
// is made safe at the sink: control characters (newlines, terminal escape sequences, C1 codes)
// and bytes that are not UTF-8 are written as \xNN, and a message is cut at kMaxMessageBytes.
// A client therefore cannot forge log lines or drive the operator's terminal.
#pragma once

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace ssm::log {

// Longest message written, bytes (before escaping); the rest is replaced by a count.
constexpr size_t kMaxMessageBytes = 2048;

// `text` with control characters and invalid UTF-8 written as \xNN, cut after `max_bytes`
// input bytes (" ... (N more bytes)"). Printable ASCII and valid UTF-8 other than C1 controls
// are kept as they are.
inline std::string Printable(std::string_view text, size_t max_bytes = kMaxMessageBytes) {
  std::string out;
  const size_t n = std::min(text.size(), max_bytes);
  out.reserve(n + 16);
  auto escape = [&out](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
  for (size_t i = 0; i < n;) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += char(c);
      ++i;
      continue;
    }
    // A valid UTF-8 sequence of 2-4 bytes (no overlongs, no surrogates), not a C1 control.
    size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    bool valid = len > 0 && i + len <= n;
    for (size_t k = 1; valid && k < len; ++k)
      valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (valid) {
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      if ((c == 0xc2 && c1 < 0xa0) || (c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) ||
          (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90))
        valid = false;
    }
    if (!valid) {
      escape(c);
      ++i;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
  }
  if (text.size() > n) out += fmt::format(" ... ({} more bytes)", text.size() - n);
  return out;
}

// Where the lines go: stderr, unless set before the first line (a fuzz target discards them).
inline std::FILE* sink = stderr;

// Writes one line; level is 'I' (info), 'W' (warning) or 'E' (error). Thread-safe (one fputs).
template <typename... Args>
void Line(char level, fmt::format_string<Args...> format, Args&&... args) {
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  const std::string line =
      fmt::format("{:%Y-%m-%d %H:%M:%S}.{:03d} {} {}\n", fmt::localtime(std::time(nullptr)),
                  int(ms), level, Printable(fmt::format(format, std::forward<Args>(args)...)));
  std::fputs(line.c_str(), sink);
}

template <typename... Args>
void Info(fmt::format_string<Args...> format, Args&&... args) {
  Line('I', format, std::forward<Args>(args)...);
}
template <typename... Args>
void Warning(fmt::format_string<Args...> format, Args&&... args) {
  Line('W', format, std::forward<Args>(args)...);
}
template <typename... Args>
void Error(fmt::format_string<Args...> format, Args&&... args) {
  Line('E', format, std::forward<Args>(args)...);
}

}  // namespace ssm::log
