// kiln bench: prefill and decode speed on this machine against the limits probed in the same run
// (streaming-read bandwidth, FMA peak). Modes: one sequence (default), --batch N sequences decoded
// in one forward per step, --context L (decode at depth L after a chunked prefill of L tokens);
// --profile adds a per-segment wall-time table of a prefill and a decode step. Medians over runs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "cluster/rank_model.h"
#include "kernels/cpu/probe.h"
#include "kernels/cpu/sampling.h"
#include "launcher/bench_meter.h"
#include "launcher/commands.h"
#ifdef KILN_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace kiln::launcher {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::string model;
  int64_t prompt_tokens = 128, gen_tokens = 32;
  int64_t batch = 0;    // 0 = the one-sequence benchmark
  int64_t context = 0;  // 0 = no long-context run
  bool profile = false;
  int threads = 0, runs = 5, tensor = 0, pipeline = 1;
  bool exact_activations = false;
  std::string backend = "cpu";
};

constexpr int64_t kPrefillChunk = 512;  // --context prefills in chunks of this many tokens

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Seconds spent in this rank's TP and PP collectives so far.
double collective_seconds(const RankModel& r) {
  const World& w = r.world->world();
  return (w.tp_size > 1 ? r.world->tp().busy_seconds() : 0.0) +
         (w.pp_size > 1 ? r.world->pp().busy_seconds() : 0.0);
}

// What every section needs: the model, the job, the probed limits and the job's weight traffic.
struct Bench {
  const BenchArgs& a;
  RankModel& ranked;
  KimiLinearModel& model;
  cpu::ThreadPool& pool;
  Communicator* control;  // null on a single rank
  bool root;
  double bw = 0, fma = 0;  // GB/s, GFLOP/s (all ranks); fma = 0 on GPUs
  WeightTraffic traffic;   // this rank's share
  // The whole job's (summed over ranks): bytes and parameters read per token, the shared part of
  // the bytes, one expert per MoE layer summed over layers, and the LM head's parameters.
  double bytes_tok = 0, params_tok = 0, shared_bytes = 0, expert_bytes = 0, head_params = 0;
  uint64_t rng = 88172645463325252ull;
  const char* bw_name = "probed bandwidth";  // what bw is

  const ModelConfig& config() const { return model.config(); }
  int32_t random_token() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return static_cast<int32_t>(rng % static_cast<uint64_t>(config().vocab_size));
  }
  std::vector<int32_t> random_tokens(int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& x : t) x = random_token();
    return t;
  }
  // FLOPs of a forward of n tokens with logits for `rows` of them (matrix products only; the
  // attention over the context is not counted).
  double flops(int64_t n, int64_t rows) const {
    return 2.0 * ((params_tok - head_params) * static_cast<double>(n) +
                  head_params * static_cast<double>(rows));
  }
  // Expected bytes of a step of n tokens with uniformly random routing.
  double expected_step_bytes(int64_t n) const {
    const ModelConfig& c = config();
    if (c.num_experts == 0) return shared_bytes;
    const double E = static_cast<double>(c.num_experts);
    const double k = static_cast<double>(c.experts_per_token);
    return shared_bytes + E * (1.0 - std::pow(1.0 - k / E, static_cast<double>(n))) * expert_bytes;
  }
};

// One decode step for the sequences in slots [0, n): each gets the argmax of its logits row.
Status decode_step(Bench& b, StateCache& state, int64_t n, std::vector<float>& logits,
                   SegmentProfiler* profiler = nullptr) {
  const int64_t vocab = b.config().vocab_size;
  std::vector<int32_t> next(static_cast<size_t>(n), 0);
  if (b.root) {
    for (int64_t s = 0; s < n; ++s) next[s] = cpu::argmax(logits.data() + s * vocab, vocab);
  }
  if (b.control != nullptr) b.control->broadcast(next.data(), n * static_cast<int64_t>(sizeof(int32_t)), 0);
  Batch seqs;
  for (int64_t s = 0; s < n; ++s) seqs.add(static_cast<int32_t>(s), {&next[s], 1});
  return profiler != nullptr ? profiler->profile(b.pool, state, seqs, logits)
                             : b.model.forward(b.pool, state, seqs, logits);
}

void print_prefill(const Bench& b, const char* what, int64_t tokens, double tok_s, int64_t rows,
                   const char* note) {
  const double gflops = b.flops(tokens, rows) / static_cast<double>(tokens) * tok_s / 1e9;
  if (b.fma <= 0) {  // a GPU: no FMA probe
    std::printf("%s: %lld tokens, %.1f tok/s, %.1f GFLOP/s%s\n", what,
                static_cast<long long>(tokens), tok_s, gflops, note);
    return;
  }
  std::printf("%s: %lld tokens, %.1f tok/s, %.1f GFLOP/s = %.0f%% of probed FMA peak%s\n", what,
              static_cast<long long>(tokens), tok_s, gflops, 100.0 * gflops / b.fma, note);
}

// The default: one sequence, prefill of --prompt-tokens then --gen-tokens decode steps.
int bench_single(Bench& b) {
  const BenchArgs& a = b.a;
  const std::vector<int32_t> prompt = b.random_tokens(a.prompt_tokens);
  const int64_t extra = b.a.profile ? a.prompt_tokens + 2 * a.gen_tokens : 0;
  auto made = b.model.new_state(1, a.prompt_tokens + a.gen_tokens + 1 + extra);
  if (!made.ok()) return fail(made.status());
  std::unique_ptr<StateCache> state = std::move(made).value();
  std::vector<float> logits;
  std::vector<double> prefill, decode, comm_share;
  for (int r = 0; r < a.runs + 1; ++r) {  // run 0 warms up and is not counted
    state->reset(0);
    auto t0 = Clock::now();
    Status s = b.model.forward(b.pool, *state, Batch::of({{0, prompt, false}}), logits);
    if (!s.ok()) return fail(s);
    auto t1 = Clock::now();
    const double comm0 = collective_seconds(b.ranked);
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s2 = decode_step(b, *state, 1, logits); !s2.ok()) return fail(s2);
    }
    auto t2 = Clock::now();
    if (r == 0) continue;
    prefill.push_back(static_cast<double>(a.prompt_tokens) / seconds(t0, t1));
    decode.push_back(static_cast<double>(a.gen_tokens) / seconds(t1, t2));
    comm_share.push_back((collective_seconds(b.ranked) - comm0) / seconds(t1, t2));
  }
  SegmentProfiler prefill_prof(b.model), decode_prof(b.model);
  if (a.profile) {
    state->reset(0);
    if (Status s = prefill_prof.profile(b.pool, *state, Batch::of({{0, prompt, false}}), logits); !s.ok()) return fail(s);
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s = decode_step(b, *state, 1, logits, &decode_prof); !s.ok()) return fail(s);
    }
  }
  if (!b.root) return 0;
  const double pp = median(prefill), tg = median(decode);
  const double gbs = tg * b.bytes_tok / 1e9;
  std::printf("(medians of %d runs)\n", a.runs);
  print_prefill(b, "prefill", a.prompt_tokens, pp, 1, "");
  std::printf("decode:  %lld tokens, %.1f tok/s, %.3f ms/token, %.1f MB/token, %.2f GB/s = %.0f%% "
              "of %s\n",
              static_cast<long long>(a.gen_tokens), tg, 1e3 / tg, b.bytes_tok / 1e6, gbs,
              100.0 * gbs / b.bw, b.bw_name);
  if (b.ranked.world->world().size > 1) {
    std::printf("collectives (rank 0, waiting included): %.0f%% of a decode step, %.3f ms per step\n",
                100.0 * median(comm_share), 1e3 * median(comm_share) / tg);
  }
  if (a.profile) {
    prefill_prof.print("prefill of one sequence");
    decode_prof.print("decode step, 1 sequence");
  }
  return 0;
}

// --batch N: N sequences prefilled together, then --gen-tokens steps of one token for each.
int bench_batch(Bench& b) {
  const BenchArgs& a = b.a;
  const int64_t n = a.batch;
  Batch prompts;
  for (int64_t s = 0; s < n; ++s) prompts.add(static_cast<int32_t>(s), b.random_tokens(a.prompt_tokens));
  const int64_t extra = a.profile ? a.prompt_tokens + 2 * a.gen_tokens : 0;
  auto made = b.model.new_state(n, a.prompt_tokens + a.gen_tokens + 1 + extra);
  if (!made.ok()) return fail(made.status());
  std::unique_ptr<StateCache> state = std::move(made).value();
  // The experts each step really reads need the routing, recomputed on a single rank only.
  const bool exact = b.ranked.world->world().size == 1;
  RoutingCounter routing(b.model, b.pool);
  std::vector<float> logits;
  std::vector<double> prefill, step;
  for (int r = 0; r < a.runs + 1; ++r) {  // run 0 warms up and counts the routing
    for (int64_t s = 0; s < n; ++s) state->reset(s);
    auto t0 = Clock::now();
    if (Status s = b.model.forward(b.pool, *state, prompts, logits); !s.ok()) return fail(s);
    auto t1 = Clock::now();
    if (r == 0 && exact) routing.attach();
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s = decode_step(b, *state, n, logits); !s.ok()) return fail(s);
    }
    auto t2 = Clock::now();
    if (r == 0 && exact) routing.detach();
    if (r == 0) continue;
    prefill.push_back(static_cast<double>(n * a.prompt_tokens) / seconds(t0, t1));
    step.push_back(seconds(t1, t2) / static_cast<double>(a.gen_tokens));
  }
  SegmentProfiler prefill_prof(b.model), decode_prof(b.model);
  if (a.profile) {
    for (int64_t s = 0; s < n; ++s) state->reset(s);
    if (Status s = prefill_prof.profile(b.pool, *state, prompts, logits); !s.ok()) return fail(s);
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s = decode_step(b, *state, n, logits, &decode_prof); !s.ok()) return fail(s);
    }
  }
  if (!b.root) return 0;
  const double st = median(step);
  const double bytes = exact ? routing.mean_step_bytes(b.traffic) : b.expected_step_bytes(n);
  const double gbs = bytes / st / 1e9;
  const std::string seqs = std::to_string(n) + (n == 1 ? " sequence" : " sequences");
  std::printf("(medians of %d runs)\n", a.runs);
  print_prefill(b, "batched prefill", n * a.prompt_tokens, median(prefill), n,
                (" (" + seqs + " in one forward)").c_str());
  std::printf("batched decode: %s x %lld steps, %.1f tok/s aggregate, %.3f ms/step\n",
              seqs.c_str(), static_cast<long long>(a.gen_tokens),
              static_cast<double>(n) / st, 1e3 * st);
  if (exact) {
    std::printf("weights read per step: %.1f MB (shared once + %.1f distinct routed experts per MoE "
                "layer, from the routing; uniform routing would give %.1f MB)\n",
                bytes / 1e6, routing.mean_distinct_per_layer(), b.expected_step_bytes(n) / 1e6);
  } else {
    std::printf("weights read per step: %.1f MB (estimated: shared once + E(1-(1-k/E)^N) distinct "
                "routed experts per MoE layer)\n", bytes / 1e6);
  }
  const double gflops = b.flops(n, n) / st / 1e9;
  std::printf("  %.2f GB/s = %.0f%% of %s; %.1f GFLOP/s", gbs, 100.0 * gbs / b.bw, b.bw_name,
              gflops);
  if (b.fma > 0) std::printf(" = %.0f%% of probed FMA peak", 100.0 * gflops / b.fma);
  std::printf("\n");
  if (a.profile) {
    prefill_prof.print(("batched prefill, " + seqs).c_str());
    decode_prof.print(("decode step, " + seqs).c_str());
  }
  return 0;
}

// --context L: prefill L tokens in chunks, then decode at that depth.
int bench_context(Bench& b) {
  const BenchArgs& a = b.a;
  const int64_t L = a.context;
  const int64_t steps = (a.runs + 1 + (a.profile ? 1 : 0)) * a.gen_tokens;
  auto made = b.model.new_state(1, L + steps + 1);
  if (!made.ok()) return fail(made.status());
  std::unique_ptr<StateCache> state = std::move(made).value();
  std::vector<float> logits;
  SegmentProfiler prefill_prof(b.model), decode_prof(b.model);
  // One prefill (it is the long part); the last chunk is profiled when asked.
  auto t0 = Clock::now();
  for (int64_t done = 0; done < L; done += kPrefillChunk) {
    const int64_t n = std::min(kPrefillChunk, L - done);
    const Batch chunk = Batch::of({{0, b.random_tokens(n), false}});
    Status s = a.profile && done + n == L ? prefill_prof.profile(b.pool, *state, chunk, logits)
                                          : b.model.forward(b.pool, *state, chunk, logits);
    if (!s.ok()) return fail(s);
  }
  const double prefill_s = seconds(t0, Clock::now());
  std::vector<double> step;
  for (int r = 0; r < a.runs + 1; ++r) {  // run 0 warms up and is not counted
    auto t1 = Clock::now();
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s = decode_step(b, *state, 1, logits); !s.ok()) return fail(s);
    }
    if (r > 0) step.push_back(seconds(t1, Clock::now()) / static_cast<double>(a.gen_tokens));
  }
  if (a.profile) {
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      if (Status s = decode_step(b, *state, 1, logits, &decode_prof); !s.ok()) return fail(s);
    }
  }
  if (!b.root) return 0;
  const double st = median(step);
  char note[128];
  std::snprintf(note, sizeof(note), " (one run, chunks of %lld, %.2f s; attention not in the FLOPs)",
                static_cast<long long>(kPrefillChunk), prefill_s);
  print_prefill(b, "context prefill", L, static_cast<double>(L) / prefill_s,
                (L + kPrefillChunk - 1) / kPrefillChunk, note);
  std::printf("decode at context %lld: %.3f ms/step, %.1f tok/s (median of %d runs of %lld steps), "
              "%.2f GB/s of weights = %.0f%% of %s\n",
              static_cast<long long>(L), 1e3 * st, 1.0 / st, a.runs,
              static_cast<long long>(a.gen_tokens), b.bytes_tok / st / 1e9,
              100.0 * b.bytes_tok / st / 1e9 / b.bw, b.bw_name);
  if (a.profile) {
    prefill_prof.print(("last prefill chunk, ending at " + std::to_string(L)).c_str());
    decode_prof.print(("decode step at context " + std::to_string(L)).c_str());
  }
  return 0;
}

int run_bench(const BenchArgs& a) {
  auto ranked = load_rank_model(a.model, a.tensor, a.pipeline, {}, {}, {},
                                DeviceChoice{backend_device(a.backend), -1});
  if (!ranked.ok()) return fail(ranked.status());
  KimiLinearModel& model = *ranked->model;
  const World& world = ranked->world->world();
  cpu::ThreadPool pool(a.threads);
  pool.set_exact_activations(a.exact_activations);
  Bench b{a, *ranked, model, pool, world.size > 1 ? &ranked->world->world_comm() : nullptr,
          ranked->is_root(), 0, 0, WeightTraffic::of(model)};
  // Every rank probes at once, so the sum is what the job's ranks can stream together.
  if (b.control != nullptr) b.control->barrier();
  const bool gpu = model.device() == Device::kCuda;
  if (!gpu) {
    b.bw = cpu::probe_read_bandwidth(pool);
    b.fma = cpu::probe_fma_peak(pool);
  }
#ifdef KILN_HAVE_CUDA
  // A GPU rank: the bandwidth is the device's peak (memory clock × bus width), not probed.
  if (gpu) {
    b.bw = cuda::device_peak_bandwidth_gbs(world.gpu);
    b.bw_name = "peak DRAM bandwidth";
  }
#endif
  double expert_sum = 0;
  for (uint64_t e : b.traffic.expert_bytes) expert_sum += static_cast<double>(e);
  // Summed over ranks in float: the figures are sizes, 7 digits are plenty.
  float sums[7] = {static_cast<float>(b.bw), static_cast<float>(b.fma),
                   static_cast<float>(b.traffic.bytes_per_token()),
                   static_cast<float>(b.traffic.params_per_token()),
                   static_cast<float>(b.traffic.shared_bytes), static_cast<float>(expert_sum),
                   static_cast<float>(b.traffic.lm_head_params)};
  if (b.control != nullptr) b.control->all_reduce_sum(sums, 7);
  b.bw = sums[0], b.fma = sums[1], b.bytes_tok = sums[2], b.params_tok = sums[3];
  b.shared_bytes = sums[4], b.expert_bytes = sums[5], b.head_params = sums[6];
  if (b.root) {
    const ModelConfig& c = model.config();
    std::printf("model: %s (%s)\nranks: %d (tensor %d x pipeline %d), threads per rank: %d\n",
                a.model.c_str(), c.name.c_str(), world.size, world.tp_size, world.pp_size,
                pool.size());
    if (!gpu) {
      std::printf("decode activations over quantised weights: %s\n",
                  a.exact_activations ? "f32 (--exact-activations)" : "int8");
    }
    if (gpu) {
#ifdef KILN_HAVE_CUDA
      std::printf("device: %s on rank 0, weights %.1f MB on its GPU\n",
                  cuda::device_description(world.gpu).c_str(),
                  static_cast<double>(model.device_weight_bytes()) / 1e6);
#endif
      std::printf("peak DRAM bandwidth %.0f GB/s (all ranks; the bandwidth figures below are "
                  "fractions of it)\n", b.bw);
    } else {
      std::printf("probe: read bandwidth %.2f GB/s, fp32 FMA peak %.1f GFLOP/s (all ranks)\n",
                  b.bw, b.fma);
    }
    std::printf("weights read per decoded token: %.1f MB, %.1f M parameters (limit at probed "
                "bandwidth: %.1f tok/s)\n",
                b.bytes_tok / 1e6, b.params_tok / 1e6, b.bw * 1e9 / b.bytes_tok);
  }
  if (a.context > 0) return bench_context(b);
  if (a.batch > 0) return bench_batch(b);
  return bench_single(b);
}

}  // namespace

void register_bench(CLI::App& app, Runner& run) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "Measure prefill and decode speed on this machine");
  sub->add_option("--model", a->model, "HF directory or GGUF file")->required();
  sub->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--gen-tokens", a->gen_tokens, "Tokens to decode")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("--batch", a->batch, "Batched decode: N sequences, one forward per step")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--context", a->context,
                  "Decode at context L after prefilling L tokens (chunks of 512)")
      ->check(CLI::Range(1, 1 << 22));
  sub->add_flag("--profile", a->profile, "Per-segment wall time of a prefill and a decode step");
  add_layout_options(sub, *a);
  sub->add_option("--runs", a->runs, "Measured runs (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->callback([&run, a] { run = [a] { return run_bench(*a); }; });
  (void)sub->get_option("--batch")->excludes(sub->get_option("--context"));
}

}  // namespace kiln::launcher
