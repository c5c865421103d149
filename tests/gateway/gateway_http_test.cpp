// Gateway over a raw socket: routing, keep-alive and pipelining, request ids, body and header
// limits (413 from the headers, chunked counting), malformed HTTP, CORS, start errors.
#include <string>

#include <gtest/gtest.h>

#include "gateway_test_util.h"

namespace kiln::gateway::testing {
namespace {

bool is_hex32(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST_F(GatewayTest, RoutesAndKeepsTheConnectionAlive) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(
      "POST /echo?x=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k1\r\n"
      "Content-Type: text/plain\r\nX-Request-Id: my-id-1\r\nContent-Length: 5\r\n\r\nhello"));
  auto r1 = c.read_response();
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "hello");
  EXPECT_EQ(r1->header("x-method"), "POST");
  EXPECT_EQ(r1->header("x-path"), "/echo");
  EXPECT_EQ(r1->header("x-target"), "/echo?x=1");
  EXPECT_EQ(r1->header("x-auth"), "Bearer k1");
  EXPECT_EQ(r1->header("x-content-type"), "text/plain");
  EXPECT_EQ(r1->header("x-request-id"), "my-id-1");
  EXPECT_EQ(r1->header("x-seen-request-id"), "my-id-1");
  EXPECT_EQ(r1->header("content-type"), "text/plain");
  EXPECT_FALSE(r1->has("access-control-allow-origin"));

  // Second request on the same connection: unknown route, generated request id.
  auto r2 = get(c, "/nope");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 404);
  EXPECT_TRUE(is_hex32(r2->header("x-request-id"))) << r2->header("x-request-id");
  EXPECT_EQ(gw_->open_connections(), 1);
}

TEST_F(GatewayTest, AnswersPipelinedRequestsInOrder) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none"
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntwo"
             "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  auto a = c.read_response();
  auto b = c.read_response();
  auto d = c.read_response();
  ASSERT_TRUE(a && b && d);
  EXPECT_EQ(a->body, "one");
  EXPECT_EQ(b->body, "two");
  EXPECT_EQ(d->header("connection"), "close");
  EXPECT_TRUE(c.wait_closed(Ms(1000)));
}

TEST_F(GatewayTest, ContentLengthOverTheLimitIs413WithoutReadingTheBody) {
  GatewayOptions o;
  o.max_body_bytes = 1024;
  o.error_body = [](int status, const std::string& message) {
    std::string body = "E";  // (appends: GCC 12's -Wrestrict misfires on "E" + std::string)
    body += std::to_string(status);
    body += ':';
    body += message;
    return body;
  };
  start(o);
  RawClient c(port_);
  auto t0 = Clock::now();
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nX-Request-Id: big-1\r\n"
             "Content-Length: 100000000\r\n\r\n"));  // the body never comes
  auto r = c.read_response(Ms(1000));
  ASSERT_TRUE(r);
  EXPECT_LT(ms_since(t0), 500.0);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->body.rfind("E413:", 0), 0u) << r->body;
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_EQ(r->header("x-request-id"), "big-1");
  EXPECT_TRUE(c.wait_closed(Ms(1000)));

  // At the limit is fine.
  RawClient ok(port_);
  ASSERT_TRUE(ok.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" +
                      std::string(1024, 'x')));
  auto r2 = ok.read_response();
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 200);
  EXPECT_EQ(r2->body.size(), 1024u);
}

TEST_F(GatewayTest, LargeBodiesWithinTheLimitAreRead) {
  start();  // default limit 4 MiB; the read buffer itself stays small
  const std::string body(3 << 20, 'b');
  RawClient c(port_);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), body.size());
  EXPECT_EQ(r->body, body);
}

TEST_F(GatewayTest, DefaultErrorBodyIsTheOpenAIEnvelope) {
  GatewayOptions o;
  o.max_body_bytes = 10;
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(r->body, R"({"error":{"message":"request body exceeds 10 bytes",)"
                     R"("type":"invalid_request_error","param":null,"code":null}})");
}

TEST_F(GatewayTest, ChunkedBodiesAreCountedAsTheyArrive) {
  GatewayOptions o;
  o.max_body_bytes = 1024;
  start(o);
  const std::string chunk = "190\r\n" + std::string(400, 'a') + "\r\n";  // 400 bytes
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                       chunk + chunk + "0\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body.size(), 800u);
  }
  RawClient c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk));
  ASSERT_TRUE(c.send(chunk));
  auto t0 = Clock::now();
  ASSERT_TRUE(c.send(chunk));  // 1200 > 1024; no final chunk is ever sent
  auto r = c.read_response(Ms(1000));
  ASSERT_TRUE(r);
  EXPECT_LT(ms_since(t0), 500.0);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c.wait_closed(Ms(1000)));
}

TEST_F(GatewayTest, Expect100ContinueGetsTheInterimResponse) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"));
  auto interim = c.read_head();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(c.send("body"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "body");
}

TEST_F(GatewayTest, MalformedHttpIs400ThenClose) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("NOT A REQUEST\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("invalid_request_error"), std::string::npos);
  EXPECT_TRUE(c.wait_closed(Ms(1000)));

  RawClient c2(port_);
  ASSERT_TRUE(c2.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n"));
  auto r2 = c2.read_response();
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 400);
}

TEST_F(GatewayTest, HandlerExceptionIs500AndTheConnectionLives) {
  start();
  RawClient c(port_);
  auto r = get(c, "/throw");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("server_error"), std::string::npos);
  auto r2 = get(c, "/echo");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 200);
}

TEST_F(GatewayTest, CorsOnlyForAllowedOrigins) {
  GatewayOptions o;
  o.cors_allow_origins = {"https://ok.example"};
  start(o);
  RawClient c(port_);
  auto allowed = get(c, "/echo", "Origin: https://ok.example\r\n");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->header("access-control-allow-origin"), "https://ok.example");
  EXPECT_EQ(allowed->header("vary"), "Origin");

  auto denied = get(c, "/echo", "Origin: https://evil.example\r\n");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 200);
  EXPECT_FALSE(denied->has("access-control-allow-origin"));

  ASSERT_TRUE(
      c.send("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n"
             "Access-Control-Request-Method: POST\r\n"
             "Access-Control-Request-Headers: authorization, content-type\r\n\r\n"));
  auto preflight = c.read_response();
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->header("access-control-allow-origin"), "https://ok.example");
  EXPECT_NE(preflight->header("access-control-allow-methods").find("POST"), std::string::npos);
  EXPECT_EQ(preflight->header("access-control-allow-headers"), "authorization, content-type");

  ASSERT_TRUE(
      c.send("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n"
             "Access-Control-Request-Method: POST\r\n\r\n"));
  auto bad_preflight = c.read_response();
  ASSERT_TRUE(bad_preflight);
  EXPECT_EQ(bad_preflight->status, 403);
  EXPECT_FALSE(bad_preflight->has("access-control-allow-origin"));
  EXPECT_FALSE(bad_preflight->has("access-control-allow-methods"));
}

TEST_F(GatewayTest, StartNamesTheAddressWhenThePortIsTaken) {
  start();
  GatewayOptions o;
  o.host = "127.0.0.1";
  o.port = port_;
  Gateway second(o, [](const HttpRequest&) { return RouteResult{}; });
  Status st = second.start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(port_)), std::string::npos)
      << st.message();

  GatewayOptions bad;
  bad.port = 0;
  bad.threads = 0;
  Gateway third(bad, [](const HttpRequest&) { return RouteResult{}; });
  Status st3 = third.start();
  ASSERT_FALSE(st3.ok());
  EXPECT_NE(st3.message().find("threads"), std::string::npos) << st3.message();
}

TEST_F(GatewayTest, IdleKeepAliveConnectionsAreClosed) {
  GatewayOptions o;
  o.idle_timeout = Ms(200);
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(get(c));
  auto t0 = Clock::now();
  EXPECT_TRUE(c.wait_closed(Ms(1000)));
  EXPECT_GT(ms_since(t0), 150.0);
  EXPECT_LT(ms_since(t0), 600.0);
}

}  // namespace
}  // namespace kiln::gateway::testing
