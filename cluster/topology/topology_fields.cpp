// The table of topology keys: each entry reads one dotted path with its type and range, re-checks
// it on a struct, and writes it back. Ranges live here only. Defaults live in topology.h.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cluster/topology/topology_schema.h"

namespace kiln::topology_detail {
namespace {

constexpr int64_t kMaxRanks = 4096;
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();

std::string range_text(auto v, auto lo, auto hi) {
  if (hi == std::numeric_limits<decltype(hi)>::max()) {
    return fmt::format("must be at least {}, got {}", lo, v);
  }
  return fmt::format("must be between {} and {}, got {}", lo, hi, v);
}

// `ref` is a generic lambda returning a reference to the member in a (const) Topology.
template <typename Ref>
Field int_field(std::string path, Ref ref, int64_t lo, int64_t hi, bool is_size = false) {
  Field f;
  f.path = path;
  f.set = [ref, lo, hi, is_size](Topology& t, const ReadCtx& c) {
    int64_t v = 0;
    if (!(is_size ? read_size(c, v) : read_int(c, v))) return;
    if (v < lo || v > hi) return c.fail(range_text(v, lo, hi));
    ref(t) = static_cast<std::remove_reference_t<decltype(ref(t))>>(v);
  };
  f.check = [path, ref, lo, hi](const Topology& t, std::vector<std::string>& p) {
    int64_t v = ref(t);
    if (v < lo || v > hi) p.push_back(path + ": " + range_text(v, lo, hi));
  };
  f.emit = [ref](const Topology& t, YAML::Emitter& e) { e << static_cast<int64_t>(ref(t)); };
  return f;
}

template <typename Ref>
Field size_field(std::string path, Ref ref, int64_t lo) {
  return int_field(std::move(path), ref, lo, kI64Max, /*is_size=*/true);
}

template <typename Ref>
Field double_field(std::string path, Ref ref, double lo, double hi) {
  Field f;
  f.path = path;
  f.set = [ref, lo, hi](Topology& t, const ReadCtx& c) {
    double v = 0;
    if (!read_double(c, v)) return;
    if (v < lo || v > hi) return c.fail(range_text(v, lo, hi));
    ref(t) = v;
  };
  f.check = [path, ref, lo, hi](const Topology& t, std::vector<std::string>& p) {
    double v = ref(t);
    if (!(v >= lo && v <= hi)) p.push_back(path + ": " + range_text(v, lo, hi));
  };
  // Shortest text that reads back to the same double.
  f.emit = [ref](const Topology& t, YAML::Emitter& e) { e << fmt::format("{}", ref(t)); };
  return f;
}

template <typename Ref>
Field bool_field(std::string path, Ref ref) {
  Field f;
  f.path = path;
  f.set = [ref](Topology& t, const ReadCtx& c) {
    bool v = false;
    if (read_bool(c, v)) ref(t) = v;
  };
  f.check = [](const Topology&, std::vector<std::string>&) {};
  f.emit = [ref](const Topology& t, YAML::Emitter& e) { e << (ref(t) ? "true" : "false"); };
  return f;
}

// A string from a fixed list (empty list = any string; `allow_empty` = may be "").
template <typename Ref>
Field string_field(std::string path, Ref ref, std::vector<std::string> choices, bool allow_empty) {
  auto problem = [choices, allow_empty](const std::string& v) -> std::string {
    if (v.empty()) return allow_empty ? std::string() : "must not be empty";
    if (choices.empty() || std::find(choices.begin(), choices.end(), v) != choices.end()) {
      return {};
    }
    return fmt::format("must be one of {}, got '{}'", fmt::join(choices, ", "), v);
  };
  Field f;
  f.path = path;
  f.set = [ref, problem](Topology& t, const ReadCtx& c) {
    std::string v;
    if (!read_string(c, v)) return;
    if (std::string p = problem(v); !p.empty()) return c.fail(p);
    ref(t) = v;
  };
  f.check = [path, ref, problem](const Topology& t, std::vector<std::string>& p) {
    if (std::string m = problem(ref(t)); !m.empty()) p.push_back(path + ": " + m);
  };
  // Free text is quoted so that "123", "yes" or "" read back as the same string.
  bool quote = choices.empty();
  f.emit = [ref, quote](const Topology& t, YAML::Emitter& e) {
    if (quote) e << YAML::DoubleQuoted;
    e << ref(t);
  };
  return f;
}

// A file path: relative ones resolve against the YAML file's directory; "" = not set.
template <typename Ref>
Field path_field(std::string path, Ref ref) {
  Field f = string_field(std::move(path), ref, {}, /*allow_empty=*/true);
  f.set = [ref](Topology& t, const ReadCtx& c) {
    std::string v;
    if (!read_string(c, v)) return;
    if (v.empty()) return void(ref(t).clear());
    namespace fs = std::filesystem;
    fs::path p = fs::path(c.base_dir) / v;  // an absolute v replaces base_dir
    std::error_code ec;
    fs::path abs = fs::absolute(p, ec);
    ref(t) = (ec ? p : abs).lexically_normal().string();
  };
  return f;
}

Field layer_split_field() {
  Field f;
  f.path = "parallel.layer_split";
  f.set = [](Topology& t, const ReadCtx& c) {
    if (!c.node.IsSequence()) return c.fail("expected a sequence of layer counts, e.g. [13, 14]");
    std::vector<int64_t> split;
    for (size_t i = 0; i < c.node.size(); ++i) {
      ReadCtx item = c.child(fmt::format("{}[{}]", c.path, i), c.node[i]);
      int64_t v = 0;
      if (!read_int(item, v)) return;
      if (v < 1 || v > kMaxRanks) return item.fail(range_text(v, int64_t{1}, kMaxRanks));
      split.push_back(v);
    }
    t.parallel.layer_split = std::move(split);
  };
  f.check = [](const Topology& t, std::vector<std::string>& p) {
    for (size_t i = 0; i < t.parallel.layer_split.size(); ++i) {
      int64_t v = t.parallel.layer_split[i];
      if (v < 1 || v > kMaxRanks) {
        p.push_back(fmt::format("parallel.layer_split[{}]: {}", i, range_text(v, 1, kMaxRanks)));
      }
    }
  };
  f.emit = [](const Topology& t, YAML::Emitter& e) { e << YAML::Flow << t.parallel.layer_split; };
  return f;
}

Field cors_field() {
  Field f;
  f.path = "server.cors_allow_origins";
  f.set = [](Topology& t, const ReadCtx& c) {
    if (!c.node.IsSequence()) return c.fail("expected a sequence of origins");
    std::vector<std::string> origins;
    for (size_t i = 0; i < c.node.size(); ++i) {
      ReadCtx item = c.child(fmt::format("{}[{}]", c.path, i), c.node[i]);
      std::string v;
      if (!read_string(item, v)) return;
      if (v.empty()) return item.fail("must not be empty");
      origins.push_back(v);
    }
    t.server.cors_allow_origins = std::move(origins);
  };
  f.check = [](const Topology& t, std::vector<std::string>& p) {
    for (const std::string& o : t.server.cors_allow_origins) {
      if (o.empty()) p.push_back("server.cors_allow_origins: an origin is empty");
    }
  };
  f.emit = [](const Topology& t, YAML::Emitter& e) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const std::string& o : t.server.cors_allow_origins) e << YAML::DoubleQuoted << o;
    e << YAML::EndSeq;
  };
  return f;
}

Field nodes_field() {
  Field f;
  f.path = "nodes";
  f.set = [](Topology& t, const ReadCtx& c) { read_nodes(c, t.nodes); };
  f.check = check_nodes;
  f.emit = [](const Topology& t, YAML::Emitter& e) { emit_nodes(t.nodes, e); };
  return f;
}

std::vector<Field> make_fields() {
  // clang-format off
  return {
    path_field("model.path", [](auto& t) -> auto& { return t.model.path; }),
    string_field("model.dtype", [](auto& t) -> auto& { return t.model.dtype; },
                 {"auto", "f32", "f16", "bf16", "q8_0"}, false),
    string_field("model.name", [](auto& t) -> auto& { return t.model.name; }, {}, true),
    string_field("backend", [](auto& t) -> auto& { return t.backend; }, {"cpu", "cuda"}, false),
    int_field("threads", [](auto& t) -> auto& { return t.threads; }, 0, 4096),
    int_field("parallel.tensor", [](auto& t) -> auto& { return t.parallel.tensor; }, 1, kMaxRanks),
    int_field("parallel.pipeline", [](auto& t) -> auto& { return t.parallel.pipeline; }, 1,
              kMaxRanks),
    layer_split_field(),
    nodes_field(),
    string_field("server.host", [](auto& t) -> auto& { return t.server.host; }, {}, false),
    int_field("server.port", [](auto& t) -> auto& { return t.server.port; }, 1, 65535),
    path_field("server.api_key_file", [](auto& t) -> auto& { return t.server.api_key_file; }),
    bool_field("server.metrics_require_key",
               [](auto& t) -> auto& { return t.server.metrics_require_key; }),
    cors_field(),
    size_field("server.max_body_bytes", [](auto& t) -> auto& { return t.server.max_body_bytes; },
               1024),
    size_field("server.max_header_bytes",
               [](auto& t) -> auto& { return t.server.max_header_bytes; }, 1024),
    double_field("server.read_timeout_s", [](auto& t) -> auto& { return t.server.read_timeout_s; },
                 0.001, 86400),
    double_field("server.write_timeout_s",
                 [](auto& t) -> auto& { return t.server.write_timeout_s; }, 0.001, 86400),
    int_field("server.max_connections", [](auto& t) -> auto& { return t.server.max_connections; },
              1, 1000000),
    int_field("server.max_n", [](auto& t) -> auto& { return t.server.max_n; }, 1, 1024),
    int_field("server.max_top_logprobs",
              [](auto& t) -> auto& { return t.server.max_top_logprobs; }, 0, 20),
    int_field("server.max_stop_strings",
              [](auto& t) -> auto& { return t.server.max_stop_strings; }, 0, 64),
    int_field("server.max_stop_length", [](auto& t) -> auto& { return t.server.max_stop_length; },
              1, 65536),
    int_field("server.max_tokens", [](auto& t) -> auto& { return t.server.max_tokens; }, 0,
              int64_t{1} << 30),
    int_field("scheduler.max_batch_tokens",
              [](auto& t) -> auto& { return t.scheduler.max_batch_tokens; }, 1, int64_t{1} << 24),
    int_field("scheduler.max_sequences",
              [](auto& t) -> auto& { return t.scheduler.max_sequences; }, 1, 65536),
    int_field("scheduler.prefill_chunk",
              [](auto& t) -> auto& { return t.scheduler.prefill_chunk; }, 1, int64_t{1} << 24),
    int_field("scheduler.max_queue", [](auto& t) -> auto& { return t.scheduler.max_queue; }, 0,
              1000000),
    double_field("scheduler.drain_timeout_s",
                 [](auto& t) -> auto& { return t.scheduler.drain_timeout_s; }, 0, 3600),
    double_field("scheduler.step_timeout_s",
                 [](auto& t) -> auto& { return t.scheduler.step_timeout_s; }, 0.1, 3600),
    int_field("cache.page_tokens", [](auto& t) -> auto& { return t.cache.page_tokens; }, 1, 4096),
    int_field("cache.max_context", [](auto& t) -> auto& { return t.cache.max_context; }, 0,
              int64_t{1} << 30),
    int_field("cache.max_pages", [](auto& t) -> auto& { return t.cache.max_pages; }, 0,
              int64_t{1} << 40),
  };
  // clang-format on
}

}  // namespace

const std::vector<Field>& topology_fields() {
  static const std::vector<Field> fields = make_fields();
  return fields;
}

const Field* find_field(const std::string& path) {
  for (const Field& f : topology_fields()) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

bool is_section(const std::string& path) {
  const std::string prefix = path + ".";
  return std::any_of(topology_fields().begin(), topology_fields().end(),
                     [&](const Field& f) { return f.path.starts_with(prefix); });
}

}  // namespace kiln::topology_detail
