#include "scheduler/frontdoor/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>

#include "common/strings.h"

namespace strata::frontdoor {
namespace {

// Set on the accept thread while it runs a connection that no thread could take: that connection is
// refused there, at once (ConnectionThreads::enqueue).
thread_local bool refuse_on_this_thread = false;

// Threads past the connection cap, which serve only /health and /healthz (HttpServer::ServesHealthOnly).
constexpr int kHealthThreads = 8;

int PollMs(absl::Duration left) {
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 100));
}

// Waits up to `deadline` for `events` on `fd`, in slices of at most 100 ms so that `stopping` is seen.
// True when ready.
bool WaitFor(int fd, short events, absl::Time deadline, const std::atomic<socket_t>* server_socket) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    pollfd entry{fd, events, 0};
    const int ready = ::poll(&entry, 1, PollMs(left));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
    if (left <= absl::ZeroDuration()) return false;
    if (server_socket != nullptr && server_socket->load() == INVALID_SOCKET) return false;
  }
}

std::string AddressOf(const sockaddr_storage& address, socklen_t length, int* port) {
  char host[NI_MAXHOST] = {0}, service[NI_MAXSERV] = {0};
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof(host), service,
                    sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "";
  }
  if (port != nullptr) *port = std::atoi(service);
  return host;
}

std::string PeerAddress(int fd, int* port = nullptr) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "";
  return AddressOf(address, length, port);
}

// httplib::Stream over one accepted socket, with the policy's deadlines: a request's head must end by
// its deadline (BeginRequest); after it, each read waits at most the read timeout. Reads are buffered
// (cpp-httplib reads a head one byte at a time).
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int fd, const ConnectionPolicy& policy, const std::atomic<socket_t>* server_socket)
      : fd_(fd), policy_(policy), server_socket_(server_socket) {}

  // A request's head starts now (or with bytes already buffered) and must end by now + header timeout.
  void BeginRequest() {
    in_head_ = true;
    head_deadline_ = absl::Now() + policy_.header_timeout;
    tail_ = 0;
  }
  bool buffered() const { return begin_ < end_; }

  bool is_readable() const override {
    return buffered() || WaitFor(fd_, POLLIN, ReadDeadline(), server_socket_);
  }
  bool is_writable() const override {
    if (!WaitFor(fd_, POLLOUT, absl::Now() + policy_.write_timeout, server_socket_)) return false;
    // Alive unless the client's end is closed (a read would return 0).
    pollfd entry{fd_, POLLIN, 0};
    if (::poll(&entry, 1, 0) <= 0) return true;
    char byte;
    return ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) != 0;
  }

  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      // A large read (a body) goes straight to the caller; a head is read a byte at a time, from the buffer.
      const bool direct = size >= sizeof(buffer_);
      const ssize_t n = Receive(direct ? ptr : buffer_, direct ? size : sizeof(buffer_));
      if (n <= 0) return n;
      if (direct) {
        if (in_head_) SeeHeadBytes(ptr, static_cast<size_t>(n));
        return n;
      }
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buffer_ + begin_, n);
    begin_ += n;
    if (in_head_) SeeHeadBytes(ptr, n);
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    while (true) {
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0 || errno == EINTR) {
        if (n >= 0) return n;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!WaitFor(fd_, POLLOUT, absl::Now() + policy_.write_timeout, server_socket_)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { ip = PeerAddress(fd_, &port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) ip = AddressOf(address, length, &port);
  }
  socket_t socket() const override { return fd_; }

 private:
  // recv(2) without waiting when bytes are there; else waits up to the read deadline (-1 past it).
  ssize_t Receive(char* into, size_t size) {
    while (true) {
      const ssize_t n = ::recv(fd_, into, size, MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!WaitFor(fd_, POLLIN, ReadDeadline(), server_socket_)) return -1;
    }
  }
  absl::Time ReadDeadline() const {
    const absl::Time idle = absl::Now() + policy_.read_timeout;
    return in_head_ ? std::min(idle, head_deadline_) : idle;
  }
  // The head ends at its first empty line ("\r\n\r\n"; cpp-httplib takes only CRLF line ends).
  void SeeHeadBytes(const char* bytes, size_t n) {
    static constexpr char kEnd[] = "\r\n\r\n";
    for (size_t i = 0; i < n && in_head_; ++i) {
      tail_ = bytes[i] == kEnd[tail_] ? tail_ + 1 : (bytes[i] == '\r' ? 1 : 0);
      if (tail_ == 4) in_head_ = false;
    }
  }

  const int fd_;
  const ConnectionPolicy& policy_;
  const std::atomic<socket_t>* server_socket_;
  char buffer_[8192];
  size_t begin_ = 0, end_ = 0;
  bool in_head_ = true;
  absl::Time head_deadline_ = absl::InfiniteFuture();
  int tail_ = 0;
};

}  // namespace

// cpp-httplib's task queue, one thread per open connection: threads start as connections need them, up
// to the cap, and are kept for the next. A connection that finds every thread busy at the cap is not
// queued: it runs on the accept thread at once, which refuses it (refuse_on_this_thread).
class HttpServer::ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_threads_(max_threads) {}
  ~ConnectionThreads() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (idle_ > jobs_.size()) {
        jobs_.push_back(std::move(fn));
        ready_.notify_one();
        return;
      }
      if (threads_.size() < max_threads_) {
        jobs_.push_back(std::move(fn));
        threads_.emplace_back([this] { Run(); });
        return;
      }
    }
    refuse_on_this_thread = true;
    fn();
    refuse_on_this_thread = false;
  }

  void shutdown() override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      if (jobs_.empty()) {
        if (stopping_) return;
        ++idle_;
        ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        --idle_;
        continue;
      }
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  const size_t max_threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;  // only the accept thread adds, and shutdown() runs on it afterwards
  size_t idle_ = 0;
  bool stopping_ = false;
};

HttpServer::HttpServer(ConnectionPolicy policy, MetricsRegistry* metrics) : policy_(policy) {
  const size_t max_threads = static_cast<size_t>(std::max(1, policy_.max_connections) + kHealthThreads);
  new_task_queue = [max_threads] { return new ConnectionThreads(max_threads); };
  // SO_REUSEADDR only (common/daemon.cc says why: no silent port sharing); TCP_NODELAY, inherited by
  // accepted sockets and set on each again below.
  set_socket_options([](int socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  set_tcp_nodelay(true);
  set_read_timeout(std::chrono::microseconds(absl::ToInt64Microseconds(policy_.read_timeout)));
  set_write_timeout(std::chrono::microseconds(absl::ToInt64Microseconds(policy_.write_timeout)));
  set_keep_alive_timeout(std::max<time_t>(1, absl::ToInt64Seconds(policy_.keep_alive_timeout)));
  set_keep_alive_max_count(static_cast<size_t>(std::max(1, policy_.keep_alive_max_requests)));
  if (metrics != nullptr) {
    connections_gauge_ = &metrics->AddGauge("strata_frontdoor_http_connections", "Open front-door HTTP connections");
    const std::string help = "Front-door HTTP connections answered 503 at once because a connection cap was full";
    refused_total_ = &metrics->AddCounter("strata_frontdoor_http_connections_refused_total", help,
                                          {{"reason", "max_connections"}});
    refused_per_address_ = &metrics->AddCounter("strata_frontdoor_http_connections_refused_total", help,
                                                {{"reason", "max_connections_per_address"}});
  }
}

HttpServer::~HttpServer() = default;

absl::StatusOr<int> HttpServer::Bind(const std::string& host, int port) {
  const int bound = port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        StrCat("front door: cannot listen for HTTP on ", host, ":", port, " (address in use or not local?)"));
  }
  // cpp-httplib listened with a backlog of 5; listen(2) again on a listening socket sets a new one.
  if (::listen(svr_sock_.load(), policy_.listen_backlog) != 0) {
    return absl::UnavailableError(StrCat("front door: listen(backlog=", policy_.listen_backlog,
                                         ") on ", host, ":", bound, ": ", std::strerror(errno)));
  }
  return bound;
}

bool HttpServer::TakeAddressSlot(const std::string& address) {
  absl::MutexLock lock(&mutex_);
  int& open = per_address_[address];
  if (policy_.max_connections_per_address > 0 && open >= policy_.max_connections_per_address) {
    if (open == 0) per_address_.erase(address);
    return false;
  }
  ++open;
  return true;
}

void HttpServer::ReleaseAddressSlot(const std::string& address) {
  absl::MutexLock lock(&mutex_);
  auto it = per_address_.find(address);
  if (it != per_address_.end() && --it->second <= 0) per_address_.erase(it);
}

void HttpServer::Refuse(socket_t sock, std::string_view reason, absl::Duration drain_for) {
  const std::string body = StrCat(
      R"({"error": {"message": "The server has too many open connections)", reason,
      R"(; retry later.", "type": "server_error", "param": null, "code": "too_many_connections"}})");
  const std::string response =
      StrCat("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: ",
             policy_.retry_after_s, "\r\nConnection: close\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  // A fresh socket's send buffer takes it whole; never wait on the accept thread.
  (void)::send(sock, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_WR);
  // Closing with unread bytes would send a reset, which can reach the client before the answer.
  const absl::Time deadline = absl::Now() + drain_for;
  char scratch[4096];
  while (true) {
    const ssize_t n = ::recv(sock, scratch, sizeof(scratch), MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
    if (!WaitFor(sock, POLLIN, deadline, &svr_sock_)) break;
  }
  ::close(sock);
}

bool HttpServer::AsksForHealth(socket_t sock) {
  static constexpr std::string_view kPaths[] = {"GET /health ", "GET /health?", "GET /healthz ", "GET /healthz?"};
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  char start[16];
  while (true) {
    const ssize_t n = ::recv(sock, start, sizeof(start), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return false;
    const std::string_view seen(start, n > 0 ? static_cast<size_t>(n) : 0);
    bool could_be = false;
    for (const std::string_view path : kPaths) {
      if (seen.size() >= path.size() && seen.substr(0, path.size()) == path) return true;
      if (path.substr(0, std::min(path.size(), seen.size())) == seen.substr(0, std::min(path.size(), seen.size()))) {
        could_be = true;
      }
    }
    if (!could_be || !WaitFor(sock, POLLIN, deadline, &svr_sock_)) return false;
    if (seen.size() == sizeof(start)) return false;
    // More bytes may have come: peek again (a trickle is bounded by the deadline).
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  const int yes = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
  if (refuse_on_this_thread) {
    if (refused_total_ != nullptr) refused_total_->Increment();
    Refuse(sock, " (every connection thread is busy)", absl::ZeroDuration());
    return false;
  }
  const std::string address = PeerAddress(sock);
  if (!TakeAddressSlot(address)) {
    if (refused_per_address_ != nullptr) refused_per_address_->Increment();
    Refuse(sock, " from this client address", absl::Milliseconds(200));
    return false;
  }
  // Past the cap, on one of the few threads kept for it: a health check is served (one request), anything
  // else refused.
  const bool health_only = open_.fetch_add(1) >= policy_.max_connections;
  if (health_only && !AsksForHealth(sock)) {
    --open_;
    ReleaseAddressSlot(address);
    if (refused_total_ != nullptr) refused_total_->Increment();
    Refuse(sock, "", absl::Milliseconds(200));
    return false;
  }
  const int max_requests = health_only ? 1 : policy_.keep_alive_max_requests;
  if (connections_gauge_ != nullptr) connections_gauge_->Add(1);
  DeadlineStream stream(sock, policy_, &svr_sock_);
  bool ok = true;
  for (int served = 0; served < max_requests; ++served) {
    // The first request may take the header timeout to start; a kept-alive one the idle timeout, then its own.
    if (served > 0 && !stream.buffered() &&
        !WaitFor(sock, POLLIN, absl::Now() + policy_.keep_alive_timeout, &svr_sock_)) {
      break;
    }
    stream.BeginRequest();
    bool closed = false;
    ok = process_request(stream, served + 1 == max_requests, closed, nullptr);
    if (!ok || closed || svr_sock_.load() == INVALID_SOCKET) break;
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  --open_;
  if (connections_gauge_ != nullptr) connections_gauge_->Add(-1);
  ReleaseAddressSlot(address);
  return ok;
}

}  // namespace strata::frontdoor
