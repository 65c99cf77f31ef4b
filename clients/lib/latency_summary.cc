#include "clients/lib/latency_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ssm::client {

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  s.count = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double p) {  // nearest rank: the smallest value with >= p% at or below it
    const size_t k = size_t(std::ceil(p / 100.0 * double(samples.size())));
    return samples[std::min(samples.size(), std::max<size_t>(k, 1)) - 1];
  };
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / double(samples.size());
  s.p50 = rank(50);
  s.p90 = rank(90);
  s.p99 = rank(99);
  s.max = samples.back();
  return s;
}

}  // namespace ssm::client
