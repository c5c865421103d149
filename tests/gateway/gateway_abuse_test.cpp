// Gateway under hostile clients (reliability.md §B): header floods, slowloris, the connection
// cap; a well-behaved client keeps being answered promptly meanwhile.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gateway_test_util.h"

namespace kiln::gateway::testing {
namespace {

struct FloodResult {
  int status = -1;  // the answer's status; 0: closed without one; -1: still open
  double ms = 0;    // from the first byte sent to the answer or the close
};

FloodResult flood(int port, const std::string& request) {
  FloodResult out;
  RawClient c(port);
  auto t0 = Clock::now();
  c.send(request);  // may fail part-way once the server has answered and closed
  auto r = c.read_response(Ms(1500));
  if (r) {
    out.status = r->status;
  } else if (c.wait_closed(Ms(1500))) {
    out.status = 0;
  }
  out.ms = ms_since(t0);
  return out;
}

TEST_F(GatewayTest, HeaderFloodIs431OrClosedWithinOneSecondWhileOthersAreServed) {
  start();
  std::string one_big =
      "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n";
  std::string many = "GET /echo HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 10000; ++i) many += "X-F" + std::to_string(i) + ": v\r\n";
  many += "\r\n";

  RawClient good(port_);
  ASSERT_TRUE(get(good));
  FloodResult big_result, many_result;
  std::thread t1([&] { big_result = flood(port_, one_big); });
  std::thread t2([&] { many_result = flood(port_, many); });
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    auto r = get(good);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(ms_since(t0), 300.0);
  }
  t1.join();
  t2.join();
  for (const auto& res : {big_result, many_result}) {
    EXPECT_TRUE(res.status == 431 || res.status == 0) << res.status;
    EXPECT_LT(res.ms, 1000.0);
  }
  RawClient after(port_);
  auto r = get(after);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(GatewayTest, SlowlorisIsClosedByTheReadDeadlineWhileOthersAreServed) {
  GatewayOptions o;
  o.read_timeout = Ms(500);
  start(o);
  std::atomic<double> closed_after{-1};
  std::thread slow([&] {
    RawClient c(port_);
    const std::string req = "GET /echo HTTP/1.1\r\nHost: t\r\nX-Slow: 0123456789abcdef\r\n\r\n";
    auto t0 = Clock::now();
    for (char ch : req) {
      if (!c.send(std::string(1, ch)) || c.wait_closed(Ms(200))) {
        closed_after = ms_since(t0);
        return;
      }
    }
  });
  RawClient good(port_);
  for (int i = 0; i < 4; ++i) {
    auto t0 = Clock::now();
    auto r = get(good);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(ms_since(t0), 150.0);
    std::this_thread::sleep_for(Ms(100));
  }
  slow.join();
  EXPECT_GT(closed_after.load(), 400.0);
  EXPECT_LT(closed_after.load(), 1100.0);
}

TEST_F(GatewayTest, ConnectionsOverTheCapAreClosedAtOnceAndTheServerRecovers) {
  GatewayOptions o;
  o.max_connections = 4;
  start(o);
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<RawClient>(port_));
    auto r = get(*clients.back());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(gw_->open_connections(), 4);

  RawClient fifth(port_);
  ASSERT_TRUE(fifth.connected());  // the kernel completes the handshake; the gateway closes it
  auto t0 = Clock::now();
  EXPECT_TRUE(fifth.wait_closed(Ms(500)));
  EXPECT_LT(ms_since(t0), 300.0);
  EXPECT_EQ(gw_->open_connections(), 4);

  clients[0].reset();
  clients[1].reset();
  auto deadline = Clock::now() + Ms(1000);
  while (gw_->open_connections() > 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(Ms(5));
  }
  EXPECT_EQ(gw_->open_connections(), 2);
  RawClient sixth(port_);
  auto r = get(sixth);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto still = get(*clients[2]);
  ASSERT_TRUE(still);
  EXPECT_EQ(still->status, 200);
}

}  // namespace
}  // namespace kiln::gateway::testing
