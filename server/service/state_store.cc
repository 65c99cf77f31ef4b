#include "server/service/state_store.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <utility>

#include "server/service/listener.h"
#include "server/service/log.h"

namespace ssm {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kReconnectBackoff(1);

timeval ToTimeval(double seconds) {
  timeval tv;
  tv.tv_sec = time_t(seconds);
  tv.tv_usec = suseconds_t((seconds - double(tv.tv_sec)) * 1e6);
  return tv;
}

const char* OpName(int op) {
  static const char* const kNames[] = {"put", "take", "delete"};
  return kNames[op];
}

// The password in the first line of `path` (--store-password-file), without its line end.
StatusOr<std::string> ReadPassword(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return InvalidArgumentError(fmt::format("--store-password-file \"{}\": cannot be read: {}",
                                            log::Printable(path), std::strerror(errno)));
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty())
    return InvalidArgumentError(
        fmt::format("--store-password-file \"{}\": the first line (the password) is empty",
                    log::Printable(path)));
  if (line.size() > 4096 || line.find('\0') != std::string::npos)
    return InvalidArgumentError(
        fmt::format("--store-password-file \"{}\": the first line must be a password of at most "
                    "4096 bytes, without NUL",
                    log::Printable(path)));
  return line;
}

}  // namespace

StatusOr<std::unique_ptr<StateStore>> StateStore::Create(const Options& options, Metrics* metrics) {
  const std::string& url = options.url;
  const std::string scheme = "redis://";
  auto bad = [&](const std::string& what) {
    return InvalidArgumentError(
        fmt::format("--state-store \"{}\": {}; expected redis://[USER@]HOST:PORT[/DB]",
                    log::Printable(url), what));
  };
  if (url.compare(0, scheme.size(), scheme) != 0) return bad("not a redis:// URL");
  std::string rest = url.substr(scheme.size());
  std::string user;
  const size_t at = rest.rfind('@');
  if (at != std::string::npos) {
    user = rest.substr(0, at);
    rest = rest.substr(at + 1);
    // A password here would show in process listings, in the pod spec and in logs.
    if (user.find(':') != std::string::npos)
      return InvalidArgumentError(
          "--state-store: the URL holds a password (USER:PASSWORD@); give the password in "
          "--store-password-file instead, which keeps it out of process listings and logs");
    if (user.empty()) return bad("an empty user name before '@'");
  }
  int db = 0;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    const std::string db_text = rest.substr(slash + 1);
    char* end = nullptr;
    const long value = std::strtol(db_text.c_str(), &end, 10);
    if (db_text.empty() || *end != '\0' || value < 0 || value > 1000000)
      return bad("the database number must be a non-negative integer");
    db = int(value);
    rest = rest.substr(0, slash);
  }
  std::string host, port_text;
  if (!SplitHostPort(rest, &host, &port_text).ok() || host.empty()) return bad("missing HOST:PORT");
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 1 || port > 65535)
    return bad("the port must be 1..65535");
  if (!(options.timeout_s > 0 && options.timeout_s <= 60))
    return InvalidArgumentError(
        fmt::format("--store-timeout {}: must be in (0, 60] seconds", options.timeout_s));
  if (!user.empty() && options.password_file.empty())
    return bad("a user name needs its password in --store-password-file");
  if (!options.password_file.empty())
    SSM_RETURN_IF_ERROR(ReadPassword(options.password_file).status());
  return std::unique_ptr<StateStore>(
      new StateStore(options, std::move(user), host, int(port), db, metrics));
}

StateStore::StateStore(const Options& options, std::string user, std::string host, int port, int db,
                       Metrics* metrics)
    : options_(options),
      user_(std::move(user)),
      host_(std::move(host)),
      port_(port),
      db_(db),
      metrics_(metrics),
      thread_([this] { Run(); }) {}

StateStore::~StateStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (ctx_ != nullptr) redisFree(ctx_);
}

std::string StateStore::address() const {
  return fmt::format("{}{}{}:{}/{}", user_, user_.empty() ? "" : "@", host_, port_, db_);
}

void StateStore::Put(const Digest& key, std::string bytes, double ttl_s, PutFn done) {
  Job job{Op::kPut,         options_.key_prefix + Hex(key),
          std::move(bytes), std::max<int64_t>(1, int64_t(ttl_s * 1000.0)),
          std::move(done),  nullptr,
          nullptr,          {}};
  Submit(std::move(job));
}

void StateStore::Put(const Digest& key, std::function<std::string()> encode, double ttl_s,
                     PutFn done) {
  Job job{Op::kPut,
          options_.key_prefix + Hex(key),
          "",
          std::max<int64_t>(1, int64_t(ttl_s * 1000.0)),
          std::move(done),
          nullptr,
          std::move(encode),
          {}};
  Submit(std::move(job));
}

void StateStore::Take(const Digest& key, TakeFn done) {
  Submit({Op::kTake, options_.key_prefix + Hex(key), "", 0, nullptr, std::move(done), nullptr, {}});
}

void StateStore::Delete(const Digest& key) {
  Submit({Op::kDelete, options_.key_prefix + Hex(key), "", 0, nullptr, nullptr, nullptr, {}});
}

// Callers may hold their own locks, which the callbacks take: a job is never failed on the
// caller's thread. One refused (queue full, stopping) is queued anyway, already failed, and the
// store thread runs its callback without touching Redis.
void StateStore::Submit(Job job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) {
    job.failed = UnavailableError("the state store is shutting down");
  } else if (jobs_.size() >= options_.max_queued) {
    job.failed = ResourceExhaustedError(
        fmt::format("{} state store operations are already waiting", options_.max_queued));
  }
  jobs_.push_back(std::move(job));
  cv_.notify_all();
}

void StateStore::Fail(Job& job, const Status& status) {
  if (job.put_done) job.put_done(status);
  if (job.take_done) job.take_done(status);
}

bool StateStore::WaitIdle(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [this] { return jobs_.empty() && !running_; });
}

Status StateStore::ConnectLocked() {
  if (ctx_ != nullptr) return OkStatus();
  if (Clock::now() < next_connect_)
    return UnavailableError(
        fmt::format("the state store {} is unreachable: {}", address(), last_error_));
  next_connect_ = Clock::now() + kReconnectBackoff;
  const timeval timeout = ToTimeval(options_.timeout_s);
  redisContext* ctx = redisConnectWithTimeout(host_.c_str(), port_, timeout);
  std::string error;
  if (ctx == nullptr) {
    error = "cannot allocate a connection";
  } else if (ctx->err != 0) {
    error = ctx->errstr;
  } else if (redisSetTimeout(ctx, timeout) != REDIS_OK) {
    error = "cannot set the command timeout";
  } else {
    // One command at set-up; "" when it succeeded.
    auto setup = [ctx](redisReply* reply) -> std::string {
      std::string failed;
      if (reply == nullptr || reply->type == REDIS_REPLY_ERROR)
        failed = reply != nullptr ? reply->str : ctx->errstr;
      if (reply != nullptr) freeReplyObject(reply);
      return failed;
    };
    if (!options_.password_file.empty()) {
      StatusOr<std::string> password = ReadPassword(options_.password_file);
      if (!password.ok()) {
        error = password.status().message();
      } else {
        error = user_.empty() ? setup(static_cast<redisReply*>(redisCommand(
                                    ctx, "AUTH %b", password->data(), password->size())))
                              : setup(static_cast<redisReply*>(
                                    redisCommand(ctx, "AUTH %b %b", user_.data(), user_.size(),
                                                 password->data(), password->size())));
        if (!error.empty()) error = "AUTH failed: " + error;
      }
    }
    if (error.empty() && db_ != 0)
      error = setup(static_cast<redisReply*>(redisCommand(ctx, "SELECT %d", db_)));
  }
  if (!error.empty()) {
    if (ctx != nullptr) redisFree(ctx);
    if (error != last_error_) log::Warning("state store {}: {}", address(), error);
    last_error_ = error;
    return UnavailableError(fmt::format("the state store {} is unreachable: {}", address(), error));
  }
  if (!last_error_.empty()) log::Info("state store {}: connected again", address());
  last_error_.clear();
  ctx_ = ctx;
  return OkStatus();
}

StatusOr<std::string> StateStore::Execute(Job& job) {
  SSM_RETURN_IF_ERROR(ConnectLocked());
  if (job.encode) job.bytes = job.encode();
  redisReply* reply = nullptr;
  switch (job.op) {
    case Op::kPut:
      reply = static_cast<redisReply*>(redisCommand(ctx_, "SET %b %b PX %lld", job.key.data(),
                                                    job.key.size(), job.bytes.data(),
                                                    job.bytes.size(), (long long)job.ttl_ms));
      break;
    case Op::kTake:
      reply =
          static_cast<redisReply*>(redisCommand(ctx_, "GETDEL %b", job.key.data(), job.key.size()));
      break;
    case Op::kDelete:
      reply =
          static_cast<redisReply*>(redisCommand(ctx_, "DEL %b", job.key.data(), job.key.size()));
      break;
  }
  if (reply == nullptr) {  // I/O error or timeout: this connection is done
    const bool timed_out = ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    const std::string error = ctx_->errstr;
    redisFree(ctx_);
    ctx_ = nullptr;
    last_error_ = error;
    log::Warning("state store {}: {} failed: {}", address(), OpName(int(job.op)),
                 timed_out ? "timed out" : error);
    if (timed_out)
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("the state store {} did not answer within {:g} s (--store-timeout)",
                                address(), options_.timeout_s));
    return UnavailableError(fmt::format("the state store {} failed: {}", address(), error));
  }
  StatusOr<std::string> result = std::string();
  if (reply->type == REDIS_REPLY_ERROR) {
    result = UnavailableError(fmt::format("the state store {} refused {}: {}", address(),
                                          OpName(int(job.op)), reply->str));
    log::Warning("{}", result.status().message());
  } else if (job.op == Op::kTake) {
    if (reply->type == REDIS_REPLY_NIL) {
      result = NotFoundError("no such key in the state store");
    } else if (reply->type == REDIS_REPLY_STRING) {
      result = std::string(reply->str, reply->len);
    } else {
      result = UnavailableError("the state store answered GETDEL with a non-string");
    }
  }
  freeReplyObject(reply);
  return result;
}

void StateStore::Run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) break;  // stop_
      if (stop_) {               // fail what is left, and what their callbacks submit meanwhile
        while (!jobs_.empty()) {
          std::deque<Job> left;
          left.swap(jobs_);
          lock.unlock();
          for (Job& j : left) Fail(j, UnavailableError("the server is stopping"));
          lock.lock();
        }
        break;
      }
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    const Clock::time_point start = Clock::now();
    StatusOr<std::string> result =
        job.failed.ok() ? Execute(job) : StatusOr<std::string>(job.failed);
    if (ResumeMetrics* m = metrics_ != nullptr ? metrics_->resume() : nullptr) {
      const bool ok = result.ok() || result.status().code() == StatusCode::kNotFound;
      m->store_ops[size_t(job.op)][ok ? 0 : 1]->Increment();
      m->store_seconds->Observe(std::chrono::duration<double>(Clock::now() - start).count());
    }
    if (job.put_done) job.put_done(result.status());
    if (job.take_done) job.take_done(std::move(result));
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
    }
    cv_.notify_all();
  }
}

}  // namespace ssm
