// kiln launch: turns a topology file into an Open MPI job. Writes a hostfile (one "HOST slots=N"
// line per node, placement order) and runs mpirun --map-by slot so rank r lands where
// place_ranks puts it; every rank runs `kiln COMMAND --config FILE`. --dry-run prints both.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cluster/topology/launch_plan.h"
#include "launcher/commands.h"

namespace kiln::launcher {

namespace {

struct LaunchArgs {
  std::string file, command = "serve", mpirun = "mpirun";
  std::vector<std::string> sets, rest;
  bool dry_run = false;
};

StatusOr<std::string> self_path() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return internal_error("cannot resolve /proc/self/exe: {}", ec.message());
  return p.string();
}

// A fresh /tmp/kiln-launch-XXXXXX/hostfile holding `text`.
StatusOr<std::string> write_hostfile(const std::string& text) {
  std::string dir = (std::filesystem::temp_directory_path() / "kiln-launch-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) {
    return internal_error("cannot create a directory for the hostfile: {}", std::strerror(errno));
  }
  const std::string path = dir + "/hostfile";
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return internal_error("cannot write hostfile '{}'", path);
  return path;
}

// Splits what follows `--`: mpirun options, then (after a second `--`) the rank command's args.
void split_rest(const std::vector<std::string>& rest, LaunchOptions& o) {
  auto sep = std::find(rest.begin(), rest.end(), "--");
  o.mpirun_args.assign(rest.begin(), sep);
  if (sep != rest.end()) o.rank_args.assign(sep + 1, rest.end());
}

// Runs mpirun as a child and returns its exit code. mpirun answers SIGTERM/SIGINT by killing
// the job (SIGCONT, then SIGTERM odls_base_sigkill_timeout seconds later, default 1, then SIGKILL
// as long again), but forwards SIGUSR1 to every rank, and `kiln serve` drains on SIGUSR1 for
// scheduler.drain_timeout_s. So the first SIGTERM/SIGINT sent to `kiln launch` becomes a SIGUSR1
// to mpirun (a graceful drain: the job exits 0); a second one is passed on as SIGTERM (rank 0
// then ends every request before the SIGKILL, shutdown.h).
int run_mpirun(const std::vector<std::string>& argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  sigset_t old;
  ::sigprocmask(SIG_BLOCK, &set, &old);
  const pid_t child = ::fork();
  if (child < 0) return fail(fmt::format("cannot start '{}': {}", argv[0], std::strerror(errno)));
  if (child == 0) {
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    std::vector<char*> cargv;
    for (const std::string& arg : argv) cargv.push_back(const_cast<char*>(arg.c_str()));
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    std::fprintf(stderr, "kiln: error: cannot run '%s': %s\n", argv[0].c_str(),
                 std::strerror(errno));
    std::_Exit(127);
  }
  int forwarded = 0;
  for (;;) {
    int status = 0;
    if (::waitpid(child, &status, WNOHANG) == child) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    int sig = 0;
    if (::sigwait(&set, &sig) != 0 || sig == SIGCHLD) continue;
    ::kill(child, forwarded++ == 0 ? SIGUSR1 : SIGTERM);
  }
}

int run_launch(const LaunchArgs& a) {
  auto topology = load_topology(a.file);
  if (!topology.ok()) return fail(topology.status());
  Status s = apply_overrides(*topology, a.sets);
  if (!s.ok()) return fail(s);
  auto placement = place_ranks(*topology);
  if (!placement.ok()) return fail(placement.status());
  auto self = self_path();
  if (!self.ok()) return fail(self.status());
  auto hostfile = write_hostfile(hostfile_text(*placement));
  if (!hostfile.ok()) return fail(hostfile.status());
  LaunchOptions o;
  o.mpirun = a.mpirun;
  o.kiln_binary = *self;
  o.config_path = std::filesystem::absolute(a.file).lexically_normal().string();
  o.hostfile_path = *hostfile;
  o.command = a.command;
  o.overrides = a.sets;
  o.as_root = ::geteuid() == 0;
  split_rest(a.rest, o);
  const std::vector<std::string> argv = mpirun_argv(*placement, o);
  if (a.dry_run) {
    std::printf("# hostfile %s\n%s# command\n%s\n", o.hostfile_path.c_str(),
                hostfile_text(*placement).c_str(), shell_command_line(argv).c_str());
    return 0;
  }
  std::fflush(stdout);
  return run_mpirun(argv);
}

}  // namespace

void register_launch(CLI::App& app, Runner& run) {
  auto a = std::make_shared<LaunchArgs>();
  CLI::App* sub = app.add_subcommand(
      "launch",
      "Start a job from a topology file under mpirun: kiln launch FILE [options] "
      "[-- MPIRUN_ARGS... [-- COMMAND_ARGS...]]. Ranks get KILN_RANK_GPUS (cuda: GPU of each "
      "world rank, comma-separated, rank r uses entry r)");
  sub->add_option("file", a->file, "Topology YAML")->required();
  sub->add_option("rest", a->rest, "After --: extra mpirun options, then -- and the arguments "
                                   "of the rank command");
  sub->add_flag("--dry-run", a->dry_run, "Print the hostfile and the mpirun command; run nothing");
  sub->add_option("--set", a->sets, "Override one key: KEY=VALUE (repeatable; passed to ranks)")
      ->allow_extra_args(false);
  sub->add_option("--command", a->command, "kiln sub-command every rank runs")
      ->check(CLI::IsMember({"generate", "eval", "serve"}))->capture_default_str();
  sub->add_option("--mpirun", a->mpirun, "mpirun executable")->capture_default_str();
  sub->callback([&run, a] { run = [a] { return run_launch(*a); }; });
}

}  // namespace kiln::launcher
