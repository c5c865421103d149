// Fuzz target for the topology parser, the entry `kiln check-config` and `kiln serve` use: the
// input is YAML text, optionally followed by a NUL byte and "dotted.key=value" overrides (one a
// line, as --set gives them). Any input must parse or fail with a Status naming the source, never
// crash, throw or hang. What is accepted must be valid, print back as YAML that parses equal, and
// place its ranks.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/topology/topology.h"

namespace {

constexpr char kSource[] = "/fuzz/topology.yaml";

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    lines.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

// An accepted topology is valid, round-trips through dump_topology and places its ranks.
void check_accepted(const kiln::Topology& t) {
  if (!kiln::validate_topology(t).empty()) std::abort();
  const std::string dumped = kiln::dump_topology(t);
  auto again = kiln::parse_topology(dumped, kSource);
  if (!again.ok() || !(*again == t)) {
    std::fprintf(stderr, "dump_topology does not read back equal:\n%s\nread back as:\n%s\n",
                 dumped.c_str(),
                 again.ok() ? kiln::dump_topology(*again).c_str() : again.status().message().c_str());
    std::abort();
  }
  auto placement = kiln::place_ranks(t);
  if (!placement.ok()) std::abort();
  if (static_cast<int64_t>(placement->size()) !=
      int64_t{t.parallel.tensor} * t.parallel.pipeline) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string yaml(input.substr(0, nul));
  auto t = kiln::parse_topology(yaml, kSource);
  if (!t.ok()) {
    if (t.status().message().find(kSource) == std::string::npos) std::abort();
    return 0;
  }
  check_accepted(*t);
  if (nul == std::string_view::npos) return 0;
  kiln::Topology overridden = *t;
  kiln::Status s = kiln::apply_overrides(overridden, split_lines(input.substr(nul + 1)));
  if (s.ok()) check_accepted(overridden);
  else if (s.message().empty()) std::abort();
  return 0;
}
