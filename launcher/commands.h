// Sub-commands of the kiln executable. Each registers its flags on the app and stores a runner
// that returns the process exit code; failures print one line naming what was wrong.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cluster/topology/topology.h"
#include "kernels/base/device.h"
#include "kernels/base/status.h"

namespace kiln::launcher {

using Runner = std::function<int()>;

void register_make_model(CLI::App& app, Runner& run);
void register_inspect(CLI::App& app, Runner& run);
void register_generate(CLI::App& app, Runner& run);
void register_eval(CLI::App& app, Runner& run);
void register_bench(CLI::App& app, Runner& run);
void register_check_config(CLI::App& app, Runner& run);
void register_launch(CLI::App& app, Runner& run);
void register_serve(CLI::App& app, Runner& run);

// --config FILE, --set KEY=VALUE (repeatable) and --print-config of the commands that run the
// model (cmd_check_config.cpp).
struct ConfigFlags {
  std::string file;
  std::vector<std::string> sets;
  bool print = false;
};
void add_config_flags(CLI::App* sub, ConfigFlags& flags);
// The layout a model-running command uses. Its own flags fill it first; resolve_config then
// replaces it with the topology's values merged with the flags given explicitly.
struct RunSettings {
  std::string model;
  int tensor = 0, pipeline = 1, threads = 0;
  std::vector<int64_t> layer_split;  // layers per stage from the topology; empty = balanced
  std::string backend = "cpu";       // cpu | cuda
};
// With --config/--set/--print-config: loads the topology (defaults without --config), applies
// --set, then the flags of `sub` that were given (--model, --tensor, --pipeline, --threads),
// validates against the model like check-config, and fills `settings`. Returns -1 to go on, or
// the exit code to stop with (an error, or 0 after --print-config).
// topology, when given, receives the merged topology (also without --config: the defaults).
int resolve_config(const CLI::App& sub, const ConfigFlags& flags, RunSettings& settings,
                   Topology* topology = nullptr);

// Prints "kiln: error: <message>" and returns 1.
int fail(const Status& status);
int fail(const std::string& message);

// --threads, --tensor, --pipeline, --backend and --exact-activations of a model-running command
// (args has those members).
template <typename Args>
void add_layout_options(CLI::App* sub, Args& a) {
  sub->add_option("--threads", a.threads, "Worker threads per rank (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--tensor", a.tensor, "Tensor-parallel ranks under mpirun (0 = ranks / pipeline)")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--pipeline", a.pipeline, "Pipeline stages under mpirun")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option("--backend", a.backend,
                  "Where each rank computes: cpu, or cuda (one GPU per rank; needs a CUDA build)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_flag("--exact-activations", a.exact_activations,
                "CPU: keep f32 activations in decode over quantised weights (slower) instead of "
                "quantising them to int8 as llama.cpp does");
}

// The device a --backend / topology `backend` value names ("cpu" or "cuda").
inline Device backend_device(const std::string& backend) {
  return backend == "cuda" ? Device::kCuda : Device::kCpu;
}

// resolve_config for a command whose args have model/tensor/pipeline/threads/backend/config
// members;
// -1 = go on, else the exit code.
template <typename Args>
int merge_run_settings(const CLI::App& sub, Args& a, const char* command) {
  RunSettings r{a.model, a.tensor, a.pipeline, a.threads, {}, a.backend};
  const int code = resolve_config(sub, a.config, r);
  if (code >= 0) return code;
  if (r.model.empty()) return fail(std::string(command) + ": give --model or --config");
  a.model = r.model;
  a.tensor = r.tensor;
  a.pipeline = r.pipeline;
  a.threads = r.threads;
  a.layer_split = r.layer_split;
  a.backend = r.backend;
  if (Status s = device_available(backend_device(a.backend)); !s.ok()) return fail(s);
  return -1;
}

}  // namespace kiln::launcher
