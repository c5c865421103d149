// Reading a topology: YAML text or file → Topology (every unknown key, duplicate key and bad
// value reported with its path and line, then structural validation), "dotted.key=value"
// overrides checked by the same key table, and the effective config written back as YAML.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>

#include "cluster/topology/topology.h"
#include "cluster/topology/topology_schema.h"
#include "shard/input_file.h"

namespace kiln {
namespace {

using topology_detail::Field;
using topology_detail::ReadCtx;

constexpr size_t kMaxTopologyBytes = kMaxTopologyFileBytes;
constexpr size_t kMaxListedProblems = 20;

std::vector<std::string> known_keys() {
  std::vector<std::string> keys;
  for (const Field& f : topology_detail::topology_fields()) {
    keys.push_back(f.path);
    if (size_t dot = f.path.find('.'); dot != std::string::npos)
      keys.push_back(f.path.substr(0, dot));
  }
  return keys;
}

std::string unknown_key_message(const std::string& path, int line) {
  std::string where = line > 0 ? fmt::format(" (line {})", line) : std::string();
  return fmt::format("unknown key '{}'{}{}", path, where,
                     topology_detail::suggestion(path, known_keys()));
}

// Reads every key of one mapping level into `t`, recursing into sections.
void walk(Topology& t, const ReadCtx& ctx) {
  topology_detail::for_each_key(ctx,
                                [&](const std::string& key, const YAML::Node& value, int line) {
                                  std::string path = ctx.path.empty() ? key : ctx.path + "." + key;
                                  ReadCtx c = ctx.child(path, value);
                                  if (c.line == 0 || value.IsNull()) c.line = line;
                                  if (const Field* f = topology_detail::find_field(path)) {
                                    f->set(t, c);
                                  } else if (topology_detail::is_section(path)) {
                                    walk(t, c);
                                  } else {
                                    ctx.errors->push_back(unknown_key_message(path, line));
                                  }
                                });
}

// One line per problem, the first kMaxListedProblems of them (a 1 MiB file of bad keys would
// otherwise give a message of megabytes), then how many more there are.
Status problems_status(const std::string& prefix, const std::vector<std::string>& problems) {
  std::string text;
  const size_t listed = std::min(problems.size(), kMaxListedProblems);
  for (size_t i = 0; i < listed; ++i) {
    if (!text.empty()) text += '\n';
    text += prefix + ": " + problems[i];
  }
  if (problems.size() > listed) {
    text += fmt::format("\n{}: ... and {} more problems", prefix, problems.size() - listed);
  }
  return invalid_argument("{}", text);
}

std::string node_kind(const YAML::Node& n) {
  return n.IsSequence() ? "a sequence" : fmt::format("the scalar '{}'", n.Scalar());
}

// Counts the documents of a YAML stream without building them. YAML::LoadAll of yaml-cpp 0.7
// never returns on some malformed input (",", ", b]\n: ]"): its parser keeps yielding documents
// that are one null at the same token. Such a repeat is reported as a syntax error there.
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override { events_ = 0; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override {
    if (++events_ == 1) null_at_ = mark;
  }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { ++events_; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    ++events_;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    ++events_;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    ++events_;
  }
  void OnMapEnd() override {}

  // The document just parsed is a lone null.
  bool lone_null() const { return events_ == 1 && !null_at_.is_null(); }
  const YAML::Mark& null_at() const { return null_at_; }
  void forget_null() { null_at_ = YAML::Mark::null_mark(); }

 private:
  int events_ = 0;
  YAML::Mark null_at_ = YAML::Mark::null_mark();
};

// Number of documents in `text` (at most kMaxCountedDocuments + 1); throws YAML::Exception.
constexpr int kMaxCountedDocuments = 64;
int count_documents(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  int docs = 0;
  std::optional<YAML::Mark> previous_null;
  while (docs <= kMaxCountedDocuments && parser.HandleNextDocument(counter)) {
    ++docs;
    if (!counter.lone_null()) {
      previous_null.reset();
    } else if (previous_null && previous_null->pos == counter.null_at().pos) {
      const size_t at = static_cast<size_t>(std::max(0, counter.null_at().pos));
      throw YAML::ParserException(counter.null_at(),
                                  fmt::format("unexpected '{}'", text.substr(at, 1)));
    } else {
      previous_null = counter.null_at();
    }
    counter.forget_null();
  }
  return docs;
}

StatusOr<YAML::Node> load_document(const std::string& text, const std::string& source) {
  if (text.size() > kMaxTopologyBytes) {
    return invalid_argument("{}: file is {} bytes; a topology is at most {} bytes", source,
                            text.size(), kMaxTopologyBytes);
  }
  YAML::Node doc;
  try {
    const int docs = count_documents(text);
    if (docs > kMaxCountedDocuments) {
      return invalid_argument("{}: more than {} YAML documents ('---'); a topology is one document",
                              source, kMaxCountedDocuments);
    }
    if (docs > 1) {
      return invalid_argument("{}: {} YAML documents ('---'); a topology is one document", source,
                              docs);
    }
    if (docs == 1) doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return invalid_argument("{}: YAML syntax error at line {}, column {}: {}", source,
                            e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (!doc.IsDefined() || doc.IsNull()) {
    return invalid_argument(
        "{}: empty file; expected a mapping of topology keys "
        "(model, backend, parallel, ...)",
        source);
  }
  if (!doc.IsMap()) {
    return invalid_argument(
        "{}: top level must be a mapping of topology keys (model, backend, "
        "parallel, ...), got {} (line {})",
        source, node_kind(doc), topology_detail::line_of(doc));
  }
  return doc;
}

StatusOr<Topology> parse_document(const YAML::Node& doc, const std::string& source) {
  Topology t;
  std::vector<std::string> errors;
  std::string base_dir = std::filesystem::path(source).parent_path().string();
  walk(t, ReadCtx{"", doc, 0, base_dir, &errors});
  // Cross-key rules only once every value read well: a bad value would cause false follow-ups.
  if (errors.empty()) errors = validate_topology(t);
  if (!errors.empty()) return problems_status(source, errors);
  return t;
}

}  // namespace

StatusOr<Topology> parse_topology(const std::string& yaml_text, const std::string& source_name) {
  try {
    KILN_ASSIGN_OR_RETURN(YAML::Node doc, load_document(yaml_text, source_name));
    return parse_document(doc, source_name);
  } catch (const std::exception& e) {  // yaml-cpp documents no throws past load; be sure
    return invalid_argument("{}: cannot read topology: {}", source_name, e.what());
  }
}

StatusOr<Topology> load_topology(const std::string& path) {
  auto text = read_input_file(path, kMaxTopologyBytes);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) {
    return not_found("{}: no such topology file", path);
  }
  if (!text.ok()) return text.status();
  return parse_topology(*text, path);
}

Status apply_override(Topology& topology, const std::string& assignment) {
  std::string where = fmt::format("override '{}'", assignment);
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("{}: expected key=value, e.g. parallel.tensor=2", where);
  }
  std::string key = assignment.substr(0, eq);
  const Field* field = topology_detail::find_field(key);
  if (field == nullptr) {
    if (topology_detail::is_section(key)) {
      return invalid_argument("{}: '{}' is a section; set one of its keys, e.g. {}.<key>=value",
                              where, key, key);
    }
    return invalid_argument("{}: {}", where, unknown_key_message(key, 0));
  }
  std::vector<std::string> errors;
  try {
    YAML::Node value = YAML::Load(assignment.substr(eq + 1));
    field->set(topology, ReadCtx{key, value, 0, "", &errors});
  } catch (const YAML::Exception& e) {
    return invalid_argument("{}: value is not valid YAML: {}", where, e.msg);
  }
  if (!errors.empty()) return problems_status(where, errors);
  return Status::ok_status();
}

Status apply_overrides(Topology& topology, const std::vector<std::string>& assignments) {
  std::vector<std::string> problems;
  for (const std::string& a : assignments) {
    Status s = apply_override(topology, a);
    if (!s.ok()) problems.push_back(s.message());
  }
  if (problems.empty()) {
    for (const std::string& p : validate_topology(topology)) problems.push_back("config: " + p);
  }
  if (problems.empty()) return Status::ok_status();
  std::string text;
  for (const std::string& p : problems) text += (text.empty() ? "" : "\n") + p;
  return invalid_argument("{}", text);
}

std::string dump_topology(const Topology& topology) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;  // the section whose mapping is open, "" at the top level
  for (const Field& f : topology_detail::topology_fields()) {
    size_t dot = f.path.find('.');
    std::string s = dot == std::string::npos ? "" : f.path.substr(0, dot);
    if (s != section) {
      if (!section.empty()) out << YAML::EndMap;
      if (!s.empty()) out << YAML::Key << s << YAML::Value << YAML::BeginMap;
      section = s;
    }
    out << YAML::Key << f.path.substr(dot == std::string::npos ? 0 : dot + 1) << YAML::Value;
    f.emit(topology, out);
    if (f.path == "nodes" && topology.nodes.empty()) {
      out << YAML::Comment(
          fmt::format("implicit: localhost with {} slots", effective_nodes(topology)[0].slots));
    }
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace kiln
