// Request framing (RFC 9112 §6): every message whose length is not exactly one Content-Length or
// one final "chunked" is answered 400 (501 for a coding before chunked) and the connection is
// closed, so its body is never read as a second request (no request smuggling). Also HEAD and
// half-closed clients.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gateway_test_util.h"

namespace kiln::gateway::testing {
namespace {

// A body that, if the server took the message's length wrongly, would be read as a request.
const std::string kSmuggled = "GET /echo?smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

struct FramingCase {
  std::string name;
  std::string head_fields;  // between the request line and the blank line, each ending CRLF
  int status;               // the expected answer
};

std::string smuggled_chunk() {
  char size[16];
  std::snprintf(size, sizeof size, "%zx", kSmuggled.size());
  return std::string(size) + "\r\n" + kSmuggled + "\r\n0\r\n\r\n";
}

TEST_F(GatewayTest, AmbiguousFramingIsRefusedAndTheConnectionClosed) {
  start();
  const std::vector<FramingCase> cases = {
      {"TE identity", "Transfer-Encoding: identity\r\n", 400},
      {"TE gzip alone", "Transfer-Encoding: gzip\r\n", 400},
      {"TE xchunked", "Transfer-Encoding: xchunked\r\n", 400},
      {"TE chunked twice in one field", "Transfer-Encoding: chunked, chunked\r\n", 400},
      {"TE chunked twice in two fields", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
       400},
      {"TE chunked not last", "Transfer-Encoding: chunked, identity\r\n", 400},
      {"TE empty coding", "Transfer-Encoding: , chunked\r\n", 400},
      {"TE empty", "Transfer-Encoding: \r\n", 400},
      {"TE gzip before chunked", "Transfer-Encoding: gzip, chunked\r\n", 501},
      {"TE gzip then chunked fields", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
       501},
      {"TE chunked then CL", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400},
      {"CL then TE chunked", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
      {"TE gzip with CL", "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", 400},
      {"CL twice, different", "Content-Length: 5\r\nContent-Length: 6\r\n", 400},
      {"CL list, different", "Content-Length: 5, 6\r\n", 400},
      {"CL plus sign", "Content-Length: +5\r\n", 400},
      {"CL minus sign", "Content-Length: -5\r\n", 400},
      {"CL hex", "Content-Length: 0x5\r\n", 400},
      {"CL inner space", "Content-Length: 5 5\r\n", 400},
      {"CL trailing comma", "Content-Length: 5,\r\n", 400},
      {"CL overflow", "Content-Length: 99999999999999999999999\r\n", 400},
      {"space before colon", "Content-Length : 5\r\n", 400},
      {"obs-fold in CL", "Content-Length: 5\r\n 0\r\n", 400},
  };
  for (const FramingCase& c : cases) {
    SCOPED_TRACE(c.name);
    RawClient client(port_);
    const bool chunked_body = c.head_fields.find("chunked") != std::string::npos;
    client.send("POST /echo HTTP/1.1\r\nHost: t\r\n" + c.head_fields + "\r\n" +
                (chunked_body ? smuggled_chunk() : kSmuggled));
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, c.status);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_FALSE(client.read_response(Ms(300))) << "a second answer: the body was read as a request";
    EXPECT_TRUE(client.wait_closed(Ms(1000)));
  }
  RawClient good(port_);
  auto r = get(good);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(GatewayTest, TransferEncodingInHttp10IsRefused) {
  start();
  RawClient client(port_);
  client.send("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled_chunk());
  auto r = client.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(client.wait_closed(Ms(1000)));
}

TEST_F(GatewayTest, WellFramedBodiesStillWork) {
  start();
  RawClient client(port_);
  const std::vector<std::string> heads = {
      "Content-Length: 5\r\n",
      "Content-Length: 5, 5\r\n",  // repeated equal values are one length (RFC 9112 §6.3)
      "Transfer-Encoding: chunked\r\n",
      "Transfer-Encoding: Chunked\r\n",
  };
  for (const std::string& h : heads) {
    SCOPED_TRACE(h);
    const bool chunked = h.find("hunked") != std::string::npos;
    client.send("POST /echo HTTP/1.1\r\nHost: t\r\n" + h + "\r\n" +
                (chunked ? std::string("5\r\nhello\r\n0\r\n\r\n") : std::string("hello")));
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
    EXPECT_NE(r->header("connection"), "close");
  }
}

TEST_F(GatewayTest, HeadIsAnsweredLikeGetWithoutABody) {
  start();
  RawClient client(port_);
  auto full = get(client, "/echo?x");
  ASSERT_TRUE(full);
  ASSERT_TRUE(client.send("HEAD /echo?x HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto head = client.read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("x-method"), "HEAD");
  EXPECT_EQ(head->header("content-length"), full->header("content-length"));
  // No body bytes follow: the next answer on the connection is parsed cleanly.
  auto after = get(client, "/nope");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 404);
  EXPECT_EQ(after->body, R"({"error":"not found"})");
  // A HEAD to a route that would stream or defer: its head, then close.
  ASSERT_TRUE(client.send("HEAD /deferred HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto source = next_source();
  ASSERT_TRUE(source);
  auto deferred_head = client.read_head();
  ASSERT_TRUE(deferred_head);
  EXPECT_EQ(deferred_head->status, 200);
  EXPECT_EQ(source->cancels(), 1);
  EXPECT_TRUE(client.wait_closed(Ms(1000)));
}

TEST_F(GatewayTest, HalfClosedClientIsAnsweredThenClosed) {
  start();
  {
    RawClient client(port_);
    client.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    client.shutdown_write();
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hi");
    EXPECT_TRUE(client.wait_closed(Ms(1000)));
  }
  {  // deferred: the EOF is not a disconnect, the answer still comes
    RawClient client(port_);
    client.send("GET /deferred HTTP/1.1\r\nHost: t\r\n\r\n");
    auto source = next_source();
    ASSERT_TRUE(source);
    client.shutdown_write();
    std::this_thread::sleep_for(Ms(100));  // the monitor reads the EOF meanwhile
    EXPECT_EQ(source->cancels(), 0);
    source->respond(HttpResponse{200, "text/plain", "late", {}});
    auto r = client.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "late");
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(client.wait_closed(Ms(1000)));
  }
  {  // stream: the same
    RawClient client(port_);
    client.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    auto source = next_source();
    ASSERT_TRUE(source);
    client.shutdown_write();
    std::this_thread::sleep_for(Ms(100));
    source->push("data: a\n\n", /*finish=*/true);
    auto head = client.read_head();
    ASSERT_TRUE(head);
    auto chunk = client.read_chunk();
    while (chunk && *chunk == ": ping\n\n") chunk = client.read_chunk();  // the EOF's probe
    ASSERT_TRUE(chunk);
    EXPECT_EQ(*chunk, "data: a\n\n");
    EXPECT_EQ(source->cancels(), 0);
    EXPECT_TRUE(client.wait_closed(Ms(1000)));
  }
}

}  // namespace
}  // namespace kiln::gateway::testing
