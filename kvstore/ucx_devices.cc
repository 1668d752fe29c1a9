#include "kvstore/ucx_devices.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

namespace strata::kvstore {
namespace {

// The interface whose address is `host` (a numeric IPv4 or IPv6 address); empty if none.
std::string InterfaceOf(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = inet_pton(AF_INET, host.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && inet_pton(AF_INET6, host.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) return "";
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> owner(list, freeifaddrs);
  for (const ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || it->ifa_name == nullptr) continue;
    if (is_v4 && it->ifa_addr->sa_family == AF_INET &&
        std::memcmp(&reinterpret_cast<const sockaddr_in*>(it->ifa_addr)->sin_addr, &v4, sizeof(v4)) == 0) {
      return it->ifa_name;
    }
    if (is_v6 && it->ifa_addr->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<const sockaddr_in6*>(it->ifa_addr)->sin6_addr, &v6, sizeof(v6)) == 0) {
      return it->ifa_name;
    }
  }
  return "";
}

}  // namespace

std::optional<std::string> UcxNetDevicesFor(std::string_view host_view) {
  if (std::getenv("UCX_NET_DEVICES") != nullptr) return std::nullopt;
  std::string host(host_view);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  std::string devices = InterfaceOf(host);  // empty for 0.0.0.0, ::, a name, an address held by no interface
  if (devices.empty()) return std::nullopt;
  std::error_code error;
  std::set<std::string> rdma;  // sorted: the same list on every start
  for (const auto& device : std::filesystem::directory_iterator("/sys/class/infiniband", error)) {
    std::error_code port_error;
    for (const auto& port : std::filesystem::directory_iterator(device.path() / "ports", port_error)) {
      rdma.insert(device.path().filename().string() + ":" + port.path().filename().string());
    }
  }
  for (const std::string& port : rdma) devices += "," + port;
  return devices;
}

}  // namespace strata::kvstore
