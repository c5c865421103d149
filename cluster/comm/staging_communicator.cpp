// StagingCommunicator: device buffers → pinned host memory → the host communicator → back.
#ifdef KILN_HAVE_CUDA
#include "cluster/comm/staging_communicator.h"

#include "kernels/base/check.h"
#include "kernels/cuda/runtime.h"

namespace kiln {
namespace {

class StagingCommunicator final : public Communicator {
 public:
  StagingCommunicator(std::unique_ptr<Communicator> host, const cuda::Context& gpu)
      : host_(std::move(host)), gpu_(gpu) {}

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  bool device_memory() const override { return true; }

  void all_reduce_sum(float* data, int64_t n) override {
    float* h = to_host(data, n * 4, 0);
    host_->all_reduce_sum(h, n);
    from_host(data, h, n * 4);
  }
  void all_gather(const float* send, int64_t n, float* recv) override {
    const int64_t out = n * size() * 4;
    float* r = stage(n * 4 + out) + n;
    host_->all_gather(to_host(send, n * 4, 0), n, r);
    from_host(recv, r, out);
  }
  void all_gather_v(const float* send, int64_t n, float* recv,
                    const std::vector<int64_t>& counts) override {
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    float* r = stage((n + total) * 4) + n;
    host_->all_gather_v(to_host(send, n * 4, 0), n, r, counts);
    from_host(recv, r, total * 4);
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    float* h = to_host(data, bytes, 0);
    host_->broadcast(h, bytes, root);
    from_host(data, h, bytes);
  }
  void broadcast_idle(void* data, int64_t bytes, int root) override {
    host_->broadcast_idle(data, bytes, root);  // control plane: host memory
  }
  void send(const void* data, int64_t bytes, int peer) override {
    host_->send(to_host(data, bytes, 0), bytes, peer);
  }
  void recv(void* data, int64_t bytes, int peer) override {
    float* h = stage(bytes);
    gpu_.synchronize();  // an earlier copy back may still read the staging buffer
    host_->recv(h, bytes, peer);
    from_host(data, h, bytes);
  }
  void barrier() override {
    gpu_.synchronize();
    host_->barrier();
  }
  double busy_seconds() const override { return host_->busy_seconds(); }

 private:
  // The pinned buffer, grown to `bytes` (after the stream has finished with the old one).
  float* stage(int64_t bytes) {
    if (bytes > pinned_.bytes()) {
      gpu_.synchronize();
      pinned_ = cuda::PinnedBuffer();
      auto p = cuda::PinnedBuffer::allocate(bytes, "collective staging");
      KILN_CHECK_MSG(p.ok(), p.status().to_string());
      pinned_ = std::move(p).value();
    }
    return pinned_.as<float>();
  }
  // Copies `bytes` of device memory to the staging buffer (at float offset `at`), after the
  // stream's queued work, and waits for it.
  float* to_host(const void* dev, int64_t bytes, int64_t at) {
    float* h = stage(at * 4 + bytes) + at;
    const Status copied = cuda::copy_to_host(gpu_.stream(), h, dev, static_cast<size_t>(bytes));
    KILN_CHECK_MSG(copied.ok(), copied.to_string());
    return h;
  }
  // Queues the copy of `bytes` from the staging buffer back to device memory.
  void from_host(void* dev, const float* h, int64_t bytes) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(dev, h, static_cast<size_t>(bytes), cudaMemcpyHostToDevice,
                                    gpu_.stream()));
  }

  std::unique_ptr<Communicator> host_;
  const cuda::Context& gpu_;
  cuda::PinnedBuffer pinned_;
};

}  // namespace

std::unique_ptr<Communicator> stage_through_host(std::unique_ptr<Communicator> host,
                                                 const cuda::Context& gpu) {
  return std::make_unique<StagingCommunicator>(std::move(host), gpu);
}

}  // namespace kiln
#endif  // KILN_HAVE_CUDA
