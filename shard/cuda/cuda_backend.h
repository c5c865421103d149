// CudaBackend: the forward's ops on one rank's GPU with kernels/cuda, every op queued on the
// context's stream. The rank's weights are uploaded once (device_weights.h); the workspace is
// carved from one device allocation by reserve() (workspace_floats for every buffer); begin()
// copies a batch's rows (ids, spans, block tables, output rows) in one transfer. Rows keep batch
// order. Nothing synchronises but the host transfers (to_host, host_view).
#pragma once

#include <memory>

#include "shard/backend.h"

namespace kiln {

// Uploads o.weights to o.gpu (or a context of its own on device 0) and returns the backend.
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const BackendOptions& o);

}  // namespace kiln
