// Which network devices the daemon's UCX may listen on. UCX's TCP transport opens a listening socket on
// every interface it uses (by default all of them: loopback and every NIC), whatever address gRPC was
// given; and on TCP an rkey enforces nothing (README, Security), so a UCX port is the daemon's memory.
// With a specific --host, the daemon restricts UCX to the interface that holds that address (and any RDMA
// ports, which are not IP interfaces and check rkeys in hardware) unless UCX_NET_DEVICES says otherwise.
#ifndef STRATA_KVSTORE_UCX_DEVICES_H_
#define STRATA_KVSTORE_UCX_DEVICES_H_

#include <optional>
#include <string>
#include <string_view>

namespace strata::kvstore {

// UCX_NET_DEVICES for a daemon bound to `host`: the interface holding that IPv4/IPv6 address, then every
// RDMA port (/sys/class/infiniband/<device>/ports/<n> as "<device>:<n>"), comma-separated. nullopt (UCX
// picks, every interface) for a wildcard or unresolvable host, an address no interface holds, or when
// the environment sets UCX_NET_DEVICES itself.
std::optional<std::string> UcxNetDevicesFor(std::string_view host);

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_UCX_DEVICES_H_
