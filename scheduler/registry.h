// The registry: who is in the cluster (workers and kvstores), what each brings, its lease and its load.
//
// Each holder gets a compact slot (0..kMaxHolders-1) that the block index uses in its bitsets, so no
// entry of the index carries a string. A slot is reused only after its holder left and the index
// dropped its entries. Not thread-safe: the Scheduler (scheduler/scheduler.h) serializes access.
#ifndef STRATA_SCHEDULER_REGISTRY_H_
#define STRATA_SCHEDULER_REGISTRY_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/block_key.h"
#include "common/dtype.h"
#include "common/sha256.h"

namespace strata::scheduler {

inline constexpr int kMaxHolders = 128;

enum class HolderKind : uint8_t { kWorker, kKvstore };
// ARCHITECTURE.md "Tiers": G (worker HBM), H (worker host DRAM), S (kvstore DRAM), D (kvstore SSD).
enum class Tier : uint8_t { kGpu, kHost, kKvstoreDram, kKvstoreSsd };
std::string_view TierName(Tier tier);  // "gpu", "host", "kvstore_dram", "kvstore_ssd"

struct WorkerInfo {
  uint64_t gpu_kv_blocks = 0;
  uint64_t host_kv_blocks = 0;
  uint64_t block_bytes = 0;
  // Prefill seconds of n new tokens after p cached: linear * n + quadratic * ((p+n)^2 - p^2).
  double prefill_linear_s_per_token = 0;
  double prefill_quadratic_s_per_token2 = 0;
  double host_to_gpu_bytes_per_s = 0;
  double network_bytes_per_s = 0;
  double decode_tokens_per_s = 0;
  // The name clients ask for (OpenAI "model"), as the worker reports it; may be empty. Informational: the
  // key scheme (fingerprint) decides which KV a worker may use, never the name.
  std::string model_name;
  // The kvstores it fetches from, by id: the addresses as given to its --kvstore flags, which are the
  // kvstores' registered addresses (common/rendezvous.h). Empty: not said (placement credits a block held
  // by any live kvstore, as before workers said).
  std::vector<std::string> kvstores;
};

struct KvstoreInfo {
  uint64_t dram_blocks = 0;
  uint64_t ssd_blocks = 0;
  double ssd_read_bytes_per_s = 0;
};

// What a holder reports when it registers. Kvstores never know models: for them only
// `scheme_version` is checked.
struct Registration {
  std::string holder_id;
  // Random per process (0: not given, an older holder). A registration under a live id with an incarnation
  // replaces the live one at once: the process that held it restarted (or that registration was its own,
  // whose answer it never got). Without one, a live id is refused until its lease lapses.
  uint64_t incarnation = 0;
  std::optional<HolderKind> kind;  // nullopt: the caller did not say (refused)
  uint32_t scheme_version = 0;
  BlockKeyContext key_context;  // workers: fingerprint, block size, dtype (tenant salt unused)
  std::string address;
  WorkerInfo worker;
  KvstoreInfo kvstore;
};

struct LoadReport {
  uint64_t queued_prefill_tokens = 0;
  uint64_t running_tokens = 0;
  uint32_t running_requests = 0;
  double queue_wait_s = 0;  // the worker's own estimate; 0 = none given
};

struct Holder {
  int slot = -1;
  uint64_t epoch = 0;
  Registration registration;
  absl::Time lease_expiry;
  absl::Time registered_at;
  LoadReport load;
  absl::Time load_reported_at;
  // When the worker is expected to have drained its queue: set from each load report (report time +
  // reported wait) and pushed back by every request routed to it since. Without the routed part, every
  // request between two heartbeats would herd onto the worker that looked idlest.
  absl::Time busy_until;
  uint64_t reported_event_sequence = 0;  // from heartbeats
  // The front door could not reach it (connection refused or reset): out of placement until then, and
  // how many such reports came in a row (the backoff doubles with each).
  absl::Time unreachable_until = absl::InfinitePast();
  int unreachable_strikes = 0;

  // In placement at `now`: its lease holds and it is not marked unreachable.
  bool Routable(absl::Time now) const { return lease_expiry >= now && unreachable_until <= now; }
};

class Registry {
 public:
  explicit Registry(absl::Duration lease) : lease_(lease) {}

  // Adds a holder. InvalidArgument for a malformed registration (empty or odd id, no kind, a worker
  // without fingerprint, block size or capacities, non-positive rates); FailedPrecondition for another
  // key scheme version; AlreadyExists for an id that holds a live lease; ResourceExhausted when all
  // slots are taken. A re-registration of a live id is refused: the holder must Deregister first or let
  // its lease lapse (two processes with one id would corrupt the index). The Scheduler removes a live id
  // itself first when the new registration carries an incarnation.
  absl::StatusOr<const Holder*> Register(Registration registration, absl::Time now);

  // Renews the lease. NotFound for an unknown id (register again), FailedPrecondition for a stale epoch.
  absl::StatusOr<Holder*> Heartbeat(std::string_view holder_id, uint64_t epoch, absl::Time now);

  // The holder with a live registration of that id and epoch, or the error Heartbeat would give.
  absl::StatusOr<Holder*> Find(std::string_view holder_id, uint64_t epoch);
  Holder* FindById(std::string_view holder_id);
  Holder* FindBySlot(int slot) { return slots_[slot] ? &*slots_[slot] : nullptr; }
  const Holder* FindBySlot(int slot) const { return slots_[slot] ? &*slots_[slot] : nullptr; }

  // Removes the holder and frees its slot. REQUIRES: the caller dropped its index entries.
  void Remove(int slot);

  // Slots whose lease ended before `now` (the caller drops their index entries, then Remove()s).
  std::vector<int> Expired(absl::Time now) const;

  // Live workers, ascending slot order.
  const std::vector<int>& WorkerSlots() const { return worker_slots_; }
  std::vector<int> AllSlots() const;
  size_t CountKind(HolderKind kind) const;
  absl::Duration lease() const { return lease_; }

 private:
  absl::Duration lease_;
  uint64_t next_epoch_ = 1;
  std::array<std::optional<Holder>, kMaxHolders> slots_;
  absl::flat_hash_map<std::string, int> by_id_;
  std::vector<int> worker_slots_;
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_REGISTRY_H_
