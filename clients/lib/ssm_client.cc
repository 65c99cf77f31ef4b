#include "clients/lib/ssm_client.h"

#include <fmt/format.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "clients/lib/connect_diagnosis.h"
#include "clients/lib/grpc_status.h"
#include "clients/lib/pcm_encoding.h"
#include "clients/lib/stream_call.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm::client {

namespace pb = ssmserve::v1;

namespace {

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

// The whole of a PEM file named by `flag`.
StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgumentError(fmt::format("{} {}: cannot read the file", flag, path));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos)
    return InvalidArgumentError(fmt::format("{} {}: not a PEM file", flag, path));
  return text.str();
}

StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const TlsClientOptions& tls) {
  if (!tls.on()) return grpc::InsecureChannelCredentials();
  if (tls.cert_file.empty() != tls.key_file.empty())
    return InvalidArgumentError(
        "--tls-cert and --tls-key go together (a client certificate and "
        "its private key)");
  grpc::SslCredentialsOptions ssl;
  if (!tls.ca_file.empty()) {
    SSM_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.ca_file, "--tls-ca"));
  }
  if (!tls.cert_file.empty()) {
    SSM_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(tls.cert_file, "--tls-cert"));
    SSM_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(tls.key_file, "--tls-key"));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

struct Client::Impl {
  std::string address;
  ConnectOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Ssm::Stub> stub;

  // Sends the API key with a call.
  void Authorize(grpc::ClientContext* context) const {
    if (!options.api_key.empty())
      context->AddMetadata("authorization", "Bearer " + options.api_key);
  }
  // Adds the address to transport errors, so the user sees which server failed.
  Status Annotate(Status status) const {
    if (status.code() == StatusCode::kUnavailable || status.code() == StatusCode::kDeadlineExceeded)
      return status.WithContext("server " + address);
    return status;
  }
};

StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                  const ConnectOptions& options) {
  if (address.empty())
    return InvalidArgumentError("no server address given; pass HOST:PORT, e.g. localhost:50051");
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->options = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_bytes);
  // After a lost connection, gRPC waits before each new connection attempt: from 1 s growing to
  // 120 s by default. A stream resuming after a server restart (StreamOptions::resume) would
  // wait that long, so the waits here are those of a resume: 100 ms growing to 2 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // No transparent retries: a Stream resumes by itself (StreamOptions::resume), and a call that
  // gRPC retried behind its back could report its `open` write failed while the call goes on.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  if (!options.tls.server_name.empty()) args.SetSslTargetNameOverride(options.tls.server_name);
  SSM_ASSIGN_OR_RETURN(auto credentials, ChannelCredentialsFor(options.tls));
  impl->channel = grpc::CreateCustomChannel(address, credentials, args);
  if (!impl->channel->WaitForConnected(DeadlineIn(options.connect_timeout_s))) {
    // gRPC says only that it could not connect; a handshake of our own says why.
    const std::string why = DiagnoseConnection(address, options.tls, options.connect_timeout_s);
    return UnavailableError(fmt::format(
        "cannot reach ssm-server at {} within {} s: {}", address, options.connect_timeout_s,
        why.empty() ? "check that it is running and that the address (--server HOST:PORT) is right"
                    : why));
  }
  impl->stub = pb::Ssm::NewStub(impl->channel);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const std::string& Client::address() const { return impl_->address; }

StatusOr<pb::ListModelsResponse> Client::ListModels() {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(impl_->options.rpc_timeout_s));
  impl_->Authorize(&context);
  pb::ListModelsResponse response;
  Status status = FromGrpc(impl_->stub->ListModels(&context, pb::ListModelsRequest(), &response));
  if (!status.ok()) return impl_->Annotate(status).WithContext("ListModels");
  return response;
}

StatusOr<pb::ModelInfo> Client::GetModelInfo(const std::string& name) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(impl_->options.rpc_timeout_s));
  impl_->Authorize(&context);
  pb::GetModelInfoRequest request;
  request.set_name(name);
  pb::ModelInfo response;
  Status status = FromGrpc(impl_->stub->GetModelInfo(&context, request, &response));
  if (!status.ok()) return impl_->Annotate(status);
  return response;
}

std::unique_ptr<Stream> Client::StartStream(const StreamOptions& options) {
  StreamOptions with_key = options;
  if (with_key.api_key.empty()) with_key.api_key = impl_->options.api_key;
  return std::unique_ptr<Stream>(
      new Stream(StartStreamCall(impl_->channel, StreamRpc::kStream, with_key)));
}

std::unique_ptr<StreamGroup> Client::StartStreamGroup(const StreamGroupOptions& options) {
  StreamGroupOptions with_key = options;
  if (with_key.api_key.empty()) with_key.api_key = impl_->options.api_key;
  return StartStreamGroupCall(impl_->channel, with_key);
}

StatusOr<std::unique_ptr<Stream>> Client::OpenStream(const StreamOptions& options) {
  std::unique_ptr<Stream> stream = StartStream(options);
  auto opened = stream->WaitOpened();
  if (!opened.ok()) return impl_->Annotate(opened.status());
  return stream;
}

StatusOr<FileOutputs> Client::ProcessFile(const FileRequest& request,
                                          const std::vector<float>& values,
                                          const FileProgressFn& progress) {
  const size_t per_row = size_t(std::max(request.values_per_row, 1));
  const size_t width = BytesPerValue(request.format);
  if (width == 0) return InvalidArgumentError("ProcessFile: the sample format is unspecified");
  if (values.size() % per_row != 0)
    return InvalidArgumentError(fmt::format(
        "ProcessFile: {} values are not a whole number of rows of {}", values.size(), per_row));
  StreamOptions options;
  options.model = request.model;
  options.format = request.format;
  options.sample_rate = request.sample_rate;
  options.label = request.label;
  options.max_pending_chunks = 4;  // bounds the upload's memory to a few chunk_bytes
  options.idle_timeout_s = request.idle_timeout_s;
  options.api_key = impl_->options.api_key;
  Stream stream(StartStreamCall(impl_->channel, StreamRpc::kProcessFile, options));

  FileProgress state;
  state.rows_total = int64_t(values.size() / per_row);
  const size_t rows_per_chunk = std::max<size_t>(1, request.chunk_bytes / (width * per_row));
  Status upload;
  for (size_t row = 0; row < size_t(state.rows_total) && upload.ok(); row += rows_per_chunk) {
    const size_t rows = std::min(rows_per_chunk, size_t(state.rows_total) - row);
    std::string payload;
    upload = EncodePayload(values.data() + row * per_row, rows * per_row, request.format, &payload);
    if (!upload.ok()) {
      stream.Cancel();
      return upload.WithContext(fmt::format("ProcessFile: rows {}..{}", row, row + rows));
    }
    upload = stream.SendPayload(std::move(payload));  // an error: the call ended; Close says why
    state.rows_sent = int64_t(row + rows);
    if (progress) progress(state);
  }
  stream.CloseSend();

  FileOutputs result;
  Output out;
  while (stream.Next(&out)) {
    if (out.frames <= 0) continue;
    if (out.first_frame != result.frames || out.values.size() != size_t(out.frames) * out.d_out ||
        (result.d_out != 0 && out.d_out != result.d_out)) {
      stream.Cancel();
      return InternalError(fmt::format(
          "ProcessFile: the server sent frames {}..{} (d_out {}) after {} frames (d_out {})",
          out.first_frame, out.first_frame + out.frames, out.d_out, result.frames, result.d_out));
    }
    result.d_out = out.d_out;
    result.values.insert(result.values.end(), out.values.begin(), out.values.end());
    result.frames += out.frames;
    state.frames_received = result.frames;
    if (state.frames_expected == 0) {
      auto opened = stream.WaitOpened();  // answered before any output
      if (opened.ok()) state.frames_expected = ExpectedFrames(opened->model(), state.rows_total);
    }
    if (progress) progress(state);
  }
  Status status = stream.Close();
  if (!status.ok()) return impl_->Annotate(status);
  auto opened = stream.WaitOpened();
  if (!opened.ok()) return opened.status();
  result.model = opened->model();
  if (result.d_out == 0) result.d_out = result.model.d_out();
  return result;
}

int64_t ExpectedFrames(const pb::ModelInfo& model, int64_t rows) {
  if (model.frontend() != "log_mel") return rows;
  if (model.hop_length() <= 0 || rows < model.win_length()) return 0;
  return (rows - model.win_length()) / model.hop_length() + 1;
}

}  // namespace ssm::client
