// Payload decoding (server/service/payload.h) at its edges: a frame size below 1 is refused
// (it was a division by zero, SIGFPE, found by the payload fuzz target with frame_dim 0).
#include "server/service/payload.h"

#include <gtest/gtest.h>

namespace ssm {
namespace {

TEST(PayloadTest, AFrameSizeBelowOneIsRefusedNotADivisionByZero) {
  std::vector<float> values;
  for (int frame_dim : {0, -1}) {
    const Status s =
        DecodePayload(PayloadFormat::kFramesF32le, std::string(8, '\0'), frame_dim, &values);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << frame_dim;
    EXPECT_NE(s.message().find("at least 1 float"), std::string::npos) << s.message();
    EXPECT_FALSE(DecodePayload(PayloadFormat::kFramesF32le, "", frame_dim, &values).ok());
  }
  ASSERT_TRUE(DecodePayload(PayloadFormat::kFramesF32le, std::string(8, '\0'), 2, &values).ok());
  EXPECT_EQ(values.size(), 2u);
}

}  // namespace
}  // namespace ssm
