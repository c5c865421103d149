// kiln bench: prefill and decode speed on one rank, with decode's achieved memory bandwidth as a
// fraction of the machine's streaming-read bandwidth probed in the same run. Medians over runs.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "kernels/cpu/probe.h"
#include "kernels/cpu/sampling.h"
#include "launcher/commands.h"
#include "cluster/rank_model.h"

namespace kiln::launcher {

namespace {

struct BenchArgs {
  std::string model;
  int64_t prompt_tokens = 128, gen_tokens = 32;
  int threads = 0, runs = 5, tensor = 0, pipeline = 1;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Seconds spent in this rank's TP and PP collectives so far.
double collective_seconds(const RankModel& r) {
  const World& w = r.world->world();
  return (w.tp_size > 1 ? r.world->tp().busy_seconds() : 0.0) +
         (w.pp_size > 1 ? r.world->pp().busy_seconds() : 0.0);
}

int run_bench(const BenchArgs& a) {
  using Clock = std::chrono::steady_clock;
  auto ranked = load_rank_model(a.model, a.tensor, a.pipeline);
  if (!ranked.ok()) return fail(ranked.status());
  KimiLinearModel& model = *ranked->model;
  const World& world = ranked->world->world();
  Communicator* control = world.size > 1 ? &ranked->world->world_comm() : nullptr;
  const bool root = ranked->is_root();
  const ModelConfig& c = model.config();
  cpu::ThreadPool pool(a.threads);
  // Every rank probes at once, so the sum is what the job's ranks can stream together.
  if (control != nullptr) control->barrier();
  double bw = cpu::probe_read_bandwidth(pool);
  double fma = cpu::probe_fma_peak(pool);
  if (control != nullptr) {
    float sums[2] = {static_cast<float>(bw), static_cast<float>(fma)};
    control->all_reduce_sum(sums, 2);
    bw = sums[0], fma = sums[1];
  }
  // Bytes read per decoded token by the whole job: every rank's share summed.
  float bytes_f = static_cast<float>(model.weights().active_bytes_per_token(c));
  if (control != nullptr) control->all_reduce_sum(&bytes_f, 1);
  const double bytes_per_token = bytes_f;
  if (root) {
    std::printf("model: %s (%s)\nranks: %d (tensor %d x pipeline %d), threads per rank: %d\n",
                a.model.c_str(), c.name.c_str(), world.size, world.tp_size, world.pp_size,
                pool.size());
    std::printf("probe: read bandwidth %.2f GB/s, fp32 FMA peak %.1f GFLOP/s (all ranks)\n", bw, fma);
    std::printf("weights read per decoded token: %.1f MB (limit at probed bandwidth: %.1f tok/s)\n",
                bytes_per_token / 1e6, bw * 1e9 / bytes_per_token);
  }

  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt_tokens));
  uint64_t x = 88172645463325252ull;
  for (int32_t& t : prompt) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    t = static_cast<int32_t>(x % static_cast<uint64_t>(c.vocab_size));
  }
  std::unique_ptr<StateCache> state = model.new_state(1, a.prompt_tokens + a.gen_tokens + 1);
  std::vector<float> logits;
  std::vector<double> prefill, decode, comm_share;
  for (int r = 0; r < a.runs + 1; ++r) {  // run 0 warms up and is not counted
    state->reset(0);
    auto t0 = Clock::now();
    Status s = model.forward(pool, *state, {{0, prompt, false}}, logits);
    if (!s.ok()) return fail(s);
    auto t1 = Clock::now();
    const double comm0 = collective_seconds(*ranked);
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      int32_t next = root ? cpu::argmax(logits.data(), c.vocab_size) : 0;
      if (control != nullptr) control->broadcast(&next, sizeof(next), 0);
      s = model.forward(pool, *state, {{0, {next}, false}}, logits);
      if (!s.ok()) return fail(s);
    }
    auto t2 = Clock::now();
    if (r == 0) continue;
    const double dt = std::chrono::duration<double>(t2 - t1).count();
    prefill.push_back(static_cast<double>(a.prompt_tokens) / std::chrono::duration<double>(t1 - t0).count());
    decode.push_back(static_cast<double>(a.gen_tokens) / dt);
    comm_share.push_back((collective_seconds(*ranked) - comm0) / dt);
  }
  if (!root) return 0;
  const double pp = median(prefill), tg = median(decode);
  const double gbs = tg * bytes_per_token / 1e9;
  std::printf("prefill: %lld tokens, %.1f tok/s (median of %d)\n", static_cast<long long>(a.prompt_tokens), pp, a.runs);
  std::printf("decode:  %lld tokens, %.1f tok/s (median of %d), %.2f GB/s = %.0f%% of probed bandwidth\n",
              static_cast<long long>(a.gen_tokens), tg, a.runs, gbs, 100.0 * gbs / bw);
  if (world.size > 1) {
    std::printf("collectives (rank 0, waiting included): %.0f%% of a decode step, %.3f ms per step\n",
                100.0 * median(comm_share), 1e3 * median(comm_share) / tg);
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, Runner& run) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "Measure prefill and decode speed on this machine");
  sub->add_option("--model", a->model, "HF directory or GGUF file")->required();
  sub->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--gen-tokens", a->gen_tokens, "Tokens to decode")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  add_layout_options(sub, *a);
  sub->add_option("--runs", a->runs, "Measured runs (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->callback([&run, a] { run = [a] { return run_bench(*a); }; });
}

}  // namespace kiln::launcher
