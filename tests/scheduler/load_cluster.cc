#include "tests/scheduler/load_cluster.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"
#include "common/strings.h"
#include "scheduler/replay/cost_model.h"
#include "scheduler/replay/trace.h"

namespace strata::scheduler::testing {
namespace {

// Document blocks get ids (document + 1) << 32 | block, new blocks ids below 2^32.
BlockKey KeyFrom(uint64_t document_plus_one, uint64_t block) {
  return replay::TraceBlockKey(document_plus_one << 32 | block);
}

}  // namespace

BlockKey LoadCluster::DocumentKey(int document, int block) {
  return KeyFrom(static_cast<uint64_t>(document) + 1, static_cast<uint64_t>(block));
}

std::string LoadCluster::WorkerId(int i) { return StrCat("worker-", i); }

LoadCluster::LoadCluster(Scheduler* scheduler, const LoadSpec& spec)
    : scheduler_(scheduler), spec_(spec), rng_(spec.seed) {
  fingerprint_.fill(0x42);
  // Zipf(s = 1) over documents: a few hot prefixes, a long tail.
  zipf_cdf_.resize(spec.documents);
  double sum = 0;
  for (int d = 0; d < spec.documents; ++d) zipf_cdf_[d] = (sum += 1.0 / (d + 1));
  for (double& c : zipf_cdf_) c /= sum;
}

std::vector<int> LoadCluster::Holders(int document) const {
  std::vector<int> out;
  for (int h = 0; h < spec_.holders_per_document; ++h) {
    out.push_back(static_cast<int>((static_cast<uint64_t>(document) * 7919 + h * 104729) % spec_.workers));
  }
  return out;
}

absl::Status LoadCluster::Populate() {
  const int holders = spec_.workers + spec_.kvstores;
  std::vector<std::vector<BlockKey>> gpu(holders), host(holders), kv_dram(holders), kv_ssd(holders);
  for (int d = 0; d < spec_.documents; ++d) {
    const std::vector<int> workers = Holders(d);
    for (size_t h = 0; h < workers.size(); ++h) {
      auto& into = (h == 0 ? gpu : host)[workers[h]];
      for (int b = 0; b < spec_.blocks_per_document; ++b) into.push_back(DocumentKey(d, b));
    }
    if (spec_.kvstores > 0) {
      const int store = spec_.workers + d % spec_.kvstores;
      for (int b = 0; b < spec_.blocks_per_document; ++b)
        (d % 2 ? kv_ssd : kv_dram)[store].push_back(DocumentKey(d, b));
    }
  }
  const replay::CostModel cost;  // the replay's simulated H100s
  for (int i = 0; i < holders; ++i) {
    Registration r;
    r.scheme_version = kBlockKeySchemeVersion;
    if (i < spec_.workers) {
      r.holder_id = WorkerId(i);
      r.kind = HolderKind::kWorker;
      r.key_context.model_fingerprint = fingerprint_;
      r.key_context.block_tokens = spec_.block_tokens;
      r.worker.gpu_kv_blocks = 1 << 20;
      r.worker.host_kv_blocks = 1 << 20;
      r.worker.block_bytes = uint64_t{32} << 20;  // 256 tokens of Llama-3-8B
      r.worker.prefill_linear_s_per_token = cost.prefill_linear_s_per_token;
      r.worker.prefill_quadratic_s_per_token2 = cost.prefill_quadratic_s_per_token2;
      r.worker.host_to_gpu_bytes_per_s = cost.host_to_gpu_bytes_per_s;
      r.worker.network_bytes_per_s = cost.network_bytes_per_s;
    } else {
      r.holder_id = StrCat("kvstore-", i - spec_.workers);
      r.kind = HolderKind::kKvstore;
      r.kvstore.dram_blocks = 1 << 22;
      r.kvstore.ssd_blocks = 1 << 24;
      r.kvstore.ssd_read_bytes_per_s = cost.ssd_read_bytes_per_s;
    }
    STRATA_ASSIGN_OR_RETURN(RegisterResult registered, scheduler_->Register(r));
    epochs_.push_back(registered.epoch);
    sequences_.push_back(0);
    Inventory inventory;
    if (i < spec_.workers) {
      inventory.tiers.emplace_back(Tier::kGpu, std::move(gpu[i]));
      inventory.tiers.emplace_back(Tier::kHost, std::move(host[i]));
    } else {
      inventory.tiers.emplace_back(Tier::kKvstoreDram, std::move(kv_dram[i]));
      inventory.tiers.emplace_back(Tier::kKvstoreSsd, std::move(kv_ssd[i]));
    }
    STRATA_RETURN_IF_ERROR(scheduler_->ApplyEvents(r.holder_id, registered.epoch, &inventory, {}).status());
  }
  return absl::OkStatus();
}

LoadCluster::Request LoadCluster::Next() {
  Request request;
  const double u = std::uniform_real_distribution<double>(0, 1)(rng_);
  request.document = static_cast<int>(std::lower_bound(zipf_cdf_.begin(), zipf_cdf_.end(), u) - zipf_cdf_.begin());
  request.document = std::min(request.document, spec_.documents - 1);
  request.shared_blocks = std::uniform_int_distribution<int>(1, spec_.blocks_per_document)(rng_);
  const int fresh = std::uniform_int_distribution<int>(1, 8)(rng_);
  request.route.model_fingerprint = fingerprint_;
  for (int b = 0; b < request.shared_blocks; ++b) request.route.keys.push_back(DocumentKey(request.document, b));
  for (int b = 0; b < fresh; ++b) request.route.keys.push_back(KeyFrom(0, ++next_unique_));
  request.route.prompt_tokens = request.route.keys.size() * spec_.block_tokens + 17;
  return request;
}

absl::Status LoadCluster::Stored(const std::string& worker_id, const Request& request) {
  const int w = std::atoi(worker_id.c_str() + std::string_view("worker-").size());
  KvEventIn event;
  event.sequence = ++sequences_[w];
  event.tier = Tier::kGpu;
  event.keys = request.route.keys;
  return scheduler_->ApplyEvents(worker_id, epochs_[w], nullptr, {event}).status();
}

absl::Status LoadCluster::HeartbeatAll() {
  for (int i = 0; i < spec_.workers + spec_.kvstores; ++i) {
    const std::string id = i < spec_.workers ? WorkerId(i) : StrCat("kvstore-", i - spec_.workers);
    std::optional<LoadReport> load;
    STRATA_RETURN_IF_ERROR(scheduler_->Heartbeat(id, epochs_[i], load, sequences_[i]).status());
  }
  return absl::OkStatus();
}

}  // namespace strata::scheduler::testing
