// Running a shell command from a test and keeping what it printed.
#pragma once

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace kiln::test_util {

struct CommandResult {
  int code = -1;        // exit status, 128 + signal when killed; -1 when it could not start
  std::string output;   // what it wrote to stdout (redirect in `cmd` for stderr)
  double seconds = 0.0; // wall time
};

// Runs `cmd` through /bin/sh and reads its stdout to the end.
inline CommandResult run_command(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  CommandResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// `s` quoted for the shell.
inline std::string shell_quote(const std::string& s) {
  std::string q(1, '\'');
  for (char ch : s) {
    if (ch == '\'') {
      q.append("'\\''");
    } else {
      q.push_back(ch);
    }
  }
  q.push_back('\'');
  return q;
}

}  // namespace kiln::test_util
