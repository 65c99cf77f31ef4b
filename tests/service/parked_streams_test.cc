// ParkedStreams on its own: tokens, parking, single use, put-back, expiry, --max-parked, and the
// messages of every refusal.
#include "server/service/parked_streams.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace ssm {
namespace {

// A call whose cancel does nothing (these tests have no calls).
class NoCallCanceller final : public CallCanceller {
 public:
  void Cancel(const char*) override {}
  void Detach() override {}
};

std::shared_ptr<CallCanceller> NoCall() { return std::make_shared<NoCallCanceller>(); }

TEST(ParkedStreamsTest, TokensAreRandomBase64UrlAndOnlyTheirHashIsTheKey) {
  ParkedStreams parked({60, 10}, nullptr);
  std::set<std::string> tokens;
  for (int i = 0; i < 1000; ++i) {
    Digest hash;
    auto token = parked.Issue(NoCall(), "", &hash);
    ASSERT_TRUE(token.ok());
    ASSERT_EQ(token->size(), 24u);
    EXPECT_EQ(token->find_first_not_of(
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos);
    EXPECT_EQ(hash, Sha256Of(*token));
    tokens.insert(*token);
  }
  EXPECT_EQ(tokens.size(), 1000u);
  ParkedStreams off({0, 10}, nullptr);
  Digest hash;
  EXPECT_EQ(*off.Issue(NoCall(), "", &hash), "");
}

TEST(ParkedStreamsTest, AParkedStreamResumesOnceAndEveryRefusalSaysWhy) {
  ParkedStreams parked({60, 10}, nullptr);
  Digest hash, taken_hash;
  const std::string token = *parked.Issue(NoCall(), "", &hash);
  ResumeFailure failure;
  // Live: the stream's call has not ended.
  auto live = parked.Take(token, "", &taken_hash, &failure);
  ASSERT_FALSE(live.ok());
  EXPECT_EQ(live.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(failure, ResumeFailure::kAttached);
  ASSERT_TRUE(parked.Park(hash, {"vad", "snapshot bytes", ""}));
  EXPECT_EQ(parked.parked(), 1u);
  EXPECT_EQ(parked.parked_bytes(), 14u);
  auto taken = parked.Take(token, "", &taken_hash, &failure);
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_EQ(taken->model, "vad");
  EXPECT_EQ(taken->snapshot, "snapshot bytes");
  EXPECT_EQ(parked.parked(), 0u);
  EXPECT_EQ(parked.parked_bytes(), 0u);
  auto again = parked.Take(token, "", &taken_hash, &failure);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(failure, ResumeFailure::kUsedToken);
  EXPECT_NE(again.status().message().find("already used"), std::string::npos);
  // Put back after a refusal the client can fix: the same token works again.
  parked.PutBack(taken_hash, std::move(*taken));
  EXPECT_TRUE(parked.Take(token, "", &taken_hash, &failure).ok());
  auto unknown = parked.Take("not-a-token", "", &taken_hash, &failure);
  EXPECT_EQ(failure, ResumeFailure::kUnknownToken);
  EXPECT_NE(unknown.status().message().find("not found"), std::string::npos);
  Digest ended_hash;
  const std::string ended = *parked.Issue(NoCall(), "", &ended_hash);
  parked.Forget(ended_hash, TokenFate::kEnded, "it completed");
  auto gone = parked.Take(ended, "", &taken_hash, &failure);
  EXPECT_EQ(failure, ResumeFailure::kEnded);
  EXPECT_NE(gone.status().message().find("has ended (it completed)"), std::string::npos)
      << gone.status().message();
}

TEST(ParkedStreamsTest, BeyondMaxParkedAStreamIsNotKeptAndSaysSo) {
  ParkedStreams parked({60, 2}, nullptr);
  std::vector<std::string> tokens;
  std::vector<Digest> hashes(3);
  for (int i = 0; i < 3; ++i) tokens.push_back(*parked.Issue(NoCall(), "", &hashes[i]));
  EXPECT_TRUE(parked.Park(hashes[0], {"m", "a", ""}));
  EXPECT_TRUE(parked.Park(hashes[1], {"m", "b", ""}));
  EXPECT_FALSE(parked.Park(hashes[2], {"m", "c", ""}));
  EXPECT_EQ(parked.parked(), 2u);
  Digest hash;
  ResumeFailure failure;
  auto refused = parked.Take(tokens[2], "", &hash, &failure);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound);
  EXPECT_NE(refused.status().message().find("--max-parked"), std::string::npos);
}

TEST(ParkedStreamsTest, ParkedStreamsExpireAtTheirTtl) {
  ParkedStreams parked({0.2, 10}, nullptr);
  Digest hash;
  const std::string token = *parked.Issue(NoCall(), "", &hash);
  ASSERT_TRUE(parked.Park(hash, {"m", std::string(1000, 'x'), ""}));
  EXPECT_EQ(parked.parked_bytes(), 1000u);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(parked.parked(), 0u);  // freed by the expiry thread, without any other call
  EXPECT_EQ(parked.parked_bytes(), 0u);
  Digest taken;
  ResumeFailure failure;
  auto expired = parked.Take(token, "", &taken, &failure);
  EXPECT_EQ(failure, ResumeFailure::kExpired);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos);
}

// A token resumes only its owner's stream: another identity is refused before anything is
// looked at (the live call is not cancelled, the parked stream stays, no fate is told).
TEST(ParkedStreamsTest, AnotherOwnersTokenIsRefusedAndTouchesNothing) {
  ParkedStreams parked({60, 10}, nullptr);
  Digest hash, taken_hash;
  const std::string token = *parked.Issue(NoCall(), "alice", &hash);
  ResumeFailure failure;
  auto live = parked.Take(token, "bob", &taken_hash, &failure);
  EXPECT_EQ(live.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(failure, ResumeFailure::kOtherIdentity);
  ASSERT_TRUE(parked.Park(hash, {"m", "state", "alice"}));
  EXPECT_EQ(parked.Take(token, "bob", &taken_hash, &failure).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(parked.Take(token, "", &taken_hash, &failure).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(parked.parked(), 1u);
  auto mine = parked.Take(token, "alice", &taken_hash, &failure);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->owner, "alice");
  // Its fate (used) is told to its owner only.
  auto used = parked.Take(token, "alice", &taken_hash, &failure);
  EXPECT_EQ(failure, ResumeFailure::kUsedToken);
  EXPECT_FALSE(parked.Take(token, "bob", &taken_hash, &failure).ok());
  EXPECT_EQ(failure, ResumeFailure::kOtherIdentity);
  // Put back, it is still alice's.
  parked.PutBack(taken_hash, std::move(*mine));
  EXPECT_EQ(parked.Take(token, "bob", &taken_hash, &failure).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(parked.Take(token, "alice", &taken_hash, &failure).ok());
}

TEST(ParkedStreamsTest, BeyondMaxParkedBytesAStreamIsNotKeptAndSaysSo) {
  ParkedStreams parked({60, 10, 1500}, nullptr);
  Digest a, b;
  const std::string first = *parked.Issue(NoCall(), "", &a);
  const std::string second = *parked.Issue(NoCall(), "", &b);
  EXPECT_TRUE(parked.Park(a, {"m", std::string(1000, 'x'), ""}));
  EXPECT_FALSE(parked.Park(b, {"m", std::string(1000, 'y'), ""}));
  EXPECT_EQ(parked.parked_bytes(), 1000u);
  Digest hash;
  ResumeFailure failure;
  auto refused = parked.Take(second, "", &hash, &failure);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound);
  EXPECT_NE(refused.status().message().find("--max-parked-bytes 1500"), std::string::npos)
      << refused.status().message();
}

}  // namespace
}  // namespace ssm
