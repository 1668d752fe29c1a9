// Store's metrics (Prometheus, registered once) and its Stats() snapshot: what the store counts, kept
// apart from what it does (store.cc).
#include "common/metrics.h"
#include "kvstore/store.h"

namespace strata::kvstore {

void Store::RegisterMetrics(MetricsRegistry& metrics) {
  for (auto [tier, out] : {std::pair{"dram", &dram_metrics_}, std::pair{"ssd", &ssd_metrics_}}) {
    const MetricLabels labels = {{"tier", tier}};
    out->hits = &metrics.AddCounter("strata_kvstore_hits_total", "Blocks a get found in the tier", labels);
    out->misses = &metrics.AddCounter("strata_kvstore_misses_total", "Blocks a get did not find in the tier", labels);
    out->evictions = &metrics.AddCounter("strata_kvstore_evictions_total", "Blocks evicted from the tier", labels);
    out->bytes_in = &metrics.AddCounter("strata_kvstore_bytes_in_total", "Block bytes written into the tier", labels);
    out->bytes_out = &metrics.AddCounter("strata_kvstore_bytes_out_total", "Block bytes read from the tier", labels);
  }
  checksum_failures_ = &metrics.AddCounter("strata_kvstore_checksum_failures_total",
                                           "Blocks refused because their checksum did not match (commit or SSD read)");
  ssd_write_errors_ = &metrics.AddCounter("strata_kvstore_ssd_write_errors_total",
                                          "SSD writes that failed (disk full, I/O error): evictions dropped, "
                                          "write-through puts refused");
  expired_leases_ = &metrics.AddCounter("strata_kvstore_expired_leases_total", "Get leases that timed out");
  expired_puts_ = &metrics.AddCounter("strata_kvstore_expired_puts_total", "Puts never committed that timed out");
  ssd_syncs_ = &metrics.AddCounter("strata_kvstore_ssd_syncs_total",
                                   "Periodic SSD syncs (--ssd-sync-ms) completed: each made every earlier SSD write durable");
  quota_refusals_ = &metrics.AddCounter("strata_kvstore_quota_refusals_total",
                                        "Puts and gets refused: the client would pass --max-client-bytes");
  auto gauge = [this, &metrics](const char* name, const char* help, MetricLabels labels, auto read) {
    metrics.AddGaugeCallback(name, help, std::move(labels), [this, read] {
      absl::MutexLock lock(&mutex_);
      return static_cast<double>(read(*this));
    });
  };
  gauge("strata_kvstore_occupancy_bytes", "Block bytes stored in the tier", {{"tier", "dram"}},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.dram_bytes_; });
  gauge("strata_kvstore_occupancy_bytes", "Block bytes stored in the tier", {{"tier", "ssd"}},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.ssd_bytes_; });
  gauge("strata_kvstore_blocks", "Blocks stored in the tier", {{"tier", "dram"}},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.dram_blocks_; });
  gauge("strata_kvstore_blocks", "Blocks stored in the tier", {{"tier", "ssd"}},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.ssd_blocks_; });
  gauge("strata_kvstore_arena_allocated_bytes", "Arena bytes held by blocks, reservations and pins (size classes)", {},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.allocator_.allocated_bytes(); });
  gauge("strata_kvstore_arena_capacity_bytes", "Arena size", {},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.arena_bytes_; });
  gauge("strata_kvstore_reserved_bytes", "Arena bytes held by uncommitted puts", {},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.reserved_bytes_; });
  gauge("strata_kvstore_pinned_bytes", "Block bytes pinned by get leases", {},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.pinned_bytes_; });
  gauge("strata_kvstore_open_leases", "Get leases held", {},
        [](Store& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.leases_.size(); });
}

StoreStats Store::Stats() {
  absl::MutexLock lock(&mutex_);
  StoreStats stats;
  auto fill = [](TierCounters& out, const TierMetrics& metrics) {
    out.hits = static_cast<uint64_t>(metrics.hits->Value());
    out.misses = static_cast<uint64_t>(metrics.misses->Value());
    out.evictions = static_cast<uint64_t>(metrics.evictions->Value());
    out.bytes_in = static_cast<uint64_t>(metrics.bytes_in->Value());
    out.bytes_out = static_cast<uint64_t>(metrics.bytes_out->Value());
  };
  fill(stats.dram, dram_metrics_);
  fill(stats.ssd, ssd_metrics_);
  stats.dram.blocks = dram_blocks_;
  stats.dram.used_bytes = dram_bytes_;
  stats.dram.capacity_bytes = arena_bytes_;
  stats.ssd.blocks = ssd_blocks_;
  stats.ssd.used_bytes = ssd_bytes_;
  stats.ssd.capacity_bytes = options_.ssd_bytes;
  stats.arena_allocated_bytes = allocator_.allocated_bytes();
  stats.reserved_bytes = reserved_bytes_;
  stats.pinned_bytes = pinned_bytes_;
  stats.open_leases = static_cast<uint32_t>(leases_.size());
  stats.open_puts = static_cast<uint32_t>(puts_.size());
  stats.checksum_failures = static_cast<uint64_t>(checksum_failures_->Value());
  stats.expired_leases = static_cast<uint64_t>(expired_leases_->Value());
  stats.expired_puts = static_cast<uint64_t>(expired_puts_->Value());
  return stats;
}

}  // namespace strata::kvstore
