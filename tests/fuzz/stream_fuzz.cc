// A whole request sequence into the stream handling logic: the real service (SsmService with its
// reactors, schedulers and cpu engines, API keys and parked streams) in this process, reached
// over loopback TCP from a client in the same process (why not the in-process channel: Start()).
// Each input is up to three calls, Stream or ProcessFile, each with an identity (no key, one of
// two keys, a wrong key) and up to eight messages: any bytes, an `open` (model, format, rate,
// label, and a resume token: none, the last one the server gave, or made up), a chunk (the next
// sequence number or any, a payload of well-formed samples or any bytes) or an empty request;
// then a half-close, or a cancel after some responses. Every call must keep:
// - it ends, with a status a client can act on (never UNKNOWN, UNIMPLEMENTED or a deadline: the
//   server answers or refuses long before the call's 20 s; INTERNAL only for the engine's
//   documented non-finite output, which arbitrary floats can cause), with a message if not OK;
// - every response parses; `opened` comes first and once; outputs carry d_out values per frame
//   and follow each other without a gap or a repeat, a new stream's from frame 0;
// - a new stream whose every message was a well-formed open or chunk in sequence, and that ended
//   OK, gives bitwise the outputs of offline processing of the same input in one chunk (the
//   exactness contract, under the fuzzer's chunking).
// After each input: no call is left in the server, and every engine slot is free again (a parked
// stream holds none). SSM_FUZZ_TRACE=1 prints each call's messages and ending (to read a finding).
#include <fuzzer/FuzzedDataProvider.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/engine/engine.h"
#include "server/model/random_model.h"
#include "server/service/api_keys.h"
#include "server/service/authenticator.h"
#include "server/service/call_registry.h"
#include "server/service/log.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/parked_streams.h"
#include "server/service/server_config.h"
#include "server/service/ssm_service.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/integration/raw_call.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using std::chrono::steady_clock;

constexpr int kSlots = 4;  // --max-streams of each model
// Secrets of the two keys: "a" may use every model; "b" only "frames", two streams at once.
constexpr const char* kSecretA = "ssk_fuzz_key_a_0123456789abcdef";
constexpr const char* kSecretB = "ssk_fuzz_key_b_0123456789abcdef";

struct Served {
  ModelConfig config;
  std::unique_ptr<Engine> offline;  // this target's own engine, for the offline outputs
};

// The server, built once and kept for the whole run.
struct Harness {
  fuzz::ScratchDir dir{"stream"};
  std::vector<Served> served;  // "audio", "frames": the order of --model
  ServerConfig config;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<ParkedStreams> parked;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<CallRegistry> calls;
  std::unique_ptr<SsmService> service;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
};

void AddModel(Harness* h, const char* name, const ModelConfig& config, uint64_t seed) {
  auto made = MakeRandomModel(config, seed);
  FUZZ_CHECK(made.ok(), "{}", made.status().ToString());
  const std::string dir = h->dir.File(name);
  FUZZ_CHECK((*made)->Save(dir).ok());
  auto loaded = Model::Load(dir);  // exactly what the server loads
  FUZZ_CHECK(loaded.ok(), "{}", loaded.status().ToString());
  EngineOptions options;
  options.backend = "cpu";
  options.threads = 1;
  options.max_streams = 1;
  auto engine = Engine::Create(*loaded, options);
  FUZZ_CHECK(engine.ok(), "{}", engine.status().ToString());
  h->served.push_back({(*loaded)->config(), std::move(*engine)});
  h->config.models.push_back({name, dir});
}

std::string KeyLine(const char* id, const char* secret, std::vector<std::string> models,
                    int max_streams) {
  KeyEntry e;
  e.id = id;
  e.secret_hash = SecretHash(secret);
  e.models = std::move(models);
  e.max_streams = max_streams;
  return FormatKeyLine(e) + "\n";
}

Harness* Start() {
  // The server's log lines (a refusal or a bad input each write one) would bury libFuzzer's;
  // they are still formatted, only not written.
  log::sink = std::fopen("/dev/null", "w");
  FUZZ_CHECK(log::sink != nullptr);
  auto* h = new Harness;  // never deleted: gRPC's threads outlive any static destructor order
  AddModel(h, "audio", fuzz::TinyAudioConfig(), 11);
  AddModel(h, "frames", fuzz::TinyFrameConfig(), 12);
  const std::string keys = h->dir.File("keys");
  FILE* f = std::fopen(keys.c_str(), "w");
  FUZZ_CHECK(f != nullptr);
  const std::string text = KeyLine("a", kSecretA, {}, 0) + KeyLine("b", kSecretB, {"frames"}, 2);
  FUZZ_CHECK(std::fwrite(text.data(), 1, text.size(), f) == text.size());
  std::fclose(f);

  ServerConfig& c = h->config;
  c.device = "cpu";
  c.threads = 1;
  c.max_streams = kSlots;
  c.batch_wait_ms = 0;    // no input waits for company: one call at a time
  c.idle_timeout_s = 60;  // longer than a call's deadline: a call that hangs is found
  c.write_timeout_s = 60;
  c.max_chunk_ms = 200;
  c.metrics_listen = "";
  c.auth_keys = keys;
  c.max_opens_per_s = 0;  // rate limits are timing: not fuzzed here
  FUZZ_CHECK(c.Validate().ok(), "{}", c.Validate().ToString());
  h->metrics = std::make_unique<Metrics>("fuzz", "cpu", "cpu", /*enabled=*/false);
  h->parked = std::make_unique<ParkedStreams>(
      ParkedStreams::Options{c.resume_ttl_s, 64, int64_t(1) << 24}, h->metrics.get());
  auto auth = Authenticator::Create({c.auth_keys, c.max_opens_per_s}, h->metrics.get());
  FUZZ_CHECK(auth.ok(), "{}", auth.status().ToString());
  h->auth = std::move(*auth);
  auto models = ModelRegistry::Load(c, h->metrics.get());
  FUZZ_CHECK(models.ok(), "{}", models.status().ToString());
  h->models = std::move(*models);
  h->calls = std::make_unique<CallRegistry>(std::chrono::milliseconds(100));
  h->service =
      std::make_unique<SsmService>(&h->config, h->models.get(), h->calls.get(), h->metrics.get(),
                                   h->parked.get(), nullptr, h->auth.get());
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(int(GrpcReceiveLimitBytes(c, *h->models)));
  builder.RegisterService(h->service.get());
  // Loopback TCP, not gRPC's in-process channel: with that transport a client's cancel before
  // any response was not seen by the server, so such calls ran into their deadline (over TCP
  // the same inputs end at once).
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  h->server = builder.BuildAndStart();
  FUZZ_CHECK(h->server != nullptr && port > 0);
  h->channel =
      grpc::CreateChannel(fmt::format("127.0.0.1:{}", port), grpc::InsecureChannelCredentials());
  h->stub = std::make_unique<grpc::GenericStub>(h->channel);
  return h;
}

Harness& H() {
  static Harness* h = Start();
  return *h;
}

bool Tracing() {
  static const bool tracing = std::getenv("SSM_FUZZ_TRACE") != nullptr;
  return tracing;
}

std::string Serialize(const pb::StreamRequest& request) {
  std::string bytes;
  FUZZ_CHECK(request.SerializeToString(&bytes));
  return bytes;
}

// What one call sent, as far as the exactness check needs it.
struct Sent {
  bool plain = true;  // only well-formed opens and chunks in sequence, no resume
  int model = -1;     // index into Harness::served, from the open
  bool f32 = false;   // the open's format sends float32 values
  std::vector<float> values;
  uint64_t next_sequence = 0;
  int opens = 0;
};

// Well-formed float32 values (|v| < 1, so no overflow is possible): `count` of them.
std::vector<float> Signal(FuzzedDataProvider* in, size_t count) {
  std::vector<float> v(count);
  const float step = 0.05f + 0.01f * float(in->ConsumeIntegralInRange<int>(0, 20));
  const float offset = float(in->ConsumeIntegralInRange<int>(0, 100));
  for (size_t i = 0; i < count; ++i) v[i] = 0.9f * std::sin(step * (float(i) + offset));
  return v;
}

std::string NextMessage(FuzzedDataProvider* in, const std::string& last_token, Sent* sent) {
  const Harness& h = H();
  switch (in->ConsumeIntegralInRange<int>(0, 6)) {
    case 0:  // any bytes: usually not a StreamRequest
      sent->plain = false;
      return in->ConsumeRandomLengthString(256);
    case 1: {  // an open
      pb::StreamRequest r;
      pb::StreamOpen* open = r.mutable_open();
      const int model = in->ConsumeIntegralInRange<int>(0, 3);
      if (model < 2) open->set_model(model == 0 ? "audio" : "frames");
      if (model == 3) {
        open->set_model(in->ConsumeRandomLengthString(140));
        sent->plain = false;
      }
      const int format = in->ConsumeIntegralInRange<int>(-1, 4);
      open->set_format(pb::SampleFormat(format));
      const int rate = in->ConsumeIntegralInRange<int>(0, 3);
      if (rate == 1) open->set_sample_rate(1000);
      if (rate >= 2) {
        open->set_sample_rate(in->ConsumeIntegral<int32_t>());
        sent->plain = false;
      }
      if (in->ConsumeBool()) open->set_label(in->ConsumeRandomLengthString(80));
      const int token = in->ConsumeIntegralInRange<int>(0, 3);
      if (token == 1) open->set_resume_token(last_token);
      if (token == 2) open->set_resume_token(in->ConsumeRandomLengthString(64));
      if (token != 0) {
        open->set_resume_from_frame(in->ConsumeIntegralInRange<int64_t>(-2, 40));
        sent->plain = false;
      }
      const int index = model == 2 ? 0 : model;  // "" is the first (default) model
      sent->model = model == 3 ? -1 : index;
      sent->f32 = format == pb::SAMPLE_FORMAT_PCM_F32LE || format == pb::SAMPLE_FORMAT_FRAMES_F32LE;
      if (++sent->opens > 1) sent->plain = false;
      return Serialize(r);
    }
    case 2:
    case 3:
    case 4: {  // a chunk
      pb::StreamRequest r;
      pb::StreamChunk* chunk = r.mutable_chunk();
      if (in->ConsumeIntegralInRange<int>(0, 7) == 0) {
        chunk->set_sequence(in->ConsumeIntegral<uint64_t>());
        sent->plain = false;
      } else {
        chunk->set_sequence(sent->next_sequence++);
      }
      if (in->ConsumeIntegralInRange<int>(0, 5) == 0 || !sent->f32 || sent->model < 0) {
        chunk->set_payload(in->ConsumeRandomLengthString(512));
        sent->plain = false;
      } else {
        // Whole frames of the frame model, or any number of samples of the audio model.
        const ModelConfig& c = h.served[size_t(sent->model)].config;
        const size_t per = c.frontend.type == "none" ? size_t(c.d_in) : 1;
        const size_t count = per * in->ConsumeIntegralInRange<size_t>(0, 96 / per);
        const std::vector<float> values = Signal(in, count);
        chunk->set_payload(std::string(reinterpret_cast<const char*>(values.data()),
                                       values.size() * sizeof(float)));
        sent->values.insert(sent->values.end(), values.begin(), values.end());
      }
      if (sent->opens == 0) sent->plain = false;
      return Serialize(r);
    }
    case 5:  // a request with neither open nor chunk
      sent->plain = false;
      return Serialize(pb::StreamRequest());
    default: {  // a chunk whose payload is any bytes, in sequence
      pb::StreamRequest r;
      r.mutable_chunk()->set_sequence(sent->next_sequence++);
      r.mutable_chunk()->set_payload(in->ConsumeRandomLengthString(64));
      sent->plain = false;
      return Serialize(r);
    }
  }
}

// Offline processing of `values` on a fresh stream of `served`'s own engine: its outputs.
std::vector<float> Offline(Served* served, const std::vector<float>& values) {
  auto stream = served->offline->OpenStream();
  FUZZ_CHECK(stream.ok(), "{}", stream.status().ToString());
  StepResult result;
  served->offline->Step({{*stream, values.data(), values.size()}}, &result);
  served->offline->CloseStream(*stream);
  FUZZ_CHECK(result.chunks.size() == 1 && result.chunks[0].status.ok(), "offline: {}",
             result.chunks.empty() ? "no result" : result.chunks[0].status.ToString());
  return result.outputs;
}

bool Allowed(const grpc::Status& status, bool any_floats) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::DATA_LOSS:
      return true;
    case grpc::StatusCode::INTERNAL:
      return any_floats && status.error_message().find("non-finite output") != std::string::npos;
    default:  // UNKNOWN, UNIMPLEMENTED, DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED, ...
      return false;
  }
}

// Runs one call; returns the resume token its `opened` gave ("" none).
std::string RunCall(FuzzedDataProvider* in, const std::string& last_token) {
  Harness& h = H();
  const bool stream_rpc = in->ConsumeBool();
  std::string authorization;
  switch (in->ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      break;
    case 1:
      authorization = std::string("Bearer ") + kSecretA;
      break;
    case 2:
      authorization = std::string("Bearer ") + kSecretB;
      break;
    case 3:
      authorization = "Bearer ssk_not_a_key";
      break;
    default:
      authorization = in->ConsumeRandomLengthString(64);
      break;
  }
  // gRPC refuses metadata values it cannot send; such a call is not the server's to judge.
  for (char c : authorization)
    if (c < 0x20 || c > 0x7e) authorization.clear();
  testing::RawCall call(h.stub.get(), stream_rpc ? "Stream" : "ProcessFile",
                        std::chrono::seconds(20), authorization);
  Sent sent;
  const int messages = in->ConsumeIntegralInRange<int>(0, 8);
  for (int i = 0; i < messages; ++i) {
    const std::string bytes = NextMessage(in, last_token, &sent);
    if (Tracing()) {
      pb::StreamRequest r;
      std::fprintf(stderr, "%s message %d: %s\n", stream_rpc ? "Stream" : "ProcessFile", i,
                   r.ParseFromString(bytes) ? r.ShortDebugString().substr(0, 200).c_str()
                                            : "(not a StreamRequest)");
    }
    if (!call.Write(bytes)) break;  // the server ended the call
  }
  // 0: cancel after some responses (or when none comes for a while); else half-close.
  const bool cancel = in->ConsumeIntegralInRange<int>(0, 3) == 0;
  const int read_before_cancel = in->ConsumeIntegralInRange<int>(0, 4);
  if (cancel && read_before_cancel == 0) call.Cancel();
  if (!cancel) call.WritesDone();
  if (Tracing())
    std::fprintf(stderr, "authorization '%s'; %s\n", authorization.c_str(),
                 cancel ? fmt::format("cancel after {} responses", read_before_cancel).c_str()
                        : "half-close");

  std::vector<float> outputs;
  std::string token, bytes;
  bool opened = false, resumed = false;
  int64_t next_frame = 0, d_out = 0;
  int responses = 0;
  const auto patience = std::chrono::milliseconds(cancel ? 5 : 0);
  while (call.Read(&bytes, patience)) {
    if (cancel && ++responses == read_before_cancel) call.Cancel();
    if (!cancel) ++responses;
    pb::StreamResponse r;
    FUZZ_CHECK(r.ParseFromString(bytes), "a response does not parse");
    if (r.has_opened()) {
      FUZZ_CHECK(!opened && responses == 1, "`opened` not first, or twice");
      opened = true;
      token = r.opened().resume_token();
      resumed = r.opened().resumed();
      d_out = r.opened().model().d_out();
      continue;
    }
    FUZZ_CHECK(r.has_output(), "a response with neither opened nor output");
    FUZZ_CHECK(opened, "an output before `opened`");
    const pb::StreamOutput& o = r.output();
    FUZZ_CHECK(o.frames() >= 0 && o.values_size() == int64_t(o.frames()) * o.d_out(),
               "{} values for {} frames of {}", o.values_size(), o.frames(), o.d_out());
    FUZZ_CHECK(o.d_out() == d_out, "d_out {}, the model's {}", o.d_out(), d_out);
    if (responses > 2 || !resumed)
      FUZZ_CHECK(o.first_frame() == next_frame, "output from frame {}, expected {}",
                 o.first_frame(), next_frame);
    next_frame = o.first_frame() + o.frames();
    outputs.insert(outputs.end(), o.values().begin(), o.values().end());
  }
  const grpc::Status status = call.Finish();
  // Arbitrary payload bytes may be floats that overflow the model (INTERNAL, documented).
  if (Tracing())
    std::fprintf(stderr, "%d responses, status %d %s\n", responses, int(status.error_code()),
                 status.error_message().c_str());
  FUZZ_CHECK(Allowed(status, !sent.plain), "{} ended {} {}", stream_rpc ? "Stream" : "ProcessFile",
             int(status.error_code()), status.error_message());
  FUZZ_CHECK(status.ok() || !status.error_message().empty(), "code {} without a message",
             int(status.error_code()));
  if (status.ok() && !cancel && sent.plain && sent.opens == 1 && sent.model >= 0 && sent.f32 &&
      !resumed) {
    Served& served = h.served[size_t(sent.model)];
    const std::vector<float> expected = Offline(&served, sent.values);
    FUZZ_CHECK(outputs.size() == expected.size() &&
                   (expected.empty() ||
                    std::memcmp(outputs.data(), expected.data(), 4 * expected.size()) == 0),
               "streamed outputs ({} values) differ from offline ({} values)", outputs.size(),
               expected.size());
  }
  return token;
}

// Every call has left the server and every engine slot is free: each scheduler opens all its
// slots at once, then closes them.
void CheckNothingLeft() {
  Harness& h = H();
  // A call the client gave up on at once may reach the server's handler only after that: the
  // registry must be empty and stay so for a while.
  const auto deadline = steady_clock::now() + std::chrono::seconds(10);
  auto empty_since = steady_clock::time_point::max();
  while (steady_clock::now() < deadline) {
    const auto now = steady_clock::now();
    if (h.calls->size() > 0)
      empty_since = steady_clock::time_point::max();
    else if (empty_since == steady_clock::time_point::max())
      empty_since = now;
    else if (now - empty_since > std::chrono::milliseconds(5))
      break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  FUZZ_CHECK(h.calls->size() == 0, "{} calls left after their clients finished", h.calls->size());
  for (const auto& m : h.models->models()) {
    std::vector<int> opened;
    // A closing stream frees its slot on the worker, a moment after the call ended.
    while (opened.size() < size_t(kSlots) && steady_clock::now() < deadline) {
      auto stream = m->scheduler->Open(Priority::kFile, [](ChunkResult) {});
      if (stream.ok())
        opened.push_back(*stream);
      else
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    FUZZ_CHECK(opened.size() == size_t(kSlots), "model {}: {} of {} slots free", m->name,
               opened.size(), kSlots);
    std::mutex mu;
    std::condition_variable cv;
    size_t closed = 0;
    for (int s : opened)
      m->scheduler->Close(s, [&] {
        std::lock_guard<std::mutex> lock(mu);
        ++closed;
        cv.notify_one();
      });
    std::unique_lock<std::mutex> lock(mu);
    FUZZ_CHECK(cv.wait_until(lock, deadline, [&] { return closed == opened.size(); }),
               "model {}: closes not run", m->name);
  }
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::string token;
  const int calls = in.ConsumeIntegralInRange<int>(1, 3);
  for (int i = 0; i < calls && in.remaining_bytes() > 0; ++i) {
    std::string given = ssm::RunCall(&in, token);
    if (!given.empty()) token = std::move(given);
  }
  ssm::CheckNothingLeft();
  return 0;
}
