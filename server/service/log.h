// Server log lines on stderr: "2024-05-01 12:00:00.123 I message". STDOUT is kept for the
// "listening on HOST:PORT" line that tools and tests read.
#pragma once

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace ssm::log {

// Writes one line; level is 'I' (info), 'W' (warning) or 'E' (error). Thread-safe (one fputs).
template <typename... Args>
void Line(char level, fmt::format_string<Args...> format, Args&&... args) {
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  const std::string line =
      fmt::format("{:%Y-%m-%d %H:%M:%S}.{:03d} {} {}\n", fmt::localtime(std::time(nullptr)),
                  int(ms), level, fmt::format(format, std::forward<Args>(args)...));
  std::fputs(line.c_str(), stderr);
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
