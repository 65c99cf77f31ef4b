// Who is calling, and may they (docs/design.md §8). With --auth-keys every Ssm call names its
// caller: the `authorization: Bearer SECRET` metadata, or, when the call sends none, the verified
// client certificate of a mutual-TLS connection. The file (api_keys.h) maps either to a key id
// with its models and limits. Each admitted Stream or ProcessFile call holds a CallLease, which
// counts it against its key's concurrent-stream limit until the call ends.
//
// Reloading (SIGHUP, or the file changed and then stayed the same for one more watch_period_s;
// a watcher thread looks every period): a key whose line is gone or whose credential changed is
// revoked. Its new calls are refused at once and its open calls see Identity::Check fail on their
// next idle sweep (UNAUTHENTICATED). A key whose line changed otherwise keeps its calls and
// counters under its new models and limits; a call on a model the key may no longer use ends with
// PERMISSION_DENIED. A file that does not parse is not loaded: the keys in force stay, the error is
// logged and counted.
//
// Without --auth-keys every caller is the anonymous identity (id ""), which may use every model
// without limits; only the server-wide open rate applies.
//
// Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "server/service/api_keys.h"
#include "server/service/metrics.h"

namespace ssm {

// Why a call was refused: the `reason` label of ssm_auth_refusals_total.
enum class AuthRefusal {
  kMissing,       // no key and no certificate identity
  kUnknown,       // a key (or certificate subject) that is not in the file
  kRevoked,       // a key that was in the file and is no longer
  kModel,         // the key may not use the model
  kStreams,       // over the key's concurrent streams
  kOpens,         // over the key's opens per minute
  kServerOpens,   // over --max-opens-per-second (all callers)
  kOtherIdentity  // a resume token of another identity
};
constexpr int kAuthRefusals = 8;
const char* AuthRefusalName(AuthRefusal refusal);

// One caller (a key id), shared by its calls; outlives reloads that keep it.
class Identity {
 public:
  // The key id; "" for the anonymous identity.
  const std::string& id() const { return id_; }
  // For logs: `key=ID`, or "" for the anonymous identity.
  std::string LogTag() const { return id_.empty() ? "" : " key=" + id_; }
  bool revoked() const { return revoked_.load(std::memory_order_acquire); }
  // Changes whenever a reload revoked or changed this key.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Whether a call of `model` may go on: UNAUTHENTICATED once revoked, PERMISSION_DENIED once
  // the key may no longer use the model.
  Status Check(const std::string& model) const;

 private:
  friend class Authenticator;
  friend class CallLease;
  explicit Identity(std::string id) : id_(std::move(id)) {}

  const std::string id_;
  std::atomic<bool> revoked_{false};
  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mu_;                                    // guards the fields below
  KeyEntry entry_;                                           // models and limits in force
  int active_ = 0;                                           // calls holding a lease
  std::deque<std::chrono::steady_clock::time_point> opens_;  // within the last minute
  prometheus::Gauge* streams_active_ = nullptr;              // nullptr: metrics off
  prometheus::Counter* streams_opened_ = nullptr;
};

// An admitted call's place in its key's concurrent-stream limit; released on destruction.
class CallLease {
 public:
  CallLease() = default;
  explicit CallLease(std::shared_ptr<Identity> identity);
  CallLease(CallLease&& other) noexcept : identity_(std::move(other.identity_)) {}
  CallLease& operator=(CallLease&& other) noexcept;
  ~CallLease() { Release(); }
  void Release();

 private:
  std::shared_ptr<Identity> identity_;
};

// What a call presents about its caller.
struct CallerCredentials {
  bool has_authorization = false;  // the call has `authorization` metadata
  std::string authorization;       // its value
  std::string subject;  // the verified client certificate's subject ("" none, or not verified)
  // From a call's metadata and connection (the first `authorization` value).
  static CallerCredentials Of(const grpc::ServerContextBase& context);
};

class Authenticator {
 public:
  struct Options {
    std::string keys_file;       // --auth-keys; "" = no keys (everyone is anonymous)
    double max_opens_per_s = 0;  // --max-opens-per-second, all callers; 0 = no limit
    double watch_period_s = 1;   // how often the keys file is checked for changes
  };
  // Loads the keys file (INVALID_ARGUMENT naming the line of the first error, NOT_FOUND if it
  // cannot be read) and starts watching it. `metrics` may be disabled.
  static StatusOr<std::unique_ptr<Authenticator>> Create(const Options& options, Metrics* metrics);
  ~Authenticator();  // stops the watcher

  bool enabled() const { return !options_.keys_file.empty(); }
  size_t key_count() const;

  // The caller of a call (see the top of this file). UNAUTHENTICATED without a key, with an
  // unknown one or a revoked one, each saying which. The anonymous identity when keys are off.
  StatusOr<std::shared_ptr<Identity>> Authenticate(const CallerCredentials& credentials);
  StatusOr<std::shared_ptr<Identity>> Authenticate(const grpc::ServerContextBase& context) {
    return Authenticate(CallerCredentials::Of(context));
  }
  // The identity of a bearer secret (the HTTP endpoint's --metrics-auth): UNAUTHENTICATED for
  // an unknown or revoked one.
  StatusOr<std::shared_ptr<Identity>> AuthenticateSecret(std::string_view secret);
  // Admits a new call of `model` for `identity`: PERMISSION_DENIED naming the key and model,
  // RESOURCE_EXHAUSTED naming the key's limit, UNAVAILABLE (retry later) over the server-wide
  // open rate. A resume (`resume`) takes a stream place but is not an open.
  StatusOr<CallLease> Admit(const std::shared_ptr<Identity>& identity, const std::string& model,
                            bool resume);
  // Whether `identity` may see `model` at all (ListModels, GetModelInfo).
  bool MayUse(const Identity& identity, const std::string& model) const;
  // Counts a refusal made elsewhere (a resume of another identity's stream).
  void CountRefusal(AuthRefusal refusal);

  // Reads the keys file again and applies it (see the top of this file). Returns why it was not
  // applied; OK also when nothing changed.
  Status Reload();

 private:
  explicit Authenticator(const Options& options, Metrics* metrics);
  struct Table;
  StatusOr<std::shared_ptr<const Table>> ReadTable() const;
  // Replaces the table: revokes the keys that are gone or changed credential, updates the rest.
  void ApplyLocked(std::shared_ptr<const Table> table);
  void WatchLoop();
  Status Refuse(AuthRefusal refusal, Status status);
  // Opens within the last second, server-wide (a sliding window); false when over the limit.
  bool AdmitServerOpen(std::chrono::steady_clock::time_point now);

  const Options options_;
  Metrics* const metrics_;
  prometheus::Family<prometheus::Gauge>* key_active_ = nullptr;  // nullptr: metrics off
  prometheus::Family<prometheus::Counter>* key_opened_ = nullptr;
  std::array<prometheus::Counter*, kAuthRefusals> refusals_{};
  prometheus::Counter* reloads_ok_ = nullptr;
  prometheus::Counter* reloads_failed_ = nullptr;
  prometheus::Gauge* keys_gauge_ = nullptr;

  mutable std::mutex mu_;  // guards table_, revoked_, the file's identity and server_opens_
  std::shared_ptr<const Table> table_;
  std::map<Digest, std::string> revoked_;  // secret hash -> key id, of keys revoked so far
  std::map<std::string, std::string> revoked_subjects_;  // certificate subject -> key id
  struct FileStamp {
    int64_t mtime_ns = -1, size = -1, inode = -1;
    // Modification time, size and inode of `path`; all -1 when it cannot be read.
    static FileStamp Of(const std::string& path);
    bool operator==(const FileStamp& o) const {
      return mtime_ns == o.mtime_ns && size == o.size && inode == o.inode;
    }
  };
  FileStamp stamp_;       // of the file last read
  std::mutex reload_mu_;  // one reload at a time (SIGHUP and the watcher)
  std::deque<std::chrono::steady_clock::time_point> server_opens_;  // within the last second

  std::mutex watch_mu_;  // guards stop_
  std::condition_variable watch_cv_;
  bool stop_ = false;
  std::thread watcher_;
};

}  // namespace ssm
