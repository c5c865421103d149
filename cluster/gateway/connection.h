// Internal to cluster/gateway: one accepted socket and the I/O primitives a session and the SSE
// writer share: reads and writes under per-operation deadlines, a wake-up event (signalled by a
// ResponseSource's wake-up or the disconnect monitor), the disconnect monitor, and closing.
// Thread safety: every member is used on the socket's strand only.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "cluster/gateway/server_state.h"

namespace kiln::gateway::detail {

namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

// After a half-close and its probe, check_reset() is polled this often for this long (a reset
// from a closed peer comes back within one round trip); later, at each wake-up.
inline constexpr std::chrono::milliseconds kProbePoll{20};
inline constexpr std::chrono::milliseconds kProbeWindow{1000};

// When to look again: `deadline`, or sooner while a half-close probe is being polled.
inline Clock::time_point probe_wait(Clock::time_point deadline, Clock::time_point probe_until) {
  const auto now = Clock::now();
  return now < probe_until ? std::min(deadline, now + kProbePoll) : deadline;
}

class Connection {
 public:
  // `socket` is bound to its own strand; `options` outlives the connection.
  Connection(tcp::socket socket, const GatewayOptions& options);

  beast::tcp_stream& stream() { return stream_; }
  // Bytes read and not yet parsed, [<= max_header_bytes + 64 KiB]: the input bound per session.
  beast::flat_buffer& buffer() { return buffer_; }
  size_t buffered() const { return buffer_.size(); }
  asio::any_io_executor executor() { return stream_.get_executor(); }
  bool is_open() const { return stream_.socket().is_open(); }

  // Reads whatever arrives (at least one byte) into buffer() before `deadline`; false on
  // error, EOF or deadline (the socket is then closed).
  asio::awaitable<bool> read_some(Clock::time_point deadline);

  // Writes within options.write_timeout; false (and the socket closed) on error or deadline.
  template <class ConstBuffers>
  asio::awaitable<bool> write(const ConstBuffers& buffers) {
    stream_.expires_after(options_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream_, buffers, kTuple);
    co_return finish_write(ec);
  }
  // `head_only`: the header alone (Content-Length as for the body), for a HEAD request.
  asio::awaitable<bool> write(http::response<http::string_body>& response, bool head_only = false);
  asio::awaitable<bool> write_header(http::response_serializer<http::empty_body>& serializer);

  // The wake-up event. notify() counts; wait() returns at once when a notify() came since the
  // last wait, else at the next notify() or at `deadline`, whichever is first.
  void notify();
  asio::awaitable<void> wait(Clock::time_point deadline = Clock::time_point::max());

  // The disconnect monitor: a read kept pending while a response is being produced. Data that
  // arrives (a pipelined request) stays in buffer(); an error (reset) sets peer_gone() and
  // notifies. A clean EOF sets peer_half_closed() and notifies: the peer either closed or only
  // shut down its sending side (shutdown(SHUT_WR) after the request). The session tells them
  // apart by writing a probe the client ignores and polling check_reset(): a closed peer answers
  // it with a reset, a half-closed one still gets its response. `owner` keeps
  // this object alive until the read completes. Reading pauses (and disconnects go unnoticed)
  // while buffer() is full.
  void start_monitor(std::shared_ptr<void> owner);
  // Cancels the monitor read and waits until it has completed.
  asio::awaitable<void> stop_monitor();
  bool peer_gone() const { return peer_gone_; }
  bool peer_half_closed() const { return peer_half_closed_; }
  // After a half-close, whether the peer is really gone: a write sent since (a probe) came back
  // as a reset. Sets peer_gone() when it did. Cheap (one getsockopt).
  bool check_reset();

  // Closes the socket at once (pending operations complete with an error).
  void close();
  // After a response that ends the connection: send FIN, discard what the peer still sends
  // for a short while (so it sees the response instead of a reset), then close.
  asio::awaitable<void> lingering_close();

 private:
  bool finish_write(const beast::error_code& ec);
  void read_for_monitor();

  const GatewayOptions& options_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  asio::steady_timer wake_timer_;        // expires at the wait's deadline; notify() cancels it
  uint64_t pending_wakeups_ = 0;         // notify() calls not yet consumed by wait()
  std::shared_ptr<void> monitor_owner_;  // set while a monitor read is in flight
  bool monitor_stopping_ = false;
  bool peer_gone_ = false;
  bool peer_half_closed_ = false;  // the monitor read EOF: the peer sends nothing more
};

}  // namespace kiln::gateway::detail
