// Internal to cluster/gateway: the writer of one streamed (Server-Sent Events) response.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include "cluster/gateway/connection.h"
#include "cluster/gateway/gateway.h"

namespace kiln::gateway::detail {

// Writes `head` at once (chunked for HTTP/1.1), then each non-empty source.take() as one chunk,
// ": ping\n\n" whenever nothing was written for options.ping_interval, and the final empty chunk
// once take() reports done. After the peer's EOF a ping is written at once as a probe (a closed
// peer then counts as gone, a half-closed one gets the rest). The caller has set the source's wake-up (it must reach
// conn.notify()) and started conn's disconnect monitor. Returns true when the stream ended
// normally; false when it was cut short (peer gone, a write failed or timed out, the connection
// was closed by stop()); the caller then cancels the source. Runs on conn's strand.
boost::asio::awaitable<bool> write_sse(Connection& conn, const GatewayOptions& options,
                                       http::response<http::empty_body>& head,
                                       ResponseSource& source);

}  // namespace kiln::gateway::detail
