// The CUDA backend's host-side entry points (built only when KILN_WITH_CUDA is on).
#pragma once

namespace kiln::cuda {

// Number of visible CUDA devices, or -1 when the runtime reports an error.
int device_count();

}  // namespace kiln::cuda
