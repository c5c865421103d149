// How much host memory a set-up step may still take: every size that comes from outside (a
// config value, a topology key, a file) is planned with checked arithmetic and compared with
// this before anything is allocated, so a value that cannot fit is one error naming it.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/base/status.h"

namespace kiln {

// Bytes this process can still allocate on the host: MemAvailable from /proc/meminfo, lowered
// to the cgroup's remaining allowance (memory.max − memory.current, cgroup v2) when one is set;
// sysconf's available pages where /proc is missing. Read afresh on every call.
uint64_t available_memory_bytes();

// OK when `bytes` fit in available_memory_bytes(); else ResourceExhausted:
// "<what> needs <bytes> but <available> of memory is available".
Status check_host_allocation(uint64_t bytes, const std::string& what);

// "1.50 GiB" (B, KiB, MiB, GiB, TiB, PiB, EiB).
std::string format_byte_count(uint64_t bytes);

}  // namespace kiln
