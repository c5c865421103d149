// The one device switch: where a kernel runs. CPU-only builds turn kCuda into a clear error.
#pragma once

#include <string_view>

#include "kernels/base/status.h"

namespace kiln {

enum class Device { kCpu, kCuda };

std::string_view device_name(Device d);
// OK when the device can be used by this build; otherwise names what is missing.
Status device_available(Device d);
// True when kiln was built with the CUDA backend.
bool built_with_cuda();

}  // namespace kiln
