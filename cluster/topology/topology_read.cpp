// Typed readers for topology values: integers, numbers, booleans, strings and byte sizes from
// yaml-cpp nodes, each failure reported with the key path, the offending value and its line;
// mapping walks that reject duplicate keys; near-miss suggestions for unknown keys.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "cluster/topology/topology_schema.h"
#include "shard/json_strict.h"

namespace kiln::topology_detail {
namespace {

// How a value looked, for messages: 'two', a sequence, a mapping, nothing.
std::string describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsSequence()) return "a sequence";
  if (node.IsMap()) return "a mapping";
  std::string s = node.Scalar();
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return fmt::format("'{}'", s);
}

// A plain (unquoted) scalar: quoted text is a string in YAML even when it looks like a number.
bool plain_scalar(const ReadCtx& ctx, const char* expected) {
  const YAML::Node& n = ctx.node;
  if (!n.IsDefined() || n.IsNull()) {
    ctx.fail(fmt::format("missing value (expected {})", expected));
    return false;
  }
  if (!n.IsScalar() || n.Tag() == "!") {
    const char* quoted = n.IsScalar() ? "the string " : "";
    ctx.fail(fmt::format("expected {}, got {}{}", expected, quoted, describe(n)));
    return false;
  }
  return true;
}

bool parse_int64(const std::string& s, int64_t& out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end && !s.empty();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

int line_of(const YAML::Node& node) {
  if (!node.IsDefined()) return 0;
  YAML::Mark m = node.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

void ReadCtx::fail(const std::string& message) const {
  std::string where = line > 0 ? fmt::format(" (line {})", line) : std::string();
  std::string prefix = path.empty() ? std::string() : path + ": ";
  errors->push_back(prefix + message + where);
}

ReadCtx ReadCtx::child(const std::string& sub_path, const YAML::Node& sub_node) const {
  int sub_line = line_of(sub_node);
  return ReadCtx{sub_path, sub_node, sub_line > 0 ? sub_line : line, base_dir, errors};
}

std::string suggestion(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 3;  // suggest only near misses: at most two edits
  for (const std::string& c : candidates) {
    // The distance is at least the length difference: skip the quadratic work for long keys.
    const size_t length_gap = key.size() > c.size() ? key.size() - c.size() : c.size() - key.size();
    if (length_gap >= best_distance) continue;
    size_t d = edit_distance(key, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", best);
}

void for_each_key(const ReadCtx& ctx,
                  const std::function<void(const std::string&, const YAML::Node&, int)>& fn) {
  if (!ctx.node.IsDefined() || ctx.node.IsNull()) return;  // an empty section
  if (!ctx.node.IsMap()) {
    ctx.fail(fmt::format("expected a mapping of keys, got {}", describe(ctx.node)));
    return;
  }
  std::set<std::string> seen;
  for (auto it = ctx.node.begin(); it != ctx.node.end(); ++it) {
    int line = line_of(it->first);
    std::string where = line > 0 ? fmt::format(" (line {})", line) : std::string();
    if (!it->first.IsScalar()) {
      ctx.errors->push_back(fmt::format("{}: keys must be plain names, got {}{}",
                                        ctx.path.empty() ? "top level" : ctx.path,
                                        describe(it->first), where));
      continue;
    }
    const std::string& key = it->first.Scalar();
    std::string full = ctx.path.empty() ? key : ctx.path + "." + key;
    if (!seen.insert(key).second) {
      ctx.errors->push_back(fmt::format("duplicate key '{}'{}", full, where));
      continue;
    }
    fn(key, it->second, line);
  }
}

bool read_int(const ReadCtx& ctx, int64_t& out) {
  if (!plain_scalar(ctx, "an integer")) return false;
  if (!parse_int64(ctx.node.Scalar(), out)) {
    ctx.fail(fmt::format("expected an integer, got {}", describe(ctx.node)));
    return false;
  }
  return true;
}

bool read_double(const ReadCtx& ctx, double& out) {
  if (!plain_scalar(ctx, "a number")) return false;
  const std::string& s = ctx.node.Scalar();
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  if (ec != std::errc() || ptr != end || s.empty() || !std::isfinite(out)) {
    ctx.fail(fmt::format("expected a finite number, got {}", describe(ctx.node)));
    return false;
  }
  return true;
}

bool read_bool(const ReadCtx& ctx, bool& out) {
  if (!plain_scalar(ctx, "true or false")) return false;
  const std::string& s = ctx.node.Scalar();
  if (s == "true" || s == "True" || s == "TRUE") {
    out = true;
  } else if (s == "false" || s == "False" || s == "FALSE") {
    out = false;
  } else {
    ctx.fail(fmt::format("expected true or false, got {}", describe(ctx.node)));
    return false;
  }
  return true;
}

bool read_string(const ReadCtx& ctx, std::string& out) {
  if (!ctx.node.IsDefined() || ctx.node.IsNull()) {
    // `key: ""` is an empty string; `key:` with nothing is a forgotten value.
    if (ctx.node.IsDefined() && ctx.node.Tag() == "!") {
      out.clear();
      return true;
    }
    ctx.fail("missing value (expected a string)");
    return false;
  }
  if (!ctx.node.IsScalar()) {
    ctx.fail(fmt::format("expected a string, got {}", describe(ctx.node)));
    return false;
  }
  const std::string& text = ctx.node.Scalar();
  // YAML is UTF-8 text; yaml-cpp passes invalid bytes (and escapes of surrogates) through, which
  // dump_topology could not write back, and a NUL would cut a path or host name short.
  if (const size_t bad = first_invalid_utf8(text); bad != text.size()) {
    ctx.fail(fmt::format("not valid UTF-8 (byte {} of the string)", bad));
    return false;
  }
  if (text.find('\0') != std::string::npos) {
    ctx.fail("contains a NUL character");
    return false;
  }
  out = text;
  return true;
}

bool read_size(const ReadCtx& ctx, int64_t& out) {
  if (!ctx.node.IsDefined() || ctx.node.IsNull() || !ctx.node.IsScalar()) {
    ctx.fail(fmt::format("expected a byte size (e.g. 4096 or 80GiB), got {}", describe(ctx.node)));
    return false;
  }
  const std::string& s = ctx.node.Scalar();
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  std::string unit = s.substr(digits);
  unit.erase(0, unit.find_first_not_of(' '));
  static const std::vector<std::pair<std::string, int64_t>> kUnits = {{"", 1},
                                                                      {"B", 1},
                                                                      {"KB", 1000},
                                                                      {"MB", 1000000},
                                                                      {"GB", 1000000000},
                                                                      {"TB", 1000000000000},
                                                                      {"KiB", int64_t{1} << 10},
                                                                      {"MiB", int64_t{1} << 20},
                                                                      {"GiB", int64_t{1} << 30},
                                                                      {"TiB", int64_t{1} << 40}};
  auto u =
      std::find_if(kUnits.begin(), kUnits.end(), [&](const auto& p) { return p.first == unit; });
  int64_t count = 0;
  if (digits == 0 || u == kUnits.end() || !parse_int64(s.substr(0, digits), count)) {
    ctx.fail(fmt::format("expected a byte size (e.g. 4096 or 80GiB), got {}", describe(ctx.node)));
    return false;
  }
  if (count > std::numeric_limits<int64_t>::max() / u->second) {
    ctx.fail(fmt::format("byte size {} does not fit in 63 bits", describe(ctx.node)));
    return false;
  }
  out = count * u->second;
  return true;
}

}  // namespace kiln::topology_detail
