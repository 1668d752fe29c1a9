#include "common/daemon.h"

#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>

#include "common/status.h"
#include "common/strings.h"

namespace strata {
namespace {

sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSet();
  sigaddset(&set, SIGPIPE);
  STRATA_CHECK(pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSet();
  int signal_number = 0;
  STRATA_CHECK(sigwait(&set, &signal_number) == 0);
  return signal_number;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& host, int port,
                                                                            const MetricsRegistry& registry,
                                                                            std::function<bool()> healthy) {
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->server_ = std::make_unique<httplib::Server>();
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which lets a second daemon bind a port
  // that is in use and silently share (and steal) its scrapes.
  server->server_->set_socket_options([](int socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server->server_->Get("/metrics", [&registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry.RenderText(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server->server_->Get("/healthz",
                       [healthy = std::move(healthy)](const httplib::Request&, httplib::Response& response) {
                         const bool ok = !healthy || healthy();
                         response.status = ok ? 200 : 503;
                         response.set_content(ok ? "ok\n" : "unavailable\n", "text/plain");
                       });
  if (port == 0) {
    server->port_ = server->server_->bind_to_any_port(host);
  } else {
    server->port_ = server->server_->bind_to_port(host, port) ? port : -1;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(
        StrCat("metrics endpoint: cannot listen on ", host, ":", port, " (address in use or not local?)"));
  }
  httplib::Server* raw = server->server_.get();
  std::atomic<bool>* done = &server->listen_done_;
  server->thread_ = std::thread([raw, done] {
    raw->listen_after_bind();
    done->store(true);
  });
  return server;
}

void StopHttpServer(httplib::Server& server, const std::atomic<bool>& listen_done, std::thread& thread) {
  if (!thread.joinable()) return;
  bool stopped = false;
  while (!listen_done.load()) {
    if (!stopped && server.is_running()) {
      server.stop();
      stopped = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  thread.join();
}

MetricsHttpServer::~MetricsHttpServer() {
  if (server_ != nullptr) StopHttpServer(*server_, listen_done_, thread_);
}

}  // namespace strata
