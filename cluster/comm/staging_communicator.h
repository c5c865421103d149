// Host staging for GPU ranks whose group runs over a host transport (MPI, Local): a Communicator
// whose data-plane calls take device pointers on the rank's stream (device_memory() is true),
// copying each buffer through pinned host memory around the wrapped communicator's call. So the
// parallel layers hand every communicator their backend's memory and never ask where it lives.
// Built with CUDA only; the control plane (broadcast_idle) passes host memory straight through.
#pragma once

#include <memory>

#include "shard/communicator.h"

namespace kiln {

namespace cuda {
class Context;
}

// Wraps `host` (a host-memory communicator) for device buffers on `gpu`'s stream; `gpu` must
// outlive the result. Each call waits for the stream's queued work before reading a buffer and
// queues the copy back, so stream order holds as for NCCL.
std::unique_ptr<Communicator> stage_through_host(std::unique_ptr<Communicator> host,
                                                 const cuda::Context& gpu);

}  // namespace kiln
