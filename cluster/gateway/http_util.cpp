// Conversions between Beast messages and the gateway's types, request ids, CORS fields and the
// gateway's own error bodies. Pure functions (the id generator keeps thread-local state).
#include "cluster/gateway/http_util.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cctype>
#include <random>
#include <vector>

#include <boost/beast/core/string.hpp>
#include <boost/json.hpp>

namespace kiln::gateway::detail {

namespace {

constexpr size_t kMaxRequestIdChars = 128;
constexpr size_t kMaxAllowHeadersChars = 1024;
constexpr std::string_view kAllowMethods = "GET, HEAD, POST, OPTIONS";
constexpr std::string_view kDefaultAllowHeaders = "Authorization, Content-Type, X-Request-Id";

bool has_crlf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

unsigned checked_status(int status) {
  return status >= 100 && status <= 999 ? static_cast<unsigned>(status) : 500u;
}

std::string sv(boost::beast::string_view s) { return std::string(s.data(), s.size()); }

}  // namespace

Exchange make_exchange(const GatewayOptions& options, const BeastRequest& head) {
  Exchange ex;
  ex.version = head.version() == 10 ? 10 : 11;
  ex.keep_alive_requested = head.keep_alive();
  ex.request_id = request_id_from(head["X-Request-Id"]);
  auto origin = head[http::field::origin];
  if (!origin.empty() && origin_allowed(options, origin)) ex.cors_origin = sv(origin);
  return ex;
}

std::optional<FramingError> framing_error(const BeastRequest& head) {
  auto [begin, end] = head.equal_range(http::field::transfer_encoding);
  if (begin == end) return std::nullopt;
  if (head.version() < 11) {
    return FramingError{400, "Transfer-Encoding is not allowed in an HTTP/1.0 request"};
  }
  if (head.count(http::field::content_length) > 0) {
    return FramingError{400, "a request must not have both Transfer-Encoding and Content-Length"};
  }
  std::vector<std::string> codings;  // lowercased, over every Transfer-Encoding field in order
  for (auto it = begin; it != end; ++it) {
    std::string_view value(it->value().data(), it->value().size());
    size_t pos = 0;
    for (;;) {
      size_t comma = value.find(',', pos);
      std::string_view item = value.substr(pos, comma == std::string_view::npos ? comma : comma - pos);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      std::string lower(item);
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      codings.push_back(std::move(lower));
      if (comma == std::string_view::npos) break;
      pos = comma + 1;
    }
  }
  const auto chunked = std::count(codings.begin(), codings.end(), "chunked");
  const bool shape_ok = chunked == 1 && codings.back() == "chunked" &&
                        std::none_of(codings.begin(), codings.end(),
                                     [](const std::string& c) { return c.empty(); });
  if (!shape_ok) {
    return FramingError{400, "Transfer-Encoding must be exactly one \"chunked\", as the last coding"};
  }
  if (codings.size() > 1) {
    return FramingError{501, "transfer coding \"" + codings.front().substr(0, 64) +
                                 "\" is not supported (only chunked is)"};
  }
  return std::nullopt;
}

HttpRequest to_http_request(BeastRequest& req, const Exchange& exchange) {
  HttpRequest out;
  out.method = sv(req.method_string());
  out.target = sv(req.target());
  out.path = out.target.substr(0, out.target.find('?'));
  out.body = std::move(req.body());
  out.authorization = sv(req[http::field::authorization]);
  out.content_type = sv(req[http::field::content_type]);
  out.origin = sv(req[http::field::origin]);
  out.request_id = exchange.request_id;
  return out;
}

std::string request_id_from(std::string_view sent) {
  bool usable = !sent.empty() && sent.size() <= kMaxRequestIdChars &&
                std::all_of(sent.begin(), sent.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (usable) return std::string(sent);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    uint64_t v = rng();
    for (int i = 0; i < 16; ++i) id[static_cast<size_t>(half * 16 + i)] = kHex[(v >> (4 * i)) & 15];
  }
  return id;
}

bool origin_allowed(const GatewayOptions& options, std::string_view origin) {
  for (const auto& allowed : options.cors_allow_origins) {
    if (allowed == "*" || allowed == origin) return true;
  }
  return false;
}

std::string error_body(const GatewayOptions& options, int status, const std::string& message) {
  if (options.error_body) return options.error_body(status, message);
  boost::json::object error;
  error["message"] = message;
  error["type"] = status >= 500 ? "server_error" : "invalid_request_error";
  error["param"] = nullptr;
  error["code"] = nullptr;
  boost::json::object root;
  root["error"] = std::move(error);
  return boost::json::serialize(root);
}

void set_common_fields(http::fields& fields, const Exchange& exchange) {
  fields.set(http::field::server, "kiln");
  fields.set("X-Request-Id", exchange.request_id);
  if (!exchange.cors_origin.empty()) {
    fields.set(http::field::access_control_allow_origin, exchange.cors_origin);
    fields.set(http::field::access_control_expose_headers, "X-Request-Id");
    fields.set(http::field::vary, "Origin");
  }
}

BeastResponse make_response(const HttpResponse& response, const Exchange& exchange,
                            bool keep_alive) {
  BeastResponse res{static_cast<http::status>(checked_status(response.status)), exchange.version};
  for (const auto& [name, value] : response.headers) {
    if (name.empty() || has_crlf(name) || has_crlf(value)) continue;
    res.set(name, value);
  }
  if (!response.content_type.empty() && !has_crlf(response.content_type)) {
    res.set(http::field::content_type, response.content_type);
  }
  set_common_fields(res, exchange);
  res.body() = response.body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

BeastResponse make_error(const GatewayOptions& options, int status, const std::string& message,
                         const Exchange& exchange, bool keep_alive) {
  HttpResponse r;
  r.status = status;
  r.body = error_body(options, status, message);
  return make_response(r, exchange, keep_alive);
}

http::response<http::empty_body> make_stream_head(const HttpResponse& response,
                                                  const Exchange& exchange, bool keep_alive) {
  http::response<http::empty_body> head{static_cast<http::status>(checked_status(response.status)),
                                        exchange.version};
  for (const auto& [name, value] : response.headers) {
    if (name.empty() || has_crlf(name) || has_crlf(value)) continue;
    head.set(name, value);
  }
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::cache_control, "no-cache");
  head.set("X-Accel-Buffering", "no");  // nginx and similar proxies: do not buffer the stream
  set_common_fields(head, exchange);
  if (exchange.version >= 11) {
    head.keep_alive(keep_alive);
    head.chunked(true);
  } else {
    head.keep_alive(false);  // HTTP/1.0 has no chunked coding: the body ends at close
  }
  return head;
}

bool is_preflight(const BeastRequest& req) {
  return req.method() == http::verb::options && req.count(http::field::origin) > 0 &&
         req.count(http::field::access_control_request_method) > 0;
}

BeastResponse make_preflight_response(const GatewayOptions& options, const BeastRequest& req,
                                      const Exchange& exchange, bool keep_alive) {
  if (exchange.cors_origin.empty()) {
    return make_error(options, 403, "origin not allowed", exchange, keep_alive);
  }
  BeastResponse res{http::status::no_content, exchange.version};
  set_common_fields(res, exchange);
  res.set(http::field::access_control_allow_methods, kAllowMethods);
  auto requested = req[http::field::access_control_request_headers];
  if (!requested.empty() && requested.size() <= kMaxAllowHeadersChars) {
    res.set(http::field::access_control_allow_headers, requested);
  } else {
    res.set(http::field::access_control_allow_headers, kDefaultAllowHeaders);
  }
  res.set(http::field::access_control_max_age, "600");
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

}  // namespace kiln::gateway::detail
