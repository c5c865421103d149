// Gateway responses produced on other threads: deferred answers woken from another thread,
// SSE framing and pings, client disconnects (cancel() within 500 ms), the drain and stop.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gateway_test_util.h"

namespace kiln::gateway::testing {
namespace {

// "r<i>" (built by appending: GCC 12's -Wrestrict misfires on "r" + std::to_string(i) at -O3).
std::string request_id(int i) {
  std::string id = "r";
  id += std::to_string(i);
  return id;
}

std::string without_pings(std::string s, int* pings) {
  const std::string ping = ": ping\n\n";
  *pings = 0;
  for (size_t at; (at = s.find(ping)) != std::string::npos; ++*pings) s.erase(at, ping.size());
  return s;
}

TEST_F(GatewayTest, DeferredResponseIsWrittenAfterAWakeupFromAnotherThread) {
  GatewayOptions o;
  o.threads = 2;
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /deferred HTTP/1.1\r\nHost: t\r\nX-Request-Id: d-1\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  auto t0 = Clock::now();
  std::thread engine([source] {
    std::this_thread::sleep_for(Ms(50));
    source->wake();  // a spurious wake-up: nothing is ready yet
    std::this_thread::sleep_for(Ms(20));
    source->respond(HttpResponse{201, "text/plain", "later", {{"Retry-After", "1"}}});
  });
  auto r = c.read_response();
  engine.join();
  ASSERT_TRUE(r);
  EXPECT_GT(ms_since(t0), 60.0);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "later");
  EXPECT_EQ(r->header("retry-after"), "1");
  EXPECT_EQ(r->header("x-request-id"), "d-1");
  EXPECT_EQ(source->cancels(), 0);

  // An answer that is ready before the first take, then keep-alive goes on.
  auto ready = get(c, "/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 202);
  EXPECT_EQ(ready->body, "ready");
  auto echo = get(c, "/echo");
  ASSERT_TRUE(echo);
  EXPECT_EQ(echo->status, 200);
}

TEST_F(GatewayTest, RequestPipelinedBehindADeferredOneIsKeptAndAnswered) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n"
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nnext"));
  auto source = next_source();
  ASSERT_TRUE(source);
  std::this_thread::sleep_for(Ms(30));  // the pipelined request arrives while the first waits
  EXPECT_EQ(source->cancels(), 0);
  source->respond(HttpResponse{200, "text/plain", "first", {}});
  auto first = c.read_response();
  auto second = c.read_response();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "first");
  EXPECT_EQ(second->body, "next");
}

TEST_F(GatewayTest, ClientDisconnectWhileDeferredCancelsTheSource) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  std::this_thread::sleep_for(Ms(50));
  EXPECT_EQ(source->cancels(), 0);
  c.close();
  auto t0 = Clock::now();
  EXPECT_TRUE(source->wait_cancelled(Ms(500)));
  EXPECT_LT(ms_since(t0), 500.0);
  EXPECT_EQ(source->cancels(), 1);
  source->respond(HttpResponse{});  // late answer and wake-up: dropped harmlessly
  auto deadline = Clock::now() + Ms(1000);
  while (gw_->open_connections() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(Ms(5));
  EXPECT_EQ(gw_->open_connections(), 0);
}

TEST_F(GatewayTest, SseFramingEventsInOrderAndPingsWhenIdle) {
  GatewayOptions o;
  o.ping_interval = Ms(100);
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  source->push("data: a\n\n");
  auto head = c.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("transfer-encoding"), "chunked");
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("cache-control"), "no-cache");
  EXPECT_EQ(head->header("x-stream"), "1");
  EXPECT_FALSE(head->has("content-length"));

  std::string events;
  auto first = c.read_chunk();
  ASSERT_TRUE(first);
  events += *first;
  std::this_thread::sleep_for(Ms(250));  // idle longer than ping_interval
  source->push("data: b\n\n");
  source->push("data: [DONE]\n\n", /*finish=*/true);
  for (;;) {
    auto chunk = c.read_chunk();
    ASSERT_TRUE(chunk) << "stream ended without the final chunk";
    if (chunk->empty()) break;
    events += *chunk;
  }
  int pings = 0;
  EXPECT_EQ(without_pings(events, &pings), "data: a\n\ndata: b\n\ndata: [DONE]\n\n") << events;
  EXPECT_GE(pings, 1);
  EXPECT_LT(events.find(": ping\n\n"), events.find("data: b")) << events;
  EXPECT_EQ(source->cancels(), 0);

  auto next = get(c, "/echo");  // keep-alive after a finished stream
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST_F(GatewayTest, Http10StreamIsUnchunkedAndEndsWithTheConnection) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /stream HTTP/1.0\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  source->push("data: a\n\n");
  source->push("data: [DONE]\n\n", /*finish=*/true);
  auto r = c.read_response();  // no length, no chunks: the body runs until the close
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(r->has("transfer-encoding"));
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_EQ(r->body, "data: a\n\ndata: [DONE]\n\n");
}

TEST_F(GatewayTest, ManyConcurrentDeferredRequestsOnSeveralThreads) {
  GatewayOptions o;
  o.threads = 4;
  start(o);
  constexpr int kClients = 16;
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(clients.back()->send(
        "GET /deferred HTTP/1.1\r\nHost: t\r\nX-Request-Id: " + request_id(i) + "\r\n\r\n"));
  }
  std::vector<std::shared_ptr<TestSource>> sources;
  for (int i = 0; i < kClients; ++i) {
    sources.push_back(next_source());
    ASSERT_TRUE(sources.back());
  }
  std::vector<std::thread> engines;
  for (int i = 0; i < kClients; ++i) {
    engines.emplace_back([&sources, i] {
      for (int k = 0; k < 20; ++k) sources[static_cast<size_t>(i)]->wake();
      sources[static_cast<size_t>(i)]->respond(HttpResponse{200, "text/plain", "ok", {}});
    });
  }
  for (auto& t : engines) t.join();
  for (int i = 0; i < kClients; ++i) {
    auto r = clients[static_cast<size_t>(i)]->read_response();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, "ok");
    EXPECT_EQ(r->header("x-request-id"), request_id(i));
  }
}

TEST_F(GatewayTest, ClientDisconnectMidStreamCancelsTheSource) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  source->push("data: a\n\n");
  ASSERT_TRUE(c.read_head());
  ASSERT_TRUE(c.read_chunk());
  c.close();
  auto t0 = Clock::now();
  EXPECT_TRUE(source->wait_cancelled(Ms(500)));
  EXPECT_LT(ms_since(t0), 500.0);
  source->push("data: late\n\n", true);  // after cancel: drained or dropped, never a crash
}

TEST_F(GatewayTest, SlowReaderIsCutByTheWriteDeadline) {
  GatewayOptions o;
  o.write_timeout = Ms(300);
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"));  // and never reads
  auto source = next_source();
  ASSERT_TRUE(source);
  const std::string mib(1 << 20, 'x');
  auto t0 = Clock::now();
  while (source->cancels() == 0 && ms_since(t0) < 1800.0) {
    if (source->pending_bytes() == 0) source->push(mib);  // refill once the gateway took it
    std::this_thread::sleep_for(Ms(2));
  }
  EXPECT_EQ(source->cancels(), 1);
  EXPECT_LT(ms_since(t0), 1800.0);
}

TEST_F(GatewayTest, DrainAnswersNewConnectionsOnceAndFinishesInflightStreams) {
  start();
  RawClient streaming(port_);
  ASSERT_TRUE(streaming.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  source->push("data: a\n\n");
  ASSERT_TRUE(streaming.read_head());
  ASSERT_TRUE(streaming.read_chunk());
  RawClient idle(port_);
  ASSERT_TRUE(get(idle));

  gw_->stop_accepting();
  EXPECT_TRUE(idle.wait_closed(Ms(500)));
  // New connections are still answered (a health check sees the handler's 503), each once.
  for (int i = 0; i < 3; ++i) {
    RawClient probe(port_);
    auto r = get(probe, "/nope");
    ASSERT_TRUE(r) << "refused while draining";
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(probe.wait_closed(Ms(500)));
  }

  source->push("data: b\n\n");
  source->push("data: [DONE]\n\n", /*finish=*/true);
  std::string rest;
  for (;;) {
    auto chunk = streaming.read_chunk();
    ASSERT_TRUE(chunk) << "in-flight stream cut short";
    if (chunk->empty()) break;
    rest += *chunk;
  }
  EXPECT_EQ(rest, "data: b\n\ndata: [DONE]\n\n");
  EXPECT_EQ(source->cancels(), 0);
  EXPECT_TRUE(streaming.wait_closed(Ms(1000)));  // no keep-alive while draining
}

TEST_F(GatewayTest, StopCancelsSourcesClosesConnectionsAndIsIdempotent) {
  start();
  RawClient deferred(port_);
  ASSERT_TRUE(deferred.send("GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto d = next_source();
  RawClient streaming(port_);
  ASSERT_TRUE(streaming.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto s = next_source();
  ASSERT_TRUE(d && s);
  RawClient idle(port_);
  ASSERT_TRUE(get(idle));

  auto t0 = Clock::now();
  gw_->stop();
  EXPECT_LT(ms_since(t0), 1000.0);
  EXPECT_EQ(d->cancels(), 1);
  EXPECT_EQ(s->cancels(), 1);
  EXPECT_EQ(gw_->open_connections(), 0);
  EXPECT_TRUE(deferred.wait_closed(Ms(500)));
  EXPECT_TRUE(idle.wait_closed(Ms(500)));
  gw_->stop();
  gw_.reset();
  d->respond(HttpResponse{});  // wake-ups after the gateway is gone are no-ops
  s->push("data: x\n\n", true);
}

}  // namespace
}  // namespace kiln::gateway::testing
