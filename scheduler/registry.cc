#include "scheduler/registry.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '-';
  });
}

bool PositiveFinite(double value) { return std::isfinite(value) && value > 0; }

absl::Status ValidateWorker(const Registration& r) {
  const std::string where = StrCat("register ", r.holder_id, ": ");
  if (r.key_context.model_fingerprint == Sha256Digest{}) {
    return absl::InvalidArgumentError(StrCat(where, "a worker must give its model fingerprint (32 bytes)"));
  }
  if (r.key_context.block_tokens == 0) {
    return absl::InvalidArgumentError(StrCat(where, "block_tokens is 0"));
  }
  const WorkerInfo& w = r.worker;
  if (w.gpu_kv_blocks == 0) return absl::InvalidArgumentError(StrCat(where, "gpu_kv_blocks is 0"));
  if (w.block_bytes == 0) return absl::InvalidArgumentError(StrCat(where, "block_bytes is 0"));
  if (!PositiveFinite(w.prefill_linear_s_per_token) || !std::isfinite(w.prefill_quadratic_s_per_token2) ||
      w.prefill_quadratic_s_per_token2 < 0) {
    return absl::InvalidArgumentError(StrCat(where, "prefill rates must be finite, linear > 0 and quadratic >= 0 (got ",
                                             w.prefill_linear_s_per_token, ", ", w.prefill_quadratic_s_per_token2,
                                             ")"));
  }
  if (!PositiveFinite(w.host_to_gpu_bytes_per_s) || !PositiveFinite(w.network_bytes_per_s)) {
    return absl::InvalidArgumentError(StrCat(where, "host_to_gpu_bytes_per_s and network_bytes_per_s must be > 0"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view TierName(Tier tier) {
  switch (tier) {
    case Tier::kGpu:
      return "gpu";
    case Tier::kHost:
      return "host";
    case Tier::kKvstoreDram:
      return "kvstore_dram";
    case Tier::kKvstoreSsd:
      return "kvstore_ssd";
  }
  return "unknown";
}

absl::StatusOr<const Holder*> Registry::Register(Registration registration, absl::Time now) {
  if (!ValidId(registration.holder_id)) {
    return absl::InvalidArgumentError(StrCat("register: holder_id '", registration.holder_id.substr(0, 64),
                                             "' must be 1..128 characters of [A-Za-z0-9._:-]"));
  }
  if (registration.scheme_version != kBlockKeySchemeVersion) {
    return absl::FailedPreconditionError(StrCat("register ", registration.holder_id, ": block key scheme version ",
                                                registration.scheme_version, " but this scheduler computes version ",
                                                kBlockKeySchemeVersion,
                                                "; its keys would never match (upgrade one side)"));
  }
  if (!registration.kind.has_value()) {
    return absl::InvalidArgumentError(StrCat("register ", registration.holder_id, ": kind must be worker or kvstore"));
  }
  if (*registration.kind == HolderKind::kWorker) {
    STRATA_RETURN_IF_ERROR(ValidateWorker(registration));
  } else if (registration.kvstore.dram_blocks == 0 && registration.kvstore.ssd_blocks == 0) {
    return absl::InvalidArgumentError(StrCat("register ", registration.holder_id, ": a kvstore with no capacity"));
  }
  if (auto it = by_id_.find(registration.holder_id); it != by_id_.end()) {
    const Holder& existing = *slots_[it->second];
    return absl::AlreadyExistsError(StrCat("register ", registration.holder_id, ": this id holds a live lease (epoch ",
                                           existing.epoch, ", address ", existing.registration.address,
                                           "); deregister it or wait for its lease to lapse"));
  }
  int slot = -1;
  for (int i = 0; i < kMaxHolders; ++i) {
    if (!slots_[i]) {
      slot = i;
      break;
    }
  }
  if (slot < 0) {
    return absl::ResourceExhaustedError(
        StrCat("register ", registration.holder_id, ": all ", kMaxHolders, " holder slots are taken"));
  }
  Holder& holder = slots_[slot].emplace();
  holder.slot = slot;
  holder.epoch = next_epoch_++;
  holder.lease_expiry = now + lease_;
  holder.registered_at = now;
  holder.load_reported_at = now;
  holder.busy_until = now;
  holder.registration = std::move(registration);
  by_id_[holder.registration.holder_id] = slot;
  if (*holder.registration.kind == HolderKind::kWorker) {
    worker_slots_.insert(std::upper_bound(worker_slots_.begin(), worker_slots_.end(), slot), slot);
  }
  return &holder;
}

Holder* Registry::FindById(std::string_view holder_id) {
  auto it = by_id_.find(std::string(holder_id));
  return it == by_id_.end() ? nullptr : &*slots_[it->second];
}

absl::StatusOr<Holder*> Registry::Find(std::string_view holder_id, uint64_t epoch) {
  Holder* holder = FindById(holder_id);
  if (holder == nullptr) {
    return absl::NotFoundError(
        StrCat("holder ", holder_id, " is not registered (scheduler restart or lapsed lease): register again"));
  }
  if (holder->epoch != epoch) {
    return absl::FailedPreconditionError(StrCat("holder ", holder_id, ": epoch ", epoch, " is not the live epoch ",
                                                holder->epoch, " (another process registered this id?)"));
  }
  return holder;
}

absl::StatusOr<Holder*> Registry::Heartbeat(std::string_view holder_id, uint64_t epoch, absl::Time now) {
  STRATA_ASSIGN_OR_RETURN(Holder * holder, Find(holder_id, epoch));
  holder->lease_expiry = now + lease_;
  return holder;
}

void Registry::Remove(int slot) {
  STRATA_CHECK(slot >= 0 && slot < kMaxHolders && slots_[slot]);
  by_id_.erase(slots_[slot]->registration.holder_id);
  worker_slots_.erase(std::remove(worker_slots_.begin(), worker_slots_.end(), slot), worker_slots_.end());
  slots_[slot].reset();
}

std::vector<int> Registry::Expired(absl::Time now) const {
  std::vector<int> out;
  for (int i = 0; i < kMaxHolders; ++i) {
    if (slots_[i] && slots_[i]->lease_expiry < now) out.push_back(i);
  }
  return out;
}

std::vector<int> Registry::AllSlots() const {
  std::vector<int> out;
  for (int i = 0; i < kMaxHolders; ++i) {
    if (slots_[i]) out.push_back(i);
  }
  return out;
}

size_t Registry::CountKind(HolderKind kind) const {
  size_t n = 0;
  for (const auto& slot : slots_) n += slot && slot->registration.kind == kind;
  return n;
}

}  // namespace strata::scheduler
