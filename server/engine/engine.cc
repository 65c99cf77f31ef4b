#include "server/engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "kernels/base/worker_pool.h"

namespace ssm {

Status EngineOptions::Validate() const {
  if (backend != "reference" && backend != "cpu" && backend != "cuda")
    return InvalidArgumentError(
        fmt::format("backend: expected \"reference\", \"cpu\" or \"cuda\", found \"{}\"", backend));
  if (threads < 0)
    return InvalidArgumentError(fmt::format("threads: expected >= 0, found {}", threads));
  if (max_streams < 1)
    return InvalidArgumentError(fmt::format("max_streams: expected >= 1, found {}", max_streams));
  if (max_batch_frames < 1)
    return InvalidArgumentError(
        fmt::format("max_batch_frames: expected >= 1, found {}", max_batch_frames));
  if (!(parallel_min_mflop >= 0))
    return InvalidArgumentError(
        fmt::format("parallel_min_mflop: expected >= 0, found {}", parallel_min_mflop));
  return OkStatus();
}

namespace {

std::unique_ptr<Buffer> Upload(Backend& backend, const std::vector<float>& host) {
  auto buf = backend.Allocate(host.size());
  backend.CopyToBackend(buf->data(), host.data(), host.size());
  return buf;
}

Activation ParseActivation(const std::string& name) {
  if (name == "softmax") return Activation::kSoftmax;
  if (name == "sigmoid") return Activation::kSigmoid;
  return Activation::kNone;
}

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<const Model> model,
                                                 const EngineOptions& options) {
  SSM_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Engine> e(new Engine());
  e->model_ = std::move(model);
  e->options_ = options;
  const ModelConfig& c = e->model_->config();
  e->backend_ = CreateBackend(options.backend, options.threads);
  if (!e->backend_) {
    std::string why;
    if (options.backend == "cuda" && !CudaAvailable(&why))
      return FailedPreconditionError("the cuda backend cannot run here: " + why +
                                     "; use --device cpu (or auto)");
    return InvalidArgumentError("unknown backend \"" + options.backend + "\"");
  }
  Backend* backend = e->backend_.get();
  e->frontend_threads_ = options.threads;
  SSM_ASSIGN_OR_RETURN(e->frontend_,
                       CreateFrontend(c, HostLogMel(backend->name(), &e->frontend_threads_)));
  if (c.frontend.is_log_mel()) {  // a real FFT of n_fft points, the power and the filters
    const double n = c.frontend.n_fft;
    e->frontend_flops_per_frame_ = 2.5 * n * std::log2(n) + 2.0 * n;
  }

  const Model& m = *e->model_;
  e->input_proj_ =
      backend->PrepareLinear(m.tensor("input_proj.weight").data.data(),
                             m.tensor("input_proj.bias").data.data(), c.d_model, c.d_in);
  e->head_ = backend->PrepareLinear(m.tensor("head.weight").data.data(),
                                    m.tensor("head.bias").data.data(), c.d_out, c.d_model);
  e->norm_f_w_ = Upload(*backend, m.tensor("backbone.norm_f.weight").data);
  e->activation_ = ParseActivation(c.head_activation);

  std::vector<size_t> state_floats;
  size_t scratch_per_row = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    LayerContext ctx;
    ctx.tensors = &m.tensors();
    ctx.prefix = fmt::format("backbone.layers.{}.", l);
    ctx.d_model = c.d_model;
    ctx.norm_eps = float(c.norm.eps);
    ctx.backend = backend;
    SSM_ASSIGN_OR_RETURN(auto layer, c.layer_params(l).Create(ctx));
    state_floats.push_back(layer->state_floats());
    scratch_per_row = std::max(scratch_per_row, layer->scratch_floats_per_row());
    e->layers_.push_back(std::move(layer));
  }
  e->pool_ = std::make_unique<StatePool>(backend, options.max_streams, state_floats);
  e->slots_.resize(options.max_streams);

  const size_t rows = options.max_batch_frames;
  e->in_ = backend->Allocate(rows * c.d_in);
  e->h_ = backend->Allocate(rows * c.d_model);
  e->hn_ = backend->Allocate(rows * c.d_model);
  e->y_ = backend->Allocate(rows * c.d_out);
  e->scratch_ = backend->Allocate(rows * scratch_per_row);
  return e;
}

Engine::~Engine() = default;

StatusOr<int> Engine::OpenStream() {
  SSM_ASSIGN_OR_RETURN(int slot, pool_->Acquire());
  slots_[slot].frontend = frontend_->NewState();
  slots_[slot].non_finite = 0;
  return slot;
}

void Engine::CloseStream(int stream) {
  slots_[stream].frontend.reset();
  pool_->Release(stream);
}

int64_t Engine::frames_emitted(int stream) const {
  return slots_[stream].frontend ? slots_[stream].frontend->frames_emitted() : 0;
}

StatusOr<StreamSnapshot> Engine::SnapshotStream(int stream) const {
  if (stream < 0 || stream >= pool_->capacity() || !slots_[stream].frontend)
    return FailedPreconditionError(fmt::format("stream {} is not open", stream));
  if (slots_[stream].non_finite)
    return FailedPreconditionError(
        fmt::format("stream {} produced a non-finite output; its state is not kept", stream));
  StreamSnapshot snapshot;
  snapshot.model_fingerprint = model_->fingerprint();
  snapshot.backend = backend_->name();
  snapshot.precision = "f32";
  snapshot.frontend = frontend_->SaveState(*slots_[stream].frontend);
  snapshot.d_out = d_out();
  snapshot.held_first_frame = snapshot.frontend.frames;
  std::vector<float> slot(pool_->slot_floats());
  pool_->ReadSlot(stream, slot.data());
  size_t offset = 0;
  for (const auto& layer : layers_) {
    const size_t n = layer->state_floats();
    snapshot.layers.emplace_back(slot.begin() + offset, slot.begin() + offset + n);
    offset += n;
  }
  return snapshot;
}

StatusOr<int> Engine::RestoreStream(const StreamSnapshot& snapshot) {
  if (!DigestsEqual(snapshot.model_fingerprint, model_->fingerprint()))
    return FailedPreconditionError(fmt::format(
        "the snapshot is of another model: its model fingerprint is {}, this model's is {}",
        Hex(snapshot.model_fingerprint, 16), Hex(model_->fingerprint(), 16)));
  if (snapshot.precision != "f32")
    return FailedPreconditionError(fmt::format(
        "the snapshot's precision is \"{}\"; this engine runs \"f32\"", snapshot.precision));
  if (snapshot.d_out != d_out())
    return Status(StatusCode::kDataLoss,
                  fmt::format("the snapshot's outputs have d_out {}; the model's have {}",
                              snapshot.d_out, d_out()));
  // Frame indices this large would overflow int64 arithmetic downstream (no stream gets there).
  constexpr int64_t kMaxFrames = int64_t(1) << 53;
  if (snapshot.frontend.frames > kMaxFrames)
    return Status(StatusCode::kDataLoss,
                  fmt::format("the snapshot claims {} frames emitted, more than {}",
                              snapshot.frontend.frames, kMaxFrames));
  if (snapshot.layers.size() != layers_.size())
    return Status(StatusCode::kDataLoss,
                  fmt::format("the snapshot has {} layer states; the model has {} layers",
                              snapshot.layers.size(), layers_.size()));
  std::vector<float> slot;
  slot.reserve(pool_->slot_floats());
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (snapshot.layers[l].size() != layers_[l]->state_floats())
      return Status(StatusCode::kDataLoss,
                    fmt::format("the snapshot's layer {} state has {} floats; the model's has {}",
                                l, snapshot.layers[l].size(), layers_[l]->state_floats()));
    slot.insert(slot.end(), snapshot.layers[l].begin(), snapshot.layers[l].end());
  }
  const size_t bad =
      size_t(std::find_if(slot.begin(), slot.end(), [](float v) { return !std::isfinite(v); }) -
             slot.begin());
  if (bad != slot.size())
    return Status(StatusCode::kDataLoss,
                  fmt::format("the snapshot's layer state value {} is not finite", bad));
  auto frontend_state = frontend_->RestoreState(snapshot.frontend);
  if (!frontend_state.ok())
    return Status(StatusCode::kDataLoss,
                  "the snapshot does not fit this model: " + frontend_state.status().message());
  SSM_ASSIGN_OR_RETURN(int stream, pool_->Acquire());
  pool_->WriteSlot(stream, slot.data());
  slots_[stream].frontend = std::move(*frontend_state);
  slots_[stream].non_finite = 0;
  return stream;
}

void Engine::Step(const std::vector<ChunkInput>& chunks, StepResult* result) {
  StepImpl(chunks, /*offline=*/false, result);
}

double Engine::StepMflop(const std::vector<ChunkInput>& chunks) const {
  const ModelConfig& c = model_->config();
  const double values_per_frame =
      frontend_->takes_samples() ? double(c.frontend.hop_length) : double(c.d_in);
  double values = 0;
  for (const ChunkInput& in : chunks) values += double(in.count);
  return values / values_per_frame * (model_->flops_per_frame() + frontend_flops_per_frame_) / 1e6;
}

void Engine::SetStepThreads(const std::vector<ChunkInput>& chunks) {
  const int threads = StepMflop(chunks) < options_.parallel_min_mflop ? 1 : options_.threads;
  backend_->SetThreads(WorkerPool::ThreadsOrCores(threads));
  frontend_threads_ = threads;
}

void Engine::StepImpl(const std::vector<ChunkInput>& chunks, bool offline, StepResult* result) {
  const int d_in = model_->config().d_in, d_out = this->d_out();
  SetStepThreads(chunks);
  result->chunks.assign(chunks.size(), ChunkOutput());
  features_.clear();

  // Frontend per chunk; each stream's new frames become one contiguous run of rows.
  struct Run {
    int slot, first_row, rows;
  };
  std::vector<Run> runs;
  std::vector<bool> seen(pool_->capacity(), false);
  int total_rows = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkInput& in = chunks[i];
    ChunkOutput& out = result->chunks[i];
    if (in.stream < 0 || in.stream >= pool_->capacity() || !slots_[in.stream].frontend) {
      out.status = FailedPreconditionError(fmt::format("stream {} is not open", in.stream));
      continue;
    }
    if (seen[in.stream]) {
      out.status = InvalidArgumentError(fmt::format(
          "stream {} has two chunks in one step; send the next chunk in a later step", in.stream));
      continue;
    }
    seen[in.stream] = true;
    if (slots_[in.stream].non_finite) {
      out.status = FailedPreconditionError(fmt::format(
          "stream {} produced a non-finite output earlier and its state is no longer usable; "
          "open a new stream",
          in.stream));
      continue;
    }
    out.first_frame = slots_[in.stream].frontend->frames_emitted();
    auto frames =
        frontend_->Process(slots_[in.stream].frontend.get(), in.data, in.count, &features_);
    if (!frames.ok()) {
      out.status = frames.status();
      continue;
    }
    out.frames = *frames;
    out.offset = size_t(total_rows) * d_out;
    if (*frames > 0) runs.push_back({in.stream, total_rows, *frames});
    total_rows += *frames;
  }
  result->outputs.resize(size_t(total_rows) * d_out);

  // Passes of at most max_batch_frames consecutive rows; a long run continues in the next pass
  // with its state carried, so the split never changes results.
  std::vector<int> offsets, slots;
  size_t next_run = 0;
  int run_done = 0;  // rows of runs[next_run] already processed
  for (int pass_row = 0; pass_row < total_rows;) {
    const int pass_rows = std::min(options_.max_batch_frames, total_rows - pass_row);
    offsets.assign(1, 0);
    slots.clear();
    while (offsets.back() < pass_rows) {
      const Run& run = runs[next_run];
      const int take = std::min(run.rows - run_done, pass_rows - offsets.back());
      slots.push_back(run.slot);
      offsets.push_back(offsets.back() + take);
      run_done += take;
      if (run_done == run.rows) {
        ++next_run;
        run_done = 0;
      }
    }
    const SeqBatch batch{int(slots.size()), offsets.data(), slots.data(), offline};
    RunPass(batch, features_.data() + size_t(pass_row) * d_in,
            result->outputs.data() + size_t(pass_row) * d_out);
    pass_row += pass_rows;
  }

  // Finite weights can still overflow float32 (huge weights, or an extreme input); a NaN or inf
  // is never handed on as an output. frames x d_out values: nothing next to the pass itself.
  for (size_t i = 0; i < chunks.size(); ++i) {
    ChunkOutput& out = result->chunks[i];
    if (!out.status.ok()) continue;
    const float* values = result->outputs.data() + out.offset;
    const size_t n = size_t(out.frames) * d_out;
    const size_t bad = size_t(
        std::find_if(values, values + n, [](float v) { return !std::isfinite(v); }) - values);
    if (bad == n) continue;
    slots_[chunks[i].stream].non_finite = 1;
    out.status = InternalError(fmt::format(
        "the model produced a non-finite output ({} at frame {}, output {}): its weights or this "
        "input overflow float32; the stream's state is no longer usable; open a new stream",
        values[bad], out.first_frame + int64_t(bad / d_out), bad % d_out));
  }
}

void Engine::RunPass(const SeqBatch& batch, const float* features, float* outputs) {
  const ModelConfig& c = model_->config();
  const int rows = batch.rows();
  const float eps = float(c.norm.eps);
  Backend& b = *backend_;
  b.CopyToBackend(in_->data(), features, size_t(rows) * c.d_in);
  b.Linear(*input_proj_, in_->data(), c.d_in, rows, h_->data(), c.d_model);
  for (size_t l = 0; l < layers_.size(); ++l)
    layers_[l]->Forward(batch, h_->data(), pool_->layer_view(int(l)), scratch_->data());
  b.RmsNorm(h_->data(), norm_f_w_->data(), rows, c.d_model, eps, hn_->data());
  b.Linear(*head_, hn_->data(), c.d_model, rows, y_->data(), c.d_out);
  b.ApplyActivation(activation_, y_->data(), rows, c.d_out);
  b.CopyToHost(outputs, y_->data(), size_t(rows) * c.d_out);
  b.Synchronize();
}

StatusOr<std::vector<std::vector<float>>> Engine::RunOffline(
    const std::vector<InputSource*>& inputs, const OfflineOptions& options) {
  if (options.segment_frames < 1) return InvalidArgumentError("segment_frames: expected >= 1");
  const ModelConfig& c = model_->config();
  const size_t values_per_frame =
      frontend_->takes_samples() ? size_t(c.frontend.hop_length) : size_t(c.d_in);
  const size_t segment_values = values_per_frame * options.segment_frames;
  std::vector<std::vector<float>> outputs(inputs.size());
  std::vector<int64_t> frames_done(inputs.size(), 0);

  // Waves of as many inputs as there are free slots.
  for (size_t wave = 0; wave < inputs.size();) {
    std::vector<size_t> active;  // input indices of this wave
    std::vector<int> streams;
    while (wave + active.size() < inputs.size()) {
      auto stream = OpenStream();
      if (!stream.ok()) break;
      active.push_back(wave + active.size());
      streams.push_back(*stream);
    }
    if (active.empty())
      return ResourceExhaustedError("offline processing needs a free stream slot; all are in use");
    auto close_all = [&] {
      for (int s : streams)
        if (s >= 0) CloseStream(s);
    };
    std::vector<std::vector<float>> buffers(active.size(), std::vector<float>(segment_values));
    StepResult step;
    for (size_t live = active.size(); live > 0;) {
      std::vector<ChunkInput> chunks;
      std::vector<size_t> chunk_owner;
      for (size_t a = 0; a < active.size(); ++a) {
        if (streams[a] < 0) continue;
        const size_t n = inputs[active[a]]->Read(buffers[a].data(), segment_values);
        if (n == 0) {  // input finished
          CloseStream(streams[a]);
          streams[a] = -1;
          --live;
          continue;
        }
        chunks.push_back({streams[a], buffers[a].data(), n});
        chunk_owner.push_back(a);
      }
      if (chunks.empty()) break;
      StepImpl(chunks, /*offline=*/options.parallel_form, &step);
      for (size_t i = 0; i < chunks.size(); ++i) {
        const ChunkOutput& co = step.chunks[i];
        const size_t input = active[chunk_owner[i]];
        if (!co.status.ok()) {
          close_all();
          return co.status.WithContext(fmt::format("input {}", input));
        }
        auto first = step.outputs.begin() + co.offset;
        outputs[input].insert(outputs[input].end(), first, first + size_t(co.frames) * d_out());
        frames_done[input] += co.frames;
      }
      if (options.progress) options.progress(frames_done);
    }
    wave += active.size();
  }
  return outputs;
}

}  // namespace ssm
