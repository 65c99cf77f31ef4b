// The ssmserve.v1.Ssm service (callback API): the two streaming rpcs as reactors, and the model
// listing. Holds what the calls share; the models and the call registry are owned by the caller.
// With API keys every rpc needs a key; ListModels lists only the models the caller may use.
#pragma once

#include <cstddef>
#include <memory>

#include "server/service/call_port.h"
#include "server/service/call_reactor.h"
#include "server/service/call_registry.h"
#include "server/service/metrics.h"
#include "server/service/model_registry.h"
#include "server/service/server_config.h"
#include "server/service/stream_many.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm {

// Every field of ModelInfo, from the served model.
pb::ModelInfo MakeModelInfo(const ServedModel& model);

// The largest request the server accepts, bytes: room for a --max-chunk-ms chunk of the most
// demanding model in its largest encoding, and at least 4 MiB (ProcessFile upload pieces).
// Larger messages fail with RESOURCE_EXHAUSTED, checked by the call itself (call_reactor.h).
size_t MaxReceiveMessageBytes(const ServerConfig& config, const ModelRegistry& models);
// The limit gRPC itself enforces (2 x MaxReceiveMessageBytes): a message between the two gets
// the call's own RESOURCE_EXHAUSTED, counted as an error; only a larger one is cut off by gRPC
// before it is buffered (the client sees RESOURCE_EXHAUSTED, the server a cancelled call).
size_t GrpcReceiveLimitBytes(const ServerConfig& config, const ModelRegistry& models);

// Stream, ProcessFile and StreamMany are raw callback methods (bytes in, bytes out: the reactors
// parse and serialize, see call_reactor.h); ListModels and GetModelInfo are typed.
using SsmServiceBase =
    pb::Ssm::WithCallbackMethod_ListModels<pb::Ssm::WithCallbackMethod_GetModelInfo<
        pb::Ssm::WithRawCallbackMethod_Stream<pb::Ssm::WithRawCallbackMethod_ProcessFile<
            pb::Ssm::WithRawCallbackMethod_StreamMany<pb::Ssm::Service>>>>>;

// Thread-safe; all state is in the reactors and CallShared. Must outlive the grpc::Server.
class SsmService final : public SsmServiceBase {
 public:
  SsmService(const ServerConfig* config, const ModelRegistry* models, CallRegistry* calls,
             Metrics* metrics, ParkedStreams* parked, StateStore* store, Authenticator* auth);

  // A Stream or ProcessFile call on `port`: what the two rpcs below do with gRPC's port, and
  // the stream fuzz target with its own (call_port.h). The call owns the port.
  void StartStream(std::unique_ptr<CallPort> port);
  void StartFile(std::unique_ptr<CallPort> port);

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ProcessFile(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamMany(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const pb::ListModelsRequest* request,
                                       pb::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const pb::GetModelInfoRequest* request,
                                         pb::ModelInfo* response) override;

 private:
  CallShared shared_;
  DeferredTasks deferred_;  // after shared_: its tasks (StreamMany calls) use it
};

}  // namespace ssm
