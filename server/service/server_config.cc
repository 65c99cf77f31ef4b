#include "server/service/server_config.h"

#include <fmt/format.h>

#include <cstdlib>
#include <set>

namespace ssm {

namespace {

// INVALID_ARGUMENT unless `value` is HOST:PORT with a port in [0, 65535].
Status CheckHostPort(const char* flag, const std::string& value, const char* example) {
  const size_t colon = value.rfind(':');
  const std::string port = colon == std::string::npos ? "" : value.substr(colon + 1);
  char* end = nullptr;
  const long number = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
  if (colon == 0 || port.empty() || *end != '\0' || number < 0 || number > 65535)
    return InvalidArgumentError(fmt::format(
        "{} {}: expected HOST:PORT with a port in [0, 65535], e.g. {}", flag, value, example));
  return OkStatus();
}

}  // namespace

StatusOr<ModelSpec> ModelSpec::Parse(const std::string& arg) {
  ModelSpec spec;
  const size_t eq = arg.find('=');
  if (eq == std::string::npos) {
    spec.dir = arg;
    std::string trimmed = arg;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    const size_t slash = trimmed.rfind('/');
    spec.name = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
  } else {
    spec.name = arg.substr(0, eq);
    spec.dir = arg.substr(eq + 1);
  }
  if (spec.name.empty() || spec.name == "/" || spec.name == "." || spec.name == "..")
    return InvalidArgumentError(
        fmt::format("--model {}: no model name; write --model NAME=DIR", arg));
  if (spec.dir.empty())
    return InvalidArgumentError(fmt::format("--model {}: empty directory", arg));
  return spec;
}

Status ServerConfig::Validate() const {
  if (models.empty()) return InvalidArgumentError("no model: give at least one --model [NAME=]DIR");
  std::set<std::string> names;
  for (const ModelSpec& m : models) {
    if (!names.insert(m.name).second)
      return InvalidArgumentError(fmt::format(
          "--model: the name \"{}\" is used twice; name them with --model NAME=DIR", m.name));
  }
  SSM_RETURN_IF_ERROR(CheckHostPort("--listen", listen, "0.0.0.0:50051"));
  if (!metrics_listen.empty())
    SSM_RETURN_IF_ERROR(CheckHostPort("--metrics-listen", metrics_listen,
                                      "127.0.0.1:9464 (or \"\" to turn metrics off)"));
  if (device != "auto" && device != "cpu" && device != "cuda" && device != "reference")
    return InvalidArgumentError(
        fmt::format("--device {}: expected auto, cpu, cuda or reference", device));
  auto positive = [](const char* flag, double v) {
    return v > 0 ? OkStatus() : InvalidArgumentError(fmt::format("{} {}: must be > 0", flag, v));
  };
  SSM_RETURN_IF_ERROR(positive("--max-streams", max_streams));
  SSM_RETURN_IF_ERROR(positive("--idle-timeout", idle_timeout_s));
  SSM_RETURN_IF_ERROR(positive("--write-timeout", write_timeout_s));
  SSM_RETURN_IF_ERROR(positive("--handshake-timeout", handshake_timeout_s));
  SSM_RETURN_IF_ERROR(positive("--max-chunk-ms", max_chunk_ms));
  SSM_RETURN_IF_ERROR(positive("--max-batch-streams", max_batch_streams));
  SSM_RETURN_IF_ERROR(positive("--drain-timeout", drain_timeout_s));
  SSM_RETURN_IF_ERROR(positive("--file-segment-frames", file_segment_frames));
  SSM_RETURN_IF_ERROR(positive("--file-frames-per-step", file_frames_per_step));
  SSM_RETURN_IF_ERROR(positive("--background-step-ms", background_step_ms));
  if (realtime_lead_ms_flag < 0)
    return InvalidArgumentError(
        fmt::format("--realtime-lead-ms {}: must be >= 0 (0: twice --max-chunk-ms, at least 2000)",
                    realtime_lead_ms_flag));
  if (realtime_lead_ms_flag > 0 && realtime_lead_ms_flag < max_chunk_ms)
    return InvalidArgumentError(fmt::format(
        "--realtime-lead-ms {} is shorter than --max-chunk-ms {}: a chunk of the longest length "
        "sent in real time would count as ahead of it; use at least {}",
        realtime_lead_ms_flag, max_chunk_ms, max_chunk_ms));
  if (!(resume_ttl_s >= 0 && resume_ttl_s <= 86400))
    return InvalidArgumentError(fmt::format(
        "--resume-ttl {}: must be in [0, 86400] seconds (0 turns resuming off)", resume_ttl_s));
  SSM_RETURN_IF_ERROR(positive("--max-parked", max_parked));
  if (!(checkpoint_interval_s >= 0 && checkpoint_interval_s <= 3600))
    return InvalidArgumentError(
        fmt::format("--checkpoint-interval {}: must be in [0, 3600] seconds (0: no checkpoints)",
                    checkpoint_interval_s));
  if (!store_password_file.empty() && state_store.empty())
    return InvalidArgumentError("--store-password-file needs --state-store (the store it is for)");
  if (!state_store.empty() && resume_ttl_s == 0)
    return InvalidArgumentError(
        "--state-store needs resuming on: --resume-ttl 0 gives streams no token to resume with");
  if (batch_wait_ms < 0 || batch_wait_ms > 1000)
    return InvalidArgumentError(
        fmt::format("--batch-wait-ms {}: must be in [0, 1000]", batch_wait_ms));
  if (threads < 0) return InvalidArgumentError(fmt::format("--threads {}: must be >= 0", threads));
  if (!(parallel_min_mflop >= 0))
    return InvalidArgumentError(
        fmt::format("--parallel-min-mflop {}: must be >= 0 (0: every step on all threads)",
                    parallel_min_mflop));
  if (worker_spin_us < 0 || worker_spin_us > 100000)
    return InvalidArgumentError(
        fmt::format("--worker-spin-us {}: must be in [0, 100000] microseconds (0: sleep at once)",
                    worker_spin_us));
  if (metrics_auth && auth_keys.empty())
    return InvalidArgumentError("--metrics-auth needs --auth-keys (the keys it accepts)");
  if (!(max_opens_per_s >= 0))
    return InvalidArgumentError(
        fmt::format("--max-opens-per-second {}: must be >= 0 (0: no limit)", max_opens_per_s));
  SSM_RETURN_IF_ERROR(positive("--max-calls-per-connection", max_calls_per_connection));
  SSM_RETURN_IF_ERROR(positive("--keepalive-min-interval", keepalive_min_interval_s));
  if (keepalive_max_strikes < 0)
    return InvalidArgumentError(
        fmt::format("--keepalive-max-strikes {}: must be >= 0", keepalive_max_strikes));
  SSM_RETURN_IF_ERROR(positive("--max-connection-idle", max_connection_idle_s));
  if (max_metadata_bytes < 1024)
    return InvalidArgumentError(
        fmt::format("--max-metadata-bytes {}: must be at least 1024 (gRPC's own headers need room)",
                    max_metadata_bytes));
  SSM_RETURN_IF_ERROR(positive("--max-parked-bytes", double(max_parked_bytes)));
  return OkStatus();
}

std::string ServerConfig::ToString() const {
  std::string model_list;
  for (const ModelSpec& m : models)
    model_list += fmt::format("{}{}={}", model_list.empty() ? "" : ",", m.name, m.dir);
  return fmt::format(
      "models=[{}] listen={} metrics_listen={} device={} max_streams={} idle_timeout={}s "
      "write_timeout={}s handshake_timeout={}s max_chunk_ms={} "
      "max_batch_streams={} batch_wait_ms={} threads={} parallel_min_mflop={} worker_spin_us={} "
      "drain_timeout={}s "
      "file_segment_frames={} file_frames_per_step={} realtime_lead_ms={} background_step_ms={} "
      "resume_ttl={}s max_parked={} state_store={} store_password_file={} store_timeout={}s "
      "checkpoint_interval={}s "
      "tls={} client_certificates={} auth_keys={} metrics_auth={} max_opens_per_second={} "
      "max_calls_per_connection={} keepalive_min_interval={}s keepalive_max_strikes={} "
      "max_connection_idle={}s max_metadata_bytes={} max_parked_bytes={}",
      model_list, listen, metrics_listen.empty() ? "off" : metrics_listen, device, max_streams,
      idle_timeout_s, write_timeout_s, handshake_timeout_s, max_chunk_ms, max_batch_streams,
      batch_wait_ms, threads, parallel_min_mflop, worker_spin_us, drain_timeout_s,
      file_segment_frames, file_frames_per_step, realtime_lead_ms(), background_step_ms,
      resume_ttl_s, max_parked, state_store.empty() ? "none" : state_store,
      store_password_file.empty() ? "none" : store_password_file, store_timeout_s,
      checkpoint_interval_s, tls.enabled() ? tls.cert : "off",
      tls.client_ca.empty() ? "off" : tls.client_ca, auth_keys.empty() ? "off" : auth_keys,
      metrics_auth, max_opens_per_s, max_calls_per_connection, keepalive_min_interval_s,
      keepalive_max_strikes, max_connection_idle_s, max_metadata_bytes, max_parked_bytes);
}

}  // namespace ssm
