// HeldOutputs and LiveStream::FillSnapshot: the outputs a stream holds for a resume always end at
// its latest frame and cover at least HeldOutputs::kMinFloats, in whole chunks, for any d_out.
#include "server/service/live_stream.h"

#include <gtest/gtest.h>

namespace ssm {
namespace {

TEST(LiveStreamTest, HeldOutputsEndAtTheLatestFrameForAnyWidth) {
  for (const int d_out : {1, 2, 32, 1000}) {
    SCOPED_TRACE("d_out " + std::to_string(d_out));
    LiveStream live;
    int64_t frame = 0;
    for (uint64_t chunk = 0; chunk < 300; ++chunk) {
      const int frames = int(chunk % 7);  // chunks with no frames too
      std::vector<float> outputs(size_t(frames) * size_t(d_out));
      for (size_t i = 0; i < outputs.size(); ++i) outputs[i] = float(frame * d_out + int64_t(i));
      live.Applied(chunk, frame, frames, outputs);
      frame += frames;
      ASSERT_EQ(live.applied, chunk + 1);
      ASSERT_EQ(live.held.first_frame() + int64_t(live.held.floats() / size_t(d_out)), frame);
    }
    const size_t produced = size_t(frame) * size_t(d_out);
    if (produced <= HeldOutputs::kMinFloats) {
      EXPECT_EQ(live.held.floats(), produced);  // everything so far
    } else {
      EXPECT_GE(live.held.floats(), HeldOutputs::kMinFloats);
      EXPECT_LT(live.held.floats(), HeldOutputs::kMinFloats + size_t(7 * d_out));  // whole chunks
    }
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
    snapshot.frontend.frames = frame + 1;  // a state ahead of the held outputs: refused
    snapshot.held_outputs.clear();
    EXPECT_EQ(live.FillSnapshot(&snapshot).code(), StatusCode::kInternal);
  }
}

}  // namespace
}  // namespace ssm
