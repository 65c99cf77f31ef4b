// Resuming broken Stream calls (docs/design.md §7), end to end through the real ssm-server: a
// call that breaks parks its stream, a new call with its token continues it, and the outputs the
// client ends up with equal the uninterrupted stream's bitwise. Every refusal (unknown, used or
// expired token, another model, frames no longer held, no free slot, resuming off, the parked
// list full) has its own status and message, and the metrics count it.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/http_get.h"
#include "tests/integration/raw_stream.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

using testing::Call;
using testing::Open;
using testing::Payloads;
namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class ResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_resume_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ModelConfig frames = testing::SmallFrameConfig();
    frames.d_out = 32;  // 512 frames fill the 64 KiB of held outputs
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 21)->Save(*dir_ + "/audio").ok());
    ASSERT_TRUE(testing::RandomModel(frames, 22)->Save(*dir_ + "/frames").ok());
    audio_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/audio"));
    frames_ = new std::shared_ptr<const Model>(*Model::Load(*dir_ + "/frames"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete audio_;
    delete frames_;
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
  }

  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--model",  *dir_ + "/audio", "--model",   *dir_ + "/frames",
                                  "--listen", "127.0.0.1:0",    "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error);
    ASSERT_NE(server_, nullptr) << error;
    stub_ = NewStub();
  }
  std::unique_ptr<pb::Ssm::Stub> NewStub() {
    return pb::Ssm::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  double Metric(const std::string& series) {
    return testing::Sample(testing::HttpGet(server_->metrics_port(), "/metrics").body, series);
  }
  // Waits until ssm_streams_parked is `n` (a broken call parks on the server's own time).
  void WaitParked(double n) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (Metric("ssm_streams_parked") != n && Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(20));
    ASSERT_EQ(Metric("ssm_streams_parked"), n);
  }
  // Opens the stream on a new call, or resumes it when `open` has a token, retrying a resume
  // while the stream is still attached to its old call (UNAVAILABLE: the server has not yet
  // seen that call break). nullptr, with *status, when the call did not open.
  std::unique_ptr<Call> OpenCall(const pb::StreamRequest& open, pb::StreamOutput* replay,
                                 grpc::Status* status) {
    for (int attempt = 0;; ++attempt) {
      auto call = std::make_unique<Call>(*stub_);
      if (call->Open(open, replay)) {
        *status = grpc::Status::OK;
        return call;
      }
      *status = call->Finish();
      if (status->error_code() != grpc::StatusCode::UNAVAILABLE ||
          open.open().resume_token().empty() || attempt >= 200)
        return nullptr;
      std::this_thread::sleep_for(milliseconds(10));
    }
  }

  // The status of a resume expected to be refused (retried while UNAVAILABLE, see OpenCall).
  grpc::Status Refusal(const pb::StreamRequest& open) {
    grpc::Status status;
    pb::StreamOutput replay;
    auto call = OpenCall(open, &replay, &status);
    EXPECT_EQ(call, nullptr) << "the resume was accepted";
    return status;
  }

  // Streams `payloads` with `legs` breaks: each leg sends a few more chunks, reads only some of
  // their outputs and cancels; the next leg resumes from the frames received, re-sending from
  // the server's next_sequence. Returns the output values as the client assembled them, having
  // checked every reply (contiguous frames, the replay, next_sequence within what was sent).
  std::vector<float> StreamWithBreaks(const std::string& model, pb::SampleFormat format,
                                      const std::vector<std::string>& payloads, int legs) {
    std::vector<float> got;
    int64_t have = 0;   // frames received
    uint64_t sent = 0;  // chunks sent so far, over all calls
    std::string token;
    for (int leg = 0; leg <= legs; ++leg) {
      SCOPED_TRACE("leg " + std::to_string(leg));
      pb::StreamOutput replay;
      grpc::Status status;
      auto call = OpenCall(Open(model, format, token, have), &replay, &status);
      if (call == nullptr) {
        ADD_FAILURE() << "open/resume failed: " << status.error_message();
        return got;
      }
      const pb::StreamOpened& opened = call->opened();
      uint64_t next = 0;
      if (!token.empty()) {
        EXPECT_TRUE(opened.resumed());
        EXPECT_GE(opened.next_frame(), have);
        EXPECT_LE(opened.next_sequence(), sent);
        if (have < opened.next_frame()) {
          EXPECT_EQ(replay.first_frame(), have);
          EXPECT_EQ(replay.frames(), opened.next_frame() - have);
          got.insert(got.end(), replay.values().begin(), replay.values().end());
          have = opened.next_frame();
        }
        next = opened.next_sequence();
      }
      EXPECT_FALSE(opened.resume_token().empty());
      EXPECT_NE(opened.resume_token(), token);  // a fresh token on every resume
      token = opened.resume_token();
      auto take = [&](const pb::StreamOutput& out) {
        EXPECT_EQ(out.first_frame(), have);
        got.insert(got.end(), out.values().begin(), out.values().end());
        have += out.frames();
      };
      if (leg == legs) {
        for (; next < payloads.size(); ++next) EXPECT_TRUE(call->Send(next, payloads[next]));
        std::vector<pb::StreamOutput> outs;
        status = call->Close(&outs);
        EXPECT_TRUE(status.ok()) << status.error_message();
        for (const auto& out : outs) take(out);
        break;
      }
      const size_t send = std::min(payloads.size() - next, size_t(rng_.Int(1, 6)));
      for (size_t i = next; i < next + send; ++i) EXPECT_TRUE(call->Send(i, payloads[i]));
      sent = std::max<uint64_t>(sent, next + send);
      const int read = rng_.Int(0, int(send));
      for (int r = 0; r < read; ++r) {
        pb::StreamOutput out;
        if (!call->Read(&out)) break;
        take(out);
      }
      call->Cancel();  // the break; outputs not read are lost in transit
    }
    return got;
  }

  // A stream of `model` opened, given `chunks` payloads and broken; returns its token.
  std::string BreakAfter(const std::string& model, pb::SampleFormat format,
                         const std::vector<std::string>& payloads, size_t chunks) {
    Call call(*stub_);
    EXPECT_TRUE(call.Open(Open(model, format)));
    for (size_t i = 0; i < chunks; ++i) EXPECT_TRUE(call.Send(i, payloads[i]));
    for (size_t i = 0; i < chunks; ++i) {
      pb::StreamOutput out;
      EXPECT_TRUE(call.Read(&out));
    }
    call.Cancel();
    return call.opened().resume_token();
  }

  static std::vector<float> Offline(const std::shared_ptr<const Model>& model,
                                    const std::vector<float>& values) {
    auto engine = testing::MakeEngine(model, testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, values);
  }
  std::vector<std::string> AudioPayloads(std::vector<float>* values, int64_t rows, int max_chunk) {
    *values = testing::RandomInput(rng_, (*audio_)->config(), rows);
    return Payloads(*values, testing::Chunking(rng_, rows, "random", max_chunk), 1);
  }

  static std::string* dir_;
  static std::shared_ptr<const Model>* audio_;
  static std::shared_ptr<const Model>* frames_;
  testing::Rng rng_{testing::TestSeed()};
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<pb::Ssm::Stub> stub_;
};

std::string* ResumeTest::dir_ = nullptr;
std::shared_ptr<const Model>* ResumeTest::audio_ = nullptr;
std::shared_ptr<const Model>* ResumeTest::frames_ = nullptr;

constexpr auto kF32 = pb::SAMPLE_FORMAT_PCM_F32LE;
constexpr auto kFrames = pb::SAMPLE_FORMAT_FRAMES_F32LE;

TEST_F(ResumeTest, BrokenStreamsResumeWithExactlyTheUninterruptedOutputs) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  for (const bool audio : {true, false}) {
    SCOPED_TRACE(audio ? "audio" : "frames");
    const auto& model = audio ? *audio_ : *frames_;
    const int64_t rows = audio ? 48000 : 400;
    auto values = testing::RandomInput(rng_, model->config(), rows);
    const auto chunks = testing::Chunking(rng_, rows, "random", audio ? 1600 : 13);
    const auto payloads = Payloads(values, chunks, audio ? 1 : model->config().d_in);
    const std::vector<float> got =
        StreamWithBreaks(audio ? "audio" : "frames", audio ? kF32 : kFrames, payloads, 8);
    EXPECT_EQ(got, Offline(model, values));  // bitwise, nothing lost or repeated
  }
  EXPECT_EQ(Metric("ssm_stream_resumes_total{source=\"memory\"}"), 16);
  EXPECT_EQ(Metric("ssm_streams_parked"), 0);
  EXPECT_GE(Metric("ssm_snapshots_total"), 16);
}

TEST_F(ResumeTest, TokensAreSingleUseAndEachRefusalSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 16000, 1600);
  const std::string token = BreakAfter("audio", kF32, payloads, 3);
  ASSERT_EQ(token.size(), 24u);  // 144 random bits, base64url
  grpc::Status status;
  pb::StreamOutput replay;
  auto resumed = OpenCall(Open("", kF32, token, 0), &replay, &status);  // model "": its own
  ASSERT_NE(resumed, nullptr) << status.error_message();
  ASSERT_TRUE(resumed->Send(3, payloads[3]));  // the client has the new token: the old one is used
  pb::StreamOutput out;
  ASSERT_TRUE(resumed->Read(&out));
  resumed->Cancel();

  struct Case {
    std::string token;
    const char* message;
    const char* reason;
  };
  // A stream that completes: its token no longer resumes anything.
  Call done(*stub_);
  ASSERT_TRUE(done.Open(Open("audio", kF32)));
  std::vector<pb::StreamOutput> outs;
  ASSERT_TRUE(done.Close(&outs).ok());
  for (const Case& c :
       {Case{token, "already used", "used_token"},
        Case{"AAAAAAAAAAAAAAAAAAAAAAAA", "not found", "unknown_token"},
        Case{done.opened().resume_token(), "has ended (it completed", "completed"}}) {
    SCOPED_TRACE(c.message);
    const grpc::Status s = Refusal(Open("audio", kF32, c.token));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
    EXPECT_NE(s.error_message().find(c.message), std::string::npos) << s.error_message();
    EXPECT_EQ(Metric(std::string("ssm_resume_failures_total{reason=\"") + c.reason + "\"}"), 1);
  }
}

// A break after the server accepted a resume but before the client got its `opened` (and so the
// new token) must not lose the stream: the presented token names it until the client shows it
// has the new one, by sending anything on the resumed call.
TEST_F(ResumeTest, ATokenStaysValidUntilTheClientHasItsSuccessor) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 32000, 1600);
  const std::string first = BreakAfter("audio", kF32, payloads, 3);
  std::vector<float> got;
  for (int lost = 0; lost < 3; ++lost) {  // resumed, then broken before its first chunk
    grpc::Status status;
    pb::StreamOutput replay;
    auto call = OpenCall(Open("audio", kF32, first, 0), &replay, &status);
    ASSERT_NE(call, nullptr) << "resume " << lost << ": " << status.error_message();
    EXPECT_EQ(call->opened().next_sequence(), 3u);
    call->Cancel();
  }
  grpc::Status status;
  pb::StreamOutput replay;
  auto call = OpenCall(Open("audio", kF32, first, 0), &replay, &status);
  ASSERT_NE(call, nullptr) << status.error_message();
  got.assign(replay.values().begin(), replay.values().end());
  const std::string second = call->opened().resume_token();
  ASSERT_TRUE(call->Send(3, payloads[3]));  // the client has `second` now
  pb::StreamOutput out;
  ASSERT_TRUE(call->Read(&out));
  got.insert(got.end(), out.values().begin(), out.values().end());
  call->Cancel();
  const grpc::Status used = Refusal(Open("audio", kF32, first, 0));
  EXPECT_EQ(used.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(used.error_message().find("already used"), std::string::npos) << used.error_message();
  pb::StreamOutput last_replay;
  auto last = OpenCall(Open("audio", kF32, second, int64_t(got.size() / 2)), &last_replay, &status);
  ASSERT_NE(last, nullptr) << status.error_message();
  for (size_t i = last->opened().next_sequence(); i < payloads.size(); ++i)
    EXPECT_TRUE(last->Send(i, payloads[i]));
  got.insert(got.end(), last_replay.values().begin(), last_replay.values().end());
  std::vector<pb::StreamOutput> outs;
  ASSERT_TRUE(last->Close(&outs).ok());
  for (const auto& o : outs) got.insert(got.end(), o.values().begin(), o.values().end());
  EXPECT_EQ(got, Offline(*audio_, values));
}

// A client whose stream completed but that lost the final OK learns it from the refusal.
TEST_F(ResumeTest, AResumeOfACompletedStreamSaysSoInItsTrailers) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Call done(*stub_);
  ASSERT_TRUE(done.Open(Open("audio", kF32)));
  std::vector<pb::StreamOutput> outs;
  ASSERT_TRUE(done.Close(&outs).ok());
  for (int attempt = 0; attempt < 200; ++attempt) {
    Call call(*stub_);
    EXPECT_FALSE(call.Open(Open("audio", kF32, done.opened().resume_token())));
    const grpc::Status s = call.Finish();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {  // not yet ended on the server
      std::this_thread::sleep_for(milliseconds(10));
      continue;
    }
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    const auto& trailers = call.context().GetServerTrailingMetadata();
    auto it = trailers.find("ssm-stream-ended");
    ASSERT_NE(it, trailers.end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), "completed");
    return;
  }
  FAIL() << "the token stayed attached";
}

TEST_F(ResumeTest, ParkedStreamsExpireAndTheirMemoryIsFreed) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--resume-ttl", "1"}));
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 16000, 1600);
  const std::string token = BreakAfter("audio", kF32, payloads, 2);
  ASSERT_NO_FATAL_FAILURE(WaitParked(1));
  EXPECT_GT(Metric("ssm_parked_state_bytes"), 0);
  EXPECT_EQ(Metric("ssm_state_slots{model=\"audio\",state=\"used\"}"), 0);  // off its slot
  std::this_thread::sleep_for(milliseconds(1300));
  EXPECT_EQ(Metric("ssm_streams_parked"), 0);
  EXPECT_EQ(Metric("ssm_parked_state_bytes"), 0);
  EXPECT_EQ(Metric("ssm_parked_expired_total"), 1);
  Call call(*stub_);
  EXPECT_FALSE(call.Open(Open("audio", kF32, token, 0)));
  const grpc::Status s = call.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("expired"), std::string::npos) << s.error_message();
}

TEST_F(ResumeTest, ResumeTtlZeroTurnsResumingOff) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--resume-ttl", "0"}));
  Call call(*stub_);
  ASSERT_TRUE(call.Open(Open("audio", kF32)));
  EXPECT_EQ(call.opened().resume_token(), "");
  call.Cancel();
  Call resume(*stub_);
  EXPECT_FALSE(resume.Open(Open("audio", kF32, "AAAAAAAAAAAAAAAAAAAAAAAA")));
  const grpc::Status s = resume.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("--resume-ttl 0"), std::string::npos) << s.error_message();
}

TEST_F(ResumeTest, BeyondMaxParkedABrokenStreamIsNotKept) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-parked", "1"}));
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 16000, 1600);
  const std::string first = BreakAfter("audio", kF32, payloads, 2);
  ASSERT_NO_FATAL_FAILURE(WaitParked(1));
  const std::string second = BreakAfter("audio", kF32, payloads, 2);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Metric("ssm_stream_parks_total{outcome=\"not_kept\"}") != 1 && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  Call refused(*stub_);
  EXPECT_FALSE(refused.Open(Open("audio", kF32, second)));
  const grpc::Status s = refused.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("not kept"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("--max-parked"), std::string::npos) << s.error_message();
  grpc::Status status;
  pb::StreamOutput replay;
  auto resumed = OpenCall(Open("audio", kF32, first, 0), &replay, &status);
  EXPECT_NE(resumed, nullptr) << status.error_message();
}

// Parked streams hold no slot: with one slot, another stream opens while one is parked; the
// resume then finds no slot (RESOURCE_EXHAUSTED, the stream stays parked) until that one ends.
TEST_F(ResumeTest, ParkedStreamsHoldNoSlotAndAResumeWithoutOneKeepsTheStream) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-streams", "1"}));
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 24000, 1600);
  const std::string token = BreakAfter("audio", kF32, payloads, 4);
  ASSERT_NO_FATAL_FAILURE(WaitParked(1));
  auto other = std::make_unique<Call>(*stub_);
  ASSERT_TRUE(other->Open(Open("audio", kF32)));
  {
    Call call(*stub_);
    EXPECT_FALSE(call.Open(Open("audio", kF32, token, 0)));
    const grpc::Status s = call.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();  // retried
    EXPECT_NE(s.error_message().find("still parked"), std::string::npos) << s.error_message();
  }
  std::vector<pb::StreamOutput> outs;
  EXPECT_TRUE(other->Close(&outs).ok());
  other.reset();
  // Wait for the slot to be freed, then the same token resumes the whole stream exactly.
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Metric("ssm_state_slots{model=\"audio\",state=\"used\"}") != 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  grpc::Status status;
  pb::StreamOutput replay;
  auto call = OpenCall(Open("audio", kF32, token, 0), &replay, &status);
  ASSERT_NE(call, nullptr) << status.error_message();
  EXPECT_EQ(call->opened().next_sequence(), 4u);
  std::vector<float> got(replay.values().begin(), replay.values().end());
  for (size_t i = 4; i < payloads.size(); ++i) EXPECT_TRUE(call->Send(i, payloads[i]));
  outs.clear();
  ASSERT_TRUE(call->Close(&outs).ok());
  for (const auto& out : outs) got.insert(got.end(), out.values().begin(), out.values().end());
  EXPECT_EQ(got, Offline(*audio_, values));
  EXPECT_EQ(Metric("ssm_resume_failures_total{reason=\"no_slot\"}"), 1);
}

// The client reconnects before the server has seen its old call break: the resume is refused
// with UNAVAILABLE and the old call is cancelled, so that the next attempt resumes.
TEST_F(ResumeTest, AResumeCancelsTheCallItsStreamIsStillAttachedTo) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::vector<float> values;
  const auto payloads = AudioPayloads(&values, 16000, 1600);
  Call old_call(*stub_);
  ASSERT_TRUE(old_call.Open(Open("audio", kF32)));
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(old_call.Send(i, payloads[i]));
  std::vector<float> got;
  for (size_t i = 0; i < 3; ++i) {
    pb::StreamOutput out;
    ASSERT_TRUE(old_call.Read(&out));
    got.insert(got.end(), out.values().begin(), out.values().end());
  }
  auto other_stub = NewStub();  // another connection; the old one stays up
  const int64_t have = int64_t(got.size() / 2);
  {
    Call call(*other_stub);
    EXPECT_FALSE(call.Open(Open("audio", kF32, old_call.opened().resume_token(), have)));
    const grpc::Status s = call.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    EXPECT_NE(s.error_message().find("still attached"), std::string::npos) << s.error_message();
  }
  const grpc::Status old_status = old_call.Finish();
  EXPECT_EQ(old_status.error_code(), grpc::StatusCode::CANCELLED) << old_status.error_message();
  grpc::Status status;
  pb::StreamOutput replay;
  auto call =
      OpenCall(Open("audio", kF32, old_call.opened().resume_token(), have), &replay, &status);
  ASSERT_NE(call, nullptr) << status.error_message();
  EXPECT_EQ(call->opened().next_sequence(), 3u);
  for (size_t i = 3; i < payloads.size(); ++i) EXPECT_TRUE(call->Send(i, payloads[i]));
  std::vector<pb::StreamOutput> outs;
  ASSERT_TRUE(call->Close(&outs).ok());
  for (const auto& out : outs) got.insert(got.end(), out.values().begin(), out.values().end());
  EXPECT_EQ(got, Offline(*audio_, values));
  EXPECT_GE(Metric("ssm_resume_failures_total{reason=\"still_attached\"}"), 1);
}

// Refusals the client can correct (another model, frames outside those held) keep the stream
// parked under the same token.
TEST_F(ResumeTest, RefusalsNameTheProblemAndKeepTheStream) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const int d_in = (*frames_)->config().d_in, d_out = (*frames_)->config().d_out;
  const int64_t rows = 1200;  // 1200 x 32 outputs: more than the 64 KiB held
  auto values = testing::RandomInput(rng_, (*frames_)->config(), rows);
  const auto payloads = Payloads(values, std::vector<int64_t>(12, 100), size_t(d_in));
  const std::string token = BreakAfter("frames", kFrames, payloads, 12);
  ASSERT_NO_FATAL_FAILURE(WaitParked(1));
  struct Case {
    pb::StreamRequest open;
    grpc::StatusCode code;
    const char* message;
  };
  for (const Case& c :
       {Case{Open("audio", kF32, token, 1200), grpc::StatusCode::FAILED_PRECONDITION,
             "names a stream of model \"frames\""},
        Case{Open("frames", kFrames, token, 1201), grpc::StatusCode::INVALID_ARGUMENT,
             "resume_from_frame 1201"},
        Case{Open("frames", kFrames, token, 10), grpc::StatusCode::OUT_OF_RANGE,
             "cannot be sent again"}}) {
    SCOPED_TRACE(c.message);
    Call call(*stub_);
    EXPECT_FALSE(call.Open(c.open));
    const grpc::Status s = call.Finish();
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_NE(s.error_message().find(c.message), std::string::npos) << s.error_message();
    EXPECT_NE(s.error_message().find("still parked"), std::string::npos) << s.error_message();
  }
  // The latest 64 KiB (512 frames of 32 outputs) are held: a resume from 700 gets them exactly.
  grpc::Status status;
  pb::StreamOutput replay;
  auto call = OpenCall(Open("frames", kFrames, token, 700), &replay, &status);
  ASSERT_NE(call, nullptr) << status.error_message();
  EXPECT_EQ(call->opened().next_frame(), 1200);
  EXPECT_EQ(replay.first_frame(), 700);
  ASSERT_EQ(replay.frames(), 500);
  const auto expected = Offline(*frames_, values);
  EXPECT_TRUE(
      std::equal(replay.values().begin(), replay.values().end(), expected.begin() + 700 * d_out));
  std::vector<pb::StreamOutput> outs;
  EXPECT_TRUE(call->Close(&outs).ok());
  EXPECT_EQ(Metric("ssm_resume_failures_total{reason=\"other_model\"}"), 1);
  EXPECT_EQ(Metric("ssm_resume_failures_total{reason=\"frames_not_held\"}"), 2);
}

// A clean half-close, an input error and a ProcessFile call never park.
TEST_F(ResumeTest, OnlyBrokenStreamCallsPark) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Call bad(*stub_);
  ASSERT_TRUE(bad.Open(Open("audio", kF32)));
  EXPECT_TRUE(bad.Send(5, std::string(64, '\0')));  // a sequence gap
  std::vector<pb::StreamOutput> outs;
  EXPECT_EQ(bad.Close(&outs).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // (Until the server has seen the call end, the token answers UNAVAILABLE: Refusal retries.)
  const grpc::Status s = Refusal(Open("audio", kF32, bad.opened().resume_token()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("it failed with INVALID_ARGUMENT"), std::string::npos)
      << s.error_message();
  grpc::ClientContext context;
  auto file = stub_->ProcessFile(&context);
  ASSERT_TRUE(file->Write(Open("audio", kF32)));
  pb::StreamResponse response;
  ASSERT_TRUE(file->Read(&response));
  EXPECT_TRUE(response.has_opened());
  EXPECT_EQ(response.opened().resume_token(), "");  // files are uploaded again instead
  context.TryCancel();
  while (file->Read(&response)) {
  }
  EXPECT_EQ(file->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(Metric("ssm_streams_parked"), 0);
  EXPECT_EQ(Metric("ssm_stream_parks_total{outcome=\"kept\"}"), 0);
}

}  // namespace
}  // namespace ssm
