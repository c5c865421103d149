// kiln serve: the OpenAI-compatible server. With --config everything comes from the topology
// (flags and --set override it); with --model alone it serves on one rank, or with TP = the MPI
// world under mpirun.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "cluster/serve/server.h"
#include "launcher/commands.h"

namespace kiln::launcher {

namespace {

struct ServeArgs {
  std::string model, host, api_key_file, name;
  int port = -1;
  int threads = 0, tensor = 0, pipeline = 1;
  bool exact_activations = false;
  std::string backend = "cpu";
  std::vector<int64_t> layer_split;
  std::string log_level = "info";
  ConfigFlags config;
};

int run_serve(const CLI::App& sub, ServeArgs& a) {
  auto level = spdlog::level::from_str(a.log_level);
  if (level == spdlog::level::off && a.log_level != "off") {
    return fail("serve: --log-level must be trace, debug, info, warn, error or off, not '" +
                a.log_level + "'");
  }
  spdlog::set_level(level);
  RunSettings r{a.model, a.tensor, a.pipeline, a.threads, {}, a.backend};
  Topology t;
  const int code = resolve_config(sub, a.config, r, &t);
  if (code >= 0) return code;
  if (t.model.path.empty()) return fail("serve: give --model or --config");
  if (Status s = device_available(backend_device(t.backend)); !s.ok()) return fail(s);
  if (!a.host.empty()) t.server.host = a.host;
  if (a.port >= 0) t.server.port = a.port;
  if (!a.api_key_file.empty()) {
    t.server.api_key_file = std::filesystem::absolute(a.api_key_file).string();
  }
  if (!a.name.empty()) t.model.name = a.name;
  serve::ServeRuntime rt;
  // Without a topology and without --tensor, every rank of the MPI job is one TP group.
  rt.tensor = (a.config.file.empty() && sub.get_option("--tensor")->count() == 0) ? 0 : r.tensor;
  rt.threads = r.threads;
  rt.exact_activations = a.exact_activations;
  Status s = serve::serve(t, rt);
  if (!s.ok()) return fail(s);
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, Runner& run) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sub = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API");
  sub->add_option("--model", a->model, "HF directory or GGUF file (or model.path of --config)");
  sub->add_option("--host", a->host, "Address to listen on (server.host, default 127.0.0.1)");
  sub->add_option("--port", a->port, "Port (server.port, default 8080; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--api-key-file", a->api_key_file,
                  "File with the accepted API keys, one per line (server.api_key_file)");
  sub->add_option("--served-model-name", a->name, "Model id for /v1/models (model.name)");
  sub->add_option("--log-level", a->log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  add_layout_options(sub, *a);
  add_config_flags(sub, a->config);
  sub->callback([&run, a, sub] { run = [a, sub] { return run_serve(*sub, *a); }; });
}

}  // namespace kiln::launcher
