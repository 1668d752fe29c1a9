#include "worker/prefix/prefix_cache.h"

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::worker {

PrefixCache::PrefixCache(engine::Engine& engine, const BlockKeyContext& context, Tiers tiers)
    : engine_(engine),
      context_(context),
      tiers_(tiers),
      block_tokens_(context.block_tokens),
      payload_bytes_(engine.KvPayloadBytes(context.block_tokens)) {
  STRATA_CHECK(tiers.payloads == nullptr || static_cast<int64_t>(tiers.payloads->payload_bytes()) == payload_bytes_);
  STRATA_CHECK(tiers.mac != nullptr || (tiers.host == nullptr && tiers.kvstore == nullptr));
}

PromptPrefix PrefixCache::Find(absl::Span<const int32_t> prompt, const Sha256Digest& tenant_salt) {
  PromptPrefix prefix;
  prefix.context = context_;
  prefix.context.tenant_salt = tenant_salt;
  prefix.keys = ComputeBlockKeys(prefix.context, prompt);
  prefix.usable = prompt.empty() ? 0 : static_cast<size_t>((static_cast<int64_t>(prompt.size()) - 1) / block_tokens_);
  if (tiers_.gpu != nullptr) {
    prefix.resident = tiers_.gpu->LongestPrefix(absl::MakeConstSpan(prefix.keys).subspan(0, prefix.usable));
  }
  return prefix;
}

size_t PrefixCache::Import(engine::Sequence& sequence, absl::Span<const std::shared_ptr<const BlockPayload>> payloads,
                           std::string_view request_id) {
  std::vector<const std::byte*> data;
  data.reserve(payloads.size());
  for (const auto& payload : payloads) {
    if (static_cast<int64_t>(payload->size()) != payload_bytes_) break;
    data.push_back(payload->data());
  }
  if (data.empty()) return 0;
  const absl::Status status = engine_.ImportBlocks(sequence, data);
  if (!status.ok()) {
    LogWarning(StrCat("error=import_kv_failed request=", request_id, " at_token=", sequence.length(), " blocks=",
                      data.size(), " message=\"", status.message(), "\" effect=recompute"));
    return 0;
  }
  return data.size();
}

void PrefixCache::LoadHost(PromptPrefix& prefix, engine::Sequence& sequence, std::string_view request_id) {
  prefix.gpu = prefix.resident.size();
  prefix.stored = prefix.gpu;
  if (tiers_.host == nullptr) return;
  const auto keys = absl::MakeConstSpan(prefix.keys).subspan(prefix.gpu, prefix.usable - prefix.gpu);
  std::vector<std::shared_ptr<const BlockPayload>> payloads = tiers_.host->LongestPrefix(keys);
  // A block that fails ends the run there; the kvstores may still give it (their fetch starts at it).
  payloads.resize(VerifiedHostRun(keys, payloads));
  prefix.host = Import(sequence, payloads, request_id);
  // A later block would land at the wrong position: fetch nothing past a refused import either.
  if (prefix.host < payloads.size()) prefix.usable = prefix.loaded();
}

size_t PrefixCache::VerifiedHostRun(absl::Span<const BlockKey> keys,
                                    absl::Span<const std::shared_ptr<const BlockPayload>> payloads) {
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (tiers_.mac->Verify(keys[i], payloads[i]->bytes(), payloads[i]->trailer())) continue;
    tiers_.host->Remove(keys[i]);
    if (tiers_.host_mac_failures != nullptr) tiers_.host_mac_failures->Increment();
    if (uint64_t held_back = 0; mac_failure_log_.Allow(&held_back)) {
      LogWarning(StrCat("error=kv_mac_mismatch tier=host key=", keys[i].Hex(), " held_back=", held_back,
                        " effect=recompute,drop"));
    }
    return i;
  }
  return payloads.size();
}

bool PrefixCache::FetchMissingAsync(PromptPrefix& prefix, FetchDone done) {
  if (tiers_.kvstore == nullptr || prefix.loaded() >= prefix.usable) return false;
  if (tiers_.fetch_policy != nullptr) {
    const size_t blocks = prefix.usable - prefix.loaded();
    prefix.fetch_skipped =
        !tiers_.fetch_policy->ShouldFetch(static_cast<int64_t>(prefix.loaded()) * block_tokens_,
                                          static_cast<int64_t>(blocks) * block_tokens_, blocks * payload_bytes_);
    if (prefix.fetch_skipped) return false;
  }
  prefix.fetch_started = std::chrono::steady_clock::now();
  tiers_.kvstore->FetchPrefixAsync(
      std::vector<BlockKey>(prefix.keys.begin() + static_cast<ptrdiff_t>(prefix.loaded()),
                            prefix.keys.begin() + static_cast<ptrdiff_t>(prefix.usable)),
      std::move(done));
  return true;
}

void PrefixCache::LoadFetched(PromptPrefix& prefix, engine::Sequence& sequence,
                              absl::Span<const std::shared_ptr<const BlockPayload>> fetched,
                              std::string_view request_id) {
  const size_t first = prefix.loaded();
  prefix.kvstore = Import(sequence, fetched, request_id);
  if (tiers_.fetch_policy != nullptr && prefix.kvstore > 0) {
    tiers_.fetch_policy->ObserveFetch(
        prefix.kvstore * static_cast<uint64_t>(payload_bytes_),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - prefix.fetch_started).count());
  }
  if (tiers_.host == nullptr || prefix.kvstore == 0) return;
  std::vector<HostBlockCache::Entry> promoted;
  for (size_t i = 0; i < prefix.kvstore; ++i) {
    promoted.push_back({prefix.keys[first + i], ParentOf(prefix, first + i), fetched[i]});
  }
  tiers_.host->Insert(std::move(promoted));
}

void PrefixCache::InsertGpu(const PromptPrefix& prefix, const engine::Sequence& sequence, size_t first, size_t end) {
  if (tiers_.gpu == nullptr || !sequence.paged() || end <= first) return;
  tiers_.gpu->Insert(absl::MakeConstSpan(prefix.keys).subspan(first, end - first), ParentOf(prefix, first),
                     sequence.blocks().subspan(first, end - first));
}

void PrefixCache::StorePrompt(PromptPrefix& prefix, const engine::Sequence& sequence, int64_t prompt_tokens,
                              std::string_view request_id) {
  InsertGpu(prefix, sequence, prefix.gpu, prefix.loaded());
  prefix.stored = prefix.loaded();
  Store(prefix, sequence, static_cast<size_t>(prompt_tokens / block_tokens_), request_id);
}

void PrefixCache::StoreGenerated(PromptPrefix& prefix, const engine::Sequence& sequence,
                                 absl::Span<const int32_t> tokens, std::string_view request_id) {
  const size_t end_block = static_cast<size_t>(sequence.length() / block_tokens_);
  if (end_block <= prefix.keys.size()) return;
  // The keys so far end with the prompt's last full block; each new block chains onto the one before.
  for (size_t b = prefix.keys.size(); b < end_block; ++b) {
    const BlockKey previous = b > 0 ? prefix.keys[b - 1] : RootKey(prefix.context);
    prefix.keys.push_back(ChainKey(previous, tokens.subspan(b * block_tokens_, block_tokens_)));
  }
  Store(prefix, sequence, end_block, request_id);
}

void PrefixCache::Store(PromptPrefix& prefix, const engine::Sequence& sequence, size_t end_block,
                        std::string_view request_id) {
  const size_t first = prefix.stored;
  if (end_block <= first) return;
  InsertGpu(prefix, sequence, first, end_block);
  if (tiers_.host == nullptr && tiers_.kvstore == nullptr) {
    prefix.stored = end_block;
    return;
  }
  // The new blocks, written through to tier H and the kvstores: one bulk copy out of the engine, into as
  // many payload slots as are free (the rest stay in tier G only: the engine thread never waits for room).
  std::vector<std::shared_ptr<BlockPayload>> payloads;
  std::vector<std::byte*> data;
  for (size_t b = first; b < end_block; ++b) {
    std::shared_ptr<BlockPayload> payload = tiers_.payloads != nullptr
                                                ? tiers_.payloads->Allocate()
                                                : std::make_shared<BlockPayload>(static_cast<size_t>(payload_bytes_));
    if (payload == nullptr) break;
    data.push_back(payload->data());
    payloads.push_back(std::move(payload));
  }
  prefix.stored = end_block;
  if (payloads.empty()) return;
  const absl::Status status = engine_.ExportBlocks(sequence, static_cast<int64_t>(first), data);
  if (!status.ok()) {
    LogWarning(StrCat("error=export_kv_failed request=", request_id, " blocks=", first, "..", first + data.size(),
                      " message=\"", status.message(), "\""));
    return;
  }
  std::vector<HostBlockCache::Entry> entries;
  std::vector<KvStoreTier::WriteItem> writes;
  for (size_t b = first; b < first + payloads.size(); ++b) {
    BlockPayload& payload = *payloads[b - first];
    tiers_.mac->Seal(prefix.keys[b], payload.bytes(), payload.trailer());
    std::shared_ptr<const BlockPayload> shared = std::move(payloads[b - first]);
    entries.push_back({prefix.keys[b], ParentOf(prefix, b), shared});
    writes.push_back({prefix.keys[b], ParentOf(prefix, b), std::move(shared)});
  }
  if (tiers_.host != nullptr) tiers_.host->Insert(std::move(entries));
  if (tiers_.kvstore != nullptr) tiers_.kvstore->Write(std::move(writes));
}

}  // namespace strata::worker
