#include "bench/cluster/trace_prompts.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "common/strings.h"

namespace strata::cluster_bench {
namespace {

using scheduler::replay::SplitMix64;

int32_t TokenFrom(uint64_t hash, const PromptOptions& options) {
  const int32_t end = std::min(options.vocab_size, kMaxTokenId);
  return options.first_token_id + static_cast<int32_t>(hash % static_cast<uint64_t>(end - options.first_token_id));
}

// A domain for the tokens past a request's hash blocks, apart from every hash block's.
constexpr uint64_t kTailDomain = 0x7a11'0000'0000'0000ULL;

}  // namespace

std::vector<int32_t> HashBlockTokens(uint64_t hash_id, const PromptOptions& options) {
  std::vector<int32_t> tokens(options.tokens_per_hash);
  const uint64_t seed = SplitMix64(hash_id);
  for (uint32_t i = 0; i < options.tokens_per_hash; ++i) tokens[i] = TokenFrom(SplitMix64(seed + i), options);
  return tokens;
}

absl::StatusOr<std::vector<BenchRequest>> MakeRequests(const std::vector<scheduler::replay::TraceRequest>& trace,
                                                       const PromptOptions& options) {
  if (options.tokens_per_hash == 0 || options.trace_block_tokens == 0 || options.max_prompt_tokens == 0 ||
      options.max_output_tokens == 0) {
    return absl::InvalidArgumentError("tokens per hash block, trace block tokens and the prompt and output caps must be > 0");
  }
  if (options.first_token_id < 0 || std::min(options.vocab_size, kMaxTokenId) <= options.first_token_id) {
    return absl::InvalidArgumentError(StrCat("vocabulary of ", options.vocab_size, " ids has none from id ",
                                             options.first_token_id, " on to draw prompts from"));
  }
  std::vector<BenchRequest> out;
  out.reserve(trace.size());
  absl::flat_hash_set<uint64_t> seen;  // hash ids of earlier requests (a chain: a seen id implies its prefix)
  for (size_t r = 0; r < trace.size(); ++r) {
    const scheduler::replay::TraceRequest& request = trace[r];
    const double scaled = std::round(static_cast<double>(request.input_tokens) * options.tokens_per_hash /
                                     options.trace_block_tokens);
    const uint32_t prompt_tokens =
        static_cast<uint32_t>(std::clamp<double>(scaled, 1.0, static_cast<double>(options.max_prompt_tokens)));
    BenchRequest bench;
    bench.prompt_ids.reserve(prompt_tokens);
    bool prefix_seen = true;
    for (size_t b = 0; bench.prompt_ids.size() < prompt_tokens; ++b) {
      std::vector<int32_t> block;
      if (b < request.hash_ids.size()) {
        block = HashBlockTokens(request.hash_ids[b], options);
        const bool whole = bench.prompt_ids.size() + block.size() <= prompt_tokens;
        prefix_seen = prefix_seen && whole && seen.contains(request.hash_ids[b]);
        if (prefix_seen) bench.reusable_tokens += options.tokens_per_hash;
      } else {
        prefix_seen = false;
        block.resize(options.tokens_per_hash);
        for (uint32_t i = 0; i < options.tokens_per_hash; ++i) {
          block[i] = TokenFrom(SplitMix64(kTailDomain ^ (uint64_t{r} << 24) ^ (b * options.tokens_per_hash + i)), options);
        }
      }
      const size_t take = std::min<size_t>(block.size(), prompt_tokens - bench.prompt_ids.size());
      bench.prompt_ids.insert(bench.prompt_ids.end(), block.begin(), block.begin() + static_cast<ptrdiff_t>(take));
    }
    for (uint64_t id : request.hash_ids) seen.insert(id);
    bench.max_tokens = static_cast<uint32_t>(
        std::clamp<uint64_t>(request.output_tokens, 1, options.max_output_tokens));
    out.push_back(std::move(bench));
  }
  return out;
}

absl::StatusOr<ModelLimits> ReadModelLimits(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat(path.string(), ": cannot open (is --model a model directory?)"));
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return absl::InvalidArgumentError(StrCat(path.string(), ": not JSON"));
  // transformers 5.x may nest the language model's fields under text_config.
  const nlohmann::json& config = json.contains("text_config") && json["text_config"].is_object() ? json["text_config"] : json;
  ModelLimits limits;
  if (!config.contains("vocab_size") || !config["vocab_size"].is_number_unsigned()) {
    return absl::InvalidArgumentError(StrCat(path.string(), ": no vocab_size"));
  }
  limits.vocab_size = config["vocab_size"].get<int32_t>();
  limits.max_context_tokens = config.contains("max_position_embeddings") && config["max_position_embeddings"].is_number_unsigned()
                                  ? config["max_position_embeddings"].get<uint32_t>()
                                  : 4096;
  return limits;
}

}  // namespace strata::cluster_bench
