// The Authenticator on its own (server/service/authenticator.h): secrets compared by hash, the
// model and limit checks of an admission with their codes and messages, reloads that revoke,
// update or keep keys, a bad reload that keeps the keys in force, and the server-wide open rate.
#include "server/service/authenticator.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace ssm {
namespace {

std::string Line(const std::string& id, const std::string& secret, const std::string& rest) {
  return id + " sha256:" + Hex(SecretHash(secret)) + " " + rest + "\n";
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("ssm-auth-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }
  std::unique_ptr<Authenticator> Make(double opens_per_s = 0) {
    auto auth = Authenticator::Create({path_.string(), opens_per_s, 3600}, nullptr);
    EXPECT_TRUE(auth.ok()) << auth.status().ToString();
    return auth.ok() ? std::move(*auth) : nullptr;
  }
  std::filesystem::path path_;
};

TEST_F(AuthenticatorTest, ASecretNamesItsKeyAndAnythingElseIsUnauthenticated) {
  Write(Line("alice", "s1", "* - -") + Line("bob", "s2", "* - -"));
  auto auth = Make();
  ASSERT_NE(auth, nullptr);
  EXPECT_TRUE(auth->enabled());
  EXPECT_EQ(auth->key_count(), 2u);
  EXPECT_EQ((*auth->AuthenticateSecret("s1"))->id(), "alice");
  EXPECT_EQ((*auth->AuthenticateSecret("s2"))->id(), "bob");
  auto unknown = auth->AuthenticateSecret("s3");
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(unknown.status().message().find("unknown API key"), std::string::npos);
  EXPECT_FALSE(auth->AuthenticateSecret("").ok());
  EXPECT_FALSE(auth->AuthenticateSecret("s1 ").ok());
}

TEST_F(AuthenticatorTest, AdmissionChecksModelStreamsAndOpensWithTheirCodes) {
  Write(Line("alice", "s1", "vad 2 3"));
  auto auth = Make();
  ASSERT_NE(auth, nullptr);
  auto alice = *auth->AuthenticateSecret("s1");
  auto model = auth->Admit(alice, "demo", false);
  EXPECT_EQ(model.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(model.status().message().find("API key \"alice\" may not use model \"demo\""),
            std::string::npos);
  EXPECT_FALSE(auth->MayUse(*alice, "demo"));
  EXPECT_TRUE(auth->MayUse(*alice, "vad"));
  std::vector<CallLease> leases;
  leases.push_back(*auth->Admit(alice, "vad", false));
  leases.push_back(*auth->Admit(alice, "vad", false));
  auto third = auth->Admit(alice, "vad", false);
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("max streams 2"), std::string::npos);
  // A resume needs a stream place too, but is not an open.
  EXPECT_EQ(auth->Admit(alice, "vad", true).status().code(), StatusCode::kResourceExhausted);
  leases.pop_back();  // released
  leases.push_back(*auth->Admit(alice, "vad", true));
  leases.clear();
  // 2 opens so far in this minute; the 3rd is allowed, the 4th is over.
  {
    auto lease = auth->Admit(alice, "vad", false);
    EXPECT_TRUE(lease.ok());
  }
  auto over = auth->Admit(alice, "vad", false);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("opens per minute 3"), std::string::npos);
  EXPECT_TRUE(auth->Admit(alice, "vad", true).ok());  // resumes still go
}

TEST_F(AuthenticatorTest, AReloadRevokesGoneAndRekeyedKeysAndUpdatesTheRest) {
  Write(Line("alice", "s1", "vad - -") + Line("bob", "s2", "* - -") + Line("carol", "s3", "* - -"));
  auto auth = Make();
  ASSERT_NE(auth, nullptr);
  auto alice = *auth->AuthenticateSecret("s1");
  auto bob = *auth->AuthenticateSecret("s2");
  auto carol = *auth->AuthenticateSecret("s3");
  auto lease = *auth->Admit(alice, "vad", false);
  const uint64_t alice_generation = alice->generation();
  // alice may now use demo only; bob is gone; carol has a new secret.
  Write(Line("alice", "s1", "demo 1 -") + Line("carol", "s4", "* - -"));
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_FALSE(alice->revoked());
  EXPECT_NE(alice->generation(), alice_generation);
  EXPECT_EQ(alice->Check("vad").code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(alice->Check("demo").ok());
  // The same identity: its open call still counts against its new limit of 1.
  EXPECT_EQ(*auth->AuthenticateSecret("s1"), alice);
  EXPECT_EQ(auth->Admit(alice, "demo", false).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(bob->revoked());
  EXPECT_EQ(bob->Check("vad").code(), StatusCode::kUnauthenticated);
  auto revoked = auth->AuthenticateSecret("s2");
  EXPECT_EQ(revoked.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(revoked.status().message().find("API key \"bob\" was revoked"), std::string::npos);
  EXPECT_EQ(auth->Admit(bob, "vad", false).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(carol->revoked());
  EXPECT_FALSE(auth->AuthenticateSecret("s3").ok());
  auto new_carol = auth->AuthenticateSecret("s4");
  ASSERT_TRUE(new_carol.ok());
  EXPECT_NE(*new_carol, carol);
  // A bad file is not applied: the keys in force stay.
  Write("garbage\n");
  EXPECT_EQ(auth->Reload().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(auth->AuthenticateSecret("s1").ok());
  // Giving a revoked secret back un-revokes it (a new identity).
  Write(Line("bob", "s2", "* - -"));
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_TRUE(auth->AuthenticateSecret("s2").ok());
  EXPECT_TRUE(alice->revoked());
}

TEST_F(AuthenticatorTest, TheFileIsWatchedForChanges) {
  Write(Line("alice", "s1", "* - -"));
  auto created = Authenticator::Create({path_.string(), 0, 0.05}, nullptr);
  ASSERT_TRUE(created.ok());
  auto alice = *(*created)->AuthenticateSecret("s1");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  Write(Line("bob", "s2", "* - -") + "# now longer than before\n");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!alice->revoked() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(alice->revoked());
  EXPECT_TRUE((*created)->AuthenticateSecret("s2").ok());
}

// A file being rewritten in place is read only once it has settled: while it keeps changing
// (here truncated and refilled every 5 ms, so an empty file is seen about half the time, as a
// slow editor or `cat > keys` can leave it), its keys stay in force. Before the watcher waited
// for a file to settle, some look read it empty and revoked alice.
TEST_F(AuthenticatorTest, AFileBeingRewrittenIsReadOnceItSettles) {
  const std::string keys = Line("alice", "s1", "* - -");
  Write(keys);
  // Looks 200 ms apart: only a writer stalled that long between two rewrites lets a look see
  // the same empty file twice.
  auto created = Authenticator::Create({path_.string(), 0, 0.2}, nullptr);
  ASSERT_TRUE(created.ok());
  auto alice = *(*created)->AuthenticateSecret("s1");
  const auto churn_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
  for (int i = 0; std::chrono::steady_clock::now() < churn_end; ++i) {
    Write(i % 2 == 0 ? std::string() : keys + "# rewrite " + std::to_string(i) + "\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_FALSE(alice->revoked()) << "after rewrite " << i;
  }
  Write(keys + Line("bob", "s2", "* - -"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!(*created)->AuthenticateSecret("s2").ok() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE((*created)->AuthenticateSecret("s2").ok());
  EXPECT_FALSE(alice->revoked());
  EXPECT_TRUE((*created)->AuthenticateSecret("s1").ok());
}

TEST_F(AuthenticatorTest, WithoutKeysEveryoneIsAnonymousAndOnlyTheServerRateApplies) {
  auto created = Authenticator::Create({"", 3, 1}, nullptr);
  ASSERT_TRUE(created.ok());
  Authenticator& auth = **created;
  EXPECT_FALSE(auth.enabled());
  EXPECT_FALSE(auth.AuthenticateSecret("x").ok());
  auto a = auth.Admit(std::shared_ptr<Identity>(), "any", false);
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(auth.Admit(nullptr, "any", false).ok());
  EXPECT_TRUE(auth.Admit(nullptr, "any", true).ok());
  auto over = auth.Admit(nullptr, "any", false);
  EXPECT_EQ(over.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(over.status().message().find("at most 3 new calls per second"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));
  EXPECT_TRUE(auth.Admit(nullptr, "any", false).ok());
  EXPECT_EQ(Authenticator::Create({"/nonexistent/keys", 0, 1}, nullptr).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace ssm
