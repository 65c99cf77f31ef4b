// The parts of the op interface that are not a backend's: op names, the default bodies of the
// ops a backend may lack, and RequireOps. Kept apart from backend.cc, which creates backends, so
// that code using the interface alone (the model-format tests) links without the kernels.
#include "kernels/backend.h"

namespace ssm {

const char* OpName(Op op) {
  switch (op) {
    case Op::kSsdScan:
      return "ssd_scan";
    case Op::kSsdChunkedScan:
      return "ssd_chunked_scan";
    case Op::kGatedRmsNorm:
      return "gated_rms_norm";
    case Op::kGatedLinearScan:
      return "gated_linear_scan";
    case Op::kGatedLinearChunkedScan:
      return "gated_linear_chunked_scan";
    case Op::kRotary:
      return "rotary";
    case Op::kSwiGlu:
      return "swiglu";
  }
  return "unknown";
}

// Reached only by a caller that skipped Supports(): a programming error, not bad input.
void Backend::Missing(Op op) const {
  SSM_CHECK_MSG(false,
                "the " + name() + " backend has no " + OpName(op) + " kernel (check Supports)");
}
void Backend::SsdScan(const SeqBatch&, const SsdScanArgs&) { Missing(Op::kSsdScan); }
void Backend::SsdChunkedScan(const SeqBatch&, const SsdScanArgs&, int) {
  Missing(Op::kSsdChunkedScan);
}
void Backend::GatedRmsNorm(const GatedRmsNormArgs&, int) { Missing(Op::kGatedRmsNorm); }
void Backend::GatedLinearScan(const SeqBatch&, const GatedLinearScanArgs&) {
  Missing(Op::kGatedLinearScan);
}
void Backend::GatedLinearChunkedScan(const SeqBatch&, const GatedLinearScanArgs&, int) {
  Missing(Op::kGatedLinearChunkedScan);
}
void Backend::Rotary(const SeqBatch&, const RotaryArgs&) { Missing(Op::kRotary); }
void Backend::SwiGlu(const SwiGluArgs&, int) { Missing(Op::kSwiGlu); }

Status RequireOps(const Backend& backend, std::initializer_list<Op> ops, const std::string& what) {
  for (Op op : ops) {
    if (!backend.Supports(op))
      return UnimplementedError("the " + backend.name() + " backend has no " + OpName(op) +
                                " kernel, which " + what +
                                " needs; the cpu backend has every op (--device cpu)");
  }
  return OkStatus();
}

}  // namespace ssm
