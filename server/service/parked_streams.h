// Resume tokens and parked streams (docs/design.md §7). Every Stream call gets a token when it
// opens; the server keeps only its SHA-256. A call that breaks without a clean half-close parks
// its stream: the snapshot bytes stay in host memory for --resume-ttl (its state slot is freed),
// and a new call presenting the token takes them back. What became of a token that no longer
// names a stream (resumed, expired, ended, not kept) is remembered for a while, so that a
// refusal can say which (for five resume TTLs, at least 5 minutes, at most 65536 tokens).
//
// Thread-safe; Park and Forget never block on anything but the registry's own lock. An expiry
// thread frees parked snapshots when their time is up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/model/digest.h"
#include "server/service/metrics.h"
#include "server/service/state_store.h"

namespace ssm {

// Lets a resume cancel the call its stream is still attached to (the client reconnected before
// the server saw the old connection break). The call's port makes it (call_port.h); the call
// detaches it in OnDone. Thread-safe.
class CallCanceller {
 public:
  virtual ~CallCanceller() = default;
  // Cancels the call if it has not ended; the call's events may run on this thread.
  virtual void Cancel(const char* why) = 0;
  virtual void Detach() = 0;  // Cancel does nothing from now on
};

// Why a token no longer names a stream; each has its own NOT_FOUND message.
enum class TokenFate {
  kResumed,    // used by a resume (single use)
  kCompleted,  // the stream completed (the client half-closed and got every answer)
  kExpired,    // parked longer than --resume-ttl
  kEnded,      // the stream ended for good (completed, failed, server shut down)
  kNotKept,    // the call broke but the stream could not be parked (--max-parked full, ...)
};

struct ParkedStream {
  std::string model;     // the served model's name
  std::string snapshot;  // EncodeSnapshot bytes
  std::string owner;     // the identity that opened the stream (a key id; "" anonymous)
};

class ParkedStreams {
 public:
  struct Options {
    double ttl_s = 60;      // how long a parked stream is kept; 0: resuming is off
    int max_parked = 4096;  // parked streams at once; more are not kept
    int64_t max_parked_bytes = int64_t(1) << 30;  // their snapshot bytes, all together
  };
  ParkedStreams(const Options& options, Metrics* metrics);
  ~ParkedStreams();  // stops the expiry thread

  bool enabled() const { return options_.ttl_s > 0; }
  const Options& options() const { return options_; }

  // A new token for a stream that `owner` (an identity's key id, "" anonymous) just opened on
  // the call `canceller` cancels (at least 128 random bits, base64url). Its hash is the key from
  // now on. "" when resuming is off. UNAVAILABLE if the random source fails.
  StatusOr<std::string> Issue(std::shared_ptr<CallCanceller> canceller, const std::string& owner,
                              Digest* hash);
  // The stream's call broke: keep its snapshot under the token for ttl_s. Refused (the token's
  // fate becomes kNotKept, and `why` says so) when max_parked streams, or max_parked_bytes, are
  // parked already. Returns whether it was kept.
  bool Park(const Digest& hash, ParkedStream stream);
  // The token's stream ended for good (or could not be parked, `fate` kNotKept).
  void Forget(const Digest& hash, TokenFate fate, const std::string& why = "");

  // Takes the parked stream named by `token` for `owner`. A token of another owner's stream
  // (parked, attached or ended) is refused with PERMISSION_DENIED, `failure` kOtherIdentity,
  // before anything else is looked at: nothing about it is told, and its call is not touched.
  // Otherwise NOT_FOUND saying whether the token is unknown,
  // already used, expired, or its stream ended or was not kept; UNAVAILABLE (retry shortly) if
  // its stream is still attached to a live call, which is then cancelled so that it parks.
  // `failure` says which refusal it was, for the metrics.
  // *entry_hash (optional): the hash the stream was parked under (another one when the presented
  // token is an alias).
  StatusOr<ParkedStream> Take(const std::string& token, const std::string& owner, Digest* hash,
                              ResumeFailure* failure, Digest* entry_hash = nullptr);
  // A resume asks the state store for the stream of `hash`: until EndLookup, another resume of
  // it is refused with UNAVAILABLE (retry), not NOT_FOUND, so racing attempts cannot lose it.
  // False when a lookup of it is already in flight.
  bool BeginLookup(const Digest& hash);
  void EndLookup(const Digest& hash);

  // A resumed call's stream, with its new token `hash`, stays reachable under the token the
  // client presented (`presented`) until Confirm: if the resumed call breaks before the client
  // has its `opened` (and so the new token), a retry with the old token still finds the stream.
  void Alias(const Digest& presented, const Digest& hash);
  // The client has the new token (it sent a message after `opened`): the old one is used up.
  void Confirm(const Digest& presented);

  // Puts back a stream taken by Take whose resume failed for a reason the client may fix (no
  // free slot, frames no longer held, ...): the same token names it again, until its expiry.
  void PutBack(const Digest& hash, ParkedStream stream);

  // Draining with a state store: writes every parked stream to `store` with the time it has
  // left, and waits for the writes until `deadline`. Returns how many were saved.
  size_t HandOff(StateStore* store, std::chrono::steady_clock::time_point deadline);

  size_t parked() const;
  size_t parked_bytes() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::shared_ptr<CallCanceller> live;  // set while the stream's call runs
    ParkedStream parked;                  // when parked
    Clock::time_point expiry;             // when parked
    size_t bytes = 0;                     // parked.snapshot.size() when parked
    bool is_parked = false;
    bool has_alias = false;  // an old token (aliases_) also names this stream
    Digest alias{};
    std::string owner;  // the identity that opened the stream
  };
  struct Fate {
    TokenFate fate;
    std::string why;
    uint64_t number;    // of the record (fate_order_)
    std::string owner;  // the identity whose stream it named
  };

  void ExpireLoop();
  void RecordFateLocked(const Digest& hash, TokenFate fate, const std::string& why,
                        const std::string& owner);
  void InsertParkedLocked(const Digest& hash, ParkedStream stream, Clock::time_point expiry);
  void EraseParkedLocked(std::map<Digest, Entry>::iterator it);
  void UpdateGaugesLocked();
  // Drops the entry's alias, recording `fate` for the old token (unless it is to be kept).
  void DropAliasLocked(Entry& entry, const TokenFate* fate, const std::string& why);

  const Options options_;
  Metrics* const metrics_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::map<Digest, Entry> entries_;                    // live and parked, by token hash
  std::multimap<Clock::time_point, Digest> expiries_;  // parked ones, by expiry
  std::map<Digest, Fate> fates_;                       // recent tokens no longer valid
  std::map<Digest, Digest> aliases_;                   // old token hash -> entry's hash
  std::set<Digest> lookups_;                           // store lookups in flight
  struct FateRecord {
    Digest hash;
    uint64_t number;
    Clock::time_point recorded;
  };
  std::deque<FateRecord> fate_order_;  // records, oldest first; bounded in number and age
  uint64_t fates_recorded_ = 0;
  size_t parked_ = 0, parked_bytes_ = 0;
  bool stop_ = false;
  std::thread expirer_;  // last: starts after the members above exist
};

}  // namespace ssm
