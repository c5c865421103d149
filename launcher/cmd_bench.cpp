// kiln bench: prefill and decode speed on one rank, with decode's achieved memory bandwidth as a
// fraction of the machine's streaming-read bandwidth probed in the same run. Medians over runs.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "kernels/cpu/probe.h"
#include "kernels/cpu/sampling.h"
#include "launcher/commands.h"
#include "shard/model.h"

namespace kiln::launcher {

namespace {

struct BenchArgs {
  std::string model;
  int64_t prompt_tokens = 128, gen_tokens = 32;
  int threads = 0, runs = 5;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int run_bench(const BenchArgs& a) {
  using Clock = std::chrono::steady_clock;
  auto loaded = KimiLinearModel::load(a.model);
  if (!loaded.ok()) return fail(loaded.status());
  KimiLinearModel& model = **loaded;
  const ModelConfig& c = model.config();
  cpu::ThreadPool pool(a.threads);
  const double bw = cpu::probe_read_bandwidth(pool);
  const double fma = cpu::probe_fma_peak(pool);
  const uint64_t bytes_per_token = model.weights().active_bytes_per_token(c);
  std::printf("model: %s (%s)\nthreads: %d\nprobe: read bandwidth %.2f GB/s, fp32 FMA peak %.1f GFLOP/s\n",
              a.model.c_str(), c.name.c_str(), pool.size(), bw, fma);
  std::printf("weights read per decoded token: %.1f MB (limit at probed bandwidth: %.1f tok/s)\n",
              static_cast<double>(bytes_per_token) / 1e6, bw * 1e9 / static_cast<double>(bytes_per_token));

  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt_tokens));
  uint64_t x = 88172645463325252ull;
  for (int32_t& t : prompt) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    t = static_cast<int32_t>(x % static_cast<uint64_t>(c.vocab_size));
  }
  StateCache state(c, 1, a.prompt_tokens + a.gen_tokens + 1);
  std::vector<float> logits;
  std::vector<double> prefill, decode;
  for (int r = 0; r < a.runs + 1; ++r) {  // run 0 warms up and is not counted
    state.reset(0);
    auto t0 = Clock::now();
    Status s = model.forward(pool, state, {{0, prompt, false}}, logits);
    if (!s.ok()) return fail(s);
    auto t1 = Clock::now();
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      const int32_t next = cpu::argmax(logits.data(), c.vocab_size);
      s = model.forward(pool, state, {{0, {next}, false}}, logits);
      if (!s.ok()) return fail(s);
    }
    auto t2 = Clock::now();
    if (r == 0) continue;
    prefill.push_back(static_cast<double>(a.prompt_tokens) / std::chrono::duration<double>(t1 - t0).count());
    decode.push_back(static_cast<double>(a.gen_tokens) / std::chrono::duration<double>(t2 - t1).count());
  }
  const double pp = median(prefill), tg = median(decode);
  const double gbs = tg * static_cast<double>(bytes_per_token) / 1e9;
  std::printf("prefill: %lld tokens, %.1f tok/s (median of %d)\n", static_cast<long long>(a.prompt_tokens), pp, a.runs);
  std::printf("decode:  %lld tokens, %.1f tok/s (median of %d), %.2f GB/s = %.0f%% of probed bandwidth\n",
              static_cast<long long>(a.gen_tokens), tg, a.runs, gbs, 100.0 * gbs / bw);
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, Runner& run) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "Measure prefill and decode speed on this machine");
  sub->add_option("--model", a->model, "HF directory or GGUF file")->required();
  sub->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--gen-tokens", a->gen_tokens, "Tokens to decode")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--threads", a->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  sub->add_option("--runs", a->runs, "Measured runs (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->callback([&run, a] { run = [a] { return run_bench(*a); }; });
}

}  // namespace kiln::launcher
