// One connection's coroutine: keep-alive loop, bounded reads (431 / 413 / 400 then close), the
// route handler, and plain, deferred or streamed answers with disconnect detection.
#include "cluster/gateway/session.h"

#include <string_view>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cluster/gateway/sse.h"

namespace kiln::gateway::detail {

namespace {

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

const beast::error_category& http_category() {
  return http::make_error_code(http::error::bad_method).category();
}

}  // namespace

Session::Session(std::shared_ptr<ServerState> state, tcp::socket socket)
    : state_(std::move(state)),
      conn_(std::move(socket), state_->options),
      id_(state_->next_session_id.fetch_add(1)) {}

void Session::start() {
  state_->add(shared_from_this());
  asio::co_spawn(conn_.executor(), run(shared_from_this()), asio::detached);
  if (state_->stopping.load()) shutdown();  // stop() may have listed the sessions before add()
}

void Session::drain() {
  asio::post(conn_.executor(), [self = shared_from_this()] {
    if (self->idle_) self->conn_.close();
  });
}

void Session::shutdown() {
  asio::post(conn_.executor(), [self = shared_from_this()] {
    self->closed_ = true;
    self->cancel_source();
    self->conn_.close();
    self->conn_.notify();
  });
}

asio::awaitable<void> Session::run(std::shared_ptr<Session> self) {
  try {
    co_await self->serve();
  } catch (const std::exception& e) {
    spdlog::debug("gateway: connection {} failed: {}", self->id_, e.what());
  } catch (...) {
    spdlog::debug("gateway: connection {} failed", self->id_);
  }
  self->cancel_source();  // only when a request was cut short by an exception
  self->source_.reset();
  self->conn_.close();
  self->state_->remove(self.get());
  self->state_->open_connections.fetch_sub(1);
}

asio::awaitable<void> Session::serve() {
  for (;;) {
    auto request = co_await read_request();
    if (!request) co_return;
    const bool keep = co_await respond(std::move(*request));
    served_.store(true);
    since_.store(Clock::now().time_since_epoch().count());
    phase_.store(kAwaitingRequest);  // from kBusy, which try_evict never touches
    if (!keep) break;
  }
  if (conn_.is_open()) co_await conn_.lingering_close();
}

Session::EvictRank Session::evict_rank() const {
  return {served_.load(), Clock::time_point(Clock::duration(since_.load()))};
}

bool Session::try_evict() {
  int expected = kAwaitingRequest;
  if (!phase_.compare_exchange_strong(expected, kEvicted)) return false;
  asio::post(conn_.executor(), [self = shared_from_this()] { self->conn_.close(); });
  return true;
}

asio::awaitable<std::optional<BeastRequest>> Session::read_request() {
  const GatewayOptions& opt = state_->options;
  const bool first = !served_.load();
  // The first request's head must be complete within read_timeout of the accept, so a silent or
  // slowloris connection holds its slot no longer; a later one's within read_timeout of its
  // first byte, which may take idle_timeout to come.
  Clock::time_point head_deadline = accepted_ + opt.read_timeout;
  if (conn_.buffer().size() == 0) {
    // While draining a connection that was served closes; a new one still gets its answer
    // (Connection: close), so health checks see the 503.
    if ((!first && state_->draining.load()) || closed_ || conn_.peer_half_closed()) {
      conn_.close();
      co_return std::nullopt;
    }
    idle_ = true;
    bool got = co_await conn_.read_some(first ? head_deadline : Clock::now() + opt.idle_timeout);
    idle_ = false;
    if (!got) co_return std::nullopt;
    if (!first) head_deadline = Clock::now() + opt.read_timeout;
  } else if (!first) {
    head_deadline = Clock::now() + opt.read_timeout;
  }
  http::request_parser<http::string_body> parser;
  parser.header_limit(static_cast<uint32_t>(std::min<int64_t>(opt.max_header_bytes, UINT32_MAX)));
  parser.body_limit(boost::none);  // Content-Length is judged below, with the header in hand
  auto& stream = conn_.stream();
  stream.expires_at(head_deadline);  // the whole head, however slowly it comes
  auto [ec, n] = co_await http::async_read_header(stream, conn_.buffer(), parser, kTuple);
  Exchange exchange;
  exchange.request_id = request_id_from({});
  if (parser.is_header_done()) exchange = make_exchange(opt, parser.get());
  if (ec) {
    co_await reject_read(ec, exchange);
    co_return std::nullopt;
  }
  if (auto bad = framing_error(parser.get())) {
    spdlog::debug("gateway: connection {}: {}", id_, bad->message);
    co_await reply_error(bad->status, bad->message, exchange);
    co_return std::nullopt;
  }
  const auto max_body = static_cast<uint64_t>(std::max<int64_t>(opt.max_body_bytes, 0));
  if (auto length = parser.content_length(); length && *length > max_body) {
    co_await reply_error(413, fmt::format("request body exceeds {} bytes", max_body), exchange);
    co_return std::nullopt;
  }
  parser.body_limit(max_body);  // chunked bodies: counted as they arrive
  if (!parser.is_done()) {
    if (beast::iequals(parser.get()[http::field::expect], "100-continue") &&
        !co_await conn_.write(asio::buffer(kContinue))) {
      co_return std::nullopt;
    }
    stream.expires_after(opt.read_timeout);  // the whole body
    auto [body_ec, body_n] = co_await http::async_read(stream, conn_.buffer(), parser, kTuple);
    if (body_ec) {
      co_await reject_read(body_ec, exchange);
      co_return std::nullopt;
    }
  }
  stream.expires_never();
  int expected = kAwaitingRequest;
  if (!phase_.compare_exchange_strong(expected, kBusy)) {  // evicted meanwhile
    conn_.close();
    co_return std::nullopt;
  }
  co_return parser.release();
}

asio::awaitable<void> Session::reject_read(const beast::error_code& ec, const Exchange& exchange) {
  const GatewayOptions& opt = state_->options;
  if (ec == http::error::header_limit) {
    co_await reply_error(
        431, fmt::format("request header fields exceed {} bytes", opt.max_header_bytes), exchange);
  } else if (ec == http::error::body_limit) {
    co_await reply_error(413, fmt::format("request body exceeds {} bytes", opt.max_body_bytes),
                         exchange);
  } else if (ec.category() == http_category() && ec != http::error::end_of_stream &&
             ec != http::error::partial_message) {
    spdlog::debug("gateway: connection {}: bad request: {}", id_, ec.message());
    co_await reply_error(400, "malformed HTTP request: " + ec.message(), exchange);
  } else {
    // EOF, reset, read deadline (slow or stalled client), or closed by stop(): no answer.
    spdlog::debug("gateway: connection {}: read ended: {}", id_, ec.message());
    conn_.close();
  }
}

asio::awaitable<void> Session::reply_error(int status, const std::string& message,
                                           const Exchange& exchange) {
  auto res = make_error(state_->options, status, message, exchange, /*keep_alive=*/false);
  if (co_await conn_.write(res)) co_await conn_.lingering_close();
}

asio::awaitable<bool> Session::respond(BeastRequest request) {
  const GatewayOptions& opt = state_->options;
  Exchange exchange = make_exchange(opt, request);
  if (is_preflight(request)) {
    auto res = make_preflight_response(opt, request, exchange, keep_alive(exchange));
    bool ok = co_await conn_.write(res);
    co_return ok&& res.keep_alive();
  }
  const bool head_only = request.method() == http::verb::head;  // answered as GET, no body
  HttpRequest req = to_http_request(request, exchange);
  RouteResult route;
  try {
    route = state_->handler(req);
  } catch (const std::exception& e) {
    spdlog::error("gateway: route {} {} failed (request {}): {}", req.method, req.path,
                  req.request_id, e.what());
    route = RouteResult{};
    route.response.status = 500;
    route.response.body = error_body(opt, 500, "internal server error");
  }
  bool keep = keep_alive(exchange);
  if (head_only && route.source) {  // no body to produce: the head alone, then close
    route.source->cancel();
    route.source.reset();
    keep = false;
  }
  if (!route.source) {
    auto res = make_response(route.response, exchange, keep);
    bool ok = co_await conn_.write(res, head_only);
    co_return ok&& res.keep_alive();
  }
  source_ = std::move(route.source);
  source_cancelled_ = false;
  source_->set_wakeup(make_wake());
  conn_.start_monitor(shared_from_this());
  keep = route.stream ? co_await respond_stream(route.response, exchange)
                      : co_await respond_deferred(exchange);
  co_await conn_.stop_monitor();
  source_.reset();
  co_return keep;
}

asio::awaitable<bool> Session::respond_deferred(const Exchange& exchange) {
  std::optional<HttpResponse> response;
  Clock::time_point probe_until{};  // set once the peer's EOF was probed
  for (;;) {
    if (conn_.peer_half_closed() && probe_until == Clock::time_point{}) {
      // An unsolicited interim response: HTTP/1.1 clients skip it (RFC 9110 §15.2); a closed
      // peer answers it with a reset. HTTP/1.0 has none: its answer is written regardless.
      probe_until = Clock::now() + kProbeWindow;
      if (exchange.version >= 11 && !co_await conn_.write(asio::buffer(kContinue))) {
        cancel_source();
        co_return false;
      }
    }
    if (closed_ || !conn_.is_open() || conn_.peer_gone() ||
        (conn_.peer_half_closed() && conn_.check_reset())) {
      cancel_source();
      co_return false;
    }
    response = source_->take_response();
    if (response) break;
    co_await conn_.wait(probe_wait(Clock::time_point::max(), probe_until));
  }
  auto res = make_response(*response, exchange, keep_alive(exchange) && !conn_.peer_gone());
  bool ok = co_await conn_.write(res);
  co_return ok&& res.keep_alive();
}

asio::awaitable<bool> Session::respond_stream(const HttpResponse& head_response,
                                              const Exchange& exchange) {
  auto head = make_stream_head(head_response, exchange, keep_alive(exchange));
  if (!co_await write_sse(conn_, state_->options, head, *source_)) {
    cancel_source();
    co_return false;
  }
  co_return head.keep_alive() && keep_alive(exchange);  // draining may have begun meanwhile
}

bool Session::keep_alive(const Exchange& exchange) const {
  // A half-closed peer sends nothing more: what it pipelined before is still answered.
  return exchange.keep_alive_requested && !state_->draining.load() && !closed_ &&
         !(conn_.peer_half_closed() && conn_.buffered() == 0);
}

std::function<void()> Session::make_wake() {
  return [guard = state_->post_guard, weak = weak_from_this()] {
    std::lock_guard lock(guard->mu);
    if (!guard->open) return;
    auto self = weak.lock();
    if (!self) return;
    asio::post(self->conn_.executor(), [self] { self->conn_.notify(); });
  };
}

void Session::cancel_source() {
  if (!source_ || source_cancelled_) return;
  source_cancelled_ = true;
  try {
    source_->cancel();
  } catch (const std::exception& e) {
    spdlog::debug("gateway: connection {}: cancel failed: {}", id_, e.what());
  }
}

}  // namespace kiln::gateway::detail
