// The SSE writer: head, then the source's bytes as chunks as they come, comment pings while the
// source is quiet, and the final chunk (see sse.h).
#include "cluster/gateway/sse.h"

#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/serializer.hpp>

namespace kiln::gateway::detail {

namespace {

constexpr std::string_view kPing = ": ping\n\n";

asio::awaitable<bool> write_piece(Connection& conn, bool chunked, std::string_view data) {
  if (chunked) co_return co_await conn.write(http::make_chunk(asio::buffer(data)));
  co_return co_await conn.write(asio::buffer(data));
}

}  // namespace

asio::awaitable<bool> write_sse(Connection& conn, const GatewayOptions& options,
                                http::response<http::empty_body>& head, ResponseSource& source) {
  const bool chunked = head.chunked();
  http::response_serializer<http::empty_body> serializer{head};
  if (!co_await conn.write_header(serializer)) co_return false;
  auto last_write = Clock::now();
  Clock::time_point probe_until{};  // set once the peer's EOF was probed
  for (;;) {
    if (conn.peer_half_closed() && probe_until == Clock::time_point{}) {
      // A ping is the probe: a half-closed client ignores it, a closed one answers a reset.
      probe_until = Clock::now() + kProbeWindow;
      if (!co_await write_piece(conn, chunked, kPing)) co_return false;
      last_write = Clock::now();
    }
    if (!conn.is_open() || conn.peer_gone() || (conn.peer_half_closed() && conn.check_reset())) {
      co_return false;
    }
    bool done = false;
    std::string data = source.take(&done);
    if (!data.empty()) {
      if (!co_await write_piece(conn, chunked, data)) co_return false;
      last_write = Clock::now();
    }
    if (done) break;
    auto ping_at = last_write + options.ping_interval;
    if (Clock::now() >= ping_at) {
      if (!co_await write_piece(conn, chunked, kPing)) co_return false;
      last_write = Clock::now();
      continue;
    }
    co_await conn.wait(probe_wait(ping_at, probe_until));
  }
  if (chunked && !co_await conn.write(http::make_chunk_last())) co_return false;
  co_return true;
}

}  // namespace kiln::gateway::detail
