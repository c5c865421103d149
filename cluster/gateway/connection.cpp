// One accepted socket: deadline-bounded reads and writes, the wake-up event, the disconnect
// monitor and closing (see connection.h). Runs on the socket's strand.
#include "cluster/gateway/connection.h"

#include <algorithm>
#include <array>

#include <sys/socket.h>

#include <spdlog/spdlog.h>

namespace kiln::gateway::detail {

namespace {

constexpr size_t kReadChunk = 16 << 10;    // one read into the request buffer
constexpr size_t kBufferSlack = 64 << 10;  // buffer bound beyond max_header_bytes
constexpr size_t kLingerBytes = 4 << 20;   // discarded at most before a server-side close
constexpr std::chrono::milliseconds kLingerTime{500};

size_t buffer_limit(const GatewayOptions& options) {
  return static_cast<size_t>(std::max<int64_t>(options.max_header_bytes, 1)) + kBufferSlack;
}

}  // namespace

Connection::Connection(tcp::socket socket, const GatewayOptions& options)
    : options_(options),
      stream_(std::move(socket)),
      buffer_(buffer_limit(options)),
      wake_timer_(stream_.get_executor()) {}

asio::awaitable<bool> Connection::read_some(Clock::time_point deadline) {
  size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) co_return true;
  stream_.expires_at(deadline);
  auto [ec, n] =
      co_await stream_.async_read_some(buffer_.prepare(std::min(room, kReadChunk)), kTuple);
  buffer_.commit(n);
  stream_.expires_never();
  if (ec) {
    close();
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> Connection::write(http::response<http::string_body>& response,
                                        bool head_only) {
  stream_.expires_after(options_.write_timeout);
  if (head_only) {
    http::response_serializer<http::string_body> serializer{response};
    auto [ec, n] = co_await http::async_write_header(stream_, serializer, kTuple);
    co_return finish_write(ec);
  }
  auto [ec, n] = co_await http::async_write(stream_, response, kTuple);
  co_return finish_write(ec);
}

asio::awaitable<bool> Connection::write_header(
    http::response_serializer<http::empty_body>& serializer) {
  stream_.expires_after(options_.write_timeout);
  auto [ec, n] = co_await http::async_write_header(stream_, serializer, kTuple);
  co_return finish_write(ec);
}

bool Connection::finish_write(const beast::error_code& ec) {
  if (!ec) return true;
  spdlog::debug("gateway: write failed: {}", ec.message());
  close();
  return false;
}

void Connection::notify() {
  ++pending_wakeups_;
  wake_timer_.cancel();
}

asio::awaitable<void> Connection::wait(Clock::time_point deadline) {
  if (pending_wakeups_ == 0) {
    wake_timer_.expires_at(deadline);
    auto [ec] = co_await wake_timer_.async_wait(kTuple);
    (void)ec;  // cancelled by notify() or expired: either way the caller looks again
  }
  pending_wakeups_ = 0;
}

void Connection::start_monitor(std::shared_ptr<void> owner) {
  if (monitor_owner_) return;
  monitor_stopping_ = false;
  monitor_owner_ = std::move(owner);
  read_for_monitor();
}

void Connection::read_for_monitor() {
  size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0 || !is_open()) {
    monitor_owner_.reset();
    notify();
    return;
  }
  auto space = buffer_.prepare(std::min(room, kReadChunk));
  stream_.socket().async_read_some(
      space, [this, owner = monitor_owner_](const beast::error_code& ec, size_t n) {
        buffer_.commit(n);
        if (ec || monitor_stopping_) {
          // An abort we asked for is not a disconnect, nor is a half-close; anything else is.
          if (ec == asio::error::eof) {
            peer_half_closed_ = true;
          } else if (ec && (ec != asio::error::operation_aborted || !monitor_stopping_)) {
            peer_gone_ = true;
          }
          monitor_owner_.reset();
          notify();
          return;
        }
        read_for_monitor();
      });
}

asio::awaitable<void> Connection::stop_monitor() {
  if (!monitor_owner_) co_return;
  monitor_stopping_ = true;
  beast::error_code ec;
  stream_.socket().cancel(ec);
  while (monitor_owner_) co_await wait();
}

bool Connection::check_reset() {
  if (peer_gone_) return true;
  if (!is_open()) return false;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(stream_.socket().native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
      err != 0) {
    peer_gone_ = true;
  }
  return peer_gone_;
}

void Connection::close() { stream_.close(); }

asio::awaitable<void> Connection::lingering_close() {
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!ec) {
    std::array<char, 4096> sink;
    size_t drained = 0;
    stream_.expires_after(std::min(options_.read_timeout, kLingerTime));
    while (drained < kLingerBytes) {
      auto [rec, n] = co_await stream_.async_read_some(asio::buffer(sink), kTuple);
      if (rec) break;
      drained += n;
    }
  }
  close();
}

}  // namespace kiln::gateway::detail
