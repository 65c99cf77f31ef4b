// Securing a deployment (docs/design.md §8), against the real ssm-server on loopback: TLS and
// mutual TLS with certificates made by the test (a good handshake; a wrong CA, an expired
// certificate, plain text against TLS and TLS against plain text, a missing or foreign client
// certificate, each with its own client-side error; rotation while a stream runs), and API keys
// from `ssm-keys` (missing, unknown, revoked by SIGHUP and by a file edit, another model, over
// the stream and open limits, a resume token of another identity; each with its code and
// message, while a healthy stream of another key stays exact), and the abuse limits (slow-loris
// clients, calls per connection, the open rate, metadata size, idle connections, parked bytes).
// Secrets never reach the log or the metrics.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clients/lib/ssm_client.h"
#include "server/model/model.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/integration/http_get.h"
#include "tests/integration/raw_socket.h"
#include "tests/integration/redis_process.h"
#include "tests/integration/server_process.h"
#include "tests/integration/test_certs.h"

namespace ssm {
namespace {

namespace pb = ::ssmserve::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kModelDir = std::string(SSM_SOURCE_DIR) + "/models/speech-activity";
const std::string kOtherModelDir = std::string(SSM_SOURCE_DIR) + "/models/random-demo";
constexpr int kHop = 160;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A new key from the real `ssm-keys new`: its secret and its keys-file line.
struct NewKey {
  std::string secret, line;
};
NewKey MakeKey(const std::string& args) {
  const std::string command = std::string(SSM_BIN_DIR) + "/ssm-keys new " + args + " 2>/dev/null";
  FILE* p = popen(command.c_str(), "r");
  NewKey key;
  char buffer[1024];
  while (p != nullptr && std::fgets(buffer, sizeof buffer, p) != nullptr) {
    std::string line = buffer;
    while (!line.empty() && line.back() == '\n') line.pop_back();
    if (line.rfind("secret: ", 0) == 0) key.secret = line.substr(8);
    if (line.rfind("line:", 0) == 0) key.line = line.substr(line.find_first_not_of(' ', 5));
  }
  if (p != nullptr) pclose(p);
  return key;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = Model::Load(kModelDir);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = new std::shared_ptr<const Model>(*model);
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ssm-security-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(), 0);
    }
    fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // ssm-server with the speech-activity model (as "vad") and random-demo (as "demo").
  void StartServer(std::vector<std::string> extra) {
    std::vector<std::string> args{
        "--model",  "vad=" + kModelDir, "--model",   "demo=" + kOtherModelDir,
        "--listen", "127.0.0.1:0",      "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    server_ = testing::ServerProcess::Start(testing::DefaultServerBinary(), args, &error,
                                            std::chrono::seconds(30), Path("server.log"));
    ASSERT_NE(server_, nullptr) << error << "\n" << ReadFile(Path("server.log"));
  }
  // The server's address, 127.0.0.1:PORT: its certificate lists the IP (names may not resolve
  // on a minimal machine).
  std::string Address() const { return server_->address(); }

  StatusOr<std::unique_ptr<client::Client>> Connect(client::ConnectOptions options) {
    options.connect_timeout_s = 3;
    return client::Client::Connect(Address(), options);
  }

  static std::vector<float> Signal(size_t samples, uint64_t seed) {
    testing::Rng rng(seed);
    return testing::RandomInput(rng, (*model_)->config(), int64_t(samples));
  }
  static std::vector<float> Offline(const std::vector<float>& samples) {
    auto engine = testing::MakeEngine(*model_, testing::TestDevice(), 1);
    return testing::RunOfflineOne(*engine, samples);
  }
  // Streams `samples` in 10 ms chunks on `client` (model "vad") and returns the outputs, or the
  // stream's error.
  static StatusOr<std::vector<float>> StreamAll(client::Client& client,
                                                const std::vector<float>& samples,
                                                const std::function<void(size_t)>& each = {}) {
    client::StreamOptions options;
    options.model = "vad";
    options.format = pb::SAMPLE_FORMAT_PCM_F32LE;
    options.resume = false;
    SSM_ASSIGN_OR_RETURN(auto stream, client.OpenStream(options));
    std::vector<float> got;
    std::thread reader([&] {
      client::Output out;
      while (stream->Next(&out)) got.insert(got.end(), out.values.begin(), out.values.end());
    });
    Status sent;
    for (size_t i = 0; i + kHop <= samples.size() && sent.ok(); i += kHop) {
      sent = stream->SendSamples(samples.data() + i, kHop);
      if (each) each(i / kHop);
    }
    stream->CloseSend();
    reader.join();
    SSM_RETURN_IF_ERROR(stream->Close());
    return got;
  }

  // Opens a stream on `client`: its status.
  static Status TryOpenStatus(client::Client& client, const client::StreamOptions& options) {
    auto stream = client.OpenStream(options);
    return stream.ok() ? OkStatus() : stream.status();
  }

  static std::shared_ptr<const Model>* model_;
  fs::path dir_;
  std::unique_ptr<testing::ServerProcess> server_;
};

std::shared_ptr<const Model>* SecurityTest::model_ = nullptr;

// ---- TLS -------------------------------------------------------------------------------------

class TlsTest : public SecurityTest {
 protected:
  void MakeCerts() {
    ca_ = testing::MakeCert(dir_.string(), "ca", {"test CA", "", -3600, 86400, true}, nullptr);
    other_ca_ =
        testing::MakeCert(dir_.string(), "other-ca", {"other CA", "", -3600, 86400, true}, nullptr);
    server_cert_ = testing::MakeCert(dir_.string(), "server", {}, &ca_);
    client_cert_ = testing::MakeCert(dir_.string(), "client",
                                     {"camera-7", "Example Org", -3600, 86400, false, false}, &ca_);
    ASSERT_FALSE(server_cert_.cert_path.empty());
    ASSERT_FALSE(client_cert_.cert_path.empty());
  }
  client::ConnectOptions Trusting(const testing::Issued& ca) {
    client::ConnectOptions options;
    options.tls.ca_file = ca.cert_path;
    return options;
  }
  testing::Issued ca_, other_ca_, server_cert_, client_cert_;
};

TEST_F(TlsTest, AGoodHandshakeStreamsExactOutputs) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--tls-cert", server_cert_.cert_path, "--tls-key", server_cert_.key_path}));
  auto client = Connect(Trusting(ca_));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<float> samples = Signal(300 * kHop, 11);
  auto got = StreamAll(**client, samples);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, Offline(samples));
}

TEST_F(TlsTest, EachFailedConnectionSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--tls-cert", server_cert_.cert_path, "--tls-key", server_cert_.key_path}));
  auto expect_refused = [&](const client::ConnectOptions& options, const std::string& why) {
    auto client = Connect(options);
    ASSERT_FALSE(client.ok());
    EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(client.status().message().find(why), std::string::npos) << client.status().message();
  };
  // The wrong CA.
  expect_refused(Trusting(other_ca_), "the server's certificate is not trusted");
  // Plain text against the TLS port.
  expect_refused(client::ConnectOptions{}, "the server speaks TLS: connect with --tls");
  // The right CA, the wrong name.
  client::ConnectOptions other_name = Trusting(ca_);
  other_name.tls.server_name = "not-this-server.example";
  expect_refused(other_name, "is not for \"not-this-server.example\"");

  // TLS against a plain-text server.
  testing::ServerProcess* tls_server = server_.release();
  EXPECT_EQ(tls_server->Terminate(), 0);
  delete tls_server;
  ASSERT_NO_FATAL_FAILURE(StartServer({}));
  expect_refused(Trusting(ca_), "the server does not speak TLS");
}

TEST_F(TlsTest, AnExpiredCertificateIsRefusedAtStartAndNamedByTheClientAfterARotation) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  const testing::Issued expired =
      testing::MakeCert(dir_.string(), "expired", {"localhost", "", -7200, -3600}, &ca_);
  std::string error;
  auto refused =
      testing::ServerProcess::Start(testing::DefaultServerBinary(),
                                    {"--model", kModelDir, "--listen", "127.0.0.1:0", "--tls-cert",
                                     expired.cert_path, "--tls-key", expired.key_path},
                                    &error, std::chrono::seconds(30), Path("refused.log"));
  EXPECT_EQ(refused, nullptr);
  EXPECT_NE(ReadFile(Path("refused.log")).find("has expired; renew it"), std::string::npos)
      << ReadFile(Path("refused.log"));

  // A server whose certificate expires in place (its files are replaced by an expired one).
  fs::copy_file(server_cert_.cert_path, Path("live.pem"));
  fs::copy_file(server_cert_.key_path, Path("live.key"));
  ASSERT_NO_FATAL_FAILURE(StartServer({"--tls-cert", Path("live.pem"), "--tls-key",
                                       Path("live.key"), "--tls-reload-interval", "1"}));
  ASSERT_TRUE(Connect(Trusting(ca_)).ok());
  WriteFile(Path("live.key"), ReadFile(expired.key_path));
  WriteFile(Path("live.pem"), ReadFile(expired.cert_path));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto client = Connect(Trusting(ca_));
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("the server's certificate has expired"),
            std::string::npos)
      << client.status().message();
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateOfItsCa) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  const testing::Issued foreign = testing::MakeCert(
      dir_.string(), "foreign", {"intruder", "", -3600, 86400, false, false}, &other_ca_);
  const testing::Issued expired_client = testing::MakeCert(
      dir_.string(), "expired-client", {"old", "", -7200, -3600, false, false}, &ca_);
  ASSERT_NO_FATAL_FAILURE(StartServer({"--tls-cert", server_cert_.cert_path, "--tls-key",
                                       server_cert_.key_path, "--tls-client-ca", ca_.cert_path}));
  client::ConnectOptions none = Trusting(ca_);
  auto refused = Connect(none);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("requires a client certificate"), std::string::npos)
      << refused.status().message();
  for (const testing::Issued* bad : {&foreign, &expired_client}) {
    client::ConnectOptions options = Trusting(ca_);
    options.tls.cert_file = bad->cert_path;
    options.tls.key_file = bad->key_path;
    auto client = Connect(options);
    ASSERT_FALSE(client.ok()) << bad->cert_path;
    EXPECT_NE(client.status().message().find("does not accept the client certificate"),
              std::string::npos)
        << client.status().message();
  }
  client::ConnectOptions good = Trusting(ca_);
  good.tls.cert_file = client_cert_.cert_path;
  good.tls.key_file = client_cert_.key_path;
  auto client = Connect(good);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<float> samples = Signal(100 * kHop, 12);
  auto got = StreamAll(**client, samples);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, Offline(samples));
}

// The certificate files are replaced (a new CA's) while a stream runs: the stream goes on to
// its exact end on its connection; new connections get the new certificate.
TEST_F(TlsTest, RotatingTheCertificateFilesDropsNoStream) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  const testing::Issued renewed = testing::MakeCert(dir_.string(), "renewed", {}, &other_ca_);
  fs::copy_file(server_cert_.cert_path, Path("live.pem"));
  fs::copy_file(server_cert_.key_path, Path("live.key"));
  ASSERT_NO_FATAL_FAILURE(StartServer({"--tls-cert", Path("live.pem"), "--tls-key",
                                       Path("live.key"), "--tls-reload-interval", "1"}));
  auto client = Connect(Trusting(ca_));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<float> samples = Signal(400 * kHop, 13);
  bool rotated = false;
  auto got = StreamAll(**client, samples, [&](size_t chunk) {
    if (chunk == 100) {
      WriteFile(Path("live.key"), ReadFile(renewed.key_path));
      WriteFile(Path("live.pem"), ReadFile(renewed.cert_path));
    }
    if (chunk == 150) {  // the new files have been read: new connections trust only the new CA
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      auto renewed_client = Connect(Trusting(other_ca_));
      rotated = renewed_client.ok();
      EXPECT_TRUE(renewed_client.ok()) << renewed_client.status().ToString();
      EXPECT_FALSE(Connect(Trusting(ca_)).ok());
    }
  });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(rotated);
  EXPECT_EQ(*got, Offline(samples));
}

// The HTTP endpoint: HTTPS with the gRPC port's certificate when TLS is on (plain HTTP gets
// nothing), and with --metrics-auth only a request with a key sees the metrics.
TEST_F(TlsTest, TheMetricsEndpointServesHttpsWithTheSameCertificateAndCanRequireAKey) {
  ASSERT_NO_FATAL_FAILURE(MakeCerts());
  const NewKey key = MakeKey("scraper");
  WriteFile(Path("keys"), key.line + "\n");
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--tls-cert", server_cert_.cert_path, "--tls-key", server_cert_.key_path,
                   "--auth-keys", Path("keys"), "--metrics-auth"}));
  const int port = server_->metrics_port();
  EXPECT_EQ(testing::HttpGet(port, "/metrics").status, 0);  // plain HTTP: no answer
  EXPECT_EQ(testing::HttpGet(port, "/metrics", "", other_ca_.cert_path).status, 0);
  const testing::HttpResponse anonymous = testing::HttpGet(port, "/metrics", "", ca_.cert_path);
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_NE(anonymous.headers.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_EQ(testing::HttpGet(port, "/metrics", "Authorization: Bearer ssk_wrong\r\n", ca_.cert_path)
                .status,
            401);
  const testing::HttpResponse scraped = testing::HttpGet(
      port, "/metrics", "Authorization: Bearer " + key.secret + "\r\n", ca_.cert_path);
  EXPECT_EQ(scraped.status, 200);
  EXPECT_GE(testing::Sample(scraped.body, "ssm_auth_keys"), 1);
  // The dashboard's page holds no data: it is served, and asks for the key itself. So is the
  // health check (kubelet's HTTPS probes send no key).
  EXPECT_EQ(testing::HttpGet(port, "/", "", ca_.cert_path).status, 200);
  const testing::HttpResponse health = testing::HttpGet(port, "/healthz", "", ca_.cert_path);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "SERVING\n");
}

// ---- API keys --------------------------------------------------------------------------------

class KeysTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    alice_ = MakeKey("alice --models vad --max-streams 2 --max-opens-per-minute 5");
    bob_ = MakeKey("bob --models vad,demo");
    ASSERT_EQ(alice_.secret.rfind("ssk_", 0), 0u) << "ssm-keys new printed no secret";
    ASSERT_FALSE(bob_.line.empty());
    WriteFile(Path("keys"), "# test keys\n" + alice_.line + "\n" + bob_.line + "\n");
  }
  client::ConnectOptions As(const NewKey& key) {
    client::ConnectOptions options;
    options.api_key = key.secret;
    return options;
  }
  // Opens a stream of `model` with `key`: its status.
  Status TryOpen(const client::ConnectOptions& options, const std::string& model) {
    auto client = Connect(options);
    if (!client.ok()) return client.status();
    client::StreamOptions stream_options;
    stream_options.model = model;
    stream_options.resume = false;
    return TryOpenStatus(**client, stream_options);
  }
  static void ExpectRefused(const Status& status, StatusCode code, const std::string& text) {
    EXPECT_EQ(status.code(), code) << status.ToString();
    EXPECT_NE(status.message().find(text), std::string::npos) << status.ToString();
  }
  // Rewrites the keys file without bob's line, keeping its size, inode and modification time,
  // so that only a SIGHUP (not the file watcher) sees the change.
  void RemoveBobInPlace() {
    const std::string path = Path("keys");
    struct stat before {};
    ASSERT_EQ(stat(path.c_str(), &before), 0);
    std::string text = ReadFile(path);
    const size_t at = text.find(bob_.line);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, bob_.line.size(), "#" + std::string(bob_.line.size() - 1, '-'));
    {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.write(text.data(), std::streamsize(text.size()));
    }
    const timespec times[2] = {before.st_atim, before.st_mtim};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  }
  // A Stream call of model "vad" with `key`, its `open` written (with `token`: a resume).
  static std::unique_ptr<grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>> OpenAs(
      pb::Ssm::Stub* stub, const NewKey& key, const std::string& token,
      grpc::ClientContext* context) {
    context->AddMetadata("authorization", "Bearer " + key.secret);
    auto call = stub->Stream(context);
    pb::StreamRequest request;
    request.mutable_open()->set_model("vad");
    request.mutable_open()->set_format(pb::SAMPLE_FORMAT_PCM_F32LE);
    request.mutable_open()->set_resume_token(token);
    call->Write(request);
    return call;
  }
  NewKey alice_, bob_;
};

TEST_F(KeysTest, EveryRefusalHasItsCodeAndMessageWhileAnotherKeysStreamStaysExact) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-keys", Path("keys")}));
  auto bob = Connect(As(bob_));
  ASSERT_TRUE(bob.ok()) << bob.status().ToString();
  const std::vector<float> samples = Signal(500 * kHop, 21);
  std::vector<Status> refusals;
  std::vector<std::unique_ptr<client::Client>> held;  // alice's streams, kept open
  std::vector<std::unique_ptr<client::Stream>> held_streams;
  auto got = StreamAll(**bob, samples, [&](size_t chunk) {
    if (chunk != 50) return;
    client::ConnectOptions nobody;
    refusals.push_back(TryOpen(nobody, "vad"));
    client::ConnectOptions stranger;
    stranger.api_key = "ssk_not-a-key-of-this-server";
    refusals.push_back(TryOpen(stranger, "vad"));
    refusals.push_back(TryOpen(As(alice_), "demo"));
    // alice may hold 2 streams: the third is refused.
    for (int i = 0; i < 2; ++i) {
      auto c = Connect(As(alice_));
      ASSERT_TRUE(c.ok());
      client::StreamOptions o;
      o.model = "vad";
      o.resume = false;
      auto s = (*c)->OpenStream(o);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      held_streams.push_back(std::move(*s));
      held.push_back(std::move(*c));
    }
    refusals.push_back(TryOpen(As(alice_), "vad"));
    held_streams.clear();  // closes them (cancelled)
    held.clear();
    // A closed call leaves its key's count when the server has ended it.
    auto wait_until_alice_has_none = [&] {
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (Clock::now() < deadline &&
             testing::Sample(testing::HttpGet(server_->metrics_port(), "/metrics").body,
                             "ssm_key_streams_active{key=\"alice\"}") != 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    };
    // 2 opens so far and one refused at the limit; 3 more reach 5 in this minute, the next fails.
    for (int i = 0; i < 3; ++i) {
      wait_until_alice_has_none();
      EXPECT_TRUE(TryOpen(As(alice_), "vad").ok()) << i;
    }
    wait_until_alice_has_none();
    refusals.push_back(TryOpen(As(alice_), "vad"));
  });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, Offline(samples));
  ASSERT_EQ(refusals.size(), 5u);
  ExpectRefused(refusals[0], StatusCode::kUnauthenticated, "no API key");
  ExpectRefused(refusals[1], StatusCode::kUnauthenticated, "unknown API key");
  ExpectRefused(refusals[2], StatusCode::kPermissionDenied,
                "API key \"alice\" may not use model \"demo\"");
  ExpectRefused(refusals[3], StatusCode::kResourceExhausted, "max streams 2");
  ExpectRefused(refusals[4], StatusCode::kResourceExhausted, "opens per minute 5");

  // ListModels shows a key only its models; GetModelInfo of another is PERMISSION_DENIED.
  auto alice = Connect(As(alice_));
  ASSERT_TRUE(alice.ok());
  auto listed = (*alice)->ListModels();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->models_size(), 1);
  EXPECT_EQ(listed->models(0).name(), "vad");
  EXPECT_EQ((*alice)->GetModelInfo("demo").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ((*bob)->ListModels()->models_size(), 2);
  // ProcessFile is bound to the key's models too.
  client::FileRequest file;
  file.model = "demo";
  file.format = pb::SAMPLE_FORMAT_FRAMES_F32LE;
  EXPECT_EQ((*alice)->ProcessFile(file, std::vector<float>(64, 0.5f)).status().code(),
            StatusCode::kPermissionDenied);

  // The metrics count by key id and reason; no secret is in them or in the log.
  const testing::HttpResponse metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_GE(testing::Sample(metrics.body, "ssm_key_streams_opened_total{key=\"alice\"}"), 5);
  EXPECT_GE(testing::Sample(metrics.body, "ssm_key_streams_opened_total{key=\"bob\"}"), 1);
  EXPECT_EQ(testing::Sample(metrics.body, "ssm_auth_refusals_total{reason=\"missing\"}"), 1);
  EXPECT_EQ(testing::Sample(metrics.body, "ssm_auth_refusals_total{reason=\"unknown\"}"), 1);
  EXPECT_EQ(testing::Sample(metrics.body, "ssm_auth_refusals_total{reason=\"max_streams\"}"), 1);
  EXPECT_GE(testing::Sample(metrics.body, "ssm_auth_refusals_total{reason=\"opens_per_minute\"}"),
            1);
  for (const std::string& secret : {alice_.secret, bob_.secret}) {
    EXPECT_EQ(metrics.body.find(secret), std::string::npos);
    EXPECT_EQ(ReadFile(Path("server.log")).find(secret), std::string::npos);
  }
}

// Revoking by SIGHUP (the file's change hidden from the watcher) and by editing the file: the
// key's open stream ends UNAUTHENTICATED, its new calls are refused as revoked, and the other
// key's stream goes on exactly.
TEST_F(KeysTest, ARevokedKeysStreamsEndAndItsNewCallsAreRefused) {
  for (const bool by_signal : {true, false}) {
    SCOPED_TRACE(by_signal ? "SIGHUP" : "file edit");
    WriteFile(Path("keys"), alice_.line + "\n" + bob_.line + "\n");
    ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-keys", Path("keys")}));
    auto bob = Connect(As(bob_));
    ASSERT_TRUE(bob.ok());
    client::StreamOptions o;
    o.model = "vad";
    o.resume = false;
    auto bobs_stream = (*bob)->OpenStream(o);
    ASSERT_TRUE(bobs_stream.ok()) << bobs_stream.status().ToString();
    auto alice = Connect(As(alice_));
    ASSERT_TRUE(alice.ok());
    const std::vector<float> samples = Signal(300 * kHop, 22);
    auto got = StreamAll(**alice, samples, [&](size_t chunk) {
      if (chunk != 100) return;
      if (by_signal) {
        RemoveBobInPlace();
        server_->Signal(SIGHUP);
      } else {
        WriteFile(Path("keys"), alice_.line + "\n");
      }
      const auto deadline = Clock::now() + std::chrono::seconds(5);
      Status ended;
      client::Output out;
      while ((*bobs_stream)->Next(&out)) {
      }
      ended = (*bobs_stream)->Close();
      EXPECT_LT(Clock::now(), deadline);
      ExpectRefused(ended, StatusCode::kUnauthenticated, "API key \"bob\" was revoked");
      ExpectRefused(TryOpen(As(bob_), "vad"), StatusCode::kUnauthenticated,
                    "API key \"bob\" was revoked");
    });
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, Offline(samples));
    bobs_stream->reset();
    EXPECT_EQ(server_->Terminate(), 0);
    server_.reset();
  }
}

// A resume token resumes only its own identity's stream; another key learns nothing of it (the
// same answer as for a token that never existed), and the stream is still there for its owner.
TEST_F(KeysTest, OnlyTheIdentityThatOpenedAStreamMayResumeIt) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-keys", Path("keys")}));
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = pb::Ssm::NewStub(channel);
  auto open = [&](const NewKey& key, const std::string& token, grpc::ClientContext* context) {
    return OpenAs(stub.get(), key, token, context);
  };
  grpc::ClientContext first;
  auto call = open(alice_, "", &first);
  pb::StreamResponse response;
  ASSERT_TRUE(call->Read(&response));
  const std::string token = response.opened().resume_token();
  ASSERT_FALSE(token.empty());
  first.TryCancel();  // the call breaks: the stream is parked
  call->Finish();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  auto refusal = [&](const NewKey& key, const std::string& presented) {
    grpc::ClientContext context;
    auto resume = open(key, presented, &context);
    pb::StreamResponse r;
    while (resume->Read(&r)) {
    }
    return resume->Finish();
  };
  const grpc::Status foreign = refusal(bob_, token);
  const grpc::Status unknown = refusal(bob_, "AAAAAAAAAAAAAAAAAAAAAAAA");
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::PERMISSION_DENIED) << foreign.error_message();
  EXPECT_EQ(foreign.error_message(), unknown.error_message());
  EXPECT_NE(foreign.error_message().find("no stream of API key \"bob\""), std::string::npos);

  grpc::ClientContext mine;
  auto resumed = open(alice_, token, &mine);
  ASSERT_TRUE(resumed->Read(&response));
  EXPECT_TRUE(response.opened().resumed());
  resumed->WritesDone();
  while (resumed->Read(&response)) {
  }
  EXPECT_TRUE(resumed->Finish().ok());
  const testing::HttpResponse metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_EQ(testing::Sample(metrics.body, "ssm_auth_refusals_total{reason=\"other_identity\"}"), 1);
}

// The binding survives a hand-off: a stream drained into the state store by one replica is
// refused to another identity on the next replica (and stays in the store), and resumes there
// for its owner.
TEST_F(KeysTest, AHandedOffStreamResumesOnlyForItsOwnerOnAnotherReplica) {
  std::string error;
  auto redis = testing::RedisProcess::Start(&error);
  ASSERT_NE(redis, nullptr) << error;
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--auth-keys", Path("keys"), "--state-store", redis->url()}));
  auto open = &KeysTest::OpenAs;
  auto stub =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext first;
  auto call = open(stub.get(), alice_, "", &first);
  pb::StreamResponse response;
  ASSERT_TRUE(call->Read(&response));
  const std::string token = response.opened().resume_token();
  EXPECT_EQ(server_->Terminate(), 0);  // drains: the stream goes to the store
  server_.reset();
  call->Finish();

  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--auth-keys", Path("keys"), "--state-store", redis->url()}));
  auto next =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  auto finish = [](grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>* c) {
    pb::StreamResponse r;
    while (c->Read(&r)) {
    }
    return c->Finish();
  };
  grpc::ClientContext bobs;
  const grpc::Status refused = finish(open(next.get(), bob_, token, &bobs).get());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("no stream of API key \"bob\""), std::string::npos);
  grpc::ClientContext mine;
  auto resumed = open(next.get(), alice_, token, &mine);
  ASSERT_TRUE(resumed->Read(&response)) << finish(resumed.get()).error_message();
  EXPECT_TRUE(response.opened().resumed());
  resumed->WritesDone();
  EXPECT_TRUE(finish(resumed.get()).ok());
}

// With mutual TLS a client certificate's subject names the caller; keys work in plain text too
// (a sidecar terminating TLS in front) - every other test here runs so.
TEST_F(KeysTest, AClientCertificateSubjectCanBeTheIdentity) {
  const testing::Issued ca =
      testing::MakeCert(dir_.string(), "ca", {"test CA", "", -3600, 86400, true}, nullptr);
  const testing::Issued server_cert = testing::MakeCert(dir_.string(), "server", {}, &ca);
  const testing::Issued camera = testing::MakeCert(
      dir_.string(), "camera", {"camera-7", "Example Org", -3600, 86400, false, false}, &ca);
  const testing::Issued unlisted = testing::MakeCert(
      dir_.string(), "unlisted", {"camera-8", "Example Org", -3600, 86400, false, false}, &ca);
  const std::string cert_line = "camera-7 subject:\"CN=camera-7,O=Example Org\" vad 1 -";
  WriteFile(Path("keys"), alice_.line + "\n" + cert_line + "\n");
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--auth-keys", Path("keys"), "--tls-cert", server_cert.cert_path, "--tls-key",
                   server_cert.key_path, "--tls-client-ca", ca.cert_path}));
  client::ConnectOptions options;
  options.tls.ca_file = ca.cert_path;
  options.tls.cert_file = camera.cert_path;
  options.tls.key_file = camera.key_path;
  const Status camera_open = TryOpen(options, "vad");
  EXPECT_TRUE(camera_open.ok()) << camera_open.ToString();
  ExpectRefused(TryOpen(options, "demo"), StatusCode::kPermissionDenied,
                "API key \"camera-7\" may not use model \"demo\"");
  options.tls.cert_file = unlisted.cert_path;
  options.tls.key_file = unlisted.key_path;
  ExpectRefused(TryOpen(options, "vad"), StatusCode::kUnauthenticated,
                "subject \"CN=camera-8,O=Example Org\" is not in the keys file");
  // A key sent over the same kind of connection decides over the certificate.
  options.api_key = alice_.secret;
  EXPECT_TRUE(TryOpen(options, "vad").ok());
}

TEST_F(KeysTest, ABadKeysFileStopsTheStartAndABadReloadKeepsTheKeysInForce) {
  WriteFile(Path("bad"), "alice sha256:1234 vad 1 1\n");
  std::string error;
  auto refused = testing::ServerProcess::Start(
      testing::DefaultServerBinary(),
      {"--model", kModelDir, "--listen", "127.0.0.1:0", "--auth-keys", Path("bad")}, &error,
      std::chrono::seconds(30), Path("refused.log"));
  EXPECT_EQ(refused, nullptr);
  EXPECT_NE(ReadFile(Path("refused.log")).find("line 1: sha256: expects 64 hex digits"),
            std::string::npos)
      << ReadFile(Path("refused.log"));

  ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-keys", Path("keys")}));
  WriteFile(Path("keys"), "this is not a keys file\n");
  server_->Signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE(TryOpen(As(alice_), "vad").ok());
  const testing::HttpResponse metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_GE(testing::Sample(metrics.body, "ssm_auth_reloads_total{result=\"error\"}"), 1);
  EXPECT_NE(ReadFile(Path("server.log")).find("keys file not reloaded"), std::string::npos);
}

// ---- abuse limits ----------------------------------------------------------------------------

class AbuseLimitsTest : public SecurityTest {
 protected:
  int OpenDescriptors() const {
    int n = 0;
    for (const auto& entry :
         fs::directory_iterator("/proc/" + std::to_string(server_->pid()) + "/fd")) {
      (void)entry;
      ++n;
    }
    return n;
  }
};

// Slow-loris clients (connections that never finish the handshake, calls that never send their
// `open`) hold no thread and starve nobody: a healthy stream runs exactly meanwhile, and each
// idle thing is closed at its timeout, giving its descriptors back.
TEST_F(AbuseLimitsTest, SlowLorisClientsDoNotStarveOthers) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--handshake-timeout", "1", "--idle-timeout", "2"}));
  const int baseline = OpenDescriptors();
  std::vector<int> silent;
  for (int i = 0; i < 200; ++i) {
    const int fd = testing::ConnectSilently(server_->port());
    ASSERT_GE(fd, 0);
    silent.push_back(fd);
  }
  // 50 calls on 50 channels that open the call and then send nothing.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<pb::StreamRequest, pb::StreamResponse>>>
      calls;
  for (int i = 0; i < 50; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection each
    channels.push_back(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    calls.push_back(pb::Ssm::NewStub(channels.back())->Stream(contexts.back().get()));
  }
  auto client = Connect({});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<float> samples = Signal(300 * kHop, 31);
  const auto start = Clock::now();
  auto got = StreamAll(**client, samples);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, Offline(samples));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 10);
  for (int fd : silent) {
    EXPECT_TRUE(testing::ClosedByPeerWithin(fd, std::chrono::seconds(5)));
    close(fd);
  }
  for (auto& call : calls) {  // each ends at the idle timeout
    pb::StreamResponse response;
    EXPECT_FALSE(call->Read(&response));
    const grpc::Status status = call->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  }
  calls.clear();
  contexts.clear();
  channels.clear();
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline && OpenDescriptors() > baseline + 5)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(OpenDescriptors(), baseline + 5);
}

TEST_F(AbuseLimitsTest, PerConnectionAndServerWideLimitsHold) {
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--max-calls-per-connection", "2", "--max-opens-per-second", "4",
                   "--max-metadata-bytes", "2048", "--max-connection-idle", "3"}));
  // The idle limit outlasts every pause below (at most 1.1 s without a call): at 1 s, the
  // client's connection was closed (GOAWAY) just as the next call started, which then failed.
  auto client = Connect({});
  ASSERT_TRUE(client.ok());
  client::StreamOptions o;
  o.model = "vad";
  o.resume = false;
  // Two calls on one connection: a third waits (HTTP/2 flow of streams) until one ends.
  auto first = (*client)->OpenStream(o);
  auto second = (*client)->OpenStream(o);
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = (*client)->StartStream(o);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_EQ(testing::Sample(testing::HttpGet(server_->metrics_port(), "/metrics").body,
                            "ssm_streams_active{model=\"vad\"}"),
            2);    // the third has not reached the server
  first->reset();  // cancels: its place goes to the third
  auto opened = third->WaitOpened();
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  second->reset();
  third.reset();

  // The open rate: in any second 4 calls are admitted; the 5th is told to retry.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  std::vector<Status> opens;
  for (int i = 0; i < 5; ++i) opens.push_back(TryOpenStatus(**client, o));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(opens[size_t(i)].ok()) << opens[size_t(i)].ToString();
  EXPECT_EQ(opens[4].code(), StatusCode::kUnavailable) << opens[4].ToString();
  EXPECT_NE(opens[4].message().find("--max-opens-per-second"), std::string::npos);

  // Metadata beyond the limit: that call fails, the server serves on.
  grpc::ClientContext context;
  context.AddMetadata("x-padding", std::string(8192, 'a'));
  auto stub =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  pb::ListModelsResponse models;
  EXPECT_FALSE(stub->ListModels(&context, pb::ListModelsRequest(), &models).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the open-rate window passes
  EXPECT_TRUE(TryOpenStatus(**client, o).ok());

  // A connection without calls is closed after --max-connection-idle: the channel goes idle.
  auto idle_channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(
      idle_channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5)));
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline && idle_channel->GetState(false) == GRPC_CHANNEL_READY)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(idle_channel->GetState(false), GRPC_CHANNEL_READY);
}

TEST_F(AbuseLimitsTest, ParkedStateMemoryIsBounded) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-parked-bytes", "1000"}));
  auto stub =
      pb::Ssm::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto call = stub->Stream(&context);
  pb::StreamRequest request;
  request.mutable_open()->set_model("vad");
  request.mutable_open()->set_format(pb::SAMPLE_FORMAT_PCM_F32LE);
  ASSERT_TRUE(call->Write(request));
  pb::StreamResponse response;
  ASSERT_TRUE(call->Read(&response));
  const std::string token = response.opened().resume_token();
  context.TryCancel();  // breaks: its snapshot (a few KB) is more than 1000 bytes
  call->Finish();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  grpc::ClientContext resume_context;
  auto resume = stub->Stream(&resume_context);
  request.mutable_open()->set_resume_token(token);
  ASSERT_TRUE(resume->Write(request));
  while (resume->Read(&response)) {
  }
  const grpc::Status status = resume->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("--max-parked-bytes 1000"), std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace ssm
