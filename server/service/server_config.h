// ssm-server's configuration: every flag with its default, checks and a one-line summary.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "server/service/transport_security.h"

namespace ssm {

// One --model flag: "[NAME=]DIR".
struct ModelSpec {
  std::string name;  // defaults to the directory's base name
  std::string dir;

  // Parses "[NAME=]DIR"; INVALID_ARGUMENT for an empty name or directory.
  static StatusOr<ModelSpec> Parse(const std::string& arg);
};

struct ServerConfig {
  std::vector<ModelSpec> models;         // the first is the default model
  std::string listen = "0.0.0.0:50051";  // HOST:PORT; port 0 picks a free port
  std::string device = "auto";           // auto | cpu | cuda | reference (auto: cuda if a GPU)
  int max_streams = 256;                 // state-pool slots per model
  double idle_timeout_s = 30;            // a call with no input for this long is closed
  // A call whose client has not taken a response for this long (a reader that stopped) is
  // closed with DEADLINE_EXCEEDED and its slot freed.
  double write_timeout_s = 10;
  // A connection that has not completed its HTTP/2 handshake (sent its preface and SETTINGS)
  // this long after it was accepted is closed.
  double handshake_timeout_s = 10;
  int max_chunk_ms = 1000;          // longest Stream chunk, milliseconds of signal
  int max_batch_streams = 256;      // streams per engine step
  double batch_wait_ms = 2;         // how long a step waits for more streams to be ready
  int threads = 0;                  // compute threads per engine; 0 = all cores
  double parallel_min_mflop = 200;  // a step with less estimated work runs on one thread
  int worker_spin_us = 50;          // an idle compute worker spins this long, then sleeps
  double drain_timeout_s = 10;      // SIGTERM: how long open calls get to finish
  int file_segment_frames = 1024;   // ProcessFile: frames per engine step per file
  int file_frames_per_step = 2048;  // background frames per step (files, chunks sent ahead)
  // A Stream chunk whose signal ends more than this ahead of the wall time since its stream
  // opened waits behind on-time chunks (scheduler.h); 0 = max(2000, 2 x max_chunk_ms).
  int realtime_lead_ms_flag = 0;
  int background_step_ms = 25;  // while live streams run, background work per step, ms
  // A Stream call that breaks without a clean half-close parks its stream this long for a
  // resume (docs/design.md §7); 0 turns resuming off (no tokens).
  double resume_ttl_s = 60;
  int max_parked = 4096;  // parked streams at once, all models; a break beyond is not kept
  // redis://[USER@]HOST:PORT[/DB]: streams are handed off there on drain and checkpointed, so that
  // another replica resumes them; "" = none.
  std::string state_store;
  std::string store_password_file;    // the store's password in its first line; "" = none
  double store_timeout_s = 1;         // connect and command timeout of the store
  double checkpoint_interval_s = 10;  // with a store: seconds of signal between checkpoints
  // HOST:PORT serving Prometheus metrics at /metrics; port 0 picks a free port; "" = off.
  std::string metrics_listen = "127.0.0.1:9464";

  // Security and abuse limits (docs/design.md §8).
  TlsFiles tls;                   // --tls-cert, --tls-key, --tls-client-ca, --tls-reload-interval
  std::string auth_keys;          // --auth-keys FILE; "" = no keys (anyone may call)
  bool metrics_auth = false;      // the HTTP endpoint needs an API key of --auth-keys too
  double max_opens_per_s = 1000;  // new Stream/ProcessFile calls admitted per second, all callers
  // Concurrent calls (HTTP/2 streams) per connection: one client may multiplex this many streams
  // on one connection (the client library and ssm-loadgen do).
  int max_calls_per_connection = 8192;
  double keepalive_min_interval_s = 10;         // pings more often than this count as strikes
  int keepalive_max_strikes = 2;                // strikes beyond this close the connection
  double max_connection_idle_s = 300;           // a connection without calls this long is closed
  int max_metadata_bytes = 16384;               // request metadata (headers) per call
  int64_t max_parked_bytes = int64_t(1) << 30;  // snapshot bytes of all parked streams

  // INVALID_ARGUMENT naming the flag and what to do, for the first invalid setting.
  Status Validate() const;
  // All settings on one line, for the start-up log.
  std::string ToString() const;
  // --realtime-lead-ms in force (0 resolved).
  int realtime_lead_ms() const {
    return realtime_lead_ms_flag > 0 ? realtime_lead_ms_flag : std::max(2000, 2 * max_chunk_ms);
  }
  // The engine backend --device selects.
  std::string backend() const { return ResolveDevice(device); }
};

}  // namespace ssm
