// The serving engine on one rank with the `micro` model: continuous batching must not change any
// request's output (greedy and seeded sampling), cancellation and finishing free every slot and
// page, the queue bound holds, and draining ends what cannot finish.
#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/engine/generation.h"
#include "tools/make_model/make_model.h"
#include "tests/common/micro_model.h"
#include "cluster/engine/engine.h"

namespace kiln::serve {
namespace {

using namespace std::chrono_literals;

struct Collected {
  std::vector<std::vector<int32_t>> tokens;  // per choice
  std::vector<std::string> text;
  std::vector<std::string> finish;
  std::vector<std::vector<TokenLogprob>> echo_logprobs;
  Usage usage;
  bool done = false, error = false;
  int error_status = 0;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("kiln_engine_test_" + std::to_string(getpid()));
    ASSERT_TRUE(kiln::test_util::write_micro_model(dir_, /*write_hf=*/false).ok());
    auto model = KimiLinearModel::load((dir_ / "model.gguf").string());
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    model_ = std::move(model).value().release();
    auto tok = load_tokenizer(model_->checkpoint());
    ASSERT_TRUE(tok.ok());
    tokenizer_ = new text::Tokenizer(*tok);
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
    std::filesystem::remove_all(dir_);
  }

  static Engine::Options options(int64_t batch, int64_t chunk, int64_t seqs = 8) {
    Engine::Options o;
    o.scheduler.max_batch_tokens = batch;
    o.scheduler.prefill_chunk = chunk;
    o.scheduler.max_sequences = seqs;
    o.scheduler.max_queue = 64;
    o.scheduler.page_tokens = 4;
    o.scheduler.max_context = 256;
    o.scheduler.n_pages = seqs * 256 / 4;
    return o;
  }

  static std::shared_ptr<EngineRequest> request(std::vector<int32_t> prompt, int64_t max_tokens,
                                                float temperature = 0.0f, uint64_t seed = 1,
                                                int n = 1) {
    auto r = std::make_shared<EngineRequest>();
    r->id = "test";
    r->prompt = std::move(prompt);
    r->params.max_tokens = max_tokens;
    r->params.ignore_eos = true;
    r->params.n = n;
    r->params.sampling.temperature = temperature;
    r->params.sampling.seed = seed;
    r->stream = std::make_shared<RequestStream>();
    return r;
  }

  static void absorb(Collected& c, std::vector<Event> events) {
    for (Event& e : events) {
      if (e.kind == Event::Kind::kDone) {
        c.done = true;
        c.usage = e.usage;
      } else if (e.kind == Event::Kind::kError) {
        c.error = true;
        c.error_status = e.status;
      } else {
        const auto i = static_cast<size_t>(e.index);
        if (c.tokens.size() <= i) {
          c.tokens.resize(i + 1), c.text.resize(i + 1), c.finish.resize(i + 1);
          c.echo_logprobs.resize(i + 1);
        }
        if (e.is_echo) {
          c.echo_logprobs[i] = e.logprobs;
          continue;
        }
        c.tokens[i].insert(c.tokens[i].end(), e.tokens.begin(), e.tokens.end());
        c.text[i] += e.text;
        if (e.finish_reason) c.finish[i] = *e.finish_reason;
      }
    }
  }

  // Runs the requests through one engine (all submitted before it starts, so they share steps).
  static std::vector<Collected> run_all(const std::vector<std::shared_ptr<EngineRequest>>& reqs,
                                        const Engine::Options& o) {
    cpu::ThreadPool pool(1);
    auto state = model_->new_paged_state(o.scheduler.max_sequences, o.scheduler.n_pages,
                                         o.scheduler.page_tokens).value();
    Engine engine(*model_, pool, *state, nullptr, *tokenizer_, o, nullptr);
    for (auto& r : reqs) EXPECT_TRUE(engine.submit(r).ok());
    std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });
    std::vector<Collected> out(reqs.size());
    const auto until = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      bool all = true;
      for (size_t i = 0; i < reqs.size(); ++i) {
        absorb(out[i], reqs[i]->stream->take());
        all = all && (out[i].done || out[i].error);
      }
      if (all || std::chrono::steady_clock::now() > until) break;
      std::this_thread::sleep_for(1ms);
    }
    engine.drain(std::chrono::steady_clock::now());
    loop.join();
    EXPECT_EQ(engine.stats().slots_used, 0);
    EXPECT_EQ(engine.stats().pages_used, 0);
    return out;
  }

  static std::vector<int32_t> prompt(int n, int salt) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 101 + 3) % 500 + 10);
    return p;
  }

  static inline std::filesystem::path dir_;
  static inline KimiLinearModel* model_ = nullptr;
  static inline text::Tokenizer* tokenizer_ = nullptr;
};

TEST_F(EngineTest, BatchingDoesNotChangeGreedyOrSeededOutputs) {
  std::vector<std::shared_ptr<EngineRequest>> batch;
  for (int i = 0; i < 6; ++i) {
    batch.push_back(request(prompt(5 + 9 * i, i), 12 + i, i % 2 == 0 ? 0.0f : 0.9f, 100 + i));
  }
  // Small budget and chunk: prompts are cut in chunks and mixed with other sequences' decodes.
  std::vector<Collected> together = run_all(batch, options(24, 8));
  for (int i = 0; i < 6; ++i) {
    auto alone_req = request(prompt(5 + 9 * i, i), 12 + i, i % 2 == 0 ? 0.0f : 0.9f, 100 + i);
    std::vector<Collected> alone = run_all({alone_req}, options(24, 8));
    ASSERT_TRUE(together[static_cast<size_t>(i)].done);
    ASSERT_TRUE(alone[0].done);
    EXPECT_EQ(together[static_cast<size_t>(i)].tokens, alone[0].tokens) << "request " << i;
    EXPECT_EQ(together[static_cast<size_t>(i)].finish[0], "length");
    EXPECT_EQ(static_cast<int64_t>(together[static_cast<size_t>(i)].tokens[0].size()), 12 + i);
    EXPECT_EQ(together[static_cast<size_t>(i)].usage.completion_tokens, 12 + i);
    EXPECT_EQ(together[static_cast<size_t>(i)].usage.prompt_tokens, 5 + 9 * i);
  }
}

TEST_F(EngineTest, ChoicesAreSeparateSequencesAndUsageSumsThem) {
  auto r = request(prompt(11, 3), 7, 1.0f, 42, 3);
  std::vector<Collected> out = run_all({r}, options(64, 16));
  ASSERT_TRUE(out[0].done);
  ASSERT_EQ(out[0].tokens.size(), 3u);
  EXPECT_EQ(out[0].usage.completion_tokens, 21);
  EXPECT_EQ(out[0].usage.prompt_tokens, 11);
  EXPECT_NE(out[0].tokens[0], out[0].tokens[1]);  // decorrelated seeds per choice
}

TEST_F(EngineTest, EchoLogprobsCoverThePrompt) {
  auto r = request(prompt(13, 4), 3);
  r->params.echo = true;
  r->params.logprobs = 2;
  std::vector<Collected> out = run_all({r}, options(32, 4));  // prompt split in 4 chunks
  ASSERT_TRUE(out[0].done);
  ASSERT_EQ(out[0].echo_logprobs[0].size(), 13u);
  EXPECT_TRUE(std::isnan(out[0].echo_logprobs[0][0].logprob));
  for (size_t i = 1; i < 13; ++i) {
    EXPECT_LE(out[0].echo_logprobs[0][i].logprob, 0.0f);
    EXPECT_EQ(out[0].echo_logprobs[0][i].top.size(), 2u);
  }
}

// The in-process sink (run_one_request, kiln generate) is the same engine: the same tokens as the
// serving loop for greedy and seeded requests, events consumed on the calling thread, and generate
// prints exactly the text of those tokens.
TEST_F(EngineTest, InProcessRunMatchesTheServingLoop) {
  for (float temperature : {0.0f, 0.9f}) {
    const auto served = run_all({request(prompt(9, 5), 10, temperature, 77)}, options(64, 64, 1));
    ASSERT_TRUE(served[0].done);
    cpu::ThreadPool pool(1);
    Collected local;
    const std::thread::id caller = std::this_thread::get_id();
    const Status s = run_one_request(*model_, pool, *tokenizer_, nullptr,
                                     request(prompt(9, 5), 10, temperature, 77), [&](Event& e) {
                                       EXPECT_EQ(std::this_thread::get_id(), caller);
                                       absorb(local, {std::move(e)});
                                     });
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_TRUE(local.done);
    EXPECT_EQ(local.tokens, served[0].tokens) << "temperature " << temperature;
    EXPECT_EQ(local.finish, served[0].finish);

    GenerationOptions g;
    g.max_tokens = 10;
    g.sampling.temperature = temperature;
    g.seed = 77;
    g.stop_at_eos = false;
    std::string text;
    GenerationStats st;
    ASSERT_TRUE(generate(*model_, pool, *tokenizer_, prompt(9, 5), g,
                         [&](std::string_view piece) { text += piece; }, &st)
                    .ok());
    text::StreamDecoder decoder(*tokenizer_);  // every token's text, specials included
    std::string want;
    for (int32_t t : served[0].tokens[0]) want += decoder.push(t);
    EXPECT_EQ(text, want + decoder.flush());
    EXPECT_EQ(st.generated_tokens, 10);
    EXPECT_EQ(st.prompt_tokens, 9);
    EXPECT_EQ(st.finish_reason, "length");
  }
}

TEST_F(EngineTest, CancelFreesSlotsAndPages) {
  Engine::Options o = options(64, 16, 4);
  cpu::ThreadPool pool(1);
  auto state = model_->new_paged_state(4, o.scheduler.n_pages, o.scheduler.page_tokens).value();
  Engine engine(*model_, pool, *state, nullptr, *tokenizer_, o, nullptr);
  std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });
  std::vector<std::shared_ptr<EngineRequest>> reqs;
  for (int i = 0; i < 4; ++i) {
    reqs.push_back(request(prompt(9, i), 200));
    ASSERT_TRUE(engine.submit(reqs.back()).ok());
  }
  auto keep = request(prompt(6, 9), 20);
  // The fifth waits for a slot; cancelling the others lets it in and it completes.
  ASSERT_TRUE(engine.submit(keep).ok());
  for (auto& r : reqs) {
    Collected c;
    while (c.tokens.empty()) {
      absorb(c, r->stream->take());
      std::this_thread::sleep_for(1ms);
    }
    r->stream->cancel();
  }
  engine.wake();
  Collected k;
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!k.done && std::chrono::steady_clock::now() < until) {
    absorb(k, keep->stream->take());
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(k.done);
  EXPECT_EQ(k.tokens[0].size(), 20u);
  while (engine.stats().slots_used != 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(engine.stats().slots_used, 0);
  EXPECT_EQ(engine.stats().pages_used, 0);
  engine.drain(std::chrono::steady_clock::now());
  loop.join();
}

TEST_F(EngineTest, QueueBoundAndImpossibleRequests) {
  Engine::Options o = options(64, 16, 2);
  o.scheduler.max_queue = 2;
  cpu::ThreadPool pool(1);
  auto state = model_->new_paged_state(2, o.scheduler.n_pages, o.scheduler.page_tokens).value();
  Engine engine(*model_, pool, *state, nullptr, *tokenizer_, o, nullptr);
  EXPECT_TRUE(engine.submit(request(prompt(4, 1), 4)).ok());
  EXPECT_TRUE(engine.submit(request(prompt(4, 2), 4)).ok());
  Status full = engine.submit(request(prompt(4, 3), 4));
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted) << full.to_string();
  Status too_many = engine.submit(request(prompt(4, 3), 4, 1.0f, 1, 3));
  EXPECT_EQ(too_many.code(), StatusCode::kInvalidArgument) << too_many.to_string();
  engine.drain(std::chrono::steady_clock::now() + 30s);
  EXPECT_EQ(engine.submit(request(prompt(4, 4), 4)).code(), StatusCode::kUnavailable);
  std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });  // drains the two queued requests
  loop.join();
  EXPECT_EQ(engine.stats().slots_used, 0);
}

TEST_F(EngineTest, DrainDeadlineEndsRunningRequestsWithAnError) {
  Engine::Options o = options(64, 16, 2);
  cpu::ThreadPool pool(1);
  auto state = model_->new_paged_state(2, o.scheduler.n_pages, o.scheduler.page_tokens).value();
  Engine engine(*model_, pool, *state, nullptr, *tokenizer_, o, nullptr);
  auto r = request(prompt(8, 1), 240);
  ASSERT_TRUE(engine.submit(r).ok());
  std::thread loop([&] { EXPECT_TRUE(engine.run().ok()); });
  Collected c;
  while (c.tokens.empty()) {
    absorb(c, r->stream->take());
    std::this_thread::sleep_for(1ms);
  }
  engine.drain(std::chrono::steady_clock::now());
  loop.join();
  absorb(c, r->stream->take());
  EXPECT_TRUE(c.error);
  EXPECT_EQ(c.error_status, 503);
  EXPECT_FALSE(c.done);
  EXPECT_EQ(engine.stats().slots_used, 0);
}

}  // namespace
}  // namespace kiln::serve
