// The shared state store of --state-store redis://[USER@]HOST:PORT[/DB] (docs/design.md §7): stream
// snapshots keyed by the SHA-256 of their resume token, so that any replica serving the same
// model can resume a stream another one handed off (drain) or checkpointed (crash recovery).
//
// Every operation is asynchronous: it is queued for the store's own thread, which talks to
// Redis (libhiredis, blocking calls with --store-timeout) and then calls the operation's
// callback on that thread. Nothing else ever waits for Redis: a store that is down or slow
// makes operations fail (UNAVAILABLE / DEADLINE_EXCEEDED, logged and counted), never stalls a
// step or a drain beyond the timeout. While Redis cannot be reached, operations fail at once and
// the store reconnects at most once a second. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/model/digest.h"
#include "server/service/metrics.h"

struct redisContext;

namespace ssm {

class StateStore {
 public:
  struct Options {
    std::string url;  // redis://[USER@]HOST:PORT[/DB]
    // A file whose first line is the password (AUTH; with USER, Redis 6 ACL AUTH USER PASSWORD);
    // "" = none. Re-read at each connect, so a rotated password needs no restart.
    std::string password_file;
    double timeout_s = 1;        // connect and command timeout
    size_t max_queued = 100000;  // operations waiting; beyond, they fail at once
    std::string key_prefix = "ssm:stream:";
  };
  using PutFn = std::function<void(Status)>;
  // The stored bytes; NOT_FOUND when the key is absent (or expired).
  using TakeFn = std::function<void(StatusOr<std::string>)>;

  // Checks the URL (INVALID_ARGUMENT naming what is wrong) and starts the store's thread; does
  // not need Redis to be up.
  static StatusOr<std::unique_ptr<StateStore>> Create(const Options& options, Metrics* metrics);
  ~StateStore();  // fails what is still queued (UNAVAILABLE) and joins the thread

  const Options& options() const { return options_; }
  std::string address() const;  // [USER@]HOST:PORT/DB, for logs (never the password)

  // SET key bytes PX ttl.
  void Put(const Digest& key, std::string bytes, double ttl_s, PutFn done);
  // The same with bytes made by `encode` on the store's thread (keeps encoding off the caller's).
  void Put(const Digest& key, std::function<std::string()> encode, double ttl_s, PutFn done);
  // GETDEL key: a snapshot is resumed once.
  void Take(const Digest& key, TakeFn done);
  // DEL key; failures are only logged.
  void Delete(const Digest& key);
  // Waits until nothing is queued or running, or `deadline`; true when idle.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline);

 private:
  enum class Op { kPut, kTake, kDelete };
  struct Job {
    Op op;
    std::string key;
    std::string bytes;
    int64_t ttl_ms = 0;
    PutFn put_done;
    TakeFn take_done;
    std::function<std::string()> encode;  // a Put whose bytes are made on the store thread
    Status failed;  // refused when submitted: the store thread only reports it
  };

  StateStore(const Options& options, std::string user, std::string host, int port, int db,
             Metrics* metrics);
  void Run();
  void Submit(Job job);
  void Fail(Job& job, const Status& status);
  // Runs one job against Redis (store thread); the result for its callback.
  StatusOr<std::string> Execute(Job& job);
  Status ConnectLocked();  // store thread; the context in ctx_, or why not

  const Options options_;
  const std::string user_;  // "" = the default user
  const std::string host_;
  const int port_, db_;
  Metrics* const metrics_;
  redisContext* ctx_ = nullptr;                         // store thread only
  std::chrono::steady_clock::time_point next_connect_;  // store thread: no attempt before
  std::string last_error_;                              // store thread: logged once per change

  std::mutex mu_;  // guards jobs_, running_, stop_
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool running_ = false;
  bool stop_ = false;
  std::thread thread_;  // last
};

}  // namespace ssm
