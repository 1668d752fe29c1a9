#include "kvstore/scheduler_link.h"

#include "common/block_key.h"

namespace strata::kvstore {
namespace {

proto::Tier ToProto(Tier tier) { return tier == Tier::kDram ? proto::TIER_KVSTORE_DRAM : proto::TIER_KVSTORE_SSD; }

}  // namespace

SchedulerLink::SchedulerLink(SchedulerLinkOptions options, Store& store, EventBatcher& batcher,
                             MetricsRegistry& metrics)
    : store_(store), batcher_(batcher), flush_interval_(options.flush_interval) {
  scheduler::HolderAgentOptions agent_options;
  agent_options.scheduler_addresses = options.scheduler_addresses;
  agent_options.security = options.security;
  agent_options.metrics = &metrics;
  proto::RegisterRequest& registration = agent_options.registration;
  registration.set_holder_id(options.holder_id);
  registration.set_kind(proto::HOLDER_KIND_KVSTORE);
  registration.mutable_key_scheme()->set_version(kBlockKeySchemeVersion);
  registration.set_address(options.advertise_address);
  registration.mutable_kvstore()->set_dram_blocks(options.dram_blocks);
  registration.mutable_kvstore()->set_ssd_blocks(options.ssd_blocks);
  registration.mutable_kvstore()->set_ssd_read_bytes_per_s(options.ssd_read_bytes_per_s);
  agent_ = std::make_unique<scheduler::HolderAgent>(
      std::move(agent_options), scheduler::HolderAgentCallbacks{.inventory = [this] { return Inventory(); }});
  agent_->Start();
  flusher_ = std::thread([this] { FlushLoop(); });
}

SchedulerLink::~SchedulerLink() {
  stop_.Notify();
  if (flusher_.joinable()) flusher_.join();
  agent_->Stop();
}

void SchedulerLink::FlushLoop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(flush_interval_))) Flush();
}

void SchedulerLink::Flush() {
  absl::MutexLock lock(&flush_mutex_);
  for (const BlockEvent& event : batcher_.Drain()) {
    if (event.type == BlockEvent::Type::kStored) {
      agent_->Stored(ToProto(event.tier), event.keys);
    } else {
      agent_->Evicted(event.keys);
    }
  }
}

scheduler::TierInventory SchedulerLink::Inventory() {
  absl::MutexLock lock(&flush_mutex_);
  BlockInventory inventory = store_.Inventory([this] { batcher_.Cut(); });
  scheduler::TierInventory out;
  out.emplace_back(proto::TIER_KVSTORE_DRAM, std::move(inventory.dram));
  out.emplace_back(proto::TIER_KVSTORE_SSD, std::move(inventory.ssd));
  return out;
}

}  // namespace strata::kvstore
