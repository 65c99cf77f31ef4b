// A real redis-server for the state-store tests: started on a free loopback port without
// persistence, paused (SIGSTOP) and resumed, stopped when the test is done. Header-only; POSIX.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ssm::testing {

class RedisProcess {
 public:
  // nullptr (and *error) when redis-server is missing or does not come up within 10 s. `extra`
  // are more redis-server arguments (e.g. --requirepass P); with a password, `ping_password` is
  // the one PING authenticates with while waiting for it to come up.
  static std::unique_ptr<RedisProcess> Start(std::string* error,
                                             const std::vector<std::string>& extra = {},
                                             const std::string& ping_password = "") {
    const int port = FreePort();
    if (port <= 0) {
      *error = "no free port";
      return nullptr;
    }
    // The arguments are made before fork: the child of a threaded process must not allocate.
    std::vector<std::string> args{
        "redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no",     "--loglevel",         "warning"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      *error = "fork failed";
      return nullptr;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test
      execvp("redis-server", argv.data());
      _exit(127);
    }
    std::unique_ptr<RedisProcess> redis(new RedisProcess(pid, port));
    redis->password_ = ping_password;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!redis->Ping()) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        redis->pid_ = -1;
        *error = WIFEXITED(status) && WEXITSTATUS(status) == 127
                     ? "redis-server is not installed (deploy/install.sh installs it)"
                     : "redis-server exited at start";
        return nullptr;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        *error = "redis-server did not answer PING within 10 s";
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return redis;
  }

  ~RedisProcess() { Stop(); }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  void Pause() { kill(pid_, SIGSTOP); }
  void Continue() { kill(pid_, SIGCONT); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Sends one inline command and returns the first reply line ("" on failure).
  std::string Command(const std::string& command) const {
    const int fd = Connect();
    if (fd < 0) return "";
    const std::string line = command + "\r\n";
    std::string reply;
    if (write(fd, line.data(), line.size()) == ssize_t(line.size())) {
      char c;
      while (read(fd, &c, 1) == 1 && c != '\n') reply += c;
    }
    close(fd);
    if (!reply.empty() && reply.back() == '\r') reply.pop_back();
    return reply;
  }
  // PING answers, or with a password AUTH succeeds.
  bool Ping() const {
    return password_.empty() ? Command("PING") == "+PONG" : Command("AUTH " + password_) == "+OK";
  }

 private:
  RedisProcess(pid_t pid, int port) : pid_(pid), port_(port) {}

  static int FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
    close(fd);
    return port;
  }
  int Connect() const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    timeval timeout{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }

  pid_t pid_;
  int port_;
  std::string password_;
};

}  // namespace ssm::testing
