#include "kernels/backend.h"

namespace ssm {
namespace reference {
std::unique_ptr<Backend> CreateReferenceBackend();
}
namespace cpu {
std::unique_ptr<Backend> CreateCpuBackend(int threads);
}
#ifdef SSM_HAVE_CUDA
namespace cuda {
bool DeviceAvailable(std::string* why);
std::unique_ptr<Backend> CreateCudaBackend();
}  // namespace cuda
#endif

std::unique_ptr<Backend> CreateBackend(const std::string& name, int threads) {
  if (name == "reference") return reference::CreateReferenceBackend();
  if (name == "cpu") return cpu::CreateCpuBackend(threads);
#ifdef SSM_HAVE_CUDA
  if (name == "cuda") return cuda::CreateCudaBackend();
#endif
  return nullptr;
}

bool CudaAvailable(std::string* why) {
#ifdef SSM_HAVE_CUDA
  return cuda::DeviceAvailable(why);
#else
  if (why) *why = "this build has no CUDA backend (nvcc was not found at configure time)";
  return false;
#endif
}

std::string ResolveDevice(const std::string& device) {
  if (device != "auto") return device;
  return CudaAvailable() ? "cuda" : "cpu";
}

}  // namespace ssm
