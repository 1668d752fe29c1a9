// Hosts in network namespaces, for tests and benchmarks that run a cluster across machines on one machine.
//
// Each host is a named network namespace, "strata-t<pid>-<n>-h<i>", holding lo and one veth ("eth0",
// 192.0.2.<i+1>/24: the documentation range, RFC 5737) whose other end is a port of a bridge in the calling
// process's own network namespace; the bridge holds 192.0.2.254, so the process reaches every host, and the
// hosts reach one another through the bridge. A daemon runs on a host through `Command()` (`ip netns exec`)
// and binds that host's address. Links can be cut (partition) and given `tc` queueing disciplines (netem
// delay and loss) one host at a time.
//
// The calling process must first have left the machine's network namespace (`EnterPrivateNetwork()`, from
// main while it has one thread): the bridge, the bridge ends of the veths and the 192.0.2.0/24 route then
// live in a namespace that belongs to the process and vanishes with it, so that runs side by side cannot
// collide and the machine's own routes never change.
//
// Removal: the destructor deletes the namespaces; a reaper process (its own session, so that ctrl-C does
// not reach it) deletes them when the creating process dies without running it (a crash, SIGKILL, a
// ctrl-C); and `Create` sweeps namespaces of this prefix left by processes that no longer exist.
//
// Needs root and iproute2's `ip` (and `tc` for queueing disciplines). Not thread-safe.
#ifndef STRATA_TESTS_TESTING_NETNS_HOSTS_H_
#define STRATA_TESTS_TESTING_NETNS_HOSTS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::testing {

// Moves the calling thread (and every thread and process it creates afterwards) into a new, empty network
// namespace with lo up. Call from main before any other thread exists. Fails (the process stays where it
// was) without root or without `ip`.
absl::Status EnterPrivateNetwork();

enum class LinkState { kUp, kDown };

class NetnsHosts {
 public:
  // "" when hosts can be made here; otherwise why not (tests skip with it): not root, no `ip`, or the
  // process is still in the machine's network namespace (EnterPrivateNetwork was not called or failed).
  static std::string Unavailable();

  // Makes `count` hosts (1..200) joined by a bridge, first removing stale namespaces of this prefix.
  static absl::StatusOr<std::unique_ptr<NetnsHosts>> Create(int count);
  ~NetnsHosts();  // deletes the namespaces (kill the processes in them first)
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  int size() const { return static_cast<int>(names_.size()); }
  // 192.0.2.<host+1>: the address daemons on `host` bind.
  static std::string Address(int host);
  const std::string& Name(int host) const { return names_.at(static_cast<size_t>(host)); }

  // argv that runs `argv` (argv[0] a path) on `host`.
  std::vector<std::string> Command(int host, const std::vector<std::string>& argv) const;

  // Cuts (kDown) or restores (kUp) `host`'s link to the bridge: while down, its packets go nowhere in
  // either direction (no reset, no ICMP: a partition, not a refused connection).
  absl::Status SetLink(int host, LinkState state);

  // Replaces the queueing discipline of both ends of `host`'s link with `tc qdisc` `discipline` (e.g.
  // "netem delay 50ms loss 5%"): every packet to and from the host goes through it once. Empty: back to the
  // default.
  absl::Status SetQdisc(int host, std::string_view discipline);
  // OK when this kernel takes the discipline (e.g. "netem", "tbf rate 1mbit burst 16kb latency 100ms"); otherwise
  // tc's answer (tests skip with it).
  absl::Status QdiscSupported(std::string_view discipline);

 private:
  NetnsHosts() = default;
  absl::Status Build(int count);
  std::string BridgePort(int host) const;

  int run_ = 0;                     // this process's n-th NetnsHosts: names stay unique within a process
  std::string bridge_;              // in the calling process's namespace
  std::vector<std::string> names_;  // namespace of each host
  int reaper_pipe_ = -1;            // write end: EOF tells the reaper to delete the namespaces
  pid_t reaper_ = -1;
};

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_NETNS_HOSTS_H_
