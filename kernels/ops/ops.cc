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
  }
  return "unknown";
}

// Reached only by a caller that skipped Supports(): a programming error, not bad input.
void Backend::SsdScan(const SeqBatch&, const SsdScanArgs&) {
  SSM_CHECK_MSG(false, "the " + name() + " backend has no ssd_scan kernel (check Supports)");
}
void Backend::SsdChunkedScan(const SeqBatch&, const SsdScanArgs&, int) {
  SSM_CHECK_MSG(false,
                "the " + name() + " backend has no ssd_chunked_scan kernel (check Supports)");
}
void Backend::GatedRmsNorm(const GatedRmsNormArgs&, int) {
  SSM_CHECK_MSG(false, "the " + name() + " backend has no gated_rms_norm kernel (check Supports)");
}

Status RequireOps(const Backend& backend, std::initializer_list<Op> ops, const std::string& what) {
  for (Op op : ops) {
    if (!backend.Supports(op))
      return UnimplementedError("the " + backend.name() + " backend has no " + OpName(op) +
                                " kernel, which " + what +
                                " needs; run it on a backend that has (--device cpu)");
  }
  return OkStatus();
}

}  // namespace ssm
