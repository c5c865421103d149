#include "kernels/base/device.h"

namespace kiln {

std::string_view device_name(Device d) {
  switch (d) {
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
  }
  return "?";
}

bool built_with_cuda() {
#ifdef KILN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

Status device_available(Device d) {
  switch (d) {
    case Device::kCpu: return {};
    case Device::kCuda:
      if (!built_with_cuda()) {
        return unimplemented("backend 'cuda' requested but kiln was built without CUDA "
                             "(reconfigure with -DKILN_WITH_CUDA=ON on a machine with nvcc)");
      }
      return {};
  }
  return internal_error("unknown device");
}

}  // namespace kiln
