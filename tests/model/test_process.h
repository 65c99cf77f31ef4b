// Runs a command-line tool as a child process and reports how it ended, for the tests that
// check that the real binaries fail cleanly (an exit code and a message, never a signal).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "tests/model/test_files.h"

extern char** environ;

namespace ssm::testing_util {

struct ProcessResult {
  bool started = false;
  int exit_code = -1;  // when it exited
  int signal = 0;      // when a signal ended it (SIGSEGV, SIGABRT, ...)
  std::string err;     // its stderr
};

// Runs argv[0] with stdout discarded and stderr captured through `stderr_path`.
inline ProcessResult RunProcess(const std::vector<std::string>& argv,
                                const std::string& stderr_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ProcessResult result;
  pid_t pid;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return result;
  result.started = true;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  result.err = ReadBytes(stderr_path);
  return result;
}

// "exit 1" / "signal 11 (Segmentation fault)": how it ended, for failure messages.
inline std::string HowItEnded(const ProcessResult& r) {
  if (!r.started) return "did not start";
  if (r.signal != 0) return "signal " + std::to_string(r.signal) + " (" + strsignal(r.signal) + ")";
  return "exit " + std::to_string(r.exit_code);
}

}  // namespace ssm::testing_util
