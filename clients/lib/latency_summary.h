// Latency summaries for the tools' reports.
#pragma once

#include <cstddef>
#include <vector>

namespace ssm::client {

struct LatencySummary {
  size_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;  // same unit as the samples
};

// Nearest-rank percentiles (p in [0, 100]) of `samples`; all zero when empty. Sorts a copy.
LatencySummary Summarize(std::vector<double> samples);

}  // namespace ssm::client
