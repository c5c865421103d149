// Test helpers for the gateway: a raw POSIX-socket HTTP/1.1 client with deadlines (so a test
// sees exactly the bytes, the framing and the closes), a scriptable ResponseSource, and a
// fixture that runs a Gateway on 127.0.0.1:0 with a small route table.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "cluster/gateway/gateway.h"

namespace kiln::gateway::testing {

using Ms = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;                            // de-chunked
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool has(const std::string& lower_name) const { return headers.count(lower_name) > 0; }
};

// Blocking client over a raw socket; every read has a deadline.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int connect_errno() const { return connect_errno_; }
  // False when the peer is gone (EPIPE, reset) or the socket is closed.
  bool send(std::string_view data);
  // One response (interim 1xx ones skipped): head, then a Content-Length, chunked or
  // until-close body.
  std::optional<ClientResponse> read_response(Ms timeout = Ms(2000));
  // Only the head (for streams); the body is read with read_chunk().
  std::optional<ClientResponse> read_head(Ms timeout = Ms(2000));
  // The next chunk's data; "" for the final chunk; nullopt on timeout or close.
  std::optional<std::string> read_chunk(Ms timeout = Ms(2000));
  // True when the server closes (EOF or reset) within `timeout`; data meanwhile is discarded.
  bool wait_closed(Ms timeout);
  void close();
  // shutdown(SHUT_WR): the server reads EOF, the socket still receives.
  void shutdown_write();

 private:
  // Receives more into buf_ until `deadline`; false on timeout, EOF or error.
  bool fill(Clock::time_point deadline);
  bool read_line(std::string* line, Clock::time_point deadline);
  bool read_exact(size_t n, std::string* out, Clock::time_point deadline);

  int fd_ = -1;
  int connect_errno_ = 0;
  std::string buf_;
};

// A ResponseSource driven by the test thread.
class TestSource : public ResponseSource {
 public:
  void set_wakeup(std::function<void()> wake) override;
  std::string take(bool* done) override;
  std::optional<HttpResponse> take_response() override;
  void cancel() override;

  void push(const std::string& data, bool finish = false);  // stream bytes, then wake
  void respond(HttpResponse response);                      // deferred answer, then wake
  void wake();                                              // calls the gateway's wake-up
  bool wait_cancelled(Ms timeout);
  int cancels();
  bool wakeup_set();
  size_t pending_bytes();  // pushed and not yet taken

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> wake_;
  std::string pending_;
  bool finished_ = false;
  std::optional<HttpResponse> response_;
  int cancels_ = 0;
};

// Runs a Gateway with routes: /echo (body echoed, request fields in X- headers), /deferred,
// /ready (deferred, answer ready before the first take), /stream (SSE), /throw, else 404.
class GatewayTest : public ::testing::Test {
 protected:
  void TearDown() override;
  void start(GatewayOptions options = {});
  RouteResult handle(const HttpRequest& req);
  // The source made by the next /deferred or /stream request (waits for it).
  std::shared_ptr<TestSource> next_source(Ms timeout = Ms(2000));
  // GET /echo on `client`; the response or nullopt.
  std::optional<ClientResponse> get(RawClient& client, const std::string& path = "/echo",
                                    const std::string& extra_headers = "");

  std::unique_ptr<Gateway> gw_;
  int port_ = 0;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<TestSource>> sources_;
};

}  // namespace kiln::gateway::testing
