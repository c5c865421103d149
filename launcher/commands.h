// Sub-commands of the kiln executable. Each registers its flags on the app and stores a runner
// that returns the process exit code; failures print one line naming what was wrong.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "kernels/base/status.h"

namespace kiln::launcher {

using Runner = std::function<int()>;

void register_make_model(CLI::App& app, Runner& run);
void register_inspect(CLI::App& app, Runner& run);
void register_generate(CLI::App& app, Runner& run);
void register_eval(CLI::App& app, Runner& run);
void register_bench(CLI::App& app, Runner& run);

// Prints "kiln: error: <message>" and returns 1.
int fail(const Status& status);
int fail(const std::string& message);

}  // namespace kiln::launcher
