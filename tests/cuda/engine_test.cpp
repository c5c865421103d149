// The serving engine on the GPU: continuous batching over a paged cache in device memory, driven
// from the engine's own thread, gives every request the greedy tokens the CPU engine gives it,
// and frees every slot and page afterwards.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/engine/generation.h"
#include "tools/make_model/make_model.h"
#include "tests/common/micro_model.h"
#include "cluster/engine/engine.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln::serve {
namespace {

using namespace std::chrono_literals;

std::filesystem::path micro_model() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() /
             ("kiln_cuda_engine_test_" + std::to_string(getpid()));
    EXPECT_TRUE(kiln::test_util::write_micro_model(d, /*write_hf=*/false).ok());
    return d;
  }();
  return dir / "model.gguf";
}

// Greedy tokens of each prompt, all submitted before the engine starts so they share steps.
std::vector<std::vector<int32_t>> serve_greedy(Device device,
                                               const std::vector<std::vector<int32_t>>& prompts) {
  ParallelContext p;
  p.device = device;
  p.gpu = device == Device::kCuda ? test::gpu_context() : nullptr;
  auto model = KimiLinearModel::load(micro_model().string(), p);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  if (!model.ok()) return {};
  auto tokenizer = load_tokenizer((*model)->checkpoint());
  EXPECT_TRUE(tokenizer.ok());
  Engine::Options o;
  o.scheduler.max_batch_tokens = 24;  // prompts are cut into chunks that share steps
  o.scheduler.prefill_chunk = 8;
  o.scheduler.max_sequences = 4;
  o.scheduler.max_queue = 16;
  o.scheduler.page_tokens = 4;
  o.scheduler.max_context = 128;
  o.scheduler.n_pages = 4 * 128 / 4;
  cpu::ThreadPool pool(1);
  auto state = (*model)->new_paged_state(o.scheduler.max_sequences, o.scheduler.n_pages,
                                         o.scheduler.page_tokens);
  EXPECT_TRUE(state.ok()) << state.status().to_string();
  EXPECT_TRUE((*model)->reserve(o.scheduler.max_batch_tokens).ok());
  Engine engine(**model, pool, **state, nullptr, *tokenizer, o, nullptr);
  std::vector<std::shared_ptr<EngineRequest>> reqs;
  for (const auto& prompt : prompts) {
    auto r = std::make_shared<EngineRequest>();
    r->id = "gpu";
    r->prompt = prompt;
    r->params.max_tokens = 12;
    r->params.ignore_eos = true;
    r->params.sampling.temperature = 0.0f;
    r->stream = std::make_shared<RequestStream>();
    EXPECT_TRUE(engine.submit(r).ok());
    reqs.push_back(r);
  }
  std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });
  std::vector<std::vector<int32_t>> tokens(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  const auto until = std::chrono::steady_clock::now() + 300s;
  while (std::chrono::steady_clock::now() < until &&
         std::find(done.begin(), done.end(), false) != done.end()) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      for (Event& e : reqs[i]->stream->take()) {
        if (e.kind == Event::Kind::kDone || e.kind == Event::Kind::kError) done[i] = true;
        if (e.kind != Event::Kind::kDone && e.kind != Event::Kind::kError && !e.is_echo) {
          tokens[i].insert(tokens[i].end(), e.tokens.begin(), e.tokens.end());
        }
      }
    }
    std::this_thread::sleep_for(1ms);
  }
  engine.drain(std::chrono::steady_clock::now());
  loop.join();
  EXPECT_EQ(engine.stats().slots_used, 0);
  EXPECT_EQ(engine.stats().pages_used, 0);
  return tokens;
}

TEST(GpuEngine, BatchedGreedyTokensMatchTheCpuEngine) {
  KILN_REQUIRE_GPU();
  const std::vector<std::vector<int32_t>> prompts = {
      {5, 17, 200, 3, 9, 41, 77, 8, 301, 12, 19, 44, 90, 2},
      {7},
      {100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117,
       118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129},
      {33, 66, 99}};
  const auto cpu = serve_greedy(Device::kCpu, prompts);
  const auto gpu = serve_greedy(Device::kCuda, prompts);
  ASSERT_EQ(gpu.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(gpu[i].size(), 12u) << "request " << i;
    EXPECT_EQ(gpu[i], cpu[i]) << "request " << i;
  }
}

}  // namespace
}  // namespace kiln::serve
