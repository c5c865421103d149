// Gateway: owns the io_context, its threads, the listener and the shared state; start, drain and
// stop. The per-connection work is in session.cpp, the accept loop in listener.cpp.
#include "cluster/gateway/gateway.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <spdlog/spdlog.h>

#include "cluster/gateway/listener.h"
#include "cluster/gateway/server_state.h"
#include "cluster/gateway/session.h"

namespace kiln::gateway {

namespace asio = boost::asio;

namespace {

// How long stop() lets sessions run their cancellation before stopping the io_context.
constexpr std::chrono::milliseconds kStopGrace{2000};

Status validate(const GatewayOptions& o, const Handler& handler) {
  if (!handler) return invalid_argument("gateway: no request handler");
  if (o.threads < 1) return invalid_argument("gateway: threads must be >= 1, got {}", o.threads);
  if (o.max_connections < 1) {
    return invalid_argument("gateway: max_connections must be >= 1, got {}", o.max_connections);
  }
  if (o.max_header_bytes < 1 || o.max_header_bytes > (int64_t{1} << 30)) {
    return invalid_argument("gateway: max_header_bytes must be in [1, 2^30], got {}",
                            o.max_header_bytes);
  }
  if (o.max_body_bytes < 0) {
    return invalid_argument("gateway: max_body_bytes must be >= 0, got {}", o.max_body_bytes);
  }
  const std::pair<const char*, std::chrono::milliseconds> durations[] = {
      {"read_timeout", o.read_timeout},
      {"write_timeout", o.write_timeout},
      {"idle_timeout", o.idle_timeout},
      {"ping_interval", o.ping_interval}};
  for (const auto& [name, value] : durations) {
    if (value.count() <= 0) {
      return invalid_argument("gateway: {} must be > 0 ms, got {}", name, value.count());
    }
  }
  return Status::ok_status();
}

}  // namespace

struct Gateway::Impl {
  Impl(GatewayOptions options, Handler handler)
      : ioc(std::max(1, options.threads)),
        state(std::make_shared<detail::ServerState>(ioc, std::move(options), std::move(handler))) {}

  void run_thread() {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {  // a handler threw: log and keep serving
        spdlog::error("gateway: handler raised: {}", e.what());
      }
    }
  }

  asio::io_context ioc;  // first member: destroyed last, after everything that uses it
  std::shared_ptr<detail::ServerState> state;
  std::shared_ptr<detail::Listener> listener;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<int> port{0};
  std::mutex mu;  // serialises start/stop_accepting/stop
  bool started = false;
  bool stopped = false;
};

Gateway::Gateway(GatewayOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

Gateway::~Gateway() { stop(); }

Status Gateway::start() {
  std::lock_guard lock(impl_->mu);
  const GatewayOptions& o = impl_->state->options;
  if (impl_->started || impl_->stopped) return invalid_argument("gateway: already started");
  KILN_RETURN_IF_ERROR(validate(o, impl_->state->handler));
  auto listener = detail::Listener::open(impl_->state);
  if (!listener.ok()) return listener.status();
  impl_->listener = std::move(listener).value();
  impl_->port = impl_->listener->port();
  impl_->listener->start();
  impl_->work.emplace(asio::make_work_guard(impl_->ioc));
  for (int i = 0; i < o.threads; ++i) impl_->threads.emplace_back([this] { impl_->run_thread(); });
  impl_->started = true;
  spdlog::debug("gateway: listening on {}:{}", o.host, impl_->port.load());
  return Status::ok_status();
}

int Gateway::port() const { return impl_->port.load(); }

void Gateway::stop_accepting() {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return;
  impl_->state->draining = true;  // the listener stays open: new clients get their 503s
  for (auto& session : impl_->state->sessions()) session->drain();
}

void Gateway::stop() {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  auto& state = *impl_->state;
  state.draining = true;
  state.stopping = true;
  if (impl_->listener) impl_->listener->close();
  for (auto& session : state.sessions()) session->shutdown();
  if (!impl_->threads.empty()) {
    // Let the sessions run their shutdown (cancel sources, close sockets) before the loop stops.
    auto deadline = std::chrono::steady_clock::now() + kStopGrace;
    while ((state.open_connections.load() > 0 || !impl_->listener->finished()) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  std::lock_guard guard(state.post_guard->mu);
  state.post_guard->open = false;
}

int Gateway::open_connections() const { return impl_->state->open_connections.load(); }

}  // namespace kiln::gateway
