// ssm-server: the gRPC streaming service (docs/design.md §5). Prints "listening on HOST:PORT" as
// its first stdout line once it accepts calls, then "metrics on HOST:PORT" when metrics are on
// (--metrics-listen: Prometheus metrics at /metrics and the web dashboard at /); logs go to
// stderr. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the --auth-keys file.
#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "kernels/base/worker_pool.h"
#include "server/service/authenticator.h"
#include "server/service/call_registry.h"
#include "server/service/http_server.h"
#include "server/service/listener.h"
#include "server/service/log.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/parked_streams.h"
#include "server/service/server_config.h"
#include "server/service/ssm_service.h"
#include "server/service/state_store.h"
#include "server/service/transport_security.h"

namespace ssm {
namespace {

// The idle sweep runs this often; an idle call ends within this much past --idle-timeout.
constexpr std::chrono::milliseconds kIdleSweepPeriod(100);
// After the drain, how long gRPC gets to cancel calls that are still open.
constexpr std::chrono::milliseconds kShutdownGrace(500);
// How often freed heap memory is handed back to the system (malloc_trim). After a burst (a
// backlog when the server fell behind real time) glibc keeps the freed pages: 413 MB stayed
// resident after one, 83 MB once trimmed.
constexpr int kTrimPeriodS = 10;

// The process's resident memory, bytes (/proc/self/statm); 0 if unreadable.
long ResidentBytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? resident * sysconf(_SC_PAGESIZE) : 0;
}

// Returns freed heap pages to the system, logging what a trim gave back when it was much.
void TrimHeap() {
  const auto start = std::chrono::steady_clock::now();
  const long before = ResidentBytes();
  malloc_trim(0);
  const long after = ResidentBytes();
  if (before - after >= (16L << 20))
    log::Info("gave {} MB of freed heap back to the system ({} MB resident) in {:.1f} ms",
              (before - after) >> 20, after >> 20,
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count());
}

// libprotobuf's own messages, in the server's log format rather than its bare stderr lines. Its
// errors are about input (a client's string field that is not UTF-8 fails to parse, and the call
// ends with INVALID_ARGUMENT): warnings here.
void ProtobufLog(google::protobuf::LogLevel level, const char* /*file*/, int /*line*/,
                 const std::string& message) {
  if (level == google::protobuf::LOGLEVEL_INFO)
    log::Info("protobuf: {}", message);
  else if (level == google::protobuf::LOGLEVEL_FATAL)
    log::Error("protobuf: {}", message);
  else
    log::Warning("protobuf: {}", message);
}

// gRPC's own messages (errors only, unless GRPC_VERBOSITY says otherwise), likewise: most are
// about a peer (a TLS handshake that failed, a connection reset), so they are warnings here.
void GrpcLog(gpr_log_func_args* args) {
  if (args->severity == GPR_LOG_SEVERITY_ERROR)
    log::Warning("grpc: {}", args->message);
  else
    log::Info("grpc: {}", args->message);
}

#ifndef SSM_VERSION
#define SSM_VERSION "unknown"
#endif

// The host part of a HOST:PORT flag.
std::string Host(const std::string& host_port) { return host_port.substr(0, host_port.rfind(':')); }

// Raises the soft limit on open descriptors to the hard limit (each connection and stream
// costs descriptors); returns the limit in force.
uint64_t RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return uint64_t(limit.rlim_cur);
}

int Serve(const ServerConfig& config, const sigset_t& signals) {
  log::Info("ssm-server starting: {}", config.ToString());
  log::Info("open file descriptor limit: {}", RaiseDescriptorLimit());
  std::string tls_summary = "plain text (no TLS)";
  if (const Status tls = CheckTlsFiles(config.tls, &tls_summary); !tls.ok()) {
    log::Error("{}", tls.message());
    return 1;
  }
  // --metrics-listen "" turns collection off too: the hot paths then skip every update.
  Metrics metrics(SSM_VERSION, config.backend(), config.backend() == "cuda" ? "gpu" : "cpu",
                  !config.metrics_listen.empty());
  // Before the models: the schedulers' last closes may still park streams.
  ParkedStreams parked({config.resume_ttl_s, config.max_parked, config.max_parked_bytes}, &metrics);
  auto auth = Authenticator::Create({config.auth_keys, config.max_opens_per_s}, &metrics);
  if (!auth.ok()) {
    log::Error("{}", auth.status().message());
    return 1;
  }
  if ((*auth)->enabled())
    log::Info("API keys from {}: {} identities; SIGHUP or a change of the file reloads it",
              config.auth_keys, (*auth)->key_count());
  else
    log::Warning("no --auth-keys: any client that reaches {} may use every model", config.listen);
  auto models = ModelRegistry::Load(config, &metrics);
  if (!models.ok()) {
    log::Error("{}", models.status().message());
    return 1;
  }
  for (const auto& m : (*models)->models())
    log::Info("model \"{}\" from {}: {}; {} stream slots", m->name, m->dir,
              m->model->config().ToString(), m->engine->capacity());

  std::unique_ptr<StateStore> store;
  if (!config.state_store.empty()) {
    StateStore::Options options;
    options.url = config.state_store;
    options.password_file = config.store_password_file;
    options.timeout_s = config.store_timeout_s;
    auto created = StateStore::Create(options, &metrics);
    if (!created.ok()) {
      log::Error("{}", created.status().message());
      return 1;
    }
    store = std::move(*created);
    log::Info(
        "state store redis://{}: streams are handed off on drain and checkpointed every "
        "{:g} s of signal",
        store->address(), config.checkpoint_interval_s);
  }
  CallRegistry calls(kIdleSweepPeriod);
  SsmService service(&config, models->get(), &calls, &metrics, &parked, store.get(), auth->get());
  std::atomic<bool> serving{false};  // what gRPC's health service says, for /healthz
  std::unique_ptr<HttpServer> http;
  if (metrics.enabled()) {
    HttpOptions http_options;
    http_options.serving = [&serving] { return serving.load(); };
    http_options.before_scrape = [&metrics] { metrics.Refresh(); };
    if (config.tls.enabled()) {  // the same certificate as the gRPC port
      http_options.tls_cert = config.tls.cert;
      http_options.tls_key = config.tls.key;
      http_options.tls_reload_interval_s = config.tls.reload_interval_s;
    }
    if (config.metrics_auth)
      http_options.authorize = [a = auth->get()](std::string_view key) {
        return a->AuthenticateSecret(key).ok();
      };
    auto started = HttpServer::Start(config.metrics_listen, metrics.registry(), http_options);
    if (!started.ok()) {
      log::Error(
          "{}; choose another --metrics-listen, or --metrics-listen \"\" to turn metrics off",
          started.status().message());
      return 1;
    }
    http = std::move(*started);
  }
  auto listener = Listener::Bind(config.listen);
  if (!listener.ok()) {
    log::Error("{}; choose another --listen", listener.status().message());
    return 1;
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Connections come from our own accept loop (listener.h), not from a gRPC listening port.
  auto acceptor = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
      ServerCredentialsFor(config.tls));
  log::Info("gRPC port: {}", tls_summary);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             int(config.handshake_timeout_s * 1000.0));
  // Abuse limits per connection (docs/design.md §8).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config.max_calls_per_connection);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             int(config.keepalive_min_interval_s * 1000.0));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, config.keepalive_max_strikes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             int(std::min(config.max_connection_idle_s * 1000.0, 2e9)));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, config.max_metadata_bytes);
  builder.SetMaxReceiveMessageSize(int(GrpcReceiveLimitBytes(config, **models)));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    log::Error("cannot start the gRPC server on {}", config.listen);
    return 1;
  }
  (*listener)->StartAccepting(std::move(acceptor));
  const int port = (*listener)->port();
  server->GetHealthCheckService()->SetServingStatus(true);
  serving = true;
  const std::string host = Host(config.listen);
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  log::Info("listening on {}:{}", host, port);
  if (http != nullptr) {
    const std::string metrics_host = Host(config.metrics_listen);
    std::printf("metrics on %s:%d\n", metrics_host.c_str(), http->port());
    std::fflush(stdout);
    const char* scheme = http->tls() ? "https" : "http";
    log::Info("Prometheus metrics on {}://{}:{}/metrics{}, dashboard on {}://{}:{}/", scheme,
              metrics_host, http->port(), config.metrics_auth ? " (API key required)" : "", scheme,
              metrics_host, http->port());
  }

  int signal_number = 0;
  for (;;) {
    const timespec trim_period{kTrimPeriodS, 0};
    signal_number = sigtimedwait(&signals, nullptr, &trim_period);
    if (signal_number < 0) {  // no signal for kTrimPeriodS (or EINTR)
      TrimHeap();
      continue;
    }
    if (signal_number != SIGHUP) break;
    if ((*auth)->enabled()) {
      log::Info("SIGHUP: reloading the keys file {}", config.auth_keys);
      (void)(*auth)->Reload();  // logs and counts its own failure
    } else {
      log::Info("SIGHUP: nothing to reload (no --auth-keys)");
    }
  }
  log::Info("{}: draining (new streams get UNAVAILABLE; up to {} s for open calls)",
            strsignal(signal_number), config.drain_timeout_s);
  server->GetHealthCheckService()->SetServingStatus(false);
  serving = false;
  calls.StartDrain();
  const auto drain_deadline = std::chrono::steady_clock::now() +
                              std::chrono::milliseconds(int64_t(config.drain_timeout_s * 1000.0));
  if (!calls.WaitUntilEmpty(drain_deadline))
    log::Warning("drain timeout: cancelling {} open calls", calls.size());
  (*listener)->Stop();  // first: gRPC's acceptor drops (and leaks) connections after Shutdown
  server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  http.reset();
  // Calls still waiting for the store (a checkpoint, a resume lookup) finish first; the store
  // goes before the service, whose calls its callbacks reach.
  if (store != nullptr)
    store->WaitIdle(std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(int64_t(2000.0 * config.store_timeout_s)));
  (*models)->StopSchedulers();                    // runs the last stream closes (and parks)
  if (store != nullptr && parked.parked() > 0) {  // parked streams, to whichever replica resumes
    const size_t parked_streams = parked.parked();
    const size_t saved = parked.HandOff(
        store.get(),
        std::max(drain_deadline, std::chrono::steady_clock::now() + std::chrono::seconds(1)));
    log::Info("handed off {} of {} parked streams to the state store", saved, parked_streams);
  }
  store.reset();
  calls.Stop();
  auth->reset();
  log::Info("stopped");
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::ServerConfig config;
  std::vector<std::string> model_args;
  CLI::App app{
      "ssmserve gRPC server: real-time streaming and offline inference of state-space "
      "models. Prints \"listening on HOST:PORT\" on stdout when ready; SIGTERM drains."};
  app.add_option("--model", model_args,
                 "[NAME=]DIR model directory, repeatable; NAME defaults to the directory's base "
                 "name; the first is the default model")
      ->required();
  app.add_option("--listen", config.listen, "HOST:PORT to listen on (port 0 picks a free port)")
      ->capture_default_str();
  app.add_option("--metrics-listen", config.metrics_listen,
                 "HOST:PORT serving Prometheus metrics at /metrics and the live dashboard at / "
                 "(port 0 picks a free port; \"\" turns metrics off: nothing is collected)")
      ->capture_default_str();
  app.add_option("--device", config.device,
                 "auto (cuda when a GPU is present, else cpu), cpu, cuda or reference")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "reference"}))
      ->capture_default_str();
  app.add_option("--max-streams", config.max_streams, "Stream state slots per model")
      ->capture_default_str();
  app.add_option("--idle-timeout", config.idle_timeout_s,
                 "Seconds without a chunk after which a call is closed")
      ->capture_default_str();
  app.add_option("--write-timeout", config.write_timeout_s,
                 "Seconds a response may wait for the client to read it; a stream whose client "
                 "stopped reading longer ends with DEADLINE_EXCEEDED and frees its slot")
      ->capture_default_str();
  app.add_option("--handshake-timeout", config.handshake_timeout_s,
                 "Seconds a new connection gets to complete its HTTP/2 handshake before it is "
                 "closed (bounds silent and half-open connections)")
      ->capture_default_str();
  app.add_option("--max-chunk-ms", config.max_chunk_ms,
                 "Longest Stream chunk accepted, milliseconds of signal")
      ->capture_default_str();
  app.add_option("--max-batch-streams", config.max_batch_streams,
                 "Most streams advanced by one engine step")
      ->capture_default_str();
  app.add_option("--batch-wait-ms", config.batch_wait_ms,
                 "Longest a step waits for more ready streams, milliseconds (it starts sooner once "
                 "every open stream has a chunk ready)")
      ->capture_default_str();
  app.add_option("--threads", config.threads, "Compute threads per engine (0 = all cores)")
      ->capture_default_str();
  app.add_option("--parallel-min-mflop", config.parallel_min_mflop,
                 "A step with less estimated work (MFLOP) runs on one thread, where a parallel "
                 "region would cost more than it saves (0: every step on all threads)")
      ->capture_default_str();
  app.add_option("--worker-spin-us", config.worker_spin_us,
                 "How long an idle compute worker thread spins for the next parallel op before it "
                 "sleeps, microseconds (0: sleep at once)")
      ->capture_default_str();
  app.add_option("--drain-timeout", config.drain_timeout_s,
                 "Seconds open calls get to finish after SIGTERM/SIGINT")
      ->capture_default_str();
  app.add_option("--file-segment-frames", config.file_segment_frames,
                 "ProcessFile: frames per engine step per file")
      ->capture_default_str();
  app.add_option("--file-frames-per-step", config.file_frames_per_step,
                 "Background frames per engine step (ProcessFile segments and Stream chunks sent "
                 "ahead of real time, all together; bounds the delay they add to live streams)")
      ->capture_default_str();
  app.add_option("--realtime-lead-ms", config.realtime_lead_ms_flag,
                 "How far ahead of real time a Stream may send before its chunks wait behind "
                 "those of streams that keep to real time, ms (0: twice --max-chunk-ms, at least "
                 "2000)")
      ->capture_default_str();
  app.add_option("--background-step-ms", config.background_step_ms,
                 "While live streams run, how long the background work of one step may take, ms "
                 "(from the measured compute time per frame)")
      ->capture_default_str();
  app.add_option("--resume-ttl", config.resume_ttl_s,
                 "Seconds a Stream whose call broke (cancelled, disconnected, timed out) is kept "
                 "for a resume with its token; 0 turns resuming off")
      ->capture_default_str();
  app.add_option("--max-parked", config.max_parked,
                 "Broken streams kept for a resume at once (all models); beyond, a break ends "
                 "the stream")
      ->capture_default_str();
  app.add_option("--state-store", config.state_store,
                 "redis://[USER@]HOST:PORT[/DB]: a draining server saves its streams there and "
                 "every stream is checkpointed there, so that any replica serving the same model "
                 "resumes them (\"\" = none)");
  app.add_option("--store-password-file", config.store_password_file,
                 "File whose first line is the state store's password (Redis AUTH; with USER@ "
                 "in the URL, an ACL user's), re-read at each connect; never in the URL");
  app.add_option("--store-timeout", config.store_timeout_s,
                 "Seconds the state store gets to connect or answer one operation")
      ->capture_default_str();
  app.add_option("--checkpoint-interval", config.checkpoint_interval_s,
                 "With --state-store: seconds of signal between a stream's checkpoints (0: none)")
      ->capture_default_str();
  app.add_option("--tls-cert", config.tls.cert,
                 "PEM certificate chain of the gRPC port (the server's certificate first); turns "
                 "TLS on. Re-read every --tls-reload-interval: renew it in place, no restart")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", config.tls.key, "PEM private key of --tls-cert (unencrypted)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", config.tls.client_ca,
                 "PEM CA bundle: clients must present a certificate it signed (mutual TLS); its "
                 "subject can name the caller in --auth-keys")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-reload-interval", config.tls.reload_interval_s,
                 "Seconds between re-reads of the TLS files")
      ->capture_default_str();
  app.add_option("--auth-keys", config.auth_keys,
                 "API keys file (docs/design.md §8; `ssm-keys new` makes entries): every call "
                 "needs a key or a listed client certificate; reloaded on SIGHUP and on change")
      ->check(CLI::ExistingFile);
  app.add_flag("--metrics-auth", config.metrics_auth,
               "/metrics needs an API key of --auth-keys too (the dashboard page asks for it)");
  app.add_option("--max-opens-per-second", config.max_opens_per_s,
                 "New Stream and ProcessFile calls admitted per second, all callers together; "
                 "beyond, UNAVAILABLE (retry); 0 = no limit")
      ->capture_default_str();
  app.add_option("--max-calls-per-connection", config.max_calls_per_connection,
                 "Calls open at once on one connection (HTTP/2 streams)")
      ->capture_default_str();
  app.add_option("--keepalive-min-interval", config.keepalive_min_interval_s,
                 "Seconds: client pings more frequent than this (without data) are strikes")
      ->capture_default_str();
  app.add_option("--keepalive-max-strikes", config.keepalive_max_strikes,
                 "Ping strikes tolerated before the connection is closed (GOAWAY)")
      ->capture_default_str();
  app.add_option("--max-connection-idle", config.max_connection_idle_s,
                 "Seconds a connection with no call open is kept")
      ->capture_default_str();
  app.add_option("--max-metadata-bytes", config.max_metadata_bytes,
                 "Largest request metadata (headers) of a call, bytes")
      ->capture_default_str();
  app.add_option("--max-parked-bytes", config.max_parked_bytes,
                 "Snapshot bytes of all parked streams together; beyond, a break ends the stream")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a bad command line: 2, after CLI11's message
  }

  for (const std::string& arg : model_args) {
    auto spec = ssm::ModelSpec::Parse(arg);
    if (!spec.ok()) {
      std::fprintf(stderr, "error: %s\n", spec.status().message().c_str());
      return 2;
    }
    config.models.push_back(*spec);
  }
  const ssm::Status valid = config.Validate();
  if (!valid.ok()) {
    std::fprintf(stderr, "error: %s\n", valid.message().c_str());
    return 2;
  }
  ssm::WorkerPool::Process().set_spin_us(config.worker_spin_us);
  // Block the shutdown signals in every thread (threads inherit the mask) and take them with
  // sigwait in Serve.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  google::protobuf::SetLogHandler(&ssm::ProtobufLog);  // before any thread starts
  gpr_set_log_function(&ssm::GrpcLog);
  return ssm::Serve(config, signals);
}
