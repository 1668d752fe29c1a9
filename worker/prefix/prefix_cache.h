// PrefixCache: a request's prompt as KV blocks across the tiers, for the engine thread. It names the
// blocks once (common/block_key.h; extended block by block as generated tokens complete more), finds
// the longest cached run of the prompt's blocks, tier by tier — attached from tier G (the engine's KV
// pool, no copy), then imported in bulk from tier H (host memory), then fetched from the kvstores (S/D,
// on the kvstore tier's thread) — and stores what a sequence computed: every full block into tier G,
// the new ones written through to tier H and the kvstores in one bulk copy out of the engine. A hit in
// a lower tier is promoted on use (into G and H).
//
// The last prompt token is always computed (its logits give the first token), so the block that holds
// it is never loaded. Anything a tier cannot give (a miss, a refused import, a block of the wrong size, a
// MAC that does not verify) ends the run there: the rest is computed.
//
// Every block that leaves tier G is sealed with the workers' MAC (block_mac.h) right after its export,
// before tier H or the kvstores see it; tier H's blocks are verified when imported (the kvstore tier
// verifies its own on its fetch threads). A tier-H block that fails is dropped from tier H, counted in
// `host_mac_failures` and logged at most once a second.
//
// Not thread-safe: the engine thread only, except FetchMissingAsync's callback (the kvstore tier's
// thread).
#ifndef STRATA_WORKER_PREFIX_PREFIX_CACHE_H_
#define STRATA_WORKER_PREFIX_PREFIX_CACHE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/log.h"
#include "common/metrics.h"
#include "worker/engine/engine.h"
#include "worker/prefix/block_mac.h"
#include "worker/prefix/block_payload.h"
#include "worker/prefix/fetch_policy.h"
#include "worker/prefix/gpu_block_cache.h"
#include "worker/prefix/host_block_cache.h"
#include "worker/prefix/kvstore_tier.h"

namespace strata::worker {

// One request's blocks and where their cached run came from.
struct PromptPrefix {
  BlockKeyContext context;      // the key context with the request's tenant salt
  std::vector<BlockKey> keys;   // of the full blocks named so far (the prompt's, then generated ones)
  size_t usable = 0;            // leading prompt blocks that may be loaded (all but the last token's)
  std::vector<int32_t> resident;  // pool blocks of the run found in tier G: Engine::NewSequence's prefix
  size_t gpu = 0, host = 0, kvstore = 0;  // blocks loaded from each tier, in that order
  size_t stored = 0;            // leading blocks in the tiers (loaded, or stored after being computed)
  bool fetch_skipped = false;   // the fetch policy judged computing the missing blocks cheaper
  std::chrono::steady_clock::time_point fetch_started;

  size_t loaded() const { return gpu + host + kvstore; }
};

class PrefixCache {
 public:
  // Each tier may be null (not kept). `engine` and the tiers must outlive the cache.
  struct Tiers {
    GpuBlockCache* gpu = nullptr;
    HostBlockCache* host = nullptr;
    KvStoreTier* kvstore = nullptr;
    PayloadPool* payloads = nullptr;  // where exported blocks are written (null: the heap)
    FetchPolicy* fetch_policy = nullptr;  // null: fetch whatever the kvstores may hold
    // The workers' MAC key; required when `host` or `kvstore` is set.
    const BlockMac* mac = nullptr;
    Counter* host_mac_failures = nullptr;  // optional
  };
  PrefixCache(engine::Engine& engine, const BlockKeyContext& context, Tiers tiers);

  // The keys of `prompt`'s full blocks under `tenant_salt`, and the run of them resident in tier G.
  PromptPrefix Find(absl::Span<const int32_t> prompt, const Sha256Digest& tenant_salt);

  // Once the sequence exists, started with prefix.resident: imports the next cached blocks from tier H.
  void LoadHost(PromptPrefix& prefix, engine::Sequence& sequence, std::string_view request_id);

  // Fetches the blocks still missing from the kvstores on their thread and calls `done` there with what
  // was found (possibly nothing); false, without calling it, when there is nothing to ask for or the
  // fetch policy judges computing them cheaper (prefix.fetch_skipped).
  using FetchDone = KvStoreTier::FetchDone;
  bool FetchMissingAsync(PromptPrefix& prefix, FetchDone done);
  // Imports what the kvstores returned, and promotes it into tier H; the fetch policy learns how long the
  // fetch took.
  void LoadFetched(PromptPrefix& prefix, engine::Sequence& sequence,
                   absl::Span<const std::shared_ptr<const BlockPayload>> fetched, std::string_view request_id);

  // A step that prefilled (FetchPolicy::ObservePrefill), for the fetch policy.
  void ObservePrefill(double linear_tokens, double quadratic_tokens, double seconds) {
    if (tiers_.fetch_policy != nullptr) tiers_.fetch_policy->ObservePrefill(linear_tokens, quadratic_tokens, seconds);
  }

  // After the prompt's prefill: the blocks it loaded from tiers H and S/D join tier G, and its computed
  // full blocks are stored (Store).
  void StorePrompt(PromptPrefix& prefix, const engine::Sequence& sequence, int64_t prompt_tokens,
                   std::string_view request_id);
  // When the request finishes: names the blocks that `tokens` (prompt + generated, those with KV)
  // completed and stores them, so a conversation's next turn reuses them.
  void StoreGenerated(PromptPrefix& prefix, const engine::Sequence& sequence, absl::Span<const int32_t> tokens,
                      std::string_view request_id);

 private:
  // Blocks [prefix.stored, end_block) of `sequence`: into tier G, and written through to tier H and the
  // kvstores (one bulk export).
  void Store(PromptPrefix& prefix, const engine::Sequence& sequence, size_t end_block, std::string_view request_id);
  // Blocks [first, end) of `sequence` into tier G under prefix.keys.
  void InsertGpu(const PromptPrefix& prefix, const engine::Sequence& sequence, size_t first, size_t end);
  // Imports whole blocks; how many went in (the run ends at the first of the wrong size or a refusal).
  size_t Import(engine::Sequence& sequence, absl::Span<const std::shared_ptr<const BlockPayload>> payloads,
                std::string_view request_id);
  // How many of `payloads` (the blocks of `keys`, in order) verify before the first that does not, which
  // is dropped from tier H.
  size_t VerifiedHostRun(absl::Span<const BlockKey> keys, absl::Span<const std::shared_ptr<const BlockPayload>> payloads);
  std::optional<BlockKey> ParentOf(const PromptPrefix& prefix, size_t block) const {
    return block > 0 ? std::optional<BlockKey>(prefix.keys[block - 1]) : std::nullopt;
  }

  engine::Engine& engine_;
  const BlockKeyContext context_;
  const Tiers tiers_;
  const int64_t block_tokens_;
  const int64_t payload_bytes_;
  LogThrottle mac_failure_log_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_PREFIX_CACHE_H_
