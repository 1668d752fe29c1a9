// Turns a Mooncake-format trace (scheduler/replay/trace.h) into token-id prompts for a real model: each
// trace block id becomes a fixed block of `tokens_per_hash` token ids (the same id, the same tokens, in
// every request), so requests that share hash ids share exactly those prompt prefixes and therefore the
// KV blocks of a cluster serving them at `tokens_per_hash`-token blocks. Lengths are scaled by
// tokens_per_hash / trace_block_tokens (512 in the Mooncake release) and capped to the model's context.
#ifndef STRATA_BENCH_CLUSTER_TRACE_PROMPTS_H_
#define STRATA_BENCH_CLUSTER_TRACE_PROMPTS_H_

#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/replay/trace.h"

namespace strata::cluster_bench {

struct PromptOptions {
  uint32_t tokens_per_hash = 16;       // tokens one trace block id becomes (= the cluster's --block-tokens)
  uint32_t trace_block_tokens = 512;   // tokens of one trace block id in the trace (Mooncake: 512)
  int32_t vocab_size = 0;              // ids are drawn from [first_token_id, min(vocab_size, kMaxTokenId))
  int32_t first_token_id = 16;         // leaves out the low ids where tokenizers keep BOS/EOS/pad
  uint32_t max_prompt_tokens = 4096;   // cap on a scaled prompt (the model's context minus the output)
  uint32_t max_output_tokens = 32;     // cap on the trace's output_length (not scaled)
};

// Ids above this are left out: Llama 3 and Qwen 2 keep their special tokens at the top of the vocabulary.
inline constexpr int32_t kMaxTokenId = 100'000;

struct BenchRequest {
  std::vector<int32_t> prompt_ids;
  uint32_t max_tokens = 0;
  // Leading tokens whose blocks an earlier request of the same list already has (an infinite cache's
  // hits, in whole tokens_per_hash blocks): what the cluster could reuse at best.
  uint32_t reusable_tokens = 0;
};

// The `tokens_per_hash` ids trace block `hash_id` becomes. Deterministic (splitmix64 of the id and position).
std::vector<int32_t> HashBlockTokens(uint64_t hash_id, const PromptOptions& options);

// One prompt per trace request, in trace order. InvalidArgument for options that cannot make a prompt
// (a vocabulary without room past first_token_id, a zero size).
absl::StatusOr<std::vector<BenchRequest>> MakeRequests(const std::vector<scheduler::replay::TraceRequest>& trace,
                                                       const PromptOptions& options);

// What a prompt must fit: from a Hugging Face config.json in `model_dir` (vocab_size,
// max_position_embeddings). NotFound / InvalidArgument naming the file.
struct ModelLimits {
  int32_t vocab_size = 0;
  uint32_t max_context_tokens = 0;
};
absl::StatusOr<ModelLimits> ReadModelLimits(const std::filesystem::path& model_dir);

}  // namespace strata::cluster_bench

#endif  // STRATA_BENCH_CLUSTER_TRACE_PROMPTS_H_
