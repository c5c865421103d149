// kiln check-config: checks a topology file against the model it names without launching
// (structure, world size, divisibility, layer split, memory per rank), prints the effective
// configuration and the rank placement, and lists every problem. Also the --config / --set /
// --print-config handling shared by the commands that run the model.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <yaml-cpp/yaml.h>

#include "cluster/topology/launch_plan.h"
#include "launcher/commands.h"
#include "shard/checkpoint.h"
#include "shard/input_file.h"
#include "shard/memory_budget.h"

namespace kiln::launcher {

namespace {

// The dtype that holds most of the checkpoint's matrix bytes.
DType stored_matrix_dtype(const Checkpoint& ck) {
  uint64_t best = 0;
  DType dtype = DType::kF32;
  uint64_t bytes[8] = {};  // indexed by DType (6 values)
  for (const TensorRef& t : ck.tensors()) {
    if (t.squeezed().size() < 2) continue;
    const auto i = static_cast<size_t>(t.dtype);
    bytes[i] += t.nbytes;
    if (bytes[i] > best) best = bytes[i], dtype = t.dtype;
  }
  return dtype;
}

// This process's world rank under mpirun (0 outside it).
int launched_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  }
  return 0;
}

// check_launch with the model opened from model.path; an unopenable model is one more problem.
// With host_memory (a command about to run on this host's CPU), what this host's ranks need is
// also compared with the memory available now.
LaunchCheck check_with_model_file(const Topology& t, bool host_memory = false) {
  if (t.model.path.empty()) {
    LaunchCheck check = check_launch(t, nullptr, DType::kF32);
    check.problems.push_back("model.path: not set (give it in the file, with --set or --model)");
    return check;
  }
  auto ck = Checkpoint::open(t.model.path);
  if (!ck.ok()) {
    LaunchCheck check = check_launch(t, nullptr, DType::kF32);
    check.problems.push_back(fmt::format("model.path: {}", ck.status().message()));
    return check;
  }
  auto dtype = weight_dtype(t, stored_matrix_dtype(**ck));
  LaunchCheck check = check_launch(t, &(*ck)->config(), dtype.ok() ? *dtype : DType::kF32);
  if (!dtype.ok()) check.problems.push_back(dtype.status().message());
  if (host_memory && check.ok() && backend_device(t.backend) == Device::kCpu) {
    if (auto p = check_host_memory(t, (*ck)->config(), check, launched_rank(),
                                   available_memory_bytes())) {
      check.problems.push_back(*p);
    }
  }
  return check;
}

// check_launch with the model opened from model.path; an unopenable model is one more problem,
// and so is `backend: cuda` on a kiln built without CUDA.
LaunchCheck check_with_model(const Topology& t, bool host_memory = false) {
  LaunchCheck check = check_with_model_file(t, host_memory);
  if (Status s = device_available(backend_device(t.backend)); !s.ok()) {
    check.problems.push_back(fmt::format("backend: {}", s.message()));
  }
  return check;
}

// The file's values without its cross-key rules, so they can be reported together with the
// model's problems: each key re-applied as an override. Only used when load_topology failed on
// those rules alone (its message is exactly validate_topology's list), else that error stands.
StatusOr<Topology> load_for_check(const std::string& path) {
  auto strict = load_topology(path);
  if (strict.ok()) return strict;
  Topology t;
  try {
    auto text = read_input_file(path, kMaxTopologyFileBytes);
    if (!text.ok()) return strict.status();
    const YAML::Node doc = YAML::Load(*text);
    const std::string dir = std::filesystem::absolute(path).parent_path().string();
    for (const auto& top : doc) {
      const std::string key = top.first.as<std::string>();
      const bool section = top.second.IsMap();
      for (const auto& entry : section ? top.second : YAML::Node(YAML::NodeType::Map)) {
        const std::string sub = key + "." + entry.first.as<std::string>();
        std::string value = YAML::Dump(entry.second);
        if ((sub == "model.path" || sub == "server.api_key_file") && !value.empty() &&
            std::filesystem::path(entry.second.as<std::string>()).is_relative()) {
          value = YAML::Dump(YAML::Node(dir + "/" + entry.second.as<std::string>()));
        }
        if (!apply_override(t, sub + "=" + value).ok()) return strict.status();
      }
      if (!section && !top.second.IsNull() &&
          !apply_override(t, key + "=" + YAML::Dump(top.second)).ok()) {
        return strict.status();
      }
    }
  } catch (const std::exception&) {
    return strict.status();
  }
  std::string expected;
  for (const std::string& p : validate_topology(t)) {
    expected += (expected.empty() ? "" : "\n") + (path + ": " + p);
  }
  if (expected != strict.status().message()) return strict.status();
  return t;
}

// Prints every problem as its own "kiln: error: FILE: ..." line; returns 1.
int fail_all(const std::string& source, const std::vector<std::string>& problems) {
  for (const std::string& p : problems) fail(source.empty() ? p : source + ": " + p);
  return 1;
}

struct CheckArgs {
  std::string file;
  std::vector<std::string> sets;
};

int run_check_config(const CheckArgs& a) {
  auto topology = load_for_check(a.file);
  if (!topology.ok()) return fail(topology.status());
  for (const std::string& assignment : a.sets) {
    Status s = apply_override(*topology, assignment);
    if (!s.ok()) return fail(s);
  }
  const LaunchCheck check = check_with_model(*topology);
  std::printf("# effective configuration of %s\n%s\n", a.file.c_str(),
              dump_topology(*topology).c_str());
  if (!check.ranks.empty()) {
    std::printf("placement (%zu ranks, tensor=%d x pipeline=%d):\n%s", check.ranks.size(),
                topology->parallel.tensor, topology->parallel.pipeline,
                format_placement(check.ranks).c_str());
  }
  std::fflush(stdout);
  if (!check.ok()) {
    std::fprintf(stderr, "kiln: error: %s: %zu problem(s)\n", a.file.c_str(),
                 check.problems.size());
    return fail_all(a.file, check.problems);
  }
  std::printf("%s: OK\n", a.file.c_str());
  return 0;
}

// threads = 0 in a topology: the host's cores shared among the ranks on it.
int shared_threads() {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / ranks);
}

// Explicit command-line flags, applied over the topology.
Status apply_flags(const CLI::App& sub, const RunSettings& flags, Topology& t) {
  if (sub.get_option("--model")->count() > 0) {
    t.model.path = std::filesystem::absolute(flags.model).lexically_normal().string();
  }
  if (sub.get_option("--tensor")->count() > 0 && flags.tensor > 0) t.parallel.tensor = flags.tensor;
  if (sub.get_option("--pipeline")->count() > 0) t.parallel.pipeline = flags.pipeline;
  if (sub.get_option("--threads")->count() > 0) t.threads = flags.threads;
  if (sub.get_option("--backend")->count() > 0) t.backend = flags.backend;
  const std::vector<std::string> problems = validate_topology(t);
  if (problems.empty()) return Status::ok_status();
  std::string joined;
  for (const std::string& p : problems) {
    if (!joined.empty()) joined += "; ";
    joined += p;
  }
  return invalid_argument("{}", joined);
}

}  // namespace

void add_config_flags(CLI::App* sub, ConfigFlags& flags) {
  sub->add_option("--config", flags.file, "Topology YAML (configs/README.md); flags override it");
  sub->add_option("--set", flags.sets, "Override one topology key: KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  sub->add_flag("--print-config", flags.print, "Print the effective merged topology and exit");
}

int resolve_config(const CLI::App& sub, const ConfigFlags& flags, RunSettings& settings,
                   Topology* topology) {
  if (flags.file.empty() && flags.sets.empty() && !flags.print && topology == nullptr) return -1;
  Topology t;
  if (!flags.file.empty()) {
    auto loaded = load_topology(flags.file);
    if (!loaded.ok()) return fail(loaded.status());
    t = std::move(*loaded);
  }
  for (const std::string& s : flags.sets) {
    Status st = apply_override(t, s);
    if (!st.ok()) return fail(st);
  }
  Status st = apply_flags(sub, settings, t);
  if (!st.ok()) return fail(st);
  if (flags.print) {
    std::printf("%s", dump_topology(t).c_str());
    return 0;
  }
  const LaunchCheck check = check_with_model(t, /*host_memory=*/true);
  if (!check.ok()) return fail_all(flags.file, check.problems);
  settings.model = t.model.path;
  settings.layer_split = t.parallel.layer_split;
  settings.tensor = t.parallel.tensor;
  settings.pipeline = t.parallel.pipeline;
  settings.threads = t.threads > 0 ? t.threads : shared_threads();
  settings.backend = t.backend;
  if (topology != nullptr) *topology = std::move(t);
  return -1;
}

void register_check_config(CLI::App& app, Runner& run) {
  auto a = std::make_shared<CheckArgs>();
  CLI::App* sub = app.add_subcommand(
      "check-config", "Check a topology file against its model and print the rank placement");
  sub->add_option("file", a->file, "Topology YAML")->required();
  sub->add_option("--set", a->sets, "Override one key: KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  sub->callback([&run, a] { run = [a] { return run_check_config(*a); }; });
}

}  // namespace kiln::launcher
