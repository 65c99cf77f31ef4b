// The models a server holds: each loaded once, with its engine and its batch scheduler.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/engine/engine.h"
#include "server/model/model.h"
#include "server/service/metrics.h"
#include "server/service/scheduler.h"
#include "server/service/server_config.h"

namespace ssm {

struct ServedModel {
  std::string name;
  std::string dir;
  std::shared_ptr<const Model> model;
  std::unique_ptr<Engine> engine;
  ModelMetrics* metrics = nullptr;       // owned by the server's Metrics; nullptr: metrics off
  std::unique_ptr<Scheduler> scheduler;  // after engine: destroyed (stopped) first
};

// Immutable after Load; thread-safe to read. The schedulers inside are themselves thread-safe.
class ModelRegistry {
 public:
  // Loads every --model, creating an engine (--device, --threads, --max-streams) and a scheduler
  // (--max-batch-streams, --batch-wait-ms) for each, and registers its series in `metrics`
  // (which must outlive the registry). Errors name the model.
  static StatusOr<std::unique_ptr<ModelRegistry>> Load(const ServerConfig& config,
                                                       Metrics* metrics);

  // Longest model name a request may carry, bytes.
  static constexpr size_t kMaxNameBytes = 128;

  // The model called `name`; "" selects the default (first) model. nullptr when unknown.
  const ServedModel* Find(const std::string& name) const;
  // Find for a name a client sent: INVALID_ARGUMENT for a name longer than kMaxNameBytes,
  // NOT_FOUND naming the served models for an unknown one (the name quoted printably).
  StatusOr<const ServedModel*> Lookup(const std::string& name) const;
  const ServedModel& default_model() const { return *models_.front(); }
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }
  std::string names() const;  // "a, b" for messages

  // Stops every scheduler (pending closes run first). Call after the gRPC server has shut down.
  void StopSchedulers();

 private:
  std::vector<std::unique_ptr<ServedModel>> models_;
};

}  // namespace ssm
