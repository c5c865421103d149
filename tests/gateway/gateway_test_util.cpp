// The raw test client, the scriptable source and the fixture (see gateway_test_util.h).
#include "gateway_test_util.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <stdexcept>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace kiln::gateway::testing {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

// ---- RawClient ----

RawClient::RawClient(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    connect_errno_ = errno;
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawClient::~RawClient() { close(); }

void RawClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawClient::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool RawClient::send(std::string_view data) {
  while (!data.empty()) {
    if (fd_ < 0) return false;
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool RawClient::fill(Clock::time_point deadline) {
  if (fd_ < 0) return false;
  for (;;) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    if (left < 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
}

bool RawClient::read_line(std::string* line, Clock::time_point deadline) {
  for (;;) {
    size_t eol = buf_.find("\r\n");
    if (eol != std::string::npos) {
      *line = buf_.substr(0, eol);
      buf_.erase(0, eol + 2);
      return true;
    }
    if (!fill(deadline)) return false;
  }
}

bool RawClient::read_exact(size_t n, std::string* out, Clock::time_point deadline) {
  while (buf_.size() < n) {
    if (!fill(deadline)) return false;
  }
  out->append(buf_, 0, n);
  buf_.erase(0, n);
  return true;
}

std::optional<ClientResponse> RawClient::read_head(Ms timeout) {
  auto deadline = Clock::now() + timeout;
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(deadline)) return std::nullopt;
  }
  std::string head = buf_.substr(0, end + 2);
  buf_.erase(0, end + 4);
  ClientResponse r;
  size_t eol = head.find("\r\n");
  std::string status_line = head.substr(0, eol);
  if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
  r.status = std::stoi(status_line.substr(9, 3));
  size_t pos = eol + 2;
  while (pos < head.size()) {
    size_t next = head.find("\r\n", pos);
    std::string field = head.substr(pos, next - pos);
    pos = next + 2;
    size_t colon = field.find(':');
    if (colon == std::string::npos) continue;
    r.headers[lower(field.substr(0, colon))] = trim(field.substr(colon + 1));
  }
  return r;
}

std::optional<std::string> RawClient::read_chunk(Ms timeout) {
  auto deadline = Clock::now() + timeout;
  std::string size_line;
  if (!read_line(&size_line, deadline)) return std::nullopt;
  size_t size = std::stoul(size_line, nullptr, 16);
  std::string data;
  if (!read_exact(size, &data, deadline)) return std::nullopt;
  std::string crlf;
  if (!read_line(&crlf, deadline) || !crlf.empty()) return std::nullopt;
  return data;
}

std::optional<ClientResponse> RawClient::read_response(Ms timeout) {
  auto deadline = Clock::now() + timeout;
  auto r = read_head(timeout);
  // Interim (1xx) responses before the final one are skipped, as HTTP clients do.
  while (r && r->status / 100 == 1 && r->status != 101) {
    r = read_head(std::chrono::duration_cast<Ms>(deadline - Clock::now()));
  }
  if (!r) return std::nullopt;
  if (r->status == 204 || r->status == 304 || r->status / 100 == 1) return r;
  if (lower(r->header("transfer-encoding")) == "chunked") {
    for (;;) {
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
      auto chunk = read_chunk(std::max(left, Ms(0)));
      if (!chunk) return std::nullopt;
      if (chunk->empty()) return r;
      r->body += *chunk;
    }
  }
  if (r->has("content-length")) {
    if (!read_exact(std::stoul(r->header("content-length")), &r->body, deadline)) {
      return std::nullopt;
    }
    return r;
  }
  while (fill(deadline)) {
  }
  r->body = std::move(buf_);
  buf_.clear();
  return r;
}

bool RawClient::wait_closed(Ms timeout) {
  if (fd_ < 0) return true;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    if (left < 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return false;
    if (r < 0) return true;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;  // EOF or reset
  }
}

// ---- TestSource ----

void TestSource::set_wakeup(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wake_ = std::move(wake);
}

std::string TestSource::take(bool* done) {
  std::lock_guard lock(mu_);
  std::string out = std::move(pending_);
  pending_.clear();
  *done = finished_;
  return out;
}

std::optional<HttpResponse> TestSource::take_response() {
  std::lock_guard lock(mu_);
  auto out = std::move(response_);
  response_.reset();
  return out;
}

void TestSource::cancel() {
  std::lock_guard lock(mu_);
  ++cancels_;
  cv_.notify_all();
}

void TestSource::push(const std::string& data, bool finish) {
  {
    std::lock_guard lock(mu_);
    pending_ += data;
    finished_ = finished_ || finish;
  }
  wake();
}

void TestSource::respond(HttpResponse response) {
  {
    std::lock_guard lock(mu_);
    response_ = std::move(response);
  }
  wake();
}

void TestSource::wake() {
  std::function<void()> w;
  {
    std::lock_guard lock(mu_);
    w = wake_;
  }
  if (w) w();
}

bool TestSource::wait_cancelled(Ms timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return cancels_ > 0; });
}

int TestSource::cancels() {
  std::lock_guard lock(mu_);
  return cancels_;
}

bool TestSource::wakeup_set() {
  std::lock_guard lock(mu_);
  return static_cast<bool>(wake_);
}

size_t TestSource::pending_bytes() {
  std::lock_guard lock(mu_);
  return pending_.size();
}

// ---- GatewayTest ----

void GatewayTest::TearDown() { gw_.reset(); }

void GatewayTest::start(GatewayOptions options) {
  options.host = "127.0.0.1";
  options.port = 0;
  gw_ = std::make_unique<Gateway>(options, [this](const HttpRequest& r) { return handle(r); });
  Status st = gw_->start();
  ASSERT_TRUE(st.ok()) << st.to_string();
  port_ = gw_->port();
  ASSERT_GT(port_, 0);
}

RouteResult GatewayTest::handle(const HttpRequest& req) {
  RouteResult out;
  if (req.path == "/echo") {
    out.response.content_type = "text/plain";
    out.response.body = req.body;
    out.response.headers = {{"X-Method", req.method},
                            {"X-Path", req.path},
                            {"X-Target", req.target},
                            {"X-Auth", req.authorization},
                            {"X-Content-Type", req.content_type},
                            {"X-Seen-Request-Id", req.request_id}};
    return out;
  }
  if (req.path == "/deferred" || req.path == "/stream" || req.path == "/ready") {
    auto source = std::make_shared<TestSource>();
    if (req.path == "/ready") source->respond(HttpResponse{202, "text/plain", "ready", {}});
    out.source = source;
    out.stream = req.path == "/stream";
    out.response.headers = {{"X-Stream", "1"}};
    std::lock_guard lock(mu_);
    sources_.push_back(source);
    cv_.notify_all();
    return out;
  }
  if (req.path == "/throw") throw std::runtime_error("route failed");
  out.response.status = 404;
  out.response.body = R"({"error":"not found"})";
  return out;
}

std::shared_ptr<TestSource> GatewayTest::next_source(Ms timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !sources_.empty(); })) return nullptr;
  auto s = sources_.front();
  sources_.pop_front();
  return s;
}

std::optional<ClientResponse> GatewayTest::get(RawClient& client, const std::string& path,
                                               const std::string& extra_headers) {
  if (!client.send("GET " + path + " HTTP/1.1\r\nHost: test\r\n" + extra_headers + "\r\n")) {
    return std::nullopt;
  }
  return client.read_response();
}

}  // namespace kiln::gateway::testing
