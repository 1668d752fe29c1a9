#include "scheduler/client/holder_agent.h"

#include <random>

#include "absl/container/flat_hash_set.h"
#include "common/status.h"
#include "common/strings.h"
#include "scheduler/client/replica_link.h"

namespace strata::scheduler {
namespace {

// The agent's incarnation, one for all replicas: random, so that a restarted holder (a new agent) differs
// from its dead one.
HolderAgentOptions WithIncarnation(HolderAgentOptions options) {
  if (options.registration.incarnation() == 0) {
    std::random_device random;
    uint64_t incarnation = 0;
    while (incarnation == 0) incarnation = (uint64_t{random()} << 32) | random();
    options.registration.set_incarnation(incarnation);
  }
  return options;
}

}  // namespace

absl::Status CheckSchedulerAddresses(const std::vector<std::string>& addresses) {
  absl::flat_hash_set<std::string> seen;
  for (const std::string& address : addresses) {
    if (address.empty()) return absl::InvalidArgumentError("--scheduler: an empty address");
    if (!seen.insert(address).second) {
      return absl::InvalidArgumentError(StrCat("--scheduler ", address, " is given twice (list each replica once)"));
    }
  }
  return absl::OkStatus();
}

HolderAgent::HolderAgent(HolderAgentOptions options, HolderAgentCallbacks callbacks)
    : options_(WithIncarnation(std::move(options))), callbacks_(std::move(callbacks)) {
  STRATA_CHECK(callbacks_.inventory != nullptr);
  STRATA_CHECK(!options_.scheduler_addresses.empty());
  STRATA_CHECK(CheckSchedulerAddresses(options_.scheduler_addresses).ok());
  HolderAgentMetrics metrics;
  if (options_.metrics != nullptr) {
    MetricsRegistry& m = *options_.metrics;
    metrics.connected = &m.AddGauge("strata_holder_agent_connected",
                                    "Scheduler replicas this holder is registered with, its KvEvents stream open");
    m.AddGauge("strata_holder_agent_schedulers", "Scheduler replicas this holder reports to")
        .Set(static_cast<double>(options_.scheduler_addresses.size()));
    metrics.registrations = &m.AddCounter("strata_holder_agent_registrations_total",
                                          "Successful Register calls, all replicas");
    metrics.inventories = &m.AddCounter("strata_holder_agent_inventories_total",
                                        "Inventories sent (connects and resyncs), all replicas");
    metrics.events_sent = &m.AddCounter("strata_holder_agent_events_sent_total", "KV events sent, all replicas");
    metrics.events_dropped = &m.AddCounter(
        "strata_holder_agent_events_dropped_total",
        "KV events dropped for a replica while disconnected or over the queue bound (an inventory follows)");
  }
  for (const std::string& address : options_.scheduler_addresses) {
    links_.push_back(std::make_unique<ReplicaLink>(options_, address, callbacks_, metrics));
  }
}

HolderAgent::~HolderAgent() { Stop(); }

void HolderAgent::Start() {
  for (auto& link : links_) link->Start();
}

void HolderAgent::Stop() {
  for (auto& link : links_) link->RequestStop();  // every replica deregisters at once
  for (auto& link : links_) link->Stop();
}

void HolderAgent::Stored(proto::Tier tier, absl::Span<const BlockKey> keys) {
  if (keys.empty()) return;
  for (auto& link : links_) link->Push(proto::KvEvent::TYPE_STORED, tier, keys);
}

void HolderAgent::Evicted(absl::Span<const BlockKey> keys) {
  if (keys.empty()) return;
  for (auto& link : links_) link->Push(proto::KvEvent::TYPE_EVICTED, proto::TIER_UNSPECIFIED, keys);
}

int HolderAgent::connected_replicas() const {
  int connected = 0;
  for (const auto& link : links_) connected += link->connected() ? 1 : 0;
  return connected;
}

uint64_t HolderAgent::epoch(size_t replica) const { return links_.at(replica)->epoch(); }

}  // namespace strata::scheduler
