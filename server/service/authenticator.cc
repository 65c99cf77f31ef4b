#include "server/service/authenticator.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "server/service/log.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;

// Revoked credentials remembered (so that a refusal can say "revoked"); the oldest go first.
constexpr size_t kMaxRevokedRemembered = 4096;
// Largest keys file read.
constexpr std::streamoff kMaxKeysFileBytes = 16 << 20;

bool StartsWithIgnoringCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

}  // namespace

const char* AuthRefusalName(AuthRefusal refusal) {
  switch (refusal) {
    case AuthRefusal::kMissing:
      return "missing";
    case AuthRefusal::kUnknown:
      return "unknown";
    case AuthRefusal::kRevoked:
      return "revoked";
    case AuthRefusal::kModel:
      return "model";
    case AuthRefusal::kStreams:
      return "max_streams";
    case AuthRefusal::kOpens:
      return "opens_per_minute";
    case AuthRefusal::kServerOpens:
      return "server_opens_per_second";
    case AuthRefusal::kOtherIdentity:
      return "other_identity";
  }
  return "unknown";
}

// The keys in force: entries[i] is identities[i]'s line.
struct Authenticator::Table {
  std::vector<KeyEntry> entries;
  std::vector<std::shared_ptr<Identity>> identities;
};

Status Identity::Check(const std::string& model) const {
  if (revoked()) return UnauthenticatedError(fmt::format("API key \"{}\" was revoked", id_));
  std::lock_guard<std::mutex> lock(mu_);
  if (!entry_.MayUse(model))
    return PermissionDeniedError(
        fmt::format("API key \"{}\" may no longer use model \"{}\" (it may use {})", id_, model,
                    entry_.ModelsText()));
  return OkStatus();
}

CallLease::CallLease(std::shared_ptr<Identity> identity) : identity_(std::move(identity)) {}

CallLease& CallLease::operator=(CallLease&& other) noexcept {
  if (this != &other) {
    Release();
    identity_ = std::move(other.identity_);
  }
  return *this;
}

void CallLease::Release() {
  if (identity_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(identity_->mu_);
    --identity_->active_;
  }
  if (identity_->streams_active_ != nullptr) identity_->streams_active_->Decrement();
  identity_.reset();
}

Authenticator::Authenticator(const Options& options, Metrics* metrics)
    : options_(options), metrics_(metrics) {
  if (metrics_ == nullptr || !metrics_->enabled()) return;
  prometheus::Registry& r = *metrics_->registry();
  key_active_ = &prometheus::BuildGauge()
                     .Name("ssm_key_streams_active")
                     .Help("Stream and ProcessFile calls open now, by API key id (--auth-keys)")
                     .Register(r);
  key_opened_ =
      &prometheus::BuildCounter()
           .Name("ssm_key_streams_opened_total")
           .Help("Stream and ProcessFile calls admitted (resumes included), by API key id")
           .Register(r);
  auto& refusals =
      prometheus::BuildCounter()
          .Name("ssm_auth_refusals_total")
          .Help("Calls refused by authentication, permission or abuse limits, by reason")
          .Register(r);
  for (int i = 0; i < kAuthRefusals; ++i)
    refusals_[size_t(i)] = &refusals.Add({{"reason", AuthRefusalName(AuthRefusal(i))}});
  auto& reloads = prometheus::BuildCounter()
                      .Name("ssm_auth_reloads_total")
                      .Help("Reloads of the --auth-keys file, by result (ok, error: keys kept)")
                      .Register(r);
  reloads_ok_ = &reloads.Add({{"result", "ok"}});
  reloads_failed_ = &reloads.Add({{"result", "error"}});
  keys_gauge_ = &prometheus::BuildGauge()
                     .Name("ssm_auth_keys")
                     .Help("Identities in the --auth-keys file in force")
                     .Register(r)
                     .Add({});
}

StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const Options& options,
                                                               Metrics* metrics) {
  if (!(options.max_opens_per_s >= 0))
    return InvalidArgumentError("--max-opens-per-second must be >= 0");
  std::unique_ptr<Authenticator> auth(new Authenticator(options, metrics));
  if (!auth->enabled()) return auth;
  SSM_ASSIGN_OR_RETURN(std::shared_ptr<const Table> table, auth->ReadTable());
  {
    std::lock_guard<std::mutex> lock(auth->mu_);
    auth->ApplyLocked(std::move(table));
  }
  auth->watcher_ = std::thread([a = auth.get()] { a->WatchLoop(); });
  return auth;
}

Authenticator::~Authenticator() {
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    stop_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

size_t Authenticator::key_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_ == nullptr ? 0 : table_->entries.size();
}

StatusOr<std::shared_ptr<const Authenticator::Table>> Authenticator::ReadTable() const {
  const std::string& path = options_.keys_file;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return NotFoundError(
        fmt::format("cannot read the keys file {} (--auth-keys): {}", path, std::strerror(errno)));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size > kMaxKeysFileBytes)
    return InvalidArgumentError(fmt::format("keys file {} is {} bytes; at most {} are read", path,
                                            size, kMaxKeysFileBytes));
  in.seekg(0);
  std::ostringstream text;
  text << in.rdbuf();
  SSM_ASSIGN_OR_RETURN(std::vector<KeyEntry> entries, ParseKeyFile(text.str(), path));
  auto table = std::make_shared<Table>();
  table->entries = std::move(entries);
  return std::shared_ptr<const Table>(std::move(table));
}

void Authenticator::ApplyLocked(std::shared_ptr<const Table> incoming) {
  auto table = std::make_shared<Table>(*incoming);
  std::map<std::string, std::shared_ptr<Identity>> old;
  std::map<std::string, const KeyEntry*> old_entries;
  if (table_ != nullptr)
    for (size_t i = 0; i < table_->entries.size(); ++i) {
      old[table_->entries[i].id] = table_->identities[i];
      old_entries[table_->entries[i].id] = &table_->entries[i];
    }
  int revoked = 0;
  for (const KeyEntry& e : table->entries) {
    std::shared_ptr<Identity> identity;
    auto it = old.find(e.id);
    if (it != old.end() && old_entries[e.id]->SameCredential(e)) {
      identity = it->second;  // kept: new models and limits, same counters
      old.erase(it);
    } else {
      identity.reset(new Identity(e.id));
      if (key_active_ != nullptr) {
        identity->streams_active_ = &key_active_->Add({{"key", e.id}});
        identity->streams_opened_ = &key_opened_->Add({{"key", e.id}});
      }
    }
    {
      std::lock_guard<std::mutex> lock(identity->mu_);
      identity->entry_ = e;
    }
    identity->generation_.fetch_add(1, std::memory_order_acq_rel);
    table->identities.push_back(std::move(identity));
    // A credential given back to the file is no longer revoked.
    if (e.kind == KeyEntry::Kind::kSecret)
      revoked_.erase(e.secret_hash);
    else
      revoked_subjects_.erase(e.subject);
  }
  for (auto& [id, identity] : old) {  // gone, or its credential changed
    KeyEntry entry;
    {
      std::lock_guard<std::mutex> lock(identity->mu_);
      entry = identity->entry_;
    }
    identity->revoked_.store(true, std::memory_order_release);
    identity->generation_.fetch_add(1, std::memory_order_acq_rel);
    if (revoked_.size() + revoked_subjects_.size() >= kMaxRevokedRemembered) {
      revoked_.clear();
      revoked_subjects_.clear();
    }
    if (entry.kind == KeyEntry::Kind::kSecret)
      revoked_[entry.secret_hash] = id;
    else
      revoked_subjects_[entry.subject] = id;
    ++revoked;
  }
  if (table_ != nullptr)
    log::Info("keys file {}: {} keys in force, {} revoked", options_.keys_file,
              table->entries.size(), revoked);
  table_ = std::move(table);
  if (keys_gauge_ != nullptr) keys_gauge_->Set(double(table_->entries.size()));
}

Status Authenticator::Reload() {
  if (!enabled()) return OkStatus();
  std::lock_guard<std::mutex> reload(reload_mu_);
  const FileStamp stamp = FileStamp::Of(options_.keys_file);
  auto table = ReadTable();
  if (!table.ok()) {
    if (reloads_failed_ != nullptr) reloads_failed_->Increment();
    log::Error("keys file not reloaded, the keys in force stay: {}", table.status().message());
    std::lock_guard<std::mutex> lock(mu_);
    stamp_ = stamp;  // do not retry the same bad file every watch period
    return table.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  stamp_ = stamp;
  ApplyLocked(std::move(*table));
  if (reloads_ok_ != nullptr) reloads_ok_->Increment();
  return OkStatus();
}

void Authenticator::WatchLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stamp_ = FileStamp::Of(options_.keys_file);
  }
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.watch_period_s));
  // A change is read once the file has looked the same for one more period: a file written in
  // place (truncated, then filled) is otherwise read half written, and an empty or cut file
  // would revoke the keys it had not reached yet until the next look.
  FileStamp seen;
  std::unique_lock<std::mutex> lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();
    const FileStamp now = FileStamp::Of(options_.keys_file);
    bool changed;
    {
      std::lock_guard<std::mutex> state(mu_);
      changed = !(now == stamp_);
    }
    if (changed && now == seen) {
      log::Info("keys file {} changed: reloading", options_.keys_file);
      (void)Reload();
    }
    seen = now;
    lock.lock();
  }
}

Authenticator::FileStamp Authenticator::FileStamp::Of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return FileStamp{};  // gone: differs from any real stamp
  return {int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, int64_t(st.st_size),
          int64_t(st.st_ino)};
}

Status Authenticator::Refuse(AuthRefusal refusal, Status status) {
  CountRefusal(refusal);
  return status;
}

void Authenticator::CountRefusal(AuthRefusal refusal) {
  if (prometheus::Counter* c = refusals_[size_t(refusal)]) c->Increment();
}

CallerCredentials CallerCredentials::Of(const grpc::ServerContextBase& context) {
  CallerCredentials c;
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  if (header != metadata.end()) {
    c.has_authorization = true;
    c.authorization.assign(header->second.data(), header->second.size());
    return c;  // a key wins over a certificate: its subject is not needed
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    const auto values = auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
    if (!values.empty()) c.subject.assign(values.front().data(), values.front().size());
  }
  return c;
}

StatusOr<std::shared_ptr<Identity>> Authenticator::Authenticate(
    const CallerCredentials& credentials) {
  if (!enabled()) {
    static const std::shared_ptr<Identity> anonymous(new Identity(""));
    return anonymous;
  }
  std::shared_ptr<const Table> table;
  {
    std::lock_guard<std::mutex> lock(mu_);
    table = table_;
  }
  if (credentials.has_authorization) {
    std::string_view value = credentials.authorization;
    if (!StartsWithIgnoringCase(value, "bearer "))
      return Refuse(AuthRefusal::kMissing,
                    UnauthenticatedError("the authorization metadata must be \"Bearer SECRET\""));
    value.remove_prefix(7);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    return AuthenticateSecret(value);
  }
  // No key: the verified client certificate's subject, if the connection has one.
  const std::string& subject = credentials.subject;
  if (subject.empty())
    return Refuse(
        AuthRefusal::kMissing,
        UnauthenticatedError("no API key: send the metadata \"authorization: Bearer SECRET\" (this "
                             "server runs with --auth-keys)"));
  for (size_t i = 0; i < table->entries.size(); ++i) {
    const KeyEntry& e = table->entries[i];
    if (e.kind == KeyEntry::Kind::kCertSubject && e.subject == subject) return table->identities[i];
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto revoked = revoked_subjects_.find(subject);
  if (revoked != revoked_subjects_.end())
    return Refuse(AuthRefusal::kRevoked,
                  UnauthenticatedError(fmt::format(
                      "the client certificate's identity \"{}\" was revoked", revoked->second)));
  return Refuse(AuthRefusal::kUnknown,
                UnauthenticatedError(fmt::format(
                    "no API key, and the client certificate's subject \"{}\" is not in the keys "
                    "file",
                    subject)));
}

StatusOr<std::shared_ptr<Identity>> Authenticator::AuthenticateSecret(std::string_view secret) {
  std::shared_ptr<const Table> table;
  {
    std::lock_guard<std::mutex> lock(mu_);
    table = table_;
  }
  if (table == nullptr) return UnauthenticatedError("this server has no API keys");
  const Digest presented = SecretHash(secret);
  // Every key is compared, each in constant time, so the time taken says nothing about which
  // key (if any) matched, nor how much of a hash did.
  size_t match = table->entries.size();
  for (size_t i = 0; i < table->entries.size(); ++i) {
    const KeyEntry& e = table->entries[i];
    const bool equal = e.kind == KeyEntry::Kind::kSecret &&
                       CRYPTO_memcmp(e.secret_hash.data(), presented.data(), 32) == 0;
    if (equal) match = i;
  }
  if (match < table->entries.size()) return table->identities[match];
  std::lock_guard<std::mutex> lock(mu_);
  auto revoked = revoked_.find(presented);
  if (revoked != revoked_.end())
    return Refuse(AuthRefusal::kRevoked,
                  UnauthenticatedError(fmt::format("API key \"{}\" was revoked", revoked->second)));
  return Refuse(AuthRefusal::kUnknown,
                UnauthenticatedError("unknown API key: no key of this server has this secret"));
}

bool Authenticator::AdmitServerOpen(Clock::time_point now) {
  if (options_.max_opens_per_s <= 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  while (!server_opens_.empty() && now - server_opens_.front() >= std::chrono::seconds(1))
    server_opens_.pop_front();
  if (double(server_opens_.size()) >= options_.max_opens_per_s) return false;
  server_opens_.push_back(now);
  return true;
}

bool Authenticator::MayUse(const Identity& identity, const std::string& model) const {
  if (!enabled()) return true;
  std::lock_guard<std::mutex> lock(identity.mu_);
  return !identity.revoked() && identity.entry_.MayUse(model);
}

StatusOr<CallLease> Authenticator::Admit(const std::shared_ptr<Identity>& identity,
                                         const std::string& model, bool resume) {
  const Clock::time_point now = Clock::now();
  if (!AdmitServerOpen(now))
    return Refuse(
        AuthRefusal::kServerOpens,
        UnavailableError(fmt::format("the server is admitting at most {:g} new calls per second "
                                     "(--max-opens-per-second); retry shortly",
                                     options_.max_opens_per_s)));
  if (enabled()) {
    // Checked and counted under one lock: racing calls of a key cannot pass its limit together.
    std::lock_guard<std::mutex> lock(identity->mu_);
    const KeyEntry& e = identity->entry_;
    if (identity->revoked())
      return Refuse(AuthRefusal::kRevoked, UnauthenticatedError(fmt::format(
                                               "API key \"{}\" was revoked", identity->id())));
    if (!e.MayUse(model))
      return Refuse(AuthRefusal::kModel,
                    PermissionDeniedError(
                        fmt::format("API key \"{}\" may not use model \"{}\" (it may use {})",
                                    identity->id(), model, e.ModelsText())));
    if (e.max_streams > 0 && identity->active_ >= e.max_streams)
      return Refuse(AuthRefusal::kStreams,
                    ResourceExhaustedError(fmt::format(
                        "API key \"{}\" has {} streams open, its limit (max streams {}); close one "
                        "first",
                        identity->id(), identity->active_, e.max_streams)));
    while (!identity->opens_.empty() && now - identity->opens_.front() >= std::chrono::minutes(1))
      identity->opens_.pop_front();
    if (!resume && e.max_opens_per_minute > 0) {
      if (int(identity->opens_.size()) >= e.max_opens_per_minute)
        return Refuse(AuthRefusal::kOpens,
                      ResourceExhaustedError(fmt::format(
                          "API key \"{}\" opened {} streams in the last minute, its limit (opens "
                          "per minute {}); retry later",
                          identity->id(), identity->opens_.size(), e.max_opens_per_minute)));
      identity->opens_.push_back(now);
    }
    ++identity->active_;
  }
  if (!enabled() || identity == nullptr) return CallLease();  // anonymous: nothing is counted
  if (identity->streams_active_ != nullptr) identity->streams_active_->Increment();
  if (identity->streams_opened_ != nullptr) identity->streams_opened_->Increment();
  return CallLease(identity);
}

}  // namespace ssm
