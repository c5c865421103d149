// `kiln serve`: one call per rank. Rank 0 starts the HTTP gateway first (answering 503 while
// loading), every rank loads its share, then rank 0 runs the engine and the others follow its
// step plans. SIGTERM or SIGINT on rank 0 drains: no new requests, /health 503, running requests
// finish within scheduler.drain_timeout_s (the rest get an error event), every rank exits.
#pragma once

#include "cluster/topology/topology.h"
#include "kernels/base/status.h"

namespace kiln::serve {

struct ServeRuntime {
  int tensor = 0;   // 0 = the job's ranks / pipeline
  int threads = 0;  // compute threads of this rank (0 = all cores)
  bool exact_activations = false;  // see cpu::ThreadPool::set_exact_activations
};

// Returns when the server has drained (OK) or could not start (the error names the reason).
Status serve(const Topology& topology, const ServeRuntime& runtime);

}  // namespace kiln::serve
