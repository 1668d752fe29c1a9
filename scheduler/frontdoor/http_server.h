// The front door's HTTP connection policy, around cpp-httplib's request parsing and routing: a listen
// backlog that fits a burst, TCP_NODELAY, many requests per kept-alive connection, a deadline for a
// request's head and a longest silence while its body arrives, and caps on open connections (all of them,
// and per client address) answered at once with 503 and Retry-After instead of queued.
#ifndef STRATA_SCHEDULER_FRONTDOOR_HTTP_SERVER_H_
#define STRATA_SCHEDULER_FRONTDOOR_HTTP_SERVER_H_

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics.h"

namespace strata::frontdoor {

struct ConnectionPolicy {
  // listen(2)'s backlog: connections the kernel completes before they are accepted. The kernel caps it
  // at net.core.somaxconn (4096 on Linux >= 5.4). cpp-httplib's own is 5: a burst of 200 lost dozens to
  // resets.
  int listen_backlog = 4096;
  // Open connections at most. Each holds a thread while open (a stream for its whole life: the server is
  // thread-per-connection), so this is also the thread cap. Past it a connection is answered 503, except
  // GET /health and /healthz, which 8 more threads serve (one request a connection) so that a full server
  // still answers its health checks.
  int max_connections = 1024;
  // Open connections at most from one client address (0: no cap), so that one address cannot take them
  // all. Behind a proxy every client has the proxy's address: raise it or set 0.
  int max_connections_per_address = 256;
  // From the first byte of a request (or from its connection's accept) to the end of its head.
  absl::Duration header_timeout = absl::Seconds(10);
  // Longest silence while a request's body arrives.
  absl::Duration read_timeout = absl::Seconds(10);
  // Longest wait for the client to take response bytes.
  absl::Duration write_timeout = absl::Seconds(10);
  // Longest idle time of a kept-alive connection between requests.
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  // Requests per connection before the server closes it (cpp-httplib's own is 5).
  int keep_alive_max_requests = 10000;
  // The Retry-After of a refused connection.
  int retry_after_s = 1;
};

// Thread-safe as httplib::Server. Register routes on it as on httplib::Server, then Bind and
// listen_after_bind(). Counts go to `metrics` (strata_frontdoor_http_connections,
// strata_frontdoor_http_connections_refused_total{reason=max_connections|max_connections_per_address}),
// which must outlive the server.
class HttpServer : public httplib::Server {
 public:
  HttpServer(ConnectionPolicy policy, MetricsRegistry* metrics);
  ~HttpServer() override;

  // Binds host:port (0: any free port) with SO_REUSEADDR only and listens with the policy's backlog.
  // Returns the port; Unavailable when it cannot be bound.
  absl::StatusOr<int> Bind(const std::string& host, int port);

  const ConnectionPolicy& policy() const { return policy_; }
  int open_connections() const { return open_.load(); }

 private:
  class ConnectionThreads;
  // Runs on a connection thread (or, refusing, on the accept thread): admission, then the kept-alive
  // loop of cpp-httplib's process_request.
  bool process_and_close_socket(socket_t sock) override;
  // Whether the request starting on `sock` is GET /health or /healthz (peeked, nothing consumed; waits up
  // to 1 s for its first bytes).
  bool AsksForHealth(socket_t sock);
  bool TakeAddressSlot(const std::string& address);
  void ReleaseAddressSlot(const std::string& address);
  // Writes the 503, half-closes, reads what the client already sent (up to `drain_for`) and closes, so
  // that the client reads the answer instead of a reset.
  void Refuse(socket_t sock, std::string_view reason, absl::Duration drain_for);

  const ConnectionPolicy policy_;
  std::atomic<int> open_{0};
  Gauge* connections_gauge_ = nullptr;
  Counter* refused_total_ = nullptr;
  Counter* refused_per_address_ = nullptr;
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, int> per_address_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_HTTP_SERVER_H_
