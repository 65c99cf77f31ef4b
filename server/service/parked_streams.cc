#include "server/service/parked_streams.h"

#include <fmt/format.h>

#include <atomic>
#include <utility>

namespace ssm {

namespace {

constexpr size_t kTokenBytes = 18;       // 144 random bits: 24 base64url characters
constexpr size_t kMaxFatesKept = 65536;  // tokens whose fate a refusal can still name
// ... for this many resume TTLs after it was recorded, and at least kMinFateKeepS seconds.
constexpr double kFateKeepTtls = 5;
constexpr double kMinFateKeepS = 300;

}  // namespace

ParkedStreams::ParkedStreams(const Options& options, Metrics* metrics)
    : options_(options), metrics_(metrics), expirer_([this] { ExpireLoop(); }) {}

ParkedStreams::~ParkedStreams() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  expirer_.join();
}

StatusOr<std::string> ParkedStreams::Issue(std::shared_ptr<CallCanceller> canceller,
                                           const std::string& owner, Digest* hash) {
  if (!enabled()) return std::string();
  uint8_t random[kTokenBytes];
  if (!RandomBytes(random, sizeof(random)))
    return UnavailableError("the server's random source failed; cannot issue a resume token");
  std::string token = Base64Url(random, sizeof(random));
  *hash = Sha256Of(token);
  std::lock_guard<std::mutex> lock(mu_);
  Entry& entry = entries_[*hash];
  entry.live = std::move(canceller);
  entry.owner = owner;
  return token;
}

bool ParkedStreams::Park(const Digest& hash, ParkedStream stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hash);
  if (it == entries_.end()) return false;  // already forgotten
  const bool full = parked_ >= size_t(options_.max_parked);
  if (full || int64_t(parked_bytes_ + stream.snapshot.size()) > options_.max_parked_bytes) {
    const TokenFate not_kept = TokenFate::kNotKept;
    const std::string why =
        full ? fmt::format("the server already held {} parked streams (--max-parked)",
                           options_.max_parked)
             : fmt::format(
                   "the server's parked streams already held {} bytes; {} more would pass "
                   "--max-parked-bytes {}",
                   parked_bytes_, stream.snapshot.size(), options_.max_parked_bytes);
    const std::string owner = it->second.owner;
    DropAliasLocked(it->second, &not_kept, why);
    entries_.erase(it);
    RecordFateLocked(hash, not_kept, why, owner);
    if (ResumeMetrics* m = metrics_ ? metrics_->resume() : nullptr) m->parks_refused->Increment();
    return false;
  }
  const auto expiry = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(options_.ttl_s));
  InsertParkedLocked(hash, std::move(stream), expiry);
  if (ResumeMetrics* m = metrics_ ? metrics_->resume() : nullptr) m->parks_kept->Increment();
  return true;
}

void ParkedStreams::InsertParkedLocked(const Digest& hash, ParkedStream stream,
                                       Clock::time_point expiry) {
  Entry& entry = entries_[hash];  // keeps an alias the live entry had
  entry.live.reset();
  entry.is_parked = true;
  entry.expiry = expiry;
  entry.bytes = stream.snapshot.size();
  entry.owner = stream.owner;
  parked_bytes_ += entry.bytes;
  entry.parked = std::move(stream);
  ++parked_;
  const bool earliest = expiries_.empty() || expiry < expiries_.begin()->first;
  expiries_.emplace(expiry, hash);
  UpdateGaugesLocked();
  if (earliest) cv_.notify_all();
}

void ParkedStreams::DropAliasLocked(Entry& entry, const TokenFate* fate, const std::string& why) {
  if (!entry.has_alias) return;
  aliases_.erase(entry.alias);
  if (fate != nullptr) RecordFateLocked(entry.alias, *fate, why, entry.owner);
  entry.has_alias = false;
}

bool ParkedStreams::BeginLookup(const Digest& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  return lookups_.insert(hash).second;
}

void ParkedStreams::EndLookup(const Digest& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  lookups_.erase(hash);
}

void ParkedStreams::Alias(const Digest& presented, const Digest& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hash);
  if (it == entries_.end()) return;
  fates_.erase(presented);  // its fate_order_ entry no longer matches anything
  aliases_[presented] = hash;
  it->second.has_alias = true;
  it->second.alias = presented;
}

void ParkedStreams::Confirm(const Digest& presented) {
  std::lock_guard<std::mutex> lock(mu_);
  auto alias = aliases_.find(presented);
  if (alias == aliases_.end()) return;
  auto it = entries_.find(alias->second);
  const TokenFate used = TokenFate::kResumed;
  if (it != entries_.end()) {
    DropAliasLocked(it->second, &used, "");
  } else {  // owner unknown: only an anonymous caller is told the token was used
    aliases_.erase(alias);
    RecordFateLocked(presented, used, "", "");
  }
}

void ParkedStreams::EraseParkedLocked(std::map<Digest, Entry>::iterator it) {
  auto range = expiries_.equal_range(it->second.expiry);
  for (auto e = range.first; e != range.second; ++e) {
    if (e->second == it->first) {
      expiries_.erase(e);
      break;
    }
  }
  parked_bytes_ -= it->second.bytes;
  --parked_;
  entries_.erase(it);
  UpdateGaugesLocked();
}

void ParkedStreams::Forget(const Digest& hash, TokenFate fate, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hash);
  if (it == entries_.end()) return;
  DropAliasLocked(it->second, &fate, why);
  const std::string owner = it->second.owner;
  if (it->second.is_parked) {
    EraseParkedLocked(it);
  } else {
    entries_.erase(it);
  }
  RecordFateLocked(hash, fate, why, owner);
  if (fate == TokenFate::kNotKept)
    if (ResumeMetrics* m = metrics_ ? metrics_->resume() : nullptr) m->parks_refused->Increment();
}

StatusOr<ParkedStream> ParkedStreams::Take(const std::string& token, const std::string& owner,
                                           Digest* hash, ResumeFailure* failure,
                                           Digest* entry_hash_out) {
  const Digest presented = Sha256Of(token);
  *hash = presented;
  std::shared_ptr<CallCanceller> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(presented);
    auto alias = aliases_.find(presented);
    if (it == entries_.end() && alias != aliases_.end()) it = entries_.find(alias->second);
    auto other_owner = [&] {
      *failure = ResumeFailure::kOtherIdentity;
      return PermissionDeniedError("resume token of another identity");
    };
    if (it != entries_.end() && it->second.owner != owner) return other_owner();
    if (it != entries_.end() && it->second.is_parked) {
      // Taken under the token the client presented, so that the resumed call can alias it.
      const Digest entry_hash = it->first;
      if (entry_hash_out != nullptr) *entry_hash_out = entry_hash;
      DropAliasLocked(it->second, nullptr, "");
      ParkedStream stream = std::move(it->second.parked);
      EraseParkedLocked(it);
      RecordFateLocked(entry_hash, TokenFate::kResumed, "", owner);
      return stream;
    }
    if (it == entries_.end() && lookups_.count(presented) > 0) {
      *failure = ResumeFailure::kAttached;
      return UnavailableError(
          "a resume of this stream is in progress on another call (its state is being fetched "
          "from the state store); retry the resume in a moment");
    }
    if (it != entries_.end()) {
      live = it->second.live;
    } else {
      auto fate = fates_.find(*hash);
      *failure = ResumeFailure::kUnknownToken;
      if (fate != fates_.end() && fate->second.owner != owner) return other_owner();
      if (fate == fates_.end())
        return NotFoundError(
            "resume token not found: no stream of this server was opened with it (a token "
            "names a stream on the server that issued it; with --state-store, on any replica "
            "sharing the store); open a new stream");
      switch (fate->second.fate) {
        case TokenFate::kResumed:
          *failure = ResumeFailure::kUsedToken;
          return NotFoundError(
              "resume token already used: a token resumes its stream once, and the resumed call "
              "got a new token in its `opened` message; resume with the newest token");
        case TokenFate::kExpired:
          *failure = ResumeFailure::kExpired;
          return NotFoundError(
              fmt::format("resume token expired: its stream was kept {:g} s after its call broke "
                          "(--resume-ttl) and then dropped; open a new stream",
                          options_.ttl_s));
        case TokenFate::kCompleted:
          *failure = ResumeFailure::kCompleted;
          return NotFoundError(
              "resume token's stream has ended (it completed: every chunk was answered after "
              "the client's half-close); nothing is left to resume");
        case TokenFate::kEnded:
          *failure = ResumeFailure::kEnded;
          return NotFoundError(fmt::format(
              "resume token's stream has ended{}: only a call that breaks without a clean "
              "half-close can be resumed; open a new stream",
              fate->second.why.empty() ? "" : " (" + fate->second.why + ")"));
        case TokenFate::kNotKept:
          *failure = ResumeFailure::kEnded;
          return NotFoundError(fmt::format(
              "resume token's stream was not kept when its call broke ({}); open a new stream",
              fate->second.why));
      }
      return NotFoundError("resume token not found; open a new stream");
    }
  }
  *failure = ResumeFailure::kAttached;
  live->Cancel("the stream was resumed on a new call");
  return UnavailableError(
      "the stream is still attached to its previous call, which the server is closing now; "
      "retry the resume in a moment");
}

void ParkedStreams::PutBack(const Digest& hash, ParkedStream stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fate = fates_.find(hash);
  if (fate != fates_.end()) fates_.erase(fate);  // its fate_order_ entry no longer matches
  const auto expiry = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(options_.ttl_s));
  InsertParkedLocked(hash, std::move(stream), expiry);
}

size_t ParkedStreams::HandOff(StateStore* store, Clock::time_point deadline) {
  auto saved = std::make_shared<std::atomic<size_t>>(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Clock::time_point now = Clock::now();
    for (const auto& [hash, entry] : entries_) {
      if (!entry.is_parked || entry.expiry <= now) continue;
      store->Put(hash, entry.parked.snapshot,
                 std::chrono::duration<double>(entry.expiry - now).count(),
                 [this, saved](Status status) {
                   ResumeMetrics* m = metrics_ != nullptr ? metrics_->resume() : nullptr;
                   if (status.ok()) ++*saved;
                   if (m != nullptr)
                     (status.ok() ? m->handoffs_saved : m->handoffs_failed)->Increment();
                 });
    }
  }
  store->WaitIdle(deadline);
  return saved->load();
}

size_t ParkedStreams::parked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parked_;
}

size_t ParkedStreams::parked_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parked_bytes_;
}

// Each record is numbered: a hash in fate_order_ whose record was replaced or erased since
// (Alias, PutBack) no longer evicts the newer record.
void ParkedStreams::RecordFateLocked(const Digest& hash, TokenFate fate, const std::string& why,
                                     const std::string& owner) {
  const uint64_t number = ++fates_recorded_;
  fates_.insert_or_assign(hash, Fate{fate, why, number, owner});
  const Clock::time_point now = Clock::now();
  fate_order_.push_back({hash, number, now});
  // Kept for a while, not for ever: memory follows the rate of ended streams, not the uptime.
  const auto keep = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(kMinFateKeepS, kFateKeepTtls * options_.ttl_s)));
  while (fate_order_.size() > kMaxFatesKept ||
         (!fate_order_.empty() && now - fate_order_.front().recorded > keep)) {
    auto it = fates_.find(fate_order_.front().hash);
    if (it != fates_.end() && it->second.number == fate_order_.front().number) fates_.erase(it);
    fate_order_.pop_front();
  }
}

void ParkedStreams::UpdateGaugesLocked() {
  ResumeMetrics* m = metrics_ != nullptr ? metrics_->resume() : nullptr;
  if (m == nullptr) return;
  m->parked->Set(double(parked_));
  m->parked_bytes->Set(double(parked_bytes_));
}

void ParkedStreams::ExpireLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (expiries_.empty()) {
      cv_.wait(lock);
      continue;
    }
    const Clock::time_point next = expiries_.begin()->first;
    if (Clock::now() < next) {
      cv_.wait_until(lock, next);
      continue;
    }
    const Digest hash = expiries_.begin()->second;
    auto it = entries_.find(hash);
    if (it == entries_.end() || !it->second.is_parked) {  // not expected: drop the stale entry
      expiries_.erase(expiries_.begin());
      continue;
    }
    const TokenFate expired = TokenFate::kExpired;
    DropAliasLocked(it->second, &expired, "");
    const std::string owner = it->second.owner;
    EraseParkedLocked(it);
    RecordFateLocked(hash, expired, "", owner);
    if (ResumeMetrics* m = metrics_ ? metrics_->resume() : nullptr) m->expired->Increment();
  }
}

}  // namespace ssm
