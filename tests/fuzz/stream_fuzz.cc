// A whole request sequence into the stream handling logic, as a function without the network:
// the real service (SsmService with its reactors, schedulers and cpu engines, API keys and parked
// streams) in this process, each call on a scripted port (server/service/call_port.h) that plays
// gRPC's part: it hands the reactor the client's messages as it asks for them, takes its
// responses, and delivers cancels, failed operations and OnDone in the order gRPC may.
// Each input is up to three calls, Stream or ProcessFile, each with an identity (no key, one of
// two keys, a wrong one or any bytes, a known or an unknown client certificate) and up to eight
// messages: any bytes, an `open` (model, format, rate, label, and a resume token: none, the last
// one the server gave, or made up), a chunk (the next sequence number or any, a payload of
// well-formed samples or any bytes) or an empty request; then a half-close, or a cancel after
// some messages or responses (OnCancel before or after the failed operations). A call starts
// after the one before it ended, or, when the input says so, as soon as that one has its first
// response (so a resume can meet a stream still attached to its call). Every call must keep:
// - it ends (no call waits 10 s for anything) with a status a client can act on (never UNKNOWN,
//   UNIMPLEMENTED or a deadline; INTERNAL only for the engine's documented non-finite output,
//   which arbitrary floats can cause; UNAVAILABLE only for a resume, whose stream may still be
//   attached to a call that is ending), with a message if not OK;
// - gRPC's rules: one read and one write in flight at most, Finish once and never with a write in
//   flight, trailing metadata before Finish;
// - every response parses; `opened` comes first and once; outputs carry d_out values per frame
//   and follow each other without a gap or a repeat, a new stream's from frame 0;
// - a new stream whose every message was a well-formed open or chunk in sequence, and that ended
//   OK, gives bitwise the outputs of offline processing of the same input in one chunk (the
//   exactness contract, under the fuzzer's chunking).
// After each input: no call is left in the server, and every engine slot is free again (a parked
// stream holds none). SSM_FUZZ_TRACE=1 prints each call's messages and ending (to read a finding).
#include <fuzzer/FuzzedDataProvider.h>
#include <google/protobuf/stubs/logging.h>
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server/engine/engine.h"
#include "server/model/random_model.h"
#include "server/service/api_keys.h"
#include "server/service/authenticator.h"
#include "server/service/call_port.h"
#include "server/service/call_registry.h"
#include "server/service/log.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/parked_streams.h"
#include "server/service/server_config.h"
#include "server/service/ssm_service.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
using std::chrono::steady_clock;

constexpr int kSlots = 4;  // --max-streams of each model
// Secrets of the two keys: "a" may use every model; "b" only "frames", two streams at once.
constexpr const char* kSecretA = "ssk_fuzz_key_a_0123456789abcdef";
constexpr const char* kSecretB = "ssk_fuzz_key_b_0123456789abcdef";
// The client certificate of identity "c": only "audio", one stream at once.
constexpr const char* kSubjectC = "CN=fuzz-client,O=Example";
// How long a call may wait for its next event before it counts as hung.
constexpr auto kPatience = std::chrono::seconds(10);

struct Served {
  ModelConfig config;
  std::unique_ptr<Engine> offline;  // this target's own engine, for the offline outputs
};

// The service, built once and kept for the whole run.
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

std::string KeyLine(KeyEntry e, std::vector<std::string> models, int max_streams) {
  e.models = std::move(models);
  e.max_streams = max_streams;
  return FormatKeyLine(e) + "\n";
}

std::string SecretLine(const char* id, const char* secret, std::vector<std::string> models,
                       int max_streams) {
  KeyEntry e;
  e.id = id;
  e.secret_hash = SecretHash(secret);
  return KeyLine(std::move(e), std::move(models), max_streams);
}

Harness* Start() {
  // The server's log lines (a refusal or a bad input each write one) would bury libFuzzer's;
  // they are still formatted, only not written.
  log::sink = std::fopen("/dev/null", "w");
  FUZZ_CHECK(log::sink != nullptr);
  // libprotobuf complains of every string field that is not UTF-8, sent or received.
  google::protobuf::SetLogHandler(nullptr);
  grpc_init();            // byte buffers and slices; no channel or server is made
  auto* h = new Harness;  // never deleted: the schedulers' threads outlive static destructors
  AddModel(h, "audio", fuzz::TinyAudioConfig(), 11);
  AddModel(h, "frames", fuzz::TinyFrameConfig(), 12);
  const std::string keys = h->dir.File("keys");
  FILE* f = std::fopen(keys.c_str(), "w");
  FUZZ_CHECK(f != nullptr);
  KeyEntry c;
  c.id = "c";
  c.kind = KeyEntry::Kind::kCertSubject;
  c.subject = kSubjectC;
  const std::string text = SecretLine("a", kSecretA, {}, 0) +
                           SecretLine("b", kSecretB, {"frames"}, 2) + KeyLine(c, {"audio"}, 1);
  FUZZ_CHECK(std::fwrite(text.data(), 1, text.size(), f) == text.size());
  std::fclose(f);

  ServerConfig& config = h->config;
  config.device = "cpu";
  config.threads = 1;
  config.max_streams = kSlots;
  config.batch_wait_ms = 0;    // no input waits for company: one call at a time
  config.idle_timeout_s = 60;  // longer than kPatience: a call that hangs is found
  config.write_timeout_s = 60;
  config.max_chunk_ms = 200;
  config.metrics_listen = "";
  config.auth_keys = keys;
  config.max_opens_per_s = 0;  // rate limits are timing: not fuzzed here
  FUZZ_CHECK(config.Validate().ok(), "{}", config.Validate().ToString());
  h->metrics = std::make_unique<Metrics>("fuzz", "cpu", "cpu", /*enabled=*/false);
  h->parked = std::make_unique<ParkedStreams>(
      ParkedStreams::Options{config.resume_ttl_s, 64, int64_t(1) << 24}, h->metrics.get());
  auto auth = Authenticator::Create({config.auth_keys, config.max_opens_per_s}, h->metrics.get());
  FUZZ_CHECK(auth.ok(), "{}", auth.status().ToString());
  h->auth = std::move(*auth);
  auto models = ModelRegistry::Load(config, h->metrics.get());
  FUZZ_CHECK(models.ok(), "{}", models.status().ToString());
  h->models = std::move(*models);
  h->calls = std::make_unique<CallRegistry>(std::chrono::milliseconds(100));
  h->service =
      std::make_unique<SsmService>(&h->config, h->models.get(), h->calls.get(), h->metrics.get(),
                                   h->parked.get(), nullptr, h->auth.get());
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
  bool resume = false;  // an `open` carried a resume token
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
        sent->resume = true;
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

// Whether a call that sent `sent` may end with `status`.
bool Allowed(const grpc::Status& status, const Sent& sent) {
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
      // Arbitrary payload bytes may be floats that overflow the model (documented).
      return !sent.plain && status.error_message().find("non-finite output") != std::string::npos;
    case grpc::StatusCode::UNAVAILABLE:
      // Without a drain or a store, only a resume's "retry": its stream is still attached to a
      // call that is ending, or no state slot is free.
      return sent.resume;
    default:  // UNKNOWN, UNIMPLEMENTED, DEADLINE_EXCEEDED, ABORTED, ...
      return false;
  }
}

// One call as the input scripts it.
struct Script {
  bool stream_rpc = true;
  CallerCredentials credentials;
  std::vector<std::string> messages;
  Sent sent;
  int cancel_after_reads = -1;      // the client cancels instead of sending message #N (-1 never)
  int cancel_after_responses = -1;  // ... or once it has N responses (-1 never)
  bool cancel_event_first = false;  // OnCancel comes before the failed operations, or after
  bool next_starts_early = false;   // the next call starts once this one has a response
};

// The ports of one input share one lock (Driver::mu): the reactors take it in the ports' methods
// (from any thread, with their own lock held) and the driver takes it to pick the next event,
// which it delivers without it.
struct CallState {
  Script script;
  CallEvents* events = nullptr;
  bool started = false;
  grpc::ByteBuffer* read = nullptr;         // the read in flight
  const grpc::ByteBuffer* write = nullptr;  // the write in flight
  bool finish_called = false;
  grpc::Status finish_status;
  bool server_cancel = false;  // Cancel or the canceller: the client sees cancel_status
  grpc::Status cancel_status;
  bool cancelled = false;  // by either side: every operation fails from now on
  bool cancel_delivered = false;
  bool done = false;      // OnDone delivered
  bool detached = false;  // the canceller
  size_t reads = 0;       // messages delivered
  bool half_closed = false;
  std::vector<std::string> responses;
};

struct Driver {
  std::mutex mu;
  std::condition_variable cv;
};

// The server ends `c` with `status`, as a cancel (Driver::mu held): the port's Cancel, and a
// resume's canceller.
void ServerCancel(Driver* driver, CallState* c, grpc::Status status) {
  if (c->done || c->cancelled) return;
  c->server_cancel = c->cancelled = true;
  c->cancel_status = std::move(status);
  driver->cv.notify_all();
}

class ScriptedCanceller final : public CallCanceller {
 public:
  ScriptedCanceller(std::shared_ptr<Driver> driver, std::shared_ptr<CallState> call)
      : driver_(std::move(driver)), call_(std::move(call)) {}
  void Cancel(const char* why) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    if (!call_->detached)
      ServerCancel(driver_.get(), call_.get(), grpc::Status(grpc::StatusCode::CANCELLED, why));
  }
  void Detach() override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    call_->detached = true;
  }

 private:
  // Shared: a reactor ends (and a parked stream drops its canceller) after Drive returned.
  const std::shared_ptr<Driver> driver_;
  const std::shared_ptr<CallState> call_;
};

class ScriptedPort final : public CallPort {
 public:
  ScriptedPort(std::shared_ptr<Driver> driver, std::shared_ptr<CallState> call)
      : driver_(std::move(driver)), call_(std::move(call)) {}

  void Bind(CallEvents* events) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    call_->events = events;
  }
  CallerCredentials Credentials() const override { return call_->script.credentials; }
  void StartRead(grpc::ByteBuffer* into) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    FUZZ_CHECK(call_->read == nullptr, "a read started with one in flight");
    FUZZ_CHECK(!call_->done, "a read started after OnDone");
    call_->read = into;
    driver_->cv.notify_all();
  }
  void StartWrite(const grpc::ByteBuffer* bytes) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    FUZZ_CHECK(call_->write == nullptr, "a write started with one in flight");
    FUZZ_CHECK(!call_->finish_called, "a write started after Finish");
    call_->write = bytes;  // read when the write is taken: it must stay valid until then
    driver_->cv.notify_all();
  }
  void Finish(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    FUZZ_CHECK(!call_->finish_called, "Finish called twice");
    FUZZ_CHECK(call_->write == nullptr, "Finish called with a write in flight");
    call_->finish_called = true;
    call_->finish_status = status;
    driver_->cv.notify_all();
  }
  void AddTrailingMetadata(const std::string& /*key*/, const std::string& /*value*/) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    FUZZ_CHECK(!call_->finish_called, "trailing metadata after Finish");
  }
  void Cancel(grpc::StatusCode code, const std::string& message) override {
    std::lock_guard<std::mutex> lock(driver_->mu);
    ServerCancel(driver_.get(), call_.get(), grpc::Status(code, message));
  }
  std::shared_ptr<CallCanceller> MakeCanceller() override {
    return std::make_shared<ScriptedCanceller>(driver_, call_);
  }

 private:
  const std::shared_ptr<Driver> driver_;
  const std::shared_ptr<CallState> call_;
};

enum class Event { kNone, kReadOk, kReadFailed, kWriteOk, kWriteFailed, kCancel, kDone };

// The next event of `c`, with Driver::mu held (kNone: it waits for the reactor). Takes the event
// out of the state: what a read delivers is in *read by then.
Event NextEvent(CallState* c) {
  const Script& s = c->script;
  if (!c->cancelled) {
    if (c->write != nullptr) {
      std::vector<grpc::Slice> slices;
      FUZZ_CHECK(c->write->Dump(&slices).ok());
      c->write = nullptr;
      std::string bytes;
      for (const grpc::Slice& slice : slices)
        bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      c->responses.push_back(std::move(bytes));
      if (s.cancel_after_responses >= 0 && c->responses.size() >= size_t(s.cancel_after_responses))
        c->cancelled = true;  // the client cancels once this response is taken
      return Event::kWriteOk;
    }
    if (c->read != nullptr) {
      grpc::ByteBuffer* into = c->read;
      if (!c->finish_called && !c->half_closed && s.cancel_after_reads >= 0 &&
          c->reads == size_t(s.cancel_after_reads)) {
        c->cancelled = true;  // instead of this message, or of the half-close
        return NextEvent(c);
      }
      if (c->finish_called || c->half_closed || c->reads == s.messages.size()) {
        c->read = nullptr;
        if (!c->finish_called) c->half_closed = true;  // else the call is over
        return Event::kReadFailed;
      }
      c->read = nullptr;
      const std::string& bytes = s.messages[c->reads++];
      grpc::Slice slice(bytes.data(), bytes.size());
      *into = grpc::ByteBuffer(&slice, 1);
      return Event::kReadOk;
    }
  } else {
    const bool pending = c->read != nullptr || c->write != nullptr;
    if (!c->cancel_delivered && (s.cancel_event_first || !pending)) {
      c->cancel_delivered = true;
      return Event::kCancel;
    }
    if (c->read != nullptr) {
      c->read = nullptr;
      return Event::kReadFailed;
    }
    if (c->write != nullptr) {
      c->write = nullptr;
      return Event::kWriteFailed;
    }
  }
  if (c->finish_called && c->read == nullptr && c->write == nullptr &&
      (!c->cancelled || c->cancel_delivered)) {
    c->done = true;
    return Event::kDone;
  }
  return Event::kNone;
}

std::string Describe(const CallState& c) {
  return fmt::format(
      "{} call: {} of {} messages read, {} responses, read {}, write {}, finish {}, cancelled {}",
      c.script.stream_rpc ? "Stream" : "ProcessFile", c.reads, c.script.messages.size(),
      c.responses.size(), c.read != nullptr ? "in flight" : "none",
      c.write != nullptr ? "in flight" : "none",
      c.finish_called
          ? fmt::format("{} {}", int(c.finish_status.error_code()), c.finish_status.error_message())
          : std::string("not called"),
      c.cancelled);
}

Script MakeScript(FuzzedDataProvider* in, const std::string& last_token) {
  Script s;
  s.stream_rpc = in->ConsumeBool();
  CallerCredentials& who = s.credentials;
  const int kind = in->ConsumeIntegralInRange<int>(0, 6);
  switch (kind) {
    case 0:
      break;
    case 1:
      who.authorization = std::string("Bearer ") + kSecretA;
      break;
    case 2:
      who.authorization = std::string("Bearer ") + kSecretB;
      break;
    case 3:
      who.authorization = "Bearer ssk_not_a_key";
      break;
    case 4:
      who.authorization = in->ConsumeRandomLengthString(64);
      break;
    case 5:
      who.subject = kSubjectC;
      break;
    default:
      who.subject = in->ConsumeRandomLengthString(64);
      break;
  }
  // Any bytes may be none at all: an empty authorization value, which is not a missing one.
  who.has_authorization = !who.authorization.empty() || kind == 4;
  const int messages = in->ConsumeIntegralInRange<int>(0, 8);
  for (int i = 0; i < messages; ++i) s.messages.push_back(NextMessage(in, last_token, &s.sent));
  switch (in->ConsumeIntegralInRange<int>(0, 5)) {
    case 0:
      s.cancel_after_reads = in->ConsumeIntegralInRange<int>(0, messages);
      break;
    case 1:
      s.cancel_after_responses = in->ConsumeIntegralInRange<int>(1, 4);
      break;
    default:  // a half-close after the last message
      break;
  }
  s.cancel_event_first = in->ConsumeBool();
  s.next_starts_early = in->ConsumeIntegralInRange<int>(0, 3) == 0;
  if (Tracing()) {
    for (size_t i = 0; i < s.messages.size(); ++i) {
      pb::StreamRequest r;
      std::fprintf(stderr, "%s message %zu: %s\n", s.stream_rpc ? "Stream" : "ProcessFile", i,
                   r.ParseFromString(s.messages[i]) ? r.ShortDebugString().substr(0, 200).c_str()
                                                    : "(not a StreamRequest)");
    }
    std::fprintf(
        stderr, "authorization '%s', subject '%s'; cancel after %d messages / %d responses%s\n",
        who.authorization.c_str(), who.subject.c_str(), s.cancel_after_reads,
        s.cancel_after_responses, s.next_starts_early ? "; the next call starts early" : "");
  }
  return s;
}

// The resume token the last call before now was given ("" none).
std::string LastToken(const std::vector<std::shared_ptr<CallState>>& calls) {
  for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
    pb::StreamResponse r;
    if (!(*it)->responses.empty() && r.ParseFromString((*it)->responses.front()) &&
        r.has_opened() && !r.opened().resume_token().empty())
      return r.opened().resume_token();
  }
  return "";
}

// Runs up to `count` calls scripted by `in` until every one has ended; a call is scripted when
// it starts (its resume token may be the one a call before it was given).
std::vector<std::shared_ptr<CallState>> Drive(FuzzedDataProvider* in, int count) {
  Harness& h = H();
  auto shared_driver = std::make_shared<Driver>();
  Driver& driver = *shared_driver;
  std::vector<std::shared_ptr<CallState>> calls;
  std::unique_lock<std::mutex> lock(driver.mu);
  for (;;) {
    CallState* call = nullptr;
    Event event = Event::kNone;
    for (const auto& c : calls) {
      if (c->done) continue;
      event = NextEvent(c.get());
      call = c.get();
      if (event != Event::kNone) break;
    }
    if (event == Event::kNone && int(calls.size()) < count &&
        (calls.empty() || in->remaining_bytes() > 0)) {
      const CallState* before = calls.empty() ? nullptr : calls.back().get();
      if (before == nullptr || before->done ||
          (before->script.next_starts_early && !before->responses.empty())) {
        auto c = std::make_shared<CallState>();
        c->script = MakeScript(in, LastToken(calls));  // only this thread reads `responses`
        calls.push_back(c);
        lock.unlock();
        auto port = std::make_unique<ScriptedPort>(shared_driver, c);
        if (c->script.stream_rpc)
          h.service->StartStream(std::move(port));
        else
          h.service->StartFile(std::move(port));
        lock.lock();
        continue;
      }
    }
    if (event == Event::kNone) {
      bool all_done = true;
      for (const auto& c : calls) all_done = all_done && c->done;
      if (all_done && (int(calls.size()) == count || in->remaining_bytes() == 0)) return calls;
      if (driver.cv.wait_for(lock, kPatience) == std::cv_status::timeout) {
        std::string states;
        for (const auto& c : calls) states += "\n  " + Describe(*c);
        FUZZ_CHECK(false, "no call made progress for {} s:{}",
                   std::chrono::seconds(kPatience).count(), states);
      }
      continue;
    }
    CallEvents* events = call->events;
    lock.unlock();
    switch (event) {
      case Event::kReadOk:
        events->OnReadDone(true);
        break;
      case Event::kReadFailed:
        events->OnReadDone(false);
        break;
      case Event::kWriteOk:
        events->OnWriteDone(true);
        break;
      case Event::kWriteFailed:
        events->OnWriteDone(false);
        break;
      case Event::kCancel:
        events->OnCancel();
        break;
      case Event::kDone:
        events->OnDone();
        break;  // the reactor deletes the port later
      case Event::kNone:
        break;
    }
    lock.lock();
  }
}

// Checks what one ended call received; returns the resume token its `opened` gave ("" none).
std::string CheckCall(const CallState& c) {
  Harness& h = H();
  const Script& s = c.script;
  const char* rpc = s.stream_rpc ? "Stream" : "ProcessFile";
  std::vector<float> outputs;
  std::string token;
  bool opened = false, resumed = false;
  int64_t next_frame = 0, d_out = 0;
  for (size_t i = 0; i < c.responses.size(); ++i) {
    pb::StreamResponse r;
    FUZZ_CHECK(r.ParseFromString(c.responses[i]), "a response does not parse");
    if (r.has_opened()) {
      FUZZ_CHECK(!opened && i == 0, "`opened` not first, or twice");
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
    // A resumed stream's first output may start at any frame the client asked for.
    if (i > 1 || !resumed)
      FUZZ_CHECK(o.first_frame() == next_frame, "output from frame {}, expected {}",
                 o.first_frame(), next_frame);
    next_frame = o.first_frame() + o.frames();
    outputs.insert(outputs.end(), o.values().begin(), o.values().end());
  }
  // What the server chose (the client sees a cancel's status instead, when there was one).
  const grpc::Status& status = c.finish_status;
  if (Tracing())
    std::fprintf(
        stderr, "%zu responses, status %d %s%s\n", c.responses.size(), int(status.error_code()),
        status.error_message().c_str(),
        c.server_cancel
            ? fmt::format("; cancelled by the server: {}", c.cancel_status.error_message()).c_str()
            : "");
  for (const grpc::Status* st : {&status, c.server_cancel ? &c.cancel_status : nullptr}) {
    if (st == nullptr) continue;
    FUZZ_CHECK(Allowed(*st, s.sent), "{} ended {} {}", rpc, int(st->error_code()),
               st->error_message());
    FUZZ_CHECK(st->ok() || !st->error_message().empty(), "code {} without a message",
               int(st->error_code()));
  }
  // OK only after the half-close, or when the client cancelled: a read that a cancel fails
  // looks like a half-close until OnCancel comes (the client sees CANCELLED, and the server
  // counts the call as cancelled). After a real half-close, OK means every write succeeded: the
  // client has every output.
  FUZZ_CHECK(!status.ok() || c.half_closed || c.cancelled,
             "{} ended OK before the client half-closed", rpc);
  const Sent& sent = s.sent;
  if (status.ok() && c.half_closed && sent.plain && sent.opens == 1 && sent.model >= 0 &&
      sent.f32 && !resumed) {
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
  // OnDone takes a call out of the registry before it returns.
  FUZZ_CHECK(h.calls->size() == 0, "{} calls left after OnDone", h.calls->size());
  const auto deadline = steady_clock::now() + kPatience;
  for (const auto& m : h.models->models()) {
    std::vector<int> opened;
    // A closing stream frees its slot on the worker, a moment after the call ended.
    while (opened.size() < size_t(kSlots) && steady_clock::now() < deadline) {
      auto stream = m->scheduler->Open(Priority::kFile, [](ChunkResult) {});
      if (stream.ok())
        opened.push_back(*stream);
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
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
  const int count = in.ConsumeIntegralInRange<int>(1, 3);
  for (const auto& call : ssm::Drive(&in, count)) ssm::CheckCall(*call);
  ssm::CheckNothingLeft();
  return 0;
}
