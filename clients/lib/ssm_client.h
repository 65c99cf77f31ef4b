// The ssmserve client library: connect to ssm-server, query models, stream, process files.
//
//   auto client = ssm::client::Client::Connect("localhost:50051");    // 5 s connect deadline
//   if (!client.ok()) { /* UNAVAILABLE: cannot reach ... */ }
//   ssm::client::StreamOptions options;
//   options.model = "vad";
//   auto stream = (*client)->OpenStream(options);
//   (*stream)->SendSamples(samples, n);                                // sequence numbers: ours
//   ssm::client::Output out;
//   while ((*stream)->Next(&out)) { ... }                             // after CloseSend()
//   ssm::Status end = (*stream)->Close();                             // server's final status
//
// gRPC codes map 1:1 onto ssm::StatusCode (same numbers); messages are the server's.
// Thread-safety: Client is thread-safe and may be shared by any number of threads and streams;
// a Stream may outlive its Client. See stream.h for a Stream's rules.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clients/lib/stream.h"
#include "clients/lib/stream_group.h"
#include "common/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace ssm::client {

// Transport security of the channel (the server's --tls-cert, --tls-client-ca).
struct TlsClientOptions {
  bool enabled = false;     // TLS; implied by any field below
  std::string ca_file;      // PEM roots the server's certificate must chain to; "" = the system's
  std::string cert_file;    // PEM client certificate chain, for a server requiring one (mTLS)
  std::string key_file;     // its private key
  std::string server_name;  // the name checked against the server's certificate; "" = the host

  bool on() const { return enabled || !ca_file.empty() || !cert_file.empty(); }
};

struct ConnectOptions {
  // Connect fails with UNAVAILABLE unless the server answers within this many seconds.
  double connect_timeout_s = 5;
  // Deadline of ListModels and GetModelInfo, seconds.
  double rpc_timeout_s = 10;
  // Largest response accepted, bytes.
  int max_receive_bytes = 64 << 20;
  TlsClientOptions tls;
  // An API key of the server's --auth-keys: every call sends "authorization: Bearer <api_key>".
  // "" = none.
  std::string api_key;
};

// An offline job for ProcessFile.
struct FileRequest {
  std::string model;  // empty selects the server's default model
  ssmserve::v1::SampleFormat format = ssmserve::v1::SAMPLE_FORMAT_PCM_F32LE;
  int sample_rate = 0;  // Hz of audio; 0 = the model's
  std::string label;
  int values_per_row = 1;        // 1 for samples; d_in for FRAMES_F32LE (chunks hold whole rows)
  size_t chunk_bytes = 1 << 20;  // upload piece size (kept well under gRPC's message limit)
  double idle_timeout_s = 120;   // see StreamOptions::idle_timeout_s
};

// Called on ProcessFile's thread as the upload and the outputs progress.
struct FileProgress {
  int64_t rows_sent = 0, rows_total = 0;  // samples or frames uploaded
  int64_t frames_received = 0;
  int64_t frames_expected = 0;  // 0 until the server's `opened` names the model
};
using FileProgressFn = std::function<void(const FileProgress&)>;

struct FileOutputs {
  ssmserve::v1::ModelInfo model;  // as the server described it in `opened`
  int64_t frames = 0;
  int d_out = 0;
  std::vector<float> values;  // frames x d_out, row-major
};

class Client {
 public:
  // Opens a channel to `address` ("host:port") and waits until it is connected. INVALID_ARGUMENT
  // for TLS files that cannot be read; UNAVAILABLE saying why the connection failed (for TLS:
  // the certificate problem, a server without TLS, a client certificate the server requires).
  static StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                   const ConnectOptions& options = {});
  ~Client();

  const std::string& address() const;

  StatusOr<ssmserve::v1::ListModelsResponse> ListModels();
  // `name` empty: the default model. NOT_FOUND for an unknown name.
  StatusOr<ssmserve::v1::ModelInfo> GetModelInfo(const std::string& name = "");

  // Starts a Stream call and returns at once; problems surface from the Stream's methods.
  std::unique_ptr<Stream> StartStream(const StreamOptions& options);
  // StartStream + WaitOpened: a stream the server has accepted, or why not.
  StatusOr<std::unique_ptr<Stream>> OpenStream(const StreamOptions& options);

  // Starts a StreamMany call carrying many streams (stream_group.h); returns at once.
  std::unique_ptr<StreamGroup> StartStreamGroup(const StreamGroupOptions& options);

  // Uploads `values` (samples, or rows of values_per_row floats) through the ProcessFile rpc
  // and returns all outputs. Blocks; `progress` runs on this thread.
  StatusOr<FileOutputs> ProcessFile(const FileRequest& request, const std::vector<float>& values,
                                    const FileProgressFn& progress = nullptr);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Output frames a log_mel model gives for `samples` samples: floor((n - win) / hop) + 1, or 0;
// for frame models (frontend none) one per input frame.
int64_t ExpectedFrames(const ssmserve::v1::ModelInfo& model, int64_t rows);

}  // namespace ssm::client
