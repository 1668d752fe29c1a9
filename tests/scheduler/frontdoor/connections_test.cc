// The front door's HTTP connection handling (scheduler/frontdoor/http_server.h), against the real
// strata-scheduler process over loopback: a burst of 500 connections is answered whole (200 or 503 with
// Retry-After; none reset or dropped), 1,000 connections trickling their heads a byte at a time neither
// keep a normal request or /health from being answered nor stay open past the header timeout, one address
// past its cap gets 503s while another is served, and a kept-alive connection serves many requests.
// Client side: non-blocking sockets under poll(2), one thread, so 1,000 connections cost no threads here.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/loopback.h"

namespace {

using strata::testing::ChildProcess;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

constexpr char kHealthz[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

// A non-blocking socket from `source` (an address of 127.0.0.0/8) connecting to 127.0.0.1:port.
int Connect(int port, const char* source = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0 && errno != EINPROGRESS)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// One connection's exchange: `request` written once the socket is writable, then everything read to EOF.
struct Exchange {
  int fd = -1;
  std::string request;
  size_t sent = 0;
  std::string response;
  bool done = false;
  int error = 0;  // errno of a failed send/recv (ECONNRESET: a reset), 0 if none
  int Status() const { return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0; }
};

// Drives every exchange until each has read EOF or failed, or `deadline` passes.
void RunExchanges(std::vector<Exchange>& exchanges, Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    std::vector<pollfd> fds;
    std::vector<Exchange*> owners;
    for (Exchange& exchange : exchanges) {
      if (exchange.done) continue;
      const short events = exchange.sent < exchange.request.size() ? POLLOUT : POLLIN;
      fds.push_back({exchange.fd, events, 0});
      owners.push_back(&exchange);
    }
    if (fds.empty()) return;
    ::poll(fds.data(), fds.size(), 100);
    for (size_t i = 0; i < fds.size(); ++i) {
      Exchange& exchange = *owners[i];
      if (fds[i].revents == 0) continue;
      if (exchange.sent < exchange.request.size()) {
        const ssize_t n = ::send(exchange.fd, exchange.request.data() + exchange.sent,
                                 exchange.request.size() - exchange.sent, MSG_NOSIGNAL);
        if (n > 0) exchange.sent += static_cast<size_t>(n);
        if (n < 0 && errno != EAGAIN) {
          exchange.error = errno;
          exchange.sent = exchange.request.size();  // read what the server answered, if anything
        }
        continue;
      }
      char buffer[4096];
      const ssize_t n = ::recv(exchange.fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        exchange.response.append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EAGAIN) {
        if (n < 0) exchange.error = errno;
        exchange.done = true;
      }
    }
  }
}

void CloseAll(std::vector<Exchange>& exchanges) {
  for (Exchange& exchange : exchanges) {
    if (exchange.fd >= 0) ::close(exchange.fd);
    exchange.fd = -1;
  }
}

class HttpConnections : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // 1,000 client sockets here, as many on the server (which inherits the limit).
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    // Both ends need one descriptor per connection, and some to spare.
    slow_connections_ = static_cast<int>(std::min<rlim_t>(1000, limit.rlim_cur > 200 ? limit.rlim_cur - 128 : 0));
    if (slow_connections_ < 1000) {
      std::cout << "RLIMIT_NOFILE is " << limit.rlim_cur << ": " << slow_connections_ << " slow connections, not 1000\n";
    }
  }
  static inline int slow_connections_ = 1000;

  void Start(std::vector<std::string> extra = {}) {
    port_ = strata::testing::FreePort();
    std::vector<std::string> argv = {STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0",
                                     "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--http-host",
                                     "127.0.0.1", "--http-port", std::to_string(port_), "--model-dir",
                                     std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny",
                                     "--served-model-name", "tiny"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    scheduler_ = std::make_unique<ChildProcess>(argv);
    const std::string log = scheduler_->ReadStderrUntil("event=frontdoor_started", std::chrono::seconds(20));
    ASSERT_THAT(log, HasSubstr("event=frontdoor_started")) << log;
  }

  // One request on a new connection from 127.0.0.1, answered within `within` (far below the 40 s that
  // slow heads locked clients out for).
  Exchange Ask(const std::string& request, std::chrono::seconds within = std::chrono::seconds(5)) {
    std::vector<Exchange> one(1);
    one[0].fd = Connect(port_);
    one[0].request = request;
    RunExchanges(one, Clock::now() + within);
    CloseAll(one);
    return one[0];
  }

  int port_ = 0;
  std::unique_ptr<ChildProcess> scheduler_;
};

TEST_F(HttpConnections, ABurstOf500ConnectionsIsAnsweredWithoutResets) {
  // A connection cap below the burst, so that some are refused: each must still read an answer.
  Start({"--http-max-connections", "64"});
  std::vector<Exchange> burst(500);
  for (Exchange& exchange : burst) {
    exchange.fd = Connect(port_);
    ASSERT_GE(exchange.fd, 0) << "connect: " << std::strerror(errno);
    // Not a health check: those have threads of their own past the cap.
    exchange.request = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  }
  RunExchanges(burst, Clock::now() + std::chrono::seconds(30));
  std::map<int, int> by_status;
  int resets = 0, unanswered = 0;
  for (const Exchange& exchange : burst) {
    ++by_status[exchange.Status()];
    if (exchange.error == ECONNRESET) ++resets;
    if (!exchange.done) ++unanswered;
    if (exchange.Status() == 503) {
      EXPECT_THAT(exchange.response, HasSubstr("Retry-After: "));
    }
  }
  CloseAll(burst);
  std::string counts;
  for (const auto& [status, n] : by_status) counts += std::to_string(status) + ": " + std::to_string(n) + " ";
  std::cout << "burst of 500: " << counts << "resets: " << resets << "\n";
  EXPECT_EQ(resets, 0) << counts;
  EXPECT_EQ(unanswered, 0) << counts;
  EXPECT_EQ(by_status[200] + by_status[503], 500) << counts;
  EXPECT_GT(by_status[200], 0) << counts;
}

TEST_F(HttpConnections, SlowHeadsNeitherLockOutOthersNorOutliveTheHeaderTimeout) {
  // The read timeout far past the header timeout: only the header deadline can close the slow ones here.
  Start({"--http-header-timeout-s", "2", "--http-read-timeout-s", "120"});
  // 1,000 connections (fewer under a low RLIMIT_NOFILE) from four other addresses (250 each, under the
  // per-address cap of 256), each sending a head one byte at a time, never ending it.
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(500, 'a');
  std::vector<int> slow;
  for (int i = 0; i < slow_connections_; ++i) {
    const std::string source = "127.0.0." + std::to_string(2 + i % 4);
    const int fd = Connect(port_, source.c_str());
    ASSERT_GE(fd, 0) << "connect: " << std::strerror(errno);
    slow.push_back(fd);
  }
  const auto opened = Clock::now();
  std::vector<bool> closed(slow.size(), false);
  size_t next_byte = 0, open = slow.size();
  auto trickle = [&] {  // one byte to each, then notes which the server closed
    for (size_t i = 0; i < slow.size(); ++i) {
      if (closed[i]) continue;
      char byte;
      const ssize_t n = ::recv(slow[i], &byte, 1, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        closed[i] = true;
        --open;
        continue;
      }
      ::send(slow[i], head.data() + next_byte % head.size(), 1, MSG_NOSIGNAL);
    }
    ++next_byte;
  };
  trickle();
  // Served while they are all open (well before the 2 s header timeout has run out for any of them).
  const Exchange health = Ask(kHealthz);
  const Exchange models = Ask("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const Exchange readiness = Ask("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  trickle();
  const size_t open_while_served = open;
  EXPECT_EQ(health.Status(), 200) << health.response;
  EXPECT_EQ(models.Status(), 200) << models.response;
  EXPECT_THAT(models.response, HasSubstr("\"tiny\""));
  // No worker: /health answers, and says not ready.
  EXPECT_EQ(readiness.Status(), 503) << readiness.response;
  EXPECT_THAT(readiness.response, HasSubstr("reason"));
  std::cout << open_while_served << " slow connections were open while the three requests were answered, "
            << std::chrono::duration<double>(Clock::now() - opened).count() << " s after they opened\n";
  // Then the header timeout closes every one of them, though each still sends a byte every 200 ms.
  const auto deadline = opened + std::chrono::seconds(60);
  while (open > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    trickle();
  }
  EXPECT_EQ(open, 0u) << "slow connections still open 60 s after they opened (header timeout: 2 s)";
  for (const int fd : slow) ::close(fd);
}

TEST_F(HttpConnections, OneAddressPastItsCapIsRefusedWhileAnotherIsServed) {
  Start({"--http-max-connections-per-address", "8"});
  // 8 idle connections from 127.0.0.2 hold its cap (their heads never come within the test).
  std::vector<int> held;
  for (int i = 0; i < 8; ++i) held.push_back(Connect(port_, "127.0.0.2"));
  // Wait until the server holds all eight: a ninth from there is then refused.
  Exchange refused;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  do {
    std::vector<Exchange> one(1);
    one[0].fd = Connect(port_, "127.0.0.2");
    one[0].request = kHealthz;
    RunExchanges(one, Clock::now() + std::chrono::seconds(5));
    CloseAll(one);
    refused = one[0];
  } while (refused.Status() != 503 && Clock::now() < deadline);
  EXPECT_EQ(refused.Status(), 503) << refused.response;
  EXPECT_THAT(refused.response, HasSubstr("Retry-After: 1"));
  EXPECT_THAT(refused.response, HasSubstr("too_many_connections"));
  const Exchange other = Ask(kHealthz);
  EXPECT_EQ(other.Status(), 200) << other.response;
  for (const int fd : held) ::close(fd);
}

TEST_F(HttpConnections, AFullServerStillAnswersItsHealthChecks) {
  Start({"--http-max-connections", "16"});
  // 16 idle connections from 127.0.0.2 hold every connection (their heads never come within the test).
  std::vector<int> held;
  for (int i = 0; i < 16; ++i) held.push_back(Connect(port_, "127.0.0.2"));
  // Wait until the server holds all sixteen: a request is then refused.
  Exchange refused;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  do {
    refused = Ask("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  } while (refused.Status() != 503 && Clock::now() < deadline);
  EXPECT_EQ(refused.Status(), 503) << refused.response;
  EXPECT_THAT(refused.response, HasSubstr("too_many_connections"));
  const Exchange liveness = Ask(kHealthz);
  EXPECT_EQ(liveness.Status(), 200) << liveness.response;
  // No worker: /health answers, and says not ready.
  const Exchange readiness = Ask("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(readiness.Status(), 503) << readiness.response;
  EXPECT_THAT(readiness.response, HasSubstr("reason"));
  EXPECT_THAT(readiness.response, Not(HasSubstr("too_many_connections")));
  for (const int fd : held) ::close(fd);
}

// Reads one response with a Content-Length body from a blocking socket: its status, 0 if it did not come.
int ReadOneResponse(int fd, std::string& buffer) {
  size_t head_end;
  char chunk[4096];
  while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return 0;
    buffer.append(chunk, static_cast<size_t>(n));
  }
  const size_t at = buffer.find("Content-Length: ");
  const size_t length = at < head_end ? std::stoul(buffer.substr(at + 16)) : 0;
  while (buffer.size() < head_end + 4 + length) {
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return 0;
    buffer.append(chunk, static_cast<size_t>(n));
  }
  const int status = buffer.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(buffer.c_str() + 9) : 0;
  buffer.erase(0, head_end + 4 + length);
  return status;
}

TEST_F(HttpConnections, AKeptAliveConnectionServesManyRequests) {
  Start();
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // One after another on the same socket (cpp-httplib alone closed it after the fifth).
  const std::string request = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  std::string buffer;
  for (int i = 1; i <= 20; ++i) {
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()))
        << "request " << i;
    ASSERT_EQ(ReadOneResponse(fd, buffer), 200) << "request " << i << " on the same connection";
  }
  ::close(fd);
}

}  // namespace
