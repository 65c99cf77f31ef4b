// The StreamMany rpc end to end (docs/design.md §9): the real ssm-server on loopback, many streams
// on one call. Each stream's outputs must equal offline processing bitwise, however its requests
// are spread over the call's messages; a stream's error ends it alone; a broken call parks its
// streams, which resume on a Stream call; a message that is not a StreamManyRequest ends the call.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "clients/lib/ssm_client.h"
#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/raw_call.h"
#include "tests/integration/server_process.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using Clock = std::chrono::steady_clock;

std::string Serialized(const pb::StreamRequest& request) {
  std::string bytes;
  request.SerializeToString(&bytes);
  return bytes;
}

std::string OpenBytes(const std::string& model, pb::SampleFormat format) {
  pb::StreamRequest r;
  r.mutable_open()->set_model(model);
  r.mutable_open()->set_format(format);
  return Serialized(r);
}

std::string ChunkBytes(uint64_t sequence, const float* values, size_t n) {
  pb::StreamRequest r;
  r.mutable_chunk()->set_sequence(sequence);
  r.mutable_chunk()->set_payload(
      std::string(reinterpret_cast<const char*>(values), n * sizeof(float)));
  return Serialized(r);
}

pb::StreamManyPart Part(uint64_t id, std::string request, bool close_send = false) {
  pb::StreamManyPart part;
  part.set_id(id);
  if (!request.empty()) part.set_request(std::move(request));
  part.set_close_send(close_send);
  return part;
}

// What the call's results said about one stream.
struct StreamSeen {
  bool opened = false;
  pb::StreamOpened opened_message;
  int outputs = 0;
  std::vector<float> values;
  int64_t next_frame = 0;
  bool frames_consecutive = true;
  bool ended = false;
  int code = -1;
  std::string message;
  int results_after_end = 0;
};

// Adds one response message's results to `seen`, by stream id; false for a result that cannot be
// read.
bool Collect(const pb::StreamManyResponse& response, std::map<uint64_t, StreamSeen>* seen) {
  for (const pb::StreamManyResult& result : response.results()) {
    StreamSeen& s = (*seen)[result.id()];
    if (s.ended) ++s.results_after_end;
    if (result.ended()) {
      s.ended = true;
      s.code = result.code();
      s.message = result.message();
      continue;
    }
    pb::StreamResponse message;
    if (!result.has_response() || !message.ParseFromString(result.response())) return false;
    if (message.has_opened()) {
      s.opened = true;
      s.opened_message = message.opened();
    }
    if (!message.has_output()) continue;
    const pb::StreamOutput& out = message.output();
    ++s.outputs;
    if (out.first_frame() != s.next_frame) s.frames_consecutive = false;
    s.next_frame = out.first_frame() + out.frames();
    s.values.insert(s.values.end(), out.values().begin(), out.values().end());
  }
  return true;
}

class StreamManyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/ssm_stream_many_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    ASSERT_TRUE(testing::RandomModel(testing::SmallAudioConfig(), 21)->Save(*dir_ + "/audio").ok());
    ASSERT_TRUE(
        testing::RandomModel(testing::SmallFrameConfig(), 22)->Save(*dir_ + "/frames").ok());
    ASSERT_TRUE(
        testing::RandomModel(testing::SmallFamilyConfig(), 23)->Save(*dir_ + "/hybrid").ok());
    models_ = new std::map<std::string, std::shared_ptr<const Model>>;
    for (const char* name : {"audio", "frames", "hybrid"})
      (*models_)[name] = *Model::Load(*dir_ + "/" + name);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete models_;
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
  }

  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--model",   *dir_ + "/audio",
                                  "--model",   "frames=" + *dir_ + "/frames",
                                  "--model",   "hybrid=" + *dir_ + "/hybrid",
                                  "--listen",  "127.0.0.1:0",
                                  "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error);
    ASSERT_NE(server_, nullptr) << error;
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = pb::Ssm::NewStub(channel_);
  }

  static const Model& model(const std::string& name) { return *models_->at(name); }
  static std::vector<float> Offline(const std::string& name, const std::vector<float>& values) {
    auto engine = testing::MakeEngine(models_->at(name), testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, values);
  }
  static size_t PerRow(const std::string& name) {
    const ModelConfig& c = model(name).config();
    return c.frontend.is_log_mel() ? 1 : size_t(c.d_in);
  }

  // Resumes the stream of `token` on a Stream call (retrying while the server answers
  // UNAVAILABLE: its old call is still closing), expects it to continue at chunk
  // `next_sequence` (chunks of 2,000 samples so far), sends the rest of `values` as one chunk,
  // and appends the outputs.
  void ResumeOnAStreamCall(const std::string& token, int64_t from_frame, uint64_t next_sequence,
                           const std::vector<float>& values, std::vector<float>* outputs) {
    ASSERT_FALSE(token.empty());
    const Clock::time_point give_up = Clock::now() + std::chrono::seconds(5);
    for (;;) {
      grpc::ClientContext context;
      auto call = stub_->Stream(&context);
      pb::StreamRequest open;
      open.mutable_open()->set_format(pb::SAMPLE_FORMAT_PCM_F32LE);
      open.mutable_open()->set_resume_token(token);
      open.mutable_open()->set_resume_from_frame(from_frame);
      ASSERT_TRUE(call->Write(open));
      pb::StreamResponse response;
      if (!call->Read(&response)) {
        const grpc::Status status = call->Finish();
        ASSERT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
        ASSERT_LT(Clock::now(), give_up);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      ASSERT_TRUE(response.has_opened());
      EXPECT_TRUE(response.opened().resumed());
      ASSERT_EQ(response.opened().next_sequence(), next_sequence);
      const size_t done = 2000 * next_sequence;
      pb::StreamRequest chunk;
      chunk.mutable_chunk()->set_sequence(next_sequence);
      chunk.mutable_chunk()->set_payload(
          std::string(reinterpret_cast<const char*>(values.data() + done),
                      (values.size() - done) * sizeof(float)));
      ASSERT_TRUE(call->Write(chunk));
      call->WritesDone();
      while (call->Read(&response))
        if (response.has_output())
          outputs->insert(outputs->end(), response.output().values().begin(),
                          response.output().values().end());
      const grpc::Status status = call->Finish();
      EXPECT_TRUE(status.ok()) << status.error_message();
      return;
    }
  }

  static std::string* dir_;
  static std::map<std::string, std::shared_ptr<const Model>>* models_;
  testing::Rng rng_{testing::TestSeed()};
  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Ssm::Stub> stub_;
};

std::string* StreamManyTest::dir_ = nullptr;
std::map<std::string, std::shared_ptr<const Model>>* StreamManyTest::models_ = nullptr;

// Twelve streams of three models on one call, their requests spread at random over the call's
// messages (several of one stream in a message, streams starting at different messages, the
// half-close with the last chunk or alone): every stream opened, one output per chunk, frames in
// order, outputs bitwise those of offline processing, ended OK; the call ends OK.
TEST_F(StreamManyTest, EveryStreamEqualsOfflineHoweverItsRequestsAreSpread) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-batch-streams", "5"}));
  struct Planned {
    std::string model;
    std::vector<float> values;
    std::vector<pb::StreamManyPart> parts;  // in order
    size_t next = 0;
    int chunks = 0;
  };
  const char* names[] = {"audio", "frames", "hybrid"};
  std::vector<Planned> streams(12);
  for (size_t id = 0; id < streams.size(); ++id) {
    Planned& p = streams[id];
    p.model = names[id % 3];
    const bool audio = p.model == "audio";
    const int64_t rows = audio ? rng_.Int(3000, 9000) : rng_.Int(40, 160);
    p.values = testing::RandomInput(rng_, model(p.model).config(), rows);
    const auto chunks = testing::Chunking(rng_, rows, "random", audio ? 1200 : 13);
    p.parts.push_back(Part(id, OpenBytes(p.model, audio ? pb::SAMPLE_FORMAT_PCM_F32LE
                                                        : pb::SAMPLE_FORMAT_FRAMES_F32LE)));
    size_t pos = 0;
    for (size_t k = 0; k < chunks.size(); ++k) {
      const size_t n = size_t(chunks[k]) * PerRow(p.model);
      p.parts.push_back(Part(id, ChunkBytes(k, p.values.data() + pos, n)));
      pos += n;
    }
    p.chunks = int(chunks.size());
    if (id % 2 == 0) {
      p.parts.back().set_close_send(true);
    } else {
      p.parts.push_back(Part(id, "", /*close_send=*/true));
    }
  }
  std::vector<pb::StreamManyRequest> messages;
  size_t started = 0;  // streams 0 .. started - 1 have begun (new ids must come in rising order)
  for (;;) {
    pb::StreamManyRequest message;
    // A new stream's first part goes first: ids must appear in rising order.
    if (started < streams.size() && (started == 0 || rng_.Int(0, 2) == 0))
      *message.add_parts() = streams[started].parts[streams[started++].next++];
    for (size_t id = 0; id < started; ++id) {
      Planned& p = streams[id];
      for (int take = int(rng_.Int(0, 3)); take > 0 && p.next < p.parts.size(); --take)
        *message.add_parts() = p.parts[p.next++];
    }
    if (message.parts_size() > 0) messages.push_back(std::move(message));
    bool all_sent = started == streams.size();
    for (const Planned& p : streams) all_sent &= p.next == p.parts.size();
    if (all_sent) break;
  }
  ASSERT_GT(messages.size(), 10u);

  grpc::ClientContext context;
  auto call = stub_->StreamMany(&context);
  std::thread writer([&] {
    for (const auto& m : messages)
      if (!call->Write(m)) break;
    call->WritesDone();
  });
  std::map<uint64_t, StreamSeen> seen;
  pb::StreamManyResponse response;
  int responses = 0;
  while (call->Read(&response)) {
    ++responses;
    ASSERT_TRUE(Collect(response, &seen));
  }
  writer.join();
  const grpc::Status status = call->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(seen.size(), streams.size());
  int outputs = 0;
  for (size_t id = 0; id < streams.size(); ++id) {
    SCOPED_TRACE("stream " + std::to_string(id) + " (" + streams[id].model + ")");
    const StreamSeen& s = seen[id];
    EXPECT_TRUE(s.opened);
    EXPECT_TRUE(s.ended);
    EXPECT_EQ(s.code, 0) << s.message;
    EXPECT_EQ(s.outputs, streams[id].chunks);
    EXPECT_TRUE(s.frames_consecutive);
    EXPECT_EQ(s.values, Offline(streams[id].model, streams[id].values));
    EXPECT_EQ(s.results_after_end, 0);
    outputs += s.outputs;
  }
  EXPECT_LT(responses, outputs) << "the streams' outputs were never carried together";
}

// Bad requests end their own streams with their own codes (as on Stream calls), parts for an
// ended stream are ignored, and a healthy stream on the same call stays exact and ends OK.
TEST_F(StreamManyTest, ABadStreamEndsAloneWithItsCode) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<float> values = testing::RandomInput(rng_, model("audio").config(), 8000);
  const float few[4] = {0.1f, 0.2f, 0.3f, 0.4f};
  grpc::ClientContext context;
  auto call = stub_->StreamMany(&context);
  pb::StreamManyRequest first;
  *first.add_parts() = Part(0, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
  *first.add_parts() = Part(0, ChunkBytes(0, values.data(), 2000));
  *first.add_parts() = Part(1, OpenBytes("no-such-model", pb::SAMPLE_FORMAT_PCM_F32LE));
  *first.add_parts() = Part(2, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
  *first.add_parts() = Part(2, ChunkBytes(1, few, 4));           // sequence 1 first: a gap
  *first.add_parts() = Part(3, std::string("\xff\xff\xff", 3));  // not a StreamRequest
  *first.add_parts() = Part(5, ChunkBytes(0, few, 4));           // a chunk before `open`
  ASSERT_TRUE(call->Write(first));
  std::map<uint64_t, StreamSeen> seen;
  pb::StreamManyResponse response;
  const auto ended = [&](std::initializer_list<uint64_t> ids) {
    for (uint64_t id : ids)
      if (!seen[id].ended) return false;
    return true;
  };
  while (!ended({1, 2, 3, 5}) || seen[0].outputs < 1) {
    ASSERT_TRUE(call->Read(&response));
    ASSERT_TRUE(Collect(response, &seen));
  }
  EXPECT_EQ(seen[1].code, grpc::NOT_FOUND) << seen[1].message;
  EXPECT_NE(seen[1].message.find("no-such-model"), std::string::npos) << seen[1].message;
  EXPECT_EQ(seen[2].code, grpc::INVALID_ARGUMENT);
  EXPECT_NE(seen[2].message.find("expected 0"), std::string::npos) << seen[2].message;
  EXPECT_EQ(seen[3].code, grpc::INVALID_ARGUMENT);
  EXPECT_NE(seen[3].message.find("could not be parsed"), std::string::npos) << seen[3].message;
  EXPECT_EQ(seen[5].code, grpc::FAILED_PRECONDITION) << seen[5].message;
  EXPECT_EQ(seen.count(4), 0u);  // an id never used
  // Parts for ended streams, and for id 4 (below an id already used: never a new stream).
  pb::StreamManyRequest second;
  *second.add_parts() = Part(1, ChunkBytes(0, few, 4));
  *second.add_parts() = Part(4, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
  *second.add_parts() = Part(0, ChunkBytes(1, values.data() + 2000, 3000));
  *second.add_parts() = Part(0, ChunkBytes(2, values.data() + 5000, 3000), /*close_send=*/true);
  ASSERT_TRUE(call->Write(second));
  call->WritesDone();
  while (call->Read(&response)) ASSERT_TRUE(Collect(response, &seen));
  const grpc::Status status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(seen.count(4), 0u);
  for (uint64_t id : {1, 2, 3, 5}) EXPECT_EQ(seen[id].results_after_end, 0) << id;
  EXPECT_TRUE(seen[0].ended);
  EXPECT_EQ(seen[0].code, 0) << seen[0].message;
  EXPECT_EQ(seen[0].outputs, 3);
  EXPECT_EQ(seen[0].values, Offline("audio", values));
}

// A StreamMany call that breaks parks its streams as broken Stream calls would: the stream then
// resumes on a Stream call with its token, and its outputs across both calls equal offline.
TEST_F(StreamManyTest, ABrokenCallParksItsStreamsForAResumeOnAStreamCall) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<float> values = testing::RandomInput(rng_, model("audio").config(), 12000);
  std::map<uint64_t, StreamSeen> seen;
  {
    grpc::ClientContext context;
    auto call = stub_->StreamMany(&context);
    pb::StreamManyRequest request;
    for (uint64_t id = 0; id < 2; ++id) {
      *request.add_parts() = Part(id, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
      for (uint64_t k = 0; k < 3; ++k)
        *request.add_parts() = Part(id, ChunkBytes(k, values.data() + 2000 * k, 2000));
    }
    ASSERT_TRUE(call->Write(request));
    pb::StreamManyResponse response;
    while (seen[0].outputs < 3 || seen[1].outputs < 3) {
      ASSERT_TRUE(call->Read(&response));
      ASSERT_TRUE(Collect(response, &seen));
    }
    context.TryCancel();
    while (call->Read(&response)) {
    }
    EXPECT_EQ(call->Finish().error_code(), grpc::CANCELLED);
  }
  for (uint64_t id = 0; id < 2; ++id) {
    SCOPED_TRACE("stream " + std::to_string(id));
    ASSERT_FALSE(seen[id].ended);
    const std::string token = seen[id].opened_message.resume_token();
    ASSERT_FALSE(token.empty());
    std::vector<float> all = seen[id].values;
    ASSERT_NO_FATAL_FAILURE(ResumeOnAStreamCall(token, seen[id].next_frame, 3, values, &all));
    EXPECT_EQ(all, Offline("audio", values));
  }
}

// A resume elsewhere takes one stream out of a running StreamMany call: that stream ends there
// CANCELLED and continues on the Stream call; the call's other stream goes on and ends OK; both
// equal offline processing.
TEST_F(StreamManyTest, AResumeElsewhereTakesOneStreamOutOfTheCall) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<float> values = testing::RandomInput(rng_, model("audio").config(), 12000);
  grpc::ClientContext context;
  auto call = stub_->StreamMany(&context);
  pb::StreamManyRequest request;
  for (uint64_t id = 0; id < 2; ++id) {
    *request.add_parts() = Part(id, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
    for (uint64_t k = 0; k < 3; ++k)
      *request.add_parts() = Part(id, ChunkBytes(k, values.data() + 2000 * k, 2000));
  }
  ASSERT_TRUE(call->Write(request));
  std::map<uint64_t, StreamSeen> seen;
  pb::StreamManyResponse response;
  while (seen[0].outputs < 3 || seen[1].outputs < 3) {
    ASSERT_TRUE(call->Read(&response));
    ASSERT_TRUE(Collect(response, &seen));
  }
  std::vector<float> resumed = seen[0].values;
  ASSERT_NO_FATAL_FAILURE(ResumeOnAStreamCall(seen[0].opened_message.resume_token(),
                                              seen[0].next_frame, 3, values, &resumed));
  EXPECT_EQ(resumed, Offline("audio", values));
  pb::StreamManyRequest rest;
  *rest.add_parts() = Part(1, ChunkBytes(3, values.data() + 6000, 6000), /*close_send=*/true);
  ASSERT_TRUE(call->Write(rest));
  call->WritesDone();
  while (call->Read(&response)) ASSERT_TRUE(Collect(response, &seen));
  const grpc::Status status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(seen[0].ended);
  EXPECT_EQ(seen[0].code, grpc::CANCELLED) << seen[0].message;
  EXPECT_EQ(seen[1].code, 0) << seen[1].message;
  EXPECT_EQ(seen[1].values, Offline("audio", values));
}

// A message that is not a StreamManyRequest ends the call with INVALID_ARGUMENT, naming it.
TEST_F(StreamManyTest, AnUnparseableMessageEndsTheCall) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  grpc::GenericStub generic(channel_);
  testing::RawCall call(&generic, "StreamMany", std::chrono::seconds(10));
  ASSERT_TRUE(call.Write(std::string("\x0a\x05\x08", 3)));  // a part that claims 5 bytes, has 1
  std::string bytes;
  EXPECT_FALSE(call.Read(&bytes));
  const grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("StreamManyRequest"), std::string::npos)
      << status.error_message();
}

// SIGTERM: each stream of the call ends UNAVAILABLE (as a Stream call would), then the call ends
// UNAVAILABLE and the server exits 0.
TEST_F(StreamManyTest, SigtermDrainsEveryStreamThenTheCall) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<float> values = testing::RandomInput(rng_, model("audio").config(), 4800);
  grpc::ClientContext context;
  auto call = stub_->StreamMany(&context);
  pb::StreamManyRequest request;
  for (uint64_t id = 0; id < 3; ++id) {
    *request.add_parts() = Part(id, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
    for (uint64_t k = 0; k < 3; ++k)
      *request.add_parts() = Part(id, ChunkBytes(k, values.data() + 1600 * k, 1600));
  }
  ASSERT_TRUE(call->Write(request));
  std::map<uint64_t, StreamSeen> seen;
  pb::StreamManyResponse response;
  while (seen[0].outputs < 3 || seen[1].outputs < 3 || seen[2].outputs < 3) {
    ASSERT_TRUE(call->Read(&response));
    ASSERT_TRUE(Collect(response, &seen));
  }
  ASSERT_TRUE(server_->Signal(SIGTERM));
  while (call->Read(&response)) ASSERT_TRUE(Collect(response, &seen));
  const grpc::Status status = call->Finish();
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos);
  for (uint64_t id = 0; id < 3; ++id) {
    SCOPED_TRACE("stream " + std::to_string(id));
    EXPECT_EQ(seen[id].outputs, 3);
    EXPECT_EQ(seen[id].values, Offline("audio", values));
    EXPECT_TRUE(seen[id].ended);
    EXPECT_EQ(seen[id].code, grpc::UNAVAILABLE) << seen[id].message;
  }
  EXPECT_EQ(server_->Wait(std::chrono::seconds(15)), 0);
}

// A call with no stream and no request for --idle-timeout ends DEADLINE_EXCEEDED; a stream of a
// call idles out alone (its own DEADLINE_EXCEEDED), then the call, empty, does too.
TEST_F(StreamManyTest, IdleCallsAndStreamsTimeOut) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--idle-timeout", "0.5"}));
  {
    grpc::ClientContext context;
    auto call = stub_->StreamMany(&context);
    pb::StreamManyResponse response;
    EXPECT_FALSE(call->Read(&response));
    const grpc::Status status = call->Finish();
    EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_NE(status.error_message().find("--idle-timeout"), std::string::npos);
  }
  grpc::ClientContext context;
  auto call = stub_->StreamMany(&context);
  pb::StreamManyRequest request;
  *request.add_parts() = Part(0, OpenBytes("audio", pb::SAMPLE_FORMAT_PCM_F32LE));
  ASSERT_TRUE(call->Write(request));
  std::map<uint64_t, StreamSeen> seen;
  pb::StreamManyResponse response;
  while (call->Read(&response)) ASSERT_TRUE(Collect(response, &seen));
  const grpc::Status status = call->Finish();
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_TRUE(seen[0].opened);
  EXPECT_TRUE(seen[0].ended);
  EXPECT_EQ(seen[0].code, grpc::DEADLINE_EXCEEDED) << seen[0].message;
  EXPECT_NE(seen[0].message.find("no chunk"), std::string::npos) << seen[0].message;
}

// The client library's StreamGroup: eight streams on one call, Flush per round of chunks; every
// stream's outputs equal offline, each ends OK, and the group wrote far fewer messages than
// chunks.
TEST_F(StreamManyTest, StreamGroupCarriesManyStreamsExactly) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  auto client = client::Client::Connect(server_->address());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  constexpr int kStreams = 8, kChunks = 6;
  constexpr size_t kChunk = 1600;
  std::mutex mu;
  std::map<uint64_t, std::vector<float>> outputs;
  std::map<uint64_t, Status> ends;
  client::StreamGroupOptions options;
  options.auto_flush = false;
  options.on_output = [&](uint64_t id, const client::Output& out) {
    std::lock_guard<std::mutex> lock(mu);
    outputs[id].insert(outputs[id].end(), out.values.begin(), out.values.end());
  };
  options.on_ended = [&](uint64_t id, const Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    ends[id] = status;
  };
  auto group = (*client)->StartStreamGroup(options);
  std::vector<std::vector<float>> inputs;
  client::StreamOptions stream_options;
  stream_options.model = "audio";
  stream_options.format = pb::SAMPLE_FORMAT_PCM_F32LE;
  for (int i = 0; i < kStreams; ++i) {
    inputs.push_back(testing::RandomInput(rng_, model("audio").config(), kChunks * kChunk));
    auto id = group->Open(stream_options);
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(*id, uint64_t(i));
  }
  for (int k = 0; k < kChunks; ++k) {
    for (int i = 0; i < kStreams; ++i)
      ASSERT_TRUE(group->Send(uint64_t(i), inputs[i].data() + k * kChunk, kChunk).ok());
    group->Flush();
  }
  for (int i = 0; i < kStreams; ++i) ASSERT_TRUE(group->CloseSend(uint64_t(i)).ok());
  EXPECT_EQ(group->Send(0, inputs[0].data(), kChunk).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(group->Send(99, inputs[0].data(), kChunk).code(), StatusCode::kNotFound);
  const Status status = group->Close();
  EXPECT_TRUE(status.ok()) << status.ToString();
  const client::StreamGroupStats stats = group->stats();
  EXPECT_EQ(stats.chunks_sent, uint64_t(kStreams * kChunks));
  EXPECT_EQ(stats.outputs_received, uint64_t(kStreams * kChunks));
  EXPECT_LE(stats.messages_sent, uint64_t(kChunks + 2));
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    ASSERT_TRUE(ends.count(uint64_t(i)));
    EXPECT_TRUE(ends[uint64_t(i)].ok()) << ends[uint64_t(i)].ToString();
    EXPECT_EQ(outputs[uint64_t(i)], Offline("audio", inputs[i]));
  }
}

}  // namespace
}  // namespace ssm
