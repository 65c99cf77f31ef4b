#include "kernels/backend.h"

namespace ssm {
namespace reference {
std::unique_ptr<Backend> CreateReferenceBackend();
}
namespace cpu {
std::unique_ptr<Backend> CreateCpuBackend(int threads);
}

std::unique_ptr<Backend> CreateBackend(const std::string& name, int threads) {
  if (name == "reference") return reference::CreateReferenceBackend();
  if (name == "cpu") return cpu::CreateCpuBackend(threads);
  return nullptr;
}

}  // namespace ssm
