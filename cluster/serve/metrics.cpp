// Metrics registry and its Prometheus text rendering (format 0.0.4). Every public member takes
// mu_; render() holds it while it formats, so a scrape sees one consistent snapshot.
#include "cluster/serve/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "kernels/base/check.h"

namespace kiln::serve {
namespace {

constexpr std::string_view kPrefix = "kiln:";

bool valid_name(std::string_view s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Integers (exact in a double) without exponent or fraction; otherwise the shortest text that
// reads back to the same double (0.25, 1e-05); Prometheus spellings for the non-finite.
void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  std::to_chars_result r;
  if (v == std::trunc(v) && std::fabs(v) <= 0x1.0p53)
    r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
  else
    r = std::to_chars(buf, buf + sizeof buf, v);
  KILN_CHECK(r.ec == std::errc());
  out.append(buf, r.ptr);
}

// HELP text escaping: backslash and newline (format 0.0.4).
void append_help(std::string& out, std::string_view help) {
  for (const char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

// One sample line: kiln:<name><suffix>{<labels>[,<extra>]} <value>
void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                   std::string_view labels, std::string_view extra, double value) {
  out += kPrefix;
  out += name;
  out += suffix;
  if (!labels.empty() || !extra.empty()) {
    out += '{';
    out += labels;
    if (!labels.empty() && !extra.empty()) out += ',';
    out += extra;
    out += '}';
  }
  out += ' ';
  append_number(out, value);
  out += '\n';
}

const char* type_name(Metrics::Type type) {
  switch (type) {
    case Metrics::Type::kCounter:
      return "counter";
    case Metrics::Type::kGauge:
      return "gauge";
    case Metrics::Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

void Metrics::define(std::string_view name, Type type, std::string_view help,
                     std::vector<double> buckets) {
  KILN_CHECK_MSG(valid_name(name, true), std::string(name));
  if (type == Type::kHistogram) {
    for (size_t i = 0; i < buckets.size(); ++i)
      KILN_CHECK_MSG(std::isfinite(buckets[i]) && (i == 0 || buckets[i - 1] < buckets[i]),
                     std::string(name) + ": buckets must be finite and ascending");
  } else {
    KILN_CHECK_MSG(buckets.empty(), std::string(name) + ": buckets on a non-histogram");
  }
  std::lock_guard lock(mu_);
  Family family;
  family.type = type;
  family.help = help;
  family.buckets = std::move(buckets);
  const bool inserted = families_.emplace(std::string(name), std::move(family)).second;
  KILN_CHECK_MSG(inserted, std::string(name) + " defined twice");
}

Metrics::Family& Metrics::family(std::string_view name) {
  const auto it = families_.find(name);
  KILN_CHECK_MSG(it != families_.end(), std::string(name) + " not defined");
  return it->second;
}

Metrics::Series& Metrics::series(Family& family, std::string_view labels) {
  auto it = family.series.find(labels);
  if (it == family.series.end()) {
    it = family.series.emplace(std::string(labels), Series{}).first;
    if (family.type == Type::kHistogram) it->second.counts.assign(family.buckets.size() + 1, 0);
  }
  return it->second;
}

void Metrics::add(std::string_view name, double value, std::string_view labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name);
  KILN_CHECK_MSG(f.type != Type::kHistogram, std::string(name) + ": add() on a histogram");
  KILN_CHECK_MSG(f.type != Type::kCounter || value >= 0,
                 std::string(name) + ": counters only go up");
  series(f, labels).value += value;
}

void Metrics::set(std::string_view name, double value, std::string_view labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name);
  KILN_CHECK_MSG(f.type == Type::kGauge, std::string(name) + ": set() on a non-gauge");
  series(f, labels).value = value;
}

void Metrics::observe(std::string_view name, double value, std::string_view labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name);
  KILN_CHECK_MSG(f.type == Type::kHistogram, std::string(name) + ": observe() on a non-histogram");
  Series& s = series(f, labels);
  // Bucket i counts buckets[i-1] < v ≤ buckets[i]; NaN and v above every bound only +Inf.
  size_t i = f.buckets.size();
  if (!std::isnan(value))
    i = size_t(std::lower_bound(f.buckets.begin(), f.buckets.end(), value) - f.buckets.begin());
  ++s.counts[i];
  s.sum += value;
  ++s.count;
}

double Metrics::value(std::string_view name, std::string_view labels) const {
  std::lock_guard lock(mu_);
  const auto it = families_.find(name);
  KILN_CHECK_MSG(it != families_.end(), std::string(name) + " not defined");
  KILN_CHECK_MSG(it->second.type != Type::kHistogram, std::string(name) + " is a histogram");
  const auto s = it->second.series.find(labels);
  return s == it->second.series.end() ? 0.0 : s->second.value;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP ";
    out += kPrefix;
    out += name;
    out += ' ';
    append_help(out, f.help);
    out += "\n# TYPE ";
    out += kPrefix;
    out += name;
    out += ' ';
    out += type_name(f.type);
    out += '\n';
    for (const auto& [labels, s] : f.series) {
      if (f.type != Type::kHistogram) {
        append_sample(out, name, "", labels, "", s.value);
        continue;
      }
      uint64_t cumulative = 0;
      std::string le;
      for (size_t i = 0; i <= f.buckets.size(); ++i) {
        cumulative += s.counts[i];
        le = "le=\"";
        if (i < f.buckets.size())
          append_number(le, f.buckets[i]);
        else
          le += "+Inf";
        le += '"';
        append_sample(out, name, "_bucket", labels, le, static_cast<double>(cumulative));
      }
      append_sample(out, name, "_sum", labels, "", s.sum);
      append_sample(out, name, "_count", labels, "", static_cast<double>(s.count));
    }
  }
  return out;
}

std::string Metrics::label(std::string_view key, std::string_view value) {
  KILN_CHECK_MSG(valid_name(key, false) && !key.starts_with("__"), std::string(key));
  std::string out(key);
  out += "=\"";
  for (const char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  out += '"';
  return out;
}

}  // namespace kiln::serve
