// Internal to cluster/gateway: pure functions between Beast messages and the gateway's own types
// (HttpRequest/HttpResponse), request ids, CORS and the bodies of the gateway's own errors. No I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "cluster/gateway/gateway.h"

namespace kiln::gateway::detail {

namespace http = boost::beast::http;

using BeastRequest = http::request<http::string_body>;
using BeastResponse = http::response<http::string_body>;

// What every response to one request carries, fixed once the request head is read.
struct Exchange {
  unsigned version = 11;             // the request's HTTP version (10 or 11)
  bool keep_alive_requested = true;  // the client allows another request on this connection
  std::string request_id;            // echoed or generated X-Request-Id
  std::string cors_origin;           // Access-Control-Allow-Origin value; empty: not allowed
};

// The exchange of a request whose head was read (`options` decides the CORS origin).
Exchange make_exchange(const GatewayOptions& options, const BeastRequest& head);

// Framing rules Beast's parser leaves to the caller (RFC 9112 §6.1, §6.3), judged on a request
// head that Beast accepted. A request with Transfer-Encoding is refused unless it is HTTP/1.1,
// has no Content-Length, and its codings (over every Transfer-Encoding field) are exactly one
// "chunked", last: 501 when chunked is last and once but other codings (gzip, ...) come before it,
// 400 otherwise (chunked missing, repeated or not last, unknown or empty codings). The caller
// answers the status and closes the connection, so no body byte is read as a next request.
struct FramingError {
  int status = 400;
  std::string message;
};
std::optional<FramingError> framing_error(const BeastRequest& head);

// The handler's view of `req`; the body is moved out of `req`.
HttpRequest to_http_request(BeastRequest& req, const Exchange& exchange);

// The client's X-Request-Id when it is 1..128 visible ASCII characters, else a new random id
// (32 lowercase hex digits).
std::string request_id_from(std::string_view sent);

// Exact match against options.cors_allow_origins; an entry "*" allows every origin.
bool origin_allowed(const GatewayOptions& options, std::string_view origin);

// options.error_body(status, message), or the OpenAI-style envelope when that hook is empty.
std::string error_body(const GatewayOptions& options, int status, const std::string& message);

// X-Request-Id, Server and (when allowed) the CORS fields.
void set_common_fields(http::fields& fields, const Exchange& exchange);

// A complete response (Content-Length set). Extra headers with CR/LF are dropped; a status
// outside 100..999 becomes 500.
BeastResponse make_response(const HttpResponse& response, const Exchange& exchange,
                            bool keep_alive);

// A gateway-made error (413, 431, 400, 500) in the error_body format.
BeastResponse make_error(const GatewayOptions& options, int status, const std::string& message,
                         const Exchange& exchange, bool keep_alive);

// The head of a streamed (SSE) response: the route's status and headers, text/event-stream,
// no-cache, chunked for HTTP/1.1 (HTTP/1.0 gets the body until close instead).
http::response<http::empty_body> make_stream_head(const HttpResponse& response,
                                                  const Exchange& exchange, bool keep_alive);

// An OPTIONS request with Origin and Access-Control-Request-Method (a CORS preflight).
bool is_preflight(const BeastRequest& req);

// 204 for a preflight from an allowed origin; 403 (no CORS fields) otherwise.
BeastResponse make_preflight_response(const GatewayOptions& options, const BeastRequest& req,
                                      const Exchange& exchange, bool keep_alive);

}  // namespace kiln::gateway::detail
