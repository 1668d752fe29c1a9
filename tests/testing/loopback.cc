#include "tests/testing/loopback.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <random>

namespace strata::testing {

namespace {

// Binds 127.0.0.1:`port` (0: any) and returns the port bound, or 0.
int TryBind(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t length = sizeof(address);
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    bound = ntohs(address.sin_port);
  }
  close(fd);
  return bound;
}

}  // namespace

int FreePort() {
  static std::mt19937 random(std::random_device{}());
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (const int port = TryBind(20000 + static_cast<int>(random() % 12768)); port != 0) return port;
  }
  return TryBind(0);
}

bool Healthy(const std::string& host, int port) {
  httplib::Client http(host, port);
  http.set_connection_timeout(1);
  http.set_read_timeout(2);
  auto response = http.Get("/healthz");
  return response && response->status == 200;
}

}  // namespace strata::testing
