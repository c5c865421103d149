// LocalCommunicator: collectives between threads. Each collective publishes this rank's pointer,
// meets the others at the group barrier, reads the peers' buffers directly, and meets them again
// before any buffer may change. Point to point goes through one FIFO per (sender, receiver) pair.
#include "cluster/comm/local_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <mutex>

#include <fmt/format.h>

#include "kernels/base/check.h"

namespace kiln {

struct LocalGroup {
  explicit LocalGroup(int n) : size(n), slots(n), mailboxes(static_cast<size_t>(n) * n) {}

  // Reusable barrier: returns once all `size` ranks have arrived in this generation.
  void arrive_and_wait() {
    std::unique_lock lock(barrier_mutex);
    const uint64_t generation = barrier_generation;
    if (++barrier_waiting == size) {
      barrier_waiting = 0;
      ++barrier_generation;
      barrier_cv.notify_all();
      return;
    }
    barrier_cv.wait(lock, [&] { return barrier_generation != generation; });
  }

  // What a rank offers to the current collective: written by that rank before the first barrier,
  // read by the others between the first and the last barrier of the collective.
  struct Slot {
    const void* data = nullptr;
    int64_t n = 0;  // floats or bytes, as the collective says
  };
  struct Mailbox {
    std::mutex mutex;  // guards messages
    std::condition_variable cv;
    std::deque<std::vector<std::byte>> messages;
  };

  const int size;
  std::vector<Slot> slots;  // [size]
  // all_reduce_sum's result [n]: grown by rank 0 before the first barrier (every rank has left the
  // previous collective by then), written chunk-wise by each rank, then copied out by all.
  std::vector<float> result;
  std::vector<Mailbox> mailboxes;  // [sender * size + receiver]

  std::mutex barrier_mutex;  // guards barrier_waiting, barrier_generation
  std::condition_variable barrier_cv;
  int barrier_waiting = 0;
  uint64_t barrier_generation = 0;
};

namespace {

// Elements [begin, end) of chunk `index` when n elements are cut into `parts` near-equal chunks.
// MpiCommunicator cuts the same way; the sum order per element is rank order in both.
std::pair<int64_t, int64_t> chunk_range(int64_t n, int parts, int index) {
  return {n * index / parts, n * (index + 1) / parts};
}

}  // namespace

LocalCommunicator::LocalCommunicator(std::shared_ptr<LocalGroup> group, int rank)
    : group_(std::move(group)), rank_(rank) {
  KILN_CHECK(group_ != nullptr);
  KILN_CHECK(rank_ >= 0 && rank_ < group_->size);
}

LocalCommunicator::~LocalCommunicator() = default;

int LocalCommunicator::size() const { return group_->size; }

void LocalCommunicator::all_reduce_sum(float* data, int64_t n) {
  ScopedBusyTimer timer(busy_seconds_);
  LocalGroup& g = *group_;
  if (g.size == 1) return;
  if (rank_ == 0 && static_cast<int64_t>(g.result.size()) < n) g.result.resize(n);
  g.slots[rank_] = {data, n};
  g.arrive_and_wait();
  for (const auto& slot : g.slots) {
    KILN_CHECK_MSG(slot.n == n, fmt::format("all_reduce_sum sizes differ: {} vs {}", slot.n, n));
  }
  const auto [begin, end] = chunk_range(n, g.size, rank_);
  for (int64_t i = begin; i < end; ++i) {
    float acc = static_cast<const float*>(g.slots[0].data)[i];
    for (int r = 1; r < g.size; ++r) acc += static_cast<const float*>(g.slots[r].data)[i];
    g.result[i] = acc;
  }
  g.arrive_and_wait();
  std::memcpy(data, g.result.data(), static_cast<size_t>(n) * sizeof(float));
  g.arrive_and_wait();
}

void LocalCommunicator::all_gather(const float* send, int64_t n, float* recv) {
  ScopedBusyTimer timer(busy_seconds_);
  gather(send, n, recv, nullptr);
}

void LocalCommunicator::all_gather_v(const float* send, int64_t n, float* recv,
                                     const std::vector<int64_t>& counts) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(static_cast<int>(counts.size()) == group_->size);
  KILN_CHECK(counts[rank_] == n);
  gather(send, n, recv, counts.data());
}

void LocalCommunicator::gather(const float* send, int64_t n, float* recv, const int64_t* counts) {
  LocalGroup& g = *group_;
  g.slots[rank_] = {send, n};
  g.arrive_and_wait();
  int64_t offset = 0;
  for (int r = 0; r < g.size; ++r) {
    const int64_t count = counts != nullptr ? counts[r] : n;
    KILN_CHECK_MSG(
        g.slots[r].n == count,
        fmt::format("all_gather: rank {} sends {} floats, {} expected", r, g.slots[r].n, count));
    std::memcpy(recv + offset, g.slots[r].data, static_cast<size_t>(count) * sizeof(float));
    offset += count;
  }
  g.arrive_and_wait();
}

void LocalCommunicator::broadcast(void* data, int64_t bytes, int root) {
  ScopedBusyTimer timer(busy_seconds_);
  LocalGroup& g = *group_;
  KILN_CHECK(root >= 0 && root < g.size);
  g.slots[rank_] = {data, bytes};
  g.arrive_and_wait();
  KILN_CHECK_MSG(g.slots[root].n == bytes,
                 fmt::format("broadcast of {} bytes, root sends {}", bytes, g.slots[root].n));
  if (rank_ != root) std::memcpy(data, g.slots[root].data, static_cast<size_t>(bytes));
  g.arrive_and_wait();
}

void LocalCommunicator::send(const void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  LocalGroup& g = *group_;
  KILN_CHECK(peer >= 0 && peer < g.size && peer != rank_);
  KILN_CHECK(bytes >= 0);
  const auto* first = static_cast<const std::byte*>(data);
  LocalGroup::Mailbox& box = g.mailboxes[static_cast<size_t>(rank_) * g.size + peer];
  {
    std::lock_guard lock(box.mutex);
    box.messages.emplace_back(first, first + bytes);
  }
  box.cv.notify_one();
}

void LocalCommunicator::recv(void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  LocalGroup& g = *group_;
  KILN_CHECK(peer >= 0 && peer < g.size && peer != rank_);
  LocalGroup::Mailbox& box = g.mailboxes[static_cast<size_t>(peer) * g.size + rank_];
  std::vector<std::byte> message;
  {
    std::unique_lock lock(box.mutex);
    box.cv.wait(lock, [&] { return !box.messages.empty(); });
    message = std::move(box.messages.front());
    box.messages.pop_front();
  }
  KILN_CHECK_MSG(static_cast<int64_t>(message.size()) == bytes,
                 fmt::format("recv of {} bytes from rank {} matched a send of {}", bytes, peer,
                             message.size()));
  std::memcpy(data, message.data(), message.size());
}

void LocalCommunicator::barrier() {
  ScopedBusyTimer timer(busy_seconds_);
  group_->arrive_and_wait();
}

std::vector<std::unique_ptr<Communicator>> make_local_group(int n) {
  KILN_CHECK(n >= 1);
  auto group = std::make_shared<LocalGroup>(n);
  std::vector<std::unique_ptr<Communicator>> endpoints;
  endpoints.reserve(n);
  for (int r = 0; r < n; ++r) endpoints.push_back(std::make_unique<LocalCommunicator>(group, r));
  return endpoints;
}

std::vector<LocalRank> make_local_world(int tensor, int pipeline) {
  KILN_CHECK(tensor >= 1 && pipeline >= 1);
  const int size = tensor * pipeline;
  std::vector<LocalRank> ranks(size);
  for (int stage = 0; stage < pipeline; ++stage) {
    auto tp = make_local_group(tensor);
    for (int t = 0; t < tensor; ++t) ranks[stage * tensor + t].tp = std::move(tp[t]);
  }
  for (int t = 0; t < tensor; ++t) {
    auto pp = make_local_group(pipeline);
    for (int stage = 0; stage < pipeline; ++stage) {
      ranks[stage * tensor + t].pp = std::move(pp[stage]);
    }
  }
  for (int r = 0; r < size; ++r) {
    ranks[r].world = World{.rank = r,
                           .size = size,
                           .tp_rank = r % tensor,
                           .tp_size = tensor,
                           .pp_stage = r / tensor,
                           .pp_size = pipeline,
                           .local_rank = r,
                           .local_size = size,
                           .host = "localhost"};
  }
  return ranks;
}

}  // namespace kiln
