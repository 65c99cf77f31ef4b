#include "server/service/model_registry.h"

#include <fmt/format.h>

#include "server/service/log.h"

namespace ssm {

StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(const ServerConfig& config,
                                                             Metrics* metrics) {
  auto registry = std::make_unique<ModelRegistry>();
  for (const ModelSpec& spec : config.models) {
    auto served = std::make_unique<ServedModel>();
    served->name = spec.name;
    served->dir = spec.dir;
    auto model = Model::Load(spec.dir);
    if (!model.ok()) return model.status().WithContext(fmt::format("model \"{}\"", spec.name));
    served->model = *model;
    EngineOptions options;
    options.backend = config.backend();
    options.threads = config.threads;
    options.parallel_min_mflop = config.parallel_min_mflop;
    options.max_streams = config.max_streams;
    auto engine = Engine::Create(served->model, options);
    if (!engine.ok()) return engine.status().WithContext(fmt::format("model \"{}\"", spec.name));
    served->engine = std::move(*engine);
    served->metrics = metrics->AddModel(spec.name, options.backend, served->engine->capacity(),
                                        int64_t(served->model->state_bytes_per_stream()));
    SchedulerOptions scheduling;
    scheduling.max_batch_streams = config.max_batch_streams;
    scheduling.batch_wait =
        std::chrono::microseconds(static_cast<int64_t>(config.batch_wait_ms * 1000.0));
    scheduling.file_frames_per_step = config.file_frames_per_step;
    scheduling.realtime_lead = std::chrono::milliseconds(config.realtime_lead_ms());
    scheduling.background_step_time = std::chrono::milliseconds(config.background_step_ms);
    served->scheduler =
        std::make_unique<Scheduler>(served->engine.get(), scheduling, served->metrics);
    registry->models_.push_back(std::move(served));
  }
  return registry;
}

const ServedModel* ModelRegistry::Find(const std::string& name) const {
  if (name.empty()) return models_.front().get();
  for (const auto& m : models_)
    if (m->name == name) return m.get();
  return nullptr;
}

StatusOr<const ServedModel*> ModelRegistry::Lookup(const std::string& name) const {
  if (name.size() > kMaxNameBytes)
    return InvalidArgumentError(
        fmt::format("model name of {} bytes; at most {} are allowed", name.size(), kMaxNameBytes));
  const ServedModel* model = Find(name);
  if (model == nullptr)
    return NotFoundError(
        fmt::format("unknown model \"{}\"; this server has: {}", log::Printable(name), names()));
  return model;
}

std::string ModelRegistry::names() const {
  std::string out;
  for (const auto& m : models_) out += (out.empty() ? "" : ", ") + m->name;
  return out;
}

void ModelRegistry::StopSchedulers() {
  for (auto& m : models_) m->scheduler->Stop();
}

}  // namespace ssm
