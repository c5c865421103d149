// Metrics: the rendered exposition text golden-checked on a small registry, number formatting,
// label and help escaping, and exact sums under concurrent updates.
#include "cluster/serve/metrics.h"

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kiln::serve {
namespace {

using Type = Metrics::Type;

TEST(Metrics, RenderGolden) {
  Metrics m;
  m.define("requests_total", Type::kCounter, "Requests finished, by HTTP status.");
  m.define("num_requests_running", Type::kGauge, "Requests in the running batch.");
  m.define("time_to_first_token_seconds", Type::kHistogram, "Time to first token.",
           {0.005, 0.25, 1});
  m.define("step_time_seconds", Type::kHistogram, "Engine step time.", {0.5});
  m.define("rank_up", Type::kGauge, "1 while the rank answers.");  // never updated
  const auto ok = Metrics::label("status", "200");
  m.add("requests_total", 3, ok);
  m.add("requests_total", 1, Metrics::label("status", "400"));
  m.add("requests_total", 2, ok);
  m.set("num_requests_running", 4);
  m.add("num_requests_running", -1);
  for (double v : {0.5, 0.00390625, 2.0, 0.25}) m.observe("time_to_first_token_seconds", v);
  m.observe("step_time_seconds", 0.125, R"(rank="1")");
  m.observe("step_time_seconds", 0.75, R"(rank="0")");
  EXPECT_EQ(m.value("requests_total", ok), 5);
  EXPECT_EQ(m.value("requests_total", R"(status="500")"), 0);
  EXPECT_EQ(m.value("num_requests_running"), 3);
  EXPECT_EQ(m.render(),
            "# HELP kiln:num_requests_running Requests in the running batch.\n"
            "# TYPE kiln:num_requests_running gauge\n"
            "kiln:num_requests_running 3\n"
            "# HELP kiln:rank_up 1 while the rank answers.\n"
            "# TYPE kiln:rank_up gauge\n"
            "# HELP kiln:requests_total Requests finished, by HTTP status.\n"
            "# TYPE kiln:requests_total counter\n"
            "kiln:requests_total{status=\"200\"} 5\n"
            "kiln:requests_total{status=\"400\"} 1\n"
            "# HELP kiln:step_time_seconds Engine step time.\n"
            "# TYPE kiln:step_time_seconds histogram\n"
            "kiln:step_time_seconds_bucket{rank=\"0\",le=\"0.5\"} 0\n"
            "kiln:step_time_seconds_bucket{rank=\"0\",le=\"+Inf\"} 1\n"
            "kiln:step_time_seconds_sum{rank=\"0\"} 0.75\n"
            "kiln:step_time_seconds_count{rank=\"0\"} 1\n"
            "kiln:step_time_seconds_bucket{rank=\"1\",le=\"0.5\"} 1\n"
            "kiln:step_time_seconds_bucket{rank=\"1\",le=\"+Inf\"} 1\n"
            "kiln:step_time_seconds_sum{rank=\"1\"} 0.125\n"
            "kiln:step_time_seconds_count{rank=\"1\"} 1\n"
            "# HELP kiln:time_to_first_token_seconds Time to first token.\n"
            "# TYPE kiln:time_to_first_token_seconds histogram\n"
            "kiln:time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"
            "kiln:time_to_first_token_seconds_bucket{le=\"0.25\"} 2\n"  // 0.25 ≤ 0.25
            "kiln:time_to_first_token_seconds_bucket{le=\"1\"} 3\n"
            "kiln:time_to_first_token_seconds_bucket{le=\"+Inf\"} 4\n"
            "kiln:time_to_first_token_seconds_sum 2.75390625\n"
            "kiln:time_to_first_token_seconds_count 4\n");
}

TEST(Metrics, NumberFormatting) {
  Metrics m;
  m.define("g", Type::kGauge, "g");
  auto rendered = [&](double v) {
    m.set("g", v);
    const std::string text = m.render();
    const auto at = text.find("\nkiln:g ");
    return text.substr(at + 8, text.size() - at - 9);
  };
  EXPECT_EQ(rendered(12), "12");
  EXPECT_EQ(rendered(-3), "-3");
  EXPECT_EQ(rendered(0), "0");
  EXPECT_EQ(rendered(0.25), "0.25");
  EXPECT_EQ(rendered(1e-05), "1e-05");
  EXPECT_EQ(rendered(123456789012.0), "123456789012");
  EXPECT_EQ(rendered(1e20), "1e+20");
  EXPECT_EQ(rendered(0.1), "0.1");
  EXPECT_EQ(rendered(std::numeric_limits<double>::infinity()), "+Inf");
}

TEST(Metrics, LabelAndHelpEscaping) {
  EXPECT_EQ(Metrics::label("path", "a\\b\"c\nd"), R"(path="a\\b\"c\nd")");
  EXPECT_EQ(Metrics::label("status", ""), R"(status="")");
  Metrics m;
  m.define("c", Type::kCounter, "line one\nback\\slash");
  m.add("c", 1, Metrics::label("user", "x\"y"));
  EXPECT_EQ(m.render(),
            "# HELP kiln:c line one\\nback\\\\slash\n"
            "# TYPE kiln:c counter\n"
            "kiln:c{user=\"x\\\"y\"} 1\n");
}

TEST(Metrics, ConcurrentUpdatesSumExactly) {
  Metrics m;
  m.define("tokens_total", Type::kCounter, "t");
  m.define("running", Type::kGauge, "r");
  m.define("latency_seconds", Type::kHistogram, "l", {0.5});
  constexpr int kThreads = 4, kEach = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const auto lab = Metrics::label("worker", std::to_string(t % 2));
      for (int i = 0; i < kEach; ++i) {
        m.add("tokens_total", 1);
        m.add("tokens_total", 2, lab);
        m.add("running", (i % 2) ? -1 : 1);
        m.observe("latency_seconds", (i % 2) ? 0.25 : 1.0);
        if (i % 10000 == 0) (void)m.render();
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(m.value("tokens_total"), kThreads * kEach);
  EXPECT_EQ(m.value("tokens_total", R"(worker="0")"), 2.0 * 2 * kEach);
  EXPECT_EQ(m.value("tokens_total", R"(worker="1")"), 2.0 * 2 * kEach);
  EXPECT_EQ(m.value("running"), 0);
  const std::string text = m.render();
  EXPECT_NE(text.find("kiln:latency_seconds_bucket{le=\"0.5\"} 100000\n"), std::string::npos);
  EXPECT_NE(text.find("kiln:latency_seconds_bucket{le=\"+Inf\"} 200000\n"), std::string::npos);
  EXPECT_NE(text.find("kiln:latency_seconds_sum 125000\n"), std::string::npos);
  EXPECT_NE(text.find("kiln:latency_seconds_count 200000\n"), std::string::npos);
}

}  // namespace
}  // namespace kiln::serve
