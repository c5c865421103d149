// The kiln command line: parses the sub-command and runs it.
#include <cstdio>
#include <exception>
#include <new>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cluster/version.h"
#include "launcher/commands.h"

int main(int argc, char** argv) {
  // Logs go to stderr (stdout carries generated text and command output).
  spdlog::set_default_logger(spdlog::stderr_color_mt("kiln"));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  CLI::App app{"kiln: a Kimi-Linear inference engine"};
  app.set_version_flag("--version", kiln::version_string());
  app.require_subcommand(1);
  kiln::launcher::Runner run;
  kiln::launcher::register_make_model(app, run);
  kiln::launcher::register_inspect(app, run);
  kiln::launcher::register_generate(app, run);
  kiln::launcher::register_eval(app, run);
  kiln::launcher::register_bench(app, run);
  kiln::launcher::register_check_config(app, run);
  kiln::launcher::register_launch(app, run);
  kiln::launcher::register_serve(app, run);
  auto is_command = [&app](const std::string& name) {
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      if (sub->get_name() == name) return true;
    }
    return false;
  };
  if (argc > 1 && argv[1][0] != '-' && !is_command(argv[1])) {
    std::fprintf(stderr, "kiln: error: unknown command '%s' (run 'kiln --help' for the list)\n",
                 argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return e.get_exit_code() == 0 ? 2 : e.get_exit_code();
  }
  // Each set-up step reports its own allocation failures naming the file or key; this is the
  // last net, so that nothing ends in std::terminate.
  try {
    return run ? run() : 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kiln: error: %s: out of memory\n", argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: error: %s: unexpected failure: %s\n", argv[1], e.what());
  }
  return 1;
}
