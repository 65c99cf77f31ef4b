// The stream snapshot byte format (docs/design.md §7): round trip, and every damaged snapshot
// (truncated, corrupt, another version, inconsistent, random mutations) fails closed with its
// own error and never reads out of bounds (this file also runs under AddressSanitizer).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "server/engine/snapshot.h"

namespace ssm {
namespace {

StreamSnapshot Sample() {
  StreamSnapshot s;
  for (size_t i = 0; i < s.model_fingerprint.size(); ++i) s.model_fingerprint[i] = uint8_t(i * 7);
  s.backend = "cpu";
  s.next_sequence = 41;
  s.frontend.frames = 123;
  s.frontend.pending = {0.25f, -0.5f, 0.125f};
  s.layers = {{1, 2, 3, 4, 5}, {-1.5f, 2.5f}, {}};
  s.d_out = 2;
  s.held_first_frame = 120;
  s.held_outputs = {0.1f, 0.9f, 0.2f, 0.8f, 0.3f, 0.7f};
  return s;
}

// Rewrites the checksum so that a deliberate change passes it (to reach the later checks).
void Reseal(std::string* bytes) {
  const Digest d = Sha256Of(bytes->data(), bytes->size() - 32);
  std::memcpy(bytes->data() + bytes->size() - 32, d.data(), 32);
}

TEST(SnapshotFormatTest, RoundTripKeepsEveryField) {
  const StreamSnapshot s = Sample();
  const std::string bytes = EncodeSnapshot(s);
  EXPECT_EQ(bytes.substr(0, 8), std::string("SSMSNAP\0", 8));
  auto d = DecodeSnapshot(bytes);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->model_fingerprint, s.model_fingerprint);
  EXPECT_EQ(d->backend, "cpu");
  EXPECT_EQ(d->precision, "f32");
  EXPECT_EQ(d->next_sequence, 41u);
  EXPECT_EQ(d->frontend.frames, 123);
  EXPECT_EQ(d->frontend.skip, 0);
  EXPECT_EQ(d->frontend.pending, s.frontend.pending);
  EXPECT_EQ(d->layers, s.layers);
  EXPECT_EQ(d->d_out, 2);
  EXPECT_EQ(d->held_first_frame, 120);
  EXPECT_EQ(d->held_outputs, s.held_outputs);
  EXPECT_EQ(EncodeSnapshot(*d), bytes);
}

TEST(SnapshotFormatTest, EachDamageHasItsOwnError) {
  const std::string good = EncodeSnapshot(Sample());
  struct Case {
    const char* what;
    std::string bytes;
    StatusCode code;
    const char* message;
  };
  std::string version = good;
  version[8] = 2;
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  std::string inconsistent = good;  // held_first_frame 120 -> 121: 3 frames held, 2 expected
  {
    const int64_t bad = 121;
    const size_t at = good.size() - 32 - 6 * 4 - 8 - 4 - 8;
    int64_t was;
    std::memcpy(&was, inconsistent.data() + at, 8);
    ASSERT_EQ(was, 120);
    std::memcpy(inconsistent.data() + at, &bad, 8);
    Reseal(&inconsistent);
  }
  std::string long_count = good;  // layer_count far beyond the bytes
  {
    const uint32_t layers = 1000;
    const size_t at = 24 + 32 + (4 + 3) + (4 + 3) + 8 + 8 + 8 + 4 + 3 * 4;
    uint32_t was;
    std::memcpy(&was, long_count.data() + at, 4);
    ASSERT_EQ(was, 3u);
    std::memcpy(long_count.data() + at, &layers, 4);
    Reseal(&long_count);
  }
  const std::vector<Case> cases = {
      {"empty", "", StatusCode::kDataLoss, "not an ssmserve stream snapshot"},
      {"not a snapshot", std::string(200, 'x'), StatusCode::kDataLoss, "no \"SSMSNAP\" magic"},
      {"header only", good.substr(0, 20), StatusCode::kDataLoss, "shorter than its header"},
      {"truncated", good.substr(0, good.size() - 5), StatusCode::kDataLoss, "truncated"},
      {"trailing bytes", good + "zz", StatusCode::kDataLoss, "trailing bytes"},
      {"another version", version, StatusCode::kFailedPrecondition, "version 2 is unknown"},
      {"a flipped bit", flipped, StatusCode::kDataLoss, "checksum mismatch"},
      {"inconsistent held outputs", inconsistent, StatusCode::kDataLoss, "inconsistent"},
      {"a count beyond the bytes", long_count, StatusCode::kDataLoss, "bytes are left"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto d = DecodeSnapshot(c.bytes);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), c.code) << d.status().ToString();
    EXPECT_NE(d.status().message().find(c.message), std::string::npos) << d.status().message();
  }
}

// Every float field empty: a fresh frame-input stream, a layer without state, nothing held
// (fuzz finding, tests/fuzz/corpus/snapshot/regress-empty-floats: reading a field of 0 floats
// copied 0 bytes into a null pointer, undefined behaviour that UBSan reports).
TEST(SnapshotFormatTest, EmptyFieldsRoundTrip) {
  StreamSnapshot s;
  s.backend = "cpu";
  s.layers = {{}, {}};
  s.d_out = 2;
  const std::string bytes = EncodeSnapshot(s);
  auto d = DecodeSnapshot(bytes);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(d->frontend.pending.empty());
  EXPECT_EQ(d->layers, s.layers);
  EXPECT_TRUE(d->held_outputs.empty());
  EXPECT_EQ(EncodeSnapshot(*d), bytes);
}

// Random byte changes, insertions and cuts, resealed half of the time so that the field checks
// are reached: decoding fails cleanly or yields a snapshot that encodes back to the same bytes.
TEST(SnapshotFormatTest, RandomMutationsNeverCrash) {
  const std::string good = EncodeSnapshot(Sample());
  std::mt19937 rng(7);
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = good;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0:
          bytes[at] = char(rng());
          break;
        case 1:
          bytes.insert(at, 1, char(rng()));
          break;
        default:
          bytes.resize(std::max<size_t>(at, 1));
      }
    }
    if (rng() % 2 == 0 && bytes.size() >= 56) {
      const uint64_t total = bytes.size();
      std::memcpy(bytes.data() + 16, &total, 8);
      Reseal(&bytes);
    }
    auto d = DecodeSnapshot(bytes);
    if (d.ok()) {
      ++decoded;
      EXPECT_EQ(EncodeSnapshot(*d), bytes);
    } else {
      EXPECT_FALSE(d.status().message().empty());
    }
  }
  EXPECT_LT(decoded, 20000);
}

// The owner (the API key that opened the stream) travels in the snapshot under flag 1; without
// one the bytes are those of a snapshot without owner (flags 0).
TEST(SnapshotFormatTest, TheOwnerRoundTripsUnderItsFlag) {
  StreamSnapshot s = Sample();
  const std::string plain = EncodeSnapshot(s);
  EXPECT_EQ(plain[12], 0);
  s.owner = "alice";
  const std::string owned = EncodeSnapshot(s);
  EXPECT_EQ(owned[12], 1);
  EXPECT_EQ(owned.size(), plain.size() + 4 + 5);
  auto d = DecodeSnapshot(owned);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->owner, "alice");
  EXPECT_EQ(EncodeSnapshot(*d), owned);
  EXPECT_EQ(DecodeSnapshot(plain)->owner, "");
  std::string other_flag = owned;
  other_flag[12] = 3;
  Reseal(&other_flag);
  EXPECT_EQ(DecodeSnapshot(other_flag).status().code(), StatusCode::kDataLoss);
  std::string empty_owner = plain;
  empty_owner[12] = 1;  // the flag without an owner: the next u32 (a fingerprint byte) misreads
  Reseal(&empty_owner);
  EXPECT_FALSE(DecodeSnapshot(empty_owner).ok());
}

}  // namespace
}  // namespace ssm
