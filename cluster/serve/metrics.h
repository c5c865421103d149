// Prometheus metrics (text exposition format 0.0.4): counters, gauges and histograms with label
// sets, registered once by name, updated from any thread, rendered for GET /metrics.
// Names are given without the "kiln:" prefix, which render() adds. Thread-safe: every member
// takes one mutex.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::serve {

class Metrics {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  // Registers a family; `buckets` (upper bounds, ascending, +Inf implied) for histograms.
  // Registering a name twice is a bug (KILN_CHECK).
  void define(std::string_view name, Type type, std::string_view help,
              std::vector<double> buckets = {});
  // labels: Prometheus label text without braces, e.g. R"(status="200")", or empty. A family
  // that was not defined is a bug (KILN_CHECK). Label values are escaped by the caller via
  // label(); series render sorted by label text. A series exists from its first update (add 0 to
  // show one early). The wrong update for a family's type, or a negative counter add, is a bug.
  void add(std::string_view name, double value, std::string_view labels = {});  // counter / gauge
  void set(std::string_view name, double value, std::string_view labels = {});  // gauge
  void observe(std::string_view name, double value, std::string_view labels = {});  // histogram
  // Counter / gauge value; 0 for a series never updated.
  double value(std::string_view name, std::string_view labels = {}) const;
  // Text exposition: "# HELP", "# TYPE", then series; histogram _bucket{le=...} (cumulative),
  // _sum, _count. Families sorted by name. Integral values print as integers ("12"), others in
  // the shortest round-trip form ("0.25", "1e-05"); non-finite as +Inf, -Inf, NaN.
  std::string render() const;

  // `key="escaped value"` (backslash, quote and newline escaped).
  static std::string label(std::string_view key, std::string_view value);

 private:
  struct Series {
    double value = 0;              // counter / gauge
    std::vector<uint64_t> counts;  // histogram: per bucket (non-cumulative) + the +Inf bucket
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type = Type::kCounter;
    std::string help;
    std::vector<double> buckets;
    std::map<std::string, Series, std::less<>> series;  // by label text
  };
  // Both need mu_ held. family(): the defined family (KILN_CHECK). series(): created on first use.
  Family& family(std::string_view name);
  static Series& series(Family& family, std::string_view labels);

  mutable std::mutex mu_;  // guards families_ and everything in it
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace kiln::serve
