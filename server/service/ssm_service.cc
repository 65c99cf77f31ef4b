#include "server/service/ssm_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "server/service/file_reactor.h"
#include "server/service/stream_reactor.h"

namespace ssm {

pb::ModelInfo MakeModelInfo(const ServedModel& served) {
  const Model& model = *served.model;
  const ModelConfig& c = model.config();
  pb::ModelInfo info;
  info.set_name(served.name);
  info.set_frontend(c.frontend.type);
  const bool audio = c.frontend.is_log_mel();
  info.set_sample_rate(audio ? c.frontend.sample_rate : 0);
  info.set_d_in(c.d_in);
  info.set_d_out(c.d_out);
  for (const std::string& label : c.labels) info.add_labels(label);
  info.set_frame_rate(c.frame_rate());
  info.set_hop_length(audio ? c.frontend.hop_length : 0);
  info.set_win_length(audio ? c.frontend.win_length : 0);
  info.set_head_activation(c.head_activation);
  info.set_parameters(model.parameter_count());
  info.set_state_bytes_per_stream(int64_t(model.state_bytes_per_stream()));
  info.set_config_json(c.ToJson());
  return info;
}

size_t MaxReceiveMessageBytes(const ServerConfig& config, const ModelRegistry& models) {
  constexpr size_t kFloor = 4u << 20;             // 4 MiB
  constexpr size_t kMessageOverhead = 64u << 10;  // open/chunk fields around the payload
  size_t largest_chunk = 0;
  for (const auto& m : models.models()) {
    const ModelConfig& c = m->model->config();
    const double values_per_second = c.input_values_per_second();
    largest_chunk = std::max(
        largest_chunk, size_t(values_per_second * config.max_chunk_ms / 1000.0 * sizeof(float)));
  }
  return std::max(kFloor, largest_chunk + kMessageOverhead);
}

size_t GrpcReceiveLimitBytes(const ServerConfig& config, const ModelRegistry& models) {
  const size_t limit = 2 * MaxReceiveMessageBytes(config, models);
  return std::min<size_t>(limit, size_t(INT32_MAX));
}

SsmService::SsmService(const ServerConfig* config, const ModelRegistry* models, CallRegistry* calls,
                       Metrics* metrics, ParkedStreams* parked, StateStore* store,
                       Authenticator* auth) {
  shared_.auth = auth;
  shared_.parked = parked;
  shared_.store = store;
  shared_.config = config;
  shared_.metrics = metrics;
  shared_.models = models;
  shared_.calls = calls;
  shared_.max_request_bytes = MaxReceiveMessageBytes(*config, *models);
  for (const auto& m : models->models()) shared_.model_infos[m->name] = MakeModelInfo(*m);
}

void SsmService::StartStream(std::unique_ptr<CallPort> port) {
  new StreamReactor(&shared_, std::move(port));  // deletes itself after OnDone
}

void SsmService::StartFile(std::unique_ptr<CallPort> port) {
  new FileReactor(&shared_, std::move(port));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SsmService::Stream(
    grpc::CallbackServerContext* context) {
  auto port = std::make_unique<GrpcCallPort>(context);
  GrpcCallPort* reactor = port.get();  // gRPC's until OnDone, the call's to delete
  StartStream(std::move(port));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SsmService::ProcessFile(
    grpc::CallbackServerContext* context) {
  auto port = std::make_unique<GrpcCallPort>(context);
  GrpcCallPort* reactor = port.get();
  StartFile(std::move(port));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SsmService::StreamMany(
    grpc::CallbackServerContext* context) {
  return StartStreamMany(context, &shared_, &deferred_,
                         [this](std::unique_ptr<CallPort> port) { StartStream(std::move(port)); });
}

grpc::ServerUnaryReactor* SsmService::ListModels(grpc::CallbackServerContext* context,
                                                 const pb::ListModelsRequest* request,
                                                 pb::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = shared_.auth->Authenticate(*context);
  if (!identity.ok()) {
    shared_.metrics->CountError(int(identity.status().code()));
    reactor->Finish(ToGrpcStatus(identity.status()));
    return reactor;
  }
  for (const auto& m : shared_.models->models())
    if (shared_.auth->MayUse(**identity, m->name))
      *response->add_models() = shared_.model_infos.at(m->name);
  response->set_default_model(shared_.models->default_model().name);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SsmService::GetModelInfo(grpc::CallbackServerContext* context,
                                                   const pb::GetModelInfoRequest* request,
                                                   pb::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto identity = shared_.auth->Authenticate(*context);
  auto model = shared_.models->Lookup(request->name());
  if (!identity.ok()) {
    shared_.metrics->CountError(int(identity.status().code()));
    reactor->Finish(ToGrpcStatus(identity.status()));
  } else if (!model.ok()) {
    shared_.metrics->CountError(int(model.status().code()));
    reactor->Finish(ToGrpcStatus(model.status()));
  } else if (!shared_.auth->MayUse(**identity, (*model)->name)) {
    shared_.auth->CountRefusal(AuthRefusal::kModel);
    shared_.metrics->CountError(int(StatusCode::kPermissionDenied));
    reactor->Finish(ToGrpcStatus(PermissionDeniedError(fmt::format(
        "API key \"{}\" may not use model \"{}\"", (*identity)->id(), (*model)->name))));
  } else {
    *response = shared_.model_infos.at((*model)->name);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace ssm
