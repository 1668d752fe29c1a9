// What every Strata daemon shares: waiting for SIGTERM/SIGINT to drain, and the HTTP endpoint that
// serves Prometheus metrics (`/metrics`) and a plain health check (`/healthz`) beside the gRPC server.
#ifndef STRATA_COMMON_DAEMON_H_
#define STRATA_COMMON_DAEMON_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace httplib {
class Server;
}

namespace strata {

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread and in every thread started after it: call it
// first in main. `WaitForShutdownSignal()` then returns the signal number once one arrives. SIGPIPE stays
// blocked (a peer that hangs up is an error on the socket, not a dead daemon).
void BlockShutdownSignals();
int WaitForShutdownSignal();

// Stops an httplib server whose listen loop runs on `thread` (which sets `listen_done` when the loop
// returns) and joins the thread. httplib's stop() does nothing until the loop has started (a call made
// earlier would leave it running forever) and must not be repeated once it took effect, so this stops
// once the loop runs.
void StopHttpServer(httplib::Server& server, const std::atomic<bool>& listen_done, std::thread& thread);

// Serves `GET /metrics` (the registry's text format) and `GET /healthz` (200 "ok" while `healthy()`,
// 503 otherwise) on host:port, from its own thread. Port 0 picks a free port. Stops in the destructor.
class MetricsHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  const MetricsRegistry& registry,
                                                                  std::function<bool()> healthy);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_done_ = false;
  int port_ = 0;
};

}  // namespace strata

#endif  // STRATA_COMMON_DAEMON_H_
