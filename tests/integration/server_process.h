// Runs the real ssm-server binary as a child process for integration tests: starts it with any
// arguments, reads the "listening on HOST:PORT" line it prints first on stdout (and the
// "metrics on HOST:PORT" line that follows when metrics are on), and stops it with SIGTERM (and
// SIGKILL if it hangs) when the test is done. Header-only; POSIX.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ssm::testing {

// The --device the integration tests run the server (and their expected-output engines) on:
// $SSM_TEST_DEVICE if set (tests/gpu/run.sh sets cuda), else cpu, so that expected outputs
// computed in-process match the server's bitwise on any machine.
inline std::string TestDevice() {
  const char* device = std::getenv("SSM_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : std::string("cpu");
}

#ifdef SSM_BIN_DIR
// $SSM_SERVER_BINARY if set (e.g. a sanitizer build), else the ssm-server of this build.
inline std::string DefaultServerBinary() {
  const char* binary = std::getenv("SSM_SERVER_BINARY");
  return binary != nullptr && *binary != '\0' ? binary : std::string(SSM_BIN_DIR) + "/ssm-server";
}
#endif

class ServerProcess {
 public:
  // Exit code Wait/Terminate report when the process did not exit in time.
  static constexpr int kTimedOut = -1;

  // Starts `binary args...` and waits up to `timeout` for its first stdout line, which must be
  // "listening on HOST:PORT", then, unless `--metrics-listen ""` is given, for "metrics on
  // HOST:PORT". nullptr (and *error says why, with the line if any) on failure. Pass
  // "--listen 127.0.0.1:0" to get a free port; without --metrics-listen, "--metrics-listen
  // 127.0.0.1:0" is added so parallel servers never share the default metrics port, and without
  // --device, "--device TestDevice()". stderr (the server's log) is inherited, or written to
  // `stderr_path` when given.
  static std::unique_ptr<ServerProcess> Start(
      const std::string& binary, std::vector<std::string> args, std::string* error,
      std::chrono::milliseconds timeout = std::chrono::seconds(30),
      const std::string& stderr_path = "") {
    bool device_given = false;
    for (const std::string& arg : args) device_given |= arg == "--device";
    if (!device_given) args.insert(args.end(), {"--device", TestDevice()});
    const std::string* metrics_listen = nullptr;
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == "--metrics-listen") metrics_listen = &args[i + 1];
    if (metrics_listen == nullptr) {
      args.insert(args.end(), {"--metrics-listen", "127.0.0.1:0"});
      metrics_listen = &args.back();
    }
    const bool metrics = !metrics_listen->empty();
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      *error = "pipe failed";
      return nullptr;
    }
    std::vector<std::string> argv_strings{binary};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    const int stderr_fd =
        stderr_path.empty() ? -1 : open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const pid_t pid = fork();
    if (pid < 0) {
      close(fds[0]);
      close(fds[1]);
      *error = "fork failed";
      return nullptr;
    }
    if (pid == 0) {                      // child: only async-signal-safe calls until exec
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      dup2(fds[1], STDOUT_FILENO);       // dup2 clears O_CLOEXEC on the copy
      if (stderr_fd >= 0) dup2(stderr_fd, STDERR_FILENO);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    if (stderr_fd >= 0) close(stderr_fd);
    std::unique_ptr<ServerProcess> process(new ServerProcess(pid, fds[0]));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (!process->ReadAddress("listening on ", deadline, &process->address_, &process->port_,
                              error) ||
        (metrics && !process->ReadAddress("metrics on ", deadline, &process->metrics_address_,
                                          &process->metrics_port_, error))) {
      *error = binary + " " + *error;
      process->Terminate(std::chrono::seconds(5));
      return nullptr;
    }
    return process;
  }

  ~ServerProcess() {
    if (!exited_) Terminate(std::chrono::seconds(20));
    close(stdout_fd_);
  }

  const std::string& address() const { return address_; }  // "127.0.0.1:PORT", for a channel
  int port() const { return port_; }
  // "127.0.0.1:PORT" and PORT of the Prometheus endpoint; "" and 0 with --metrics-listen "".
  const std::string& metrics_address() const { return metrics_address_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }

  // The next line the server prints on stdout after those Start read, without the newline; ""
  // on timeout or once the server has exited without printing more.
  std::string ReadLine(std::chrono::milliseconds timeout) {
    return ReadLine(std::chrono::steady_clock::now() + timeout);
  }

  // Sends `sig`; false if the process has already been reaped.
  bool Signal(int sig) { return !exited_ && kill(pid_, sig) == 0; }

  // Waits up to `timeout` for the process to exit. Returns its exit code, 128 + N if signal N
  // killed it, or kTimedOut.
  int Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited_) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return kTimedOut;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return exit_code_;
  }

  // SIGTERM, then Wait(timeout); if it is still running, SIGKILL and return kTimedOut.
  int Terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (exited_) return exit_code_;
    Signal(SIGTERM);
    const int code = Wait(timeout);
    if (code != kTimedOut) return code;
    Signal(SIGKILL);
    Wait(std::chrono::seconds(5));
    return kTimedOut;
  }

 private:
  ServerProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  // Reads the next stdout line, which must be `prefix` + "HOST:PORT"; sets *address (with a
  // wildcard host replaced by 127.0.0.1) and *port. False and *error on anything else.
  bool ReadAddress(const std::string& prefix, std::chrono::steady_clock::time_point deadline,
                   std::string* address, int* port, std::string* error) {
    const std::string line = ReadLine(deadline);
    const size_t colon = line.rfind(':');
    if (line.compare(0, prefix.size(), prefix) != 0 || colon == std::string::npos ||
        colon + 1 == line.size()) {
      *error = "did not print \"" + prefix + "HOST:PORT\" (got \"" + line + "\")";
      return false;
    }
    std::string host = line.substr(prefix.size(), colon - prefix.size());
    *port = std::stoi(line.substr(colon + 1));
    if (host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty()) host = "127.0.0.1";
    *address = host + ":" + std::to_string(*port);
    return true;
  }

  // The next line on the child's stdout, without the newline ("" on timeout or EOF).
  std::string ReadLine(std::chrono::steady_clock::time_point deadline) {
    std::string line;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return line;
      pollfd pfd{stdout_fd_, POLLIN, 0};
      if (poll(&pfd, 1, int(left.count())) <= 0) continue;
      char c;
      if (read(stdout_fd_, &c, 1) != 1) return line;  // EOF: the process ended
      if (c == '\n') return line;
      line += c;
    }
  }

  pid_t pid_;
  int stdout_fd_;  // kept open so the server never gets SIGPIPE for writing to stdout
  int port_ = 0;
  std::string address_;
  int metrics_port_ = 0;
  std::string metrics_address_;
  bool exited_ = false;
  int exit_code_ = 0;
};

}  // namespace ssm::testing
