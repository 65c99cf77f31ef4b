// CPU time of a clock (a thread's, the calling thread's, the process's), in seconds: what the
// server counts as the engine's CPU (docs/design.md §4) and what the benchmarks report.
#pragma once

#include <time.h>

namespace ssm {

// Seconds on `clock` (CLOCK_THREAD_CPUTIME_ID, CLOCK_PROCESS_CPUTIME_ID or a clock from
// pthread_getcpuclockid); 0 when it cannot be read. A system call: once per step, not per chunk.
inline double CpuClockSeconds(clockid_t clock) {
  timespec t{};
  if (clock_gettime(clock, &t) != 0) return 0;
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

inline double ThreadCpuSeconds() { return CpuClockSeconds(CLOCK_THREAD_CPUTIME_ID); }
inline double ProcessCpuSeconds() { return CpuClockSeconds(CLOCK_PROCESS_CPUTIME_ID); }

}  // namespace ssm
