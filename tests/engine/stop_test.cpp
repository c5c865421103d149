// StopMatcher: stops spanning pushes, held-back prefixes released, earliest of several stops,
// overlapping prefixes, multi-byte UTF-8 stop strings and flush.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/engine/sampling.h"

namespace kiln::serve {
namespace {

// Pushes every piece; returns everything emitted (plus the flush when no stop) and whether it
// stopped. Checks that nothing is emitted once stopped.
struct Run {
  std::string text;
  bool stopped = false;
};
Run run(std::vector<std::string> stops, const std::vector<std::string>& pieces) {
  StopMatcher m(std::move(stops));
  Run out;
  for (const auto& p : pieces) {
    auto r = m.push(p);
    if (out.stopped) {
      EXPECT_TRUE(r.emit.empty()) << "emitted after the stop: " << r.emit;
      EXPECT_TRUE(r.stopped);
      continue;
    }
    out.text += r.emit;
    out.stopped = r.stopped;
  }
  if (!out.stopped) out.text += m.flush();
  return out;
}

TEST(StopMatcher, StopAcrossTokenBoundaries) {
  StopMatcher m({"lo W"});
  auto r = m.push("Hel");
  EXPECT_EQ(r.emit, "He");  // "l" may start the stop
  EXPECT_FALSE(r.stopped);
  r = m.push("lo Wor");
  EXPECT_EQ(r.emit, "l");
  EXPECT_TRUE(r.stopped);
  r = m.push("ld");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, HeldPrefixIsReleasedWhenItIsNotAStop) {
  StopMatcher m({"lo W"});
  EXPECT_EQ(m.push("Hello").emit, "Hel");  // "lo" held
  EXPECT_EQ(m.push(" ").emit, "");         // "lo " held
  const auto r = m.push("there");
  EXPECT_EQ(r.emit, "lo there");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.push("l").emit, "");
  EXPECT_EQ(m.flush(), "l");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSpanningManyPushes) {
  const auto r = run({"STOP"}, {"ab", "S", "T", "O", "P", "cd"});
  EXPECT_EQ(r.text, "ab");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  auto r = run({"world", "lo"}, {"Hello world"});
  EXPECT_EQ(r.text, "Hel");
  EXPECT_TRUE(r.stopped);
  r = run({"cd", "bcde"}, {"a", "bcdef"});  // both complete in the same push: "bcde" starts first
  EXPECT_EQ(r.text, "a");
  r = run({"xyz", "b"}, {"aaxy", "b"});  // "xy" held for "xyz", then "b" completes first
  EXPECT_EQ(r.text, "aaxy");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, StopAtTheVeryStart) {
  auto r = run({"Hi"}, {"Hi there"});
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  r = run({"Hi"}, {"H", "i", " there"});
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, OverlappingPrefixes) {
  StopMatcher m({"aab"});
  EXPECT_EQ(m.push("aaa").emit, "a");  // "aa" held
  const auto r = m.push("b");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(run({"aab"}, {"a", "a", "a", "b"}).text, "a");
  EXPECT_EQ(run({"abab"}, {"ab", "ab", "ab"}).text, "");
  const auto none = run({"abac"}, {"ab", "ab", "ab"});
  EXPECT_EQ(none.text, "ababab");
  EXPECT_FALSE(none.stopped);
}

TEST(StopMatcher, Utf8MultiByteStops) {
  // "é" is C3 A9, "→" E2 86 92: held text and releases stay whole characters.
  StopMatcher m({"é→"});
  EXPECT_EQ(m.push("café").emit, "caf");
  auto r = m.push("!");
  EXPECT_EQ(r.emit, "é!");
  r = m.push("né→x");
  EXPECT_EQ(r.emit, "n");
  EXPECT_TRUE(r.stopped);
  const auto cjk = run({"停止"}, {"好的", "停", "下", "停", "止了"});
  EXPECT_EQ(cjk.text, "好的停下");
  EXPECT_TRUE(cjk.stopped);
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.push("abc").emit, "abc");
  EXPECT_EQ(m.flush(), "");
  StopMatcher only_empty({""});  // an empty stop string is ignored
  EXPECT_TRUE(only_empty.empty());
  EXPECT_EQ(only_empty.push("abc").emit, "abc");
}

TEST(StopMatcher, FlushReturnsTheHeldText) {
  const auto r = run({"</end>"}, {"done </e", "n"});
  EXPECT_EQ(r.text, "done </en");
  EXPECT_FALSE(r.stopped);
}

}  // namespace
}  // namespace kiln::serve
