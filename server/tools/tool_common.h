// Small helpers shared by the command-line tools.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/status.h"

namespace ssm::tools {

// Prints "error: <message>" to stderr and returns exit code 1.
inline int Fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar(std::string label, double total)
      : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO)) {}
  void Update(double done) {
    if (!enabled_ || total_ <= 0) return;
    const int pct = int(100.0 * done / total_);
    if (pct == last_pct_) return;
    last_pct_ = pct;
    const int width = 40, filled = pct * width / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%%", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), pct);
    std::fflush(stderr);
  }
  void Finish() {
    if (enabled_ && last_pct_ >= 0) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_;
  double total_;
  bool enabled_;
  int last_pct_ = -1;
};

}  // namespace ssm::tools
