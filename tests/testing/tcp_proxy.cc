#include "tests/testing/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <vector>

#include "common/strings.h"

namespace strata::testing {
namespace {

constexpr size_t kBufferBytes = 256 * 1024;  // per direction: a peer that stops reading stops its sender

sockaddr_in Loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void Reset(int fd) {
  if (fd < 0) return;
  linger hard{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  close(fd);
}

}  // namespace

// One proxied connection: `down` is the accepted client, `up` the dialed target. Each direction has a
// buffer of bytes read but not yet written; a side is read only while its buffer has room.
struct TcpProxy::Connection {
  int down = -1, up = -1;
  std::string to_up, to_down;
  bool down_eof = false, up_eof = false;
};

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(int target_port, int listen_port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(StrCat("tcp proxy: socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = Loopback(listen_port);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(StrCat("tcp proxy: listen on 127.0.0.1:", listen_port, ": ", error));
  }
  SetNonBlocking(fd);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    close(fd);
    return absl::InternalError(StrCat("tcp proxy: pipe: ", std::strerror(errno)));
  }
  return std::unique_ptr<TcpProxy>(new TcpProxy(fd, ntohs(address.sin_port), target_port, wake[0], wake[1]));
}

TcpProxy::TcpProxy(int listen_fd, int port, int target_port, int wake_read, int wake_write)
    : listen_fd_(listen_fd), port_(port), target_port_(target_port), wake_read_(wake_read), wake_write_(wake_write) {
  thread_ = std::thread([this] { Loop(); });
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  Wake();
  thread_.join();
  close(listen_fd_);
  close(wake_read_);
  close(wake_write_);
}

void TcpProxy::Wake() { (void)!write(wake_write_, "x", 1); }

void TcpProxy::Freeze() {
  frozen_ = true;
  Wake();
}

void TcpProxy::Thaw() {
  frozen_ = false;
  Wake();
}

void TcpProxy::Cut() {
  cut_requested_ = true;
  Wake();
  // Cut() returns once the loop has reset every connection.
  while (cut_requested_.load()) std::this_thread::yield();
}

void TcpProxy::Loop() {
  std::list<Connection> open;
  std::vector<int> held;  // accepted while frozen: dialed on thaw
  auto dial = [&](int down) {
    const int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in target = Loopback(target_port_);
    if (up < 0 || connect(up, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
      Reset(up);
      Reset(down);
      return;
    }
    const int one = 1;
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(down, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SetNonBlocking(up);
    SetNonBlocking(down);
    open.push_back(Connection{down, up, {}, {}, false, false});
  };
  auto close_connection = [&](Connection& c) {
    Reset(c.down);
    Reset(c.up);
    c.down = c.up = -1;
  };
  while (!stop_.load()) {
    if (cut_requested_.load()) {
      for (Connection& c : open) close_connection(c);
      open.clear();
      for (int fd : held) Reset(fd);
      held.clear();
      cut_requested_ = false;
    }
    const bool frozen = frozen_.load();
    if (!frozen) {
      for (int fd : held) dial(fd);
      held.clear();
    }
    connections_ = static_cast<int>(open.size() + held.size());
    // Poll set: the wake pipe, the listener, and (unless frozen) each connection's two sides.
    std::vector<pollfd> fds = {{wake_read_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    std::vector<Connection*> owners;
    if (!frozen) {
      for (Connection& c : open) {
        short down_events = 0, up_events = 0;
        if (!c.down_eof && c.to_up.size() < kBufferBytes) down_events |= POLLIN;
        if (!c.up_eof && c.to_down.size() < kBufferBytes) up_events |= POLLIN;
        if (!c.to_down.empty()) down_events |= POLLOUT;
        if (!c.to_up.empty()) up_events |= POLLOUT;
        fds.push_back({c.down, down_events, 0});
        fds.push_back({c.up, up_events, 0});
        owners.push_back(&c);
      }
    }
    if (poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      char drain[64];
      while (read(wake_read_, drain, sizeof(drain)) > 0) {
      }
    }
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int down = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (down < 0) break;
        if (frozen_.load()) {
          held.push_back(down);
        } else {
          dial(down);
        }
      }
    }
    // Frozen while poll waited: bytes that arrived after Freeze() returned must not pass.
    if (frozen_.load()) owners.clear();
    for (size_t i = 0; i < owners.size(); ++i) {
      Connection& c = *owners[i];
      const pollfd& down = fds[2 + 2 * i];
      const pollfd& up = fds[3 + 2 * i];
      // Moves what `from` has into `buffer`, and `buffer` into `to` as far as `to` takes it now (the
      // sockets are non-blocking); false on a hard error.
      auto pump = [&](int from, short from_events, bool& from_eof, std::string& buffer, int to) {
        if ((from_events & (POLLIN | POLLHUP | POLLERR)) && !from_eof) {
          char chunk[65536];
          const ssize_t n = read(from, chunk, std::min(sizeof(chunk), kBufferBytes - buffer.size() + 1));
          if (n > 0) {
            buffer.append(chunk, static_cast<size_t>(n));
          } else if (n == 0) {
            from_eof = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            return false;
          }
        }
        if (!buffer.empty()) {
          const ssize_t n = send(to, buffer.data(), buffer.size(), MSG_NOSIGNAL);
          if (n > 0) {
            bytes_forwarded_ += static_cast<uint64_t>(n);
            buffer.erase(0, static_cast<size_t>(n));
          } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
          }
        }
        if (from_eof && buffer.empty()) shutdown(to, SHUT_WR);  // pass the half-close on
        return true;
      };
      const bool ok = pump(c.down, down.revents, c.down_eof, c.to_up, c.up) &&
                      pump(c.up, up.revents, c.up_eof, c.to_down, c.down);
      if (!ok || (c.down_eof && c.up_eof && c.to_up.empty() && c.to_down.empty())) close_connection(c);
    }
    open.remove_if([](const Connection& c) { return c.down < 0; });
  }
  for (Connection& c : open) close_connection(c);
  for (int fd : held) Reset(fd);
  connections_ = 0;
}

}  // namespace strata::testing
