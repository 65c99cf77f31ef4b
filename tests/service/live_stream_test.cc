// HeldOutputs and LiveStream::FillSnapshot: the outputs a stream holds for a resume always end at
// its latest frame and are its latest HeldFrames(d_out) frames (at least kMinFloats values), in
// order, for any d_out and any chunking, also from a snapshot's held outputs.
#include "server/service/live_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace ssm {
namespace {

TEST(LiveStreamTest, HeldOutputsEndAtTheLatestFrameForAnyWidth) {
  for (const int d_out : {1, 2, 32, 1000}) {
    SCOPED_TRACE("d_out " + std::to_string(d_out));
    LiveStream live;
    int64_t frame = 0;
    for (uint64_t chunk = 0; chunk < 300; ++chunk) {
      // Chunks with no frames, and now and then one longer than the ring.
      const int frames =
          chunk % 50 == 49 ? int(HeldOutputs::HeldFrames(d_out)) + 3 : int(chunk % 7);
      std::vector<float> outputs(size_t(frames) * size_t(d_out));
      for (size_t i = 0; i < outputs.size(); ++i) outputs[i] = float(frame * d_out + int64_t(i));
      live.Applied(chunk, frame, frames, outputs);
      frame += frames;
      ASSERT_EQ(live.applied, chunk + 1);
      ASSERT_EQ(live.held.first_frame() + int64_t(live.held.floats() / size_t(d_out)), frame);
    }
    const size_t produced = size_t(frame) * size_t(d_out);
    const size_t held = HeldOutputs::HeldFrames(d_out) * size_t(d_out);
    EXPECT_GE(held, HeldOutputs::kMinFloats);
    EXPECT_LT(held, HeldOutputs::kMinFloats + size_t(d_out));
    EXPECT_EQ(live.held.floats(), std::min(produced, held));
    StreamSnapshot snapshot;
    snapshot.d_out = d_out;
    snapshot.frontend.frames = frame;
    ASSERT_TRUE(live.FillSnapshot(&snapshot).ok());
    EXPECT_EQ(snapshot.next_sequence, 300u);
    EXPECT_EQ(snapshot.held_first_frame, live.held.first_frame());
    ASSERT_EQ(snapshot.held_outputs.size(), live.held.floats());
    // Frame f's outputs are f * d_out + 0 .. d_out - 1: the held ones are the latest, in order.
    for (size_t i = 0; i < snapshot.held_outputs.size(); ++i)
      ASSERT_EQ(snapshot.held_outputs[i], float(snapshot.held_first_frame * d_out + int64_t(i)));
    // A resumed stream starts from them and holds the same, then goes on.
    LiveStream resumed;
    resumed.held.Reset(snapshot.held_first_frame, snapshot.held_outputs, d_out);
    EXPECT_EQ(resumed.held.first_frame(), snapshot.held_first_frame);
    EXPECT_EQ(resumed.held.floats(), snapshot.held_outputs.size());
    std::vector<float> next(size_t(5 * d_out));
    for (size_t i = 0; i < next.size(); ++i) next[i] = float(frame * d_out + int64_t(i));
    resumed.Applied(300, frame, 5, next);
    live.Applied(300, frame, 5, next);
    std::vector<float> a, b;
    live.held.AppendTo(&a);
    resumed.held.AppendTo(&b);
    EXPECT_EQ(a, b);
    EXPECT_EQ(resumed.held.first_frame(), live.held.first_frame());

    snapshot.frontend.frames = frame + 1;  // a state ahead of the held outputs: refused
    snapshot.held_outputs.clear();
    EXPECT_EQ(live.FillSnapshot(&snapshot).code(), StatusCode::kInternal);
  }
}

// A snapshot may hold more than the ring (older servers held up to a chunk beyond kMinFloats):
// the latest frames are kept, ending where the snapshot's do.
TEST(LiveStreamTest, ResetKeepsTheLatestFramesOfALargerSnapshot) {
  const int d_out = 3;
  const size_t frames = HeldOutputs::HeldFrames(d_out) + 10;
  std::vector<float> outputs(frames * d_out);
  for (size_t i = 0; i < outputs.size(); ++i) outputs[i] = float(i);
  HeldOutputs held;
  held.Reset(100, outputs, d_out);
  EXPECT_EQ(held.first_frame(), 110);
  ASSERT_EQ(held.floats(), HeldOutputs::HeldFrames(d_out) * d_out);
  std::vector<float> out;
  held.AppendTo(&out);
  EXPECT_EQ(out.front(), float(10 * d_out));
  EXPECT_EQ(out.back(), outputs.back());
  HeldOutputs empty;
  empty.Reset(7, {}, d_out);
  EXPECT_EQ(empty.first_frame(), 7);
  EXPECT_EQ(empty.floats(), 0u);
}

}  // namespace
}  // namespace ssm
