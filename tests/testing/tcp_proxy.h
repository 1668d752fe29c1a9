// A loopback TCP proxy for fault tests: sits between a client and a daemon and, on command, freezes
// (holds every byte and every new connection, with the sockets left open: the peer that stalls) or cuts
// (resets every connection at once: the peer that drops). One thread, poll(), bounded buffers.
//
//   auto proxy = TcpProxy::Start(daemon_port);      // clients dial proxy->address() instead
//   proxy->Freeze();  ...  proxy->Thaw();
//   proxy->Cut();
#ifndef STRATA_TESTS_TESTING_TCP_PROXY_H_
#define STRATA_TESTS_TESTING_TCP_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace strata::testing {

class TcpProxy {
 public:
  // Listens on 127.0.0.1:`listen_port` (0: any free port) and forwards each accepted connection to
  // 127.0.0.1:`target_port`; a connection whose target refuses is closed.
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(int target_port, int listen_port = 0);
  ~TcpProxy();  // closes every connection
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Stops moving bytes both ways and stops dialing the target for new connections; every socket stays
  // open, so peers see a stall (their deadlines, keepalives and lease timers decide), not an error.
  void Freeze();
  // Moves bytes again, held ones first.
  void Thaw();
  // Resets every open connection (SO_LINGER 0: both peers get ECONNRESET, not a clean EOF). New
  // connections are served as before (or held, while frozen).
  void Cut();

  bool frozen() const { return frozen_.load(); }
  // Connections currently open, and the bytes forwarded so far (both directions).
  int connections() const { return connections_.load(); }
  uint64_t bytes_forwarded() const { return bytes_forwarded_.load(); }

 private:
  struct Connection;
  TcpProxy(int listen_fd, int port, int target_port, int wake_read, int wake_write);
  void Loop();
  void Wake();

  const int listen_fd_;
  const int port_;
  const int target_port_;
  const int wake_read_, wake_write_;  // a pipe that interrupts poll() for Freeze/Thaw/Cut/stop
  std::atomic<bool> frozen_{false};
  std::atomic<bool> cut_requested_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::atomic<uint64_t> bytes_forwarded_{0};
  std::thread thread_;
};

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_TCP_PROXY_H_
