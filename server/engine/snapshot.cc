#include "server/engine/snapshot.h"

#include <fmt/format.h>

#include <cstring>

namespace ssm {
namespace {

constexpr char kMagic[8] = {'S', 'S', 'M', 'S', 'N', 'A', 'P', '\0'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;  // magic, version, flags, total bytes
constexpr size_t kChecksumBytes = 32;
constexpr uint32_t kMaxStringBytes = 64;
constexpr uint32_t kMaxLayers = 1 << 16;
constexpr uint32_t kFlagOwner = 1;  // an owner field follows the header

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmserve assumes a little-endian host");

class Writer {
 public:
  template <typename T>
  void Put(T value) {
    Raw(&value, sizeof(T));
  }
  void Raw(const void* data, size_t n) { out.append(static_cast<const char*>(data), n); }
  void String(const std::string& s) {
    Put(uint32_t(s.size()));
    Raw(s.data(), s.size());
  }
  void Floats(const std::vector<float>& values) { Raw(values.data(), values.size() * 4); }
  std::string out;
};

// Reads fields in order; the first read past the end fails naming the field.
class Reader {
 public:
  Reader(const std::string& bytes, size_t end) : bytes_(bytes), end_(end) {}

  template <typename T>
  Status Get(T* value, const char* field) {
    return Raw(value, sizeof(T), field);
  }
  Status Raw(void* out, size_t n, const char* field) {
    if (n > end_ - pos_)
      return Status(StatusCode::kDataLoss,
                    fmt::format("snapshot field {} at byte {} needs {} bytes, {} are left", field,
                                pos_, n, end_ - pos_));
    if (n > 0) std::memcpy(out, bytes_.data() + pos_, n);  // an empty vector's data() is null
    pos_ += n;
    return OkStatus();
  }
  Status String(std::string* s, const char* field) {
    uint32_t n = 0;
    SSM_RETURN_IF_ERROR(Get(&n, field));
    if (n > kMaxStringBytes)
      return Status(StatusCode::kDataLoss,
                    fmt::format("snapshot field {} is {} bytes long; at most {} are expected",
                                field, n, kMaxStringBytes));
    s->resize(n);
    return Raw(s->data(), n, field);
  }
  // `count` floats; the count is checked against the bytes left before anything is allocated.
  Status Floats(uint64_t count, std::vector<float>* values, const char* field) {
    if (count > (end_ - pos_) / 4)
      return Status(StatusCode::kDataLoss,
                    fmt::format("snapshot field {} at byte {} claims {} floats, only {} bytes are "
                                "left",
                                field, pos_, count, end_ - pos_));
    values->resize(count);
    return Raw(values->data(), count * 4, field);
  }
  size_t left() const { return end_ - pos_; }

 private:
  const std::string& bytes_;
  const size_t end_;
  size_t pos_ = kHeaderBytes;
};

}  // namespace

std::string EncodeSnapshot(const StreamSnapshot& s) {
  Writer w;
  w.Raw(kMagic, sizeof(kMagic));
  w.Put(kSnapshotVersion);
  w.Put(s.owner.empty() ? uint32_t(0) : kFlagOwner);  // flags
  w.Put(uint64_t(0));                                 // total bytes, filled in below
  if (!s.owner.empty()) w.String(s.owner);
  w.Raw(s.model_fingerprint.data(), s.model_fingerprint.size());
  w.String(s.backend);
  w.String(s.precision);
  w.Put(s.next_sequence);
  w.Put(s.frontend.frames);
  w.Put(s.frontend.skip);
  w.Put(uint32_t(s.frontend.pending.size()));
  w.Floats(s.frontend.pending);
  w.Put(uint32_t(s.layers.size()));
  for (const std::vector<float>& layer : s.layers) {
    w.Put(uint64_t(layer.size()));
    w.Floats(layer);
  }
  w.Put(s.held_first_frame);
  w.Put(s.d_out);
  w.Put(uint64_t(s.held_outputs.size()));
  w.Floats(s.held_outputs);
  const uint64_t total = w.out.size() + kChecksumBytes;
  std::memcpy(w.out.data() + 16, &total, 8);
  const Digest checksum = Sha256Of(w.out);
  w.Raw(checksum.data(), checksum.size());
  return std::move(w.out);
}

StatusOr<StreamSnapshot> DecodeSnapshot(const std::string& bytes) {
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return Status(StatusCode::kDataLoss,
                  fmt::format("{} bytes that are not an ssmserve stream snapshot (no \"SSMSNAP\" "
                              "magic)",
                              bytes.size()));
  if (bytes.size() < kHeaderBytes + kChecksumBytes)
    return Status(
        StatusCode::kDataLoss,
        fmt::format("snapshot truncated: {} bytes, shorter than its header", bytes.size()));
  uint32_t version = 0, flags = 0;
  uint64_t total = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&flags, bytes.data() + 12, 4);
  std::memcpy(&total, bytes.data() + 16, 8);
  if (version != kSnapshotVersion)
    return FailedPreconditionError(
        fmt::format("snapshot format version {} is unknown; this server reads version {}", version,
                    kSnapshotVersion));
  if ((flags & ~kFlagOwner) != 0)
    return Status(StatusCode::kDataLoss,
                  fmt::format("snapshot flags {:#x}: version 1 defines only {:#x} (owner)", flags,
                              kFlagOwner));
  if (total != bytes.size())
    return Status(StatusCode::kDataLoss,
                  fmt::format("snapshot {}: {} bytes, its header says {}",
                              bytes.size() < total ? "truncated" : "with trailing bytes",
                              bytes.size(), total));
  const size_t body = bytes.size() - kChecksumBytes;
  Digest stored;
  std::memcpy(stored.data(), bytes.data() + body, kChecksumBytes);
  if (!DigestsEqual(stored, Sha256Of(bytes.data(), body)))
    return Status(
        StatusCode::kDataLoss,
        fmt::format("snapshot checksum mismatch: its {} bytes are corrupt", bytes.size()));

  StreamSnapshot s;
  Reader r(bytes, body);
  if ((flags & kFlagOwner) != 0) {
    SSM_RETURN_IF_ERROR(r.String(&s.owner, "owner"));
    if (s.owner.empty())
      return Status(StatusCode::kDataLoss, "snapshot owner flag set, but the owner is empty");
  }
  SSM_RETURN_IF_ERROR(
      r.Raw(s.model_fingerprint.data(), s.model_fingerprint.size(), "model_fingerprint"));
  SSM_RETURN_IF_ERROR(r.String(&s.backend, "backend"));
  SSM_RETURN_IF_ERROR(r.String(&s.precision, "precision"));
  SSM_RETURN_IF_ERROR(r.Get(&s.next_sequence, "next_sequence"));
  SSM_RETURN_IF_ERROR(r.Get(&s.frontend.frames, "frames"));
  SSM_RETURN_IF_ERROR(r.Get(&s.frontend.skip, "frontend_skip"));
  uint32_t pending = 0;
  SSM_RETURN_IF_ERROR(r.Get(&pending, "frontend_pending_count"));
  SSM_RETURN_IF_ERROR(r.Floats(pending, &s.frontend.pending, "frontend_pending"));
  uint32_t layers = 0;
  SSM_RETURN_IF_ERROR(r.Get(&layers, "layer_count"));
  if (layers > kMaxLayers)
    return Status(
        StatusCode::kDataLoss,
        fmt::format("snapshot claims {} layers; at most {} are expected", layers, kMaxLayers));
  s.layers.resize(layers);
  for (uint32_t l = 0; l < layers; ++l) {
    uint64_t floats = 0;
    SSM_RETURN_IF_ERROR(r.Get(&floats, "layer_floats"));
    SSM_RETURN_IF_ERROR(r.Floats(floats, &s.layers[l], "layer_state"));
  }
  SSM_RETURN_IF_ERROR(r.Get(&s.held_first_frame, "held_first_frame"));
  SSM_RETURN_IF_ERROR(r.Get(&s.d_out, "d_out"));
  uint64_t held = 0;
  SSM_RETURN_IF_ERROR(r.Get(&held, "held_count"));
  SSM_RETURN_IF_ERROR(r.Floats(held, &s.held_outputs, "held_outputs"));
  if (r.left() != 0)
    return Status(StatusCode::kDataLoss,
                  fmt::format("snapshot has {} unread bytes before its checksum", r.left()));
  if (s.frontend.frames < 0 || s.d_out <= 0 || s.held_first_frame < 0 ||
      s.held_first_frame > s.frontend.frames || s.held_outputs.size() % size_t(s.d_out) != 0 ||
      int64_t(s.held_outputs.size() / size_t(s.d_out)) != s.frontend.frames - s.held_first_frame)
    return Status(
        StatusCode::kDataLoss,
        fmt::format("snapshot is inconsistent: {} frames emitted, {} held outputs from "
                    "frame {} with d_out {}",
                    s.frontend.frames, s.held_outputs.size(), s.held_first_frame, s.d_out));
  return s;
}

}  // namespace ssm
