// The one switch between backends: the CPU backend always, the CUDA backend (its own library,
// shard/cuda/) when the build has it.
#include "kernels/base/check.h"
#include "shard/backend.h"
#include "shard/cpu_backend.h"
#ifdef KILN_HAVE_CUDA
#include "shard/cuda/cuda_backend.h"
#endif

namespace kiln {

StatusOr<std::unique_ptr<Backend>> make_backend(const BackendOptions& o) {
  KILN_CHECK(o.weights != nullptr);
  switch (o.device) {
    case Device::kCpu:
      return std::unique_ptr<Backend>(new CpuBackend(*o.weights, o.shape));
    case Device::kCuda:
#ifdef KILN_HAVE_CUDA
      return make_cuda_backend(o);
#else
      return device_available(Device::kCuda);
#endif
  }
  return device_available(o.device);
}

}  // namespace kiln
