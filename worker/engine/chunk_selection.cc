#include "worker/engine/chunk_selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/strings.h"

namespace strata::engine {

absl::Status CheckSparseGather(const Tensor& q, const Tensor& bounds, const SparseGather& g,
                               const AttentionParams& p, const KvLayer& out) {
  const int64_t heads = p.num_kv_heads;
  if (heads <= 0 || p.num_heads % heads != 0 || g.chunk_tokens <= 0 || g.candidates < 0 ||
      g.candidates > g.num_chunks || g.select < 0 || g.select > g.candidates || g.sink_chunks < 0 ||
      g.sink_chunks > g.select || g.tail_rows < 0) {
    return absl::InvalidArgumentError(StrCat("sparse gather: ", g.select, " of ", g.candidates, " candidate chunks of ",
                                             g.chunk_tokens, " tokens (", g.sink_chunks, " sinks, ", g.num_chunks,
                                             " per head), ", g.tail_rows, " tail rows, ", p.num_heads,
                                             " query heads over ", heads, " KV heads"));
  }
  if (q.rows() != 1 || q.cols() != p.num_heads * p.head_dim) {
    return absl::InvalidArgumentError(StrCat("sparse gather: a query of [", q.rows(), ", ", q.cols(), "], expected [1, ",
                                             p.num_heads * p.head_dim, "]"));
  }
  if (bounds.rows() != heads * g.num_chunks || bounds.cols() != 2 * p.head_dim) {
    return absl::InvalidArgumentError(StrCat("sparse gather: bounds of [", bounds.rows(), ", ", bounds.cols(),
                                             "], expected [", heads * g.num_chunks, ", ", 2 * p.head_dim, "]"));
  }
  const size_t n = static_cast<size_t>(heads);
  if (g.k_homes.size() != n || g.v_homes.size() != n || g.k_tail.size() != n || g.v_tail.size() != n) {
    return absl::InvalidArgumentError(StrCat("sparse gather: sources for ", g.k_homes.size(), "/", g.v_homes.size(),
                                             " homes and ", g.k_tail.size(), "/", g.v_tail.size(), " tails of ", heads,
                                             " KV heads"));
  }
  for (size_t h = 0; h < n; ++h) {
    if (g.k_homes[h].rows() < g.candidates * g.chunk_tokens || g.v_homes[h].rows() < g.candidates * g.chunk_tokens ||
        g.k_tail[h].rows() < g.tail_rows || g.v_tail[h].rows() < g.tail_rows) {
      return absl::InvalidArgumentError(StrCat("sparse gather: head ", h, "'s sources are shorter than ",
                                               g.candidates, " chunks and ", g.tail_rows, " tail rows"));
    }
  }
  if (out.paged() || out.num_kv_heads != heads || out.k.cols() != p.head_dim ||
      out.capacity_tokens < g.select * g.chunk_tokens + g.tail_rows) {
    return absl::InvalidArgumentError(StrCat("sparse gather: an output layer of ", out.capacity_tokens,
                                             " tokens cannot hold ", g.select, " chunks of ", g.chunk_tokens, " and ",
                                             g.tail_rows, " tail rows"));
  }
  return absl::OkStatus();
}

void UpdateKeyBoundsReference(const float* k, int64_t num_kv_heads, int64_t capacity_tokens, int64_t head_dim,
                              int64_t first, int64_t rows, int64_t chunk_tokens, int64_t num_chunks, float* bounds) {
  if (rows <= 0) return;
  const int64_t end = first + rows;
  for (int64_t h = 0; h < num_kv_heads; ++h) {
    for (int64_t c = first / chunk_tokens; c <= (end - 1) / chunk_tokens; ++c) {
      const int64_t begin = c * chunk_tokens;
      float* lo = bounds + (h * num_chunks + c) * 2 * head_dim;
      float* hi = lo + head_dim;
      if (begin >= first) {  // the chunk starts here: its old bounds are of another sequence's past
        std::fill(lo, lo + head_dim, std::numeric_limits<float>::infinity());
        std::fill(hi, hi + head_dim, -std::numeric_limits<float>::infinity());
      }
      for (int64_t t = std::max(begin, first); t < std::min(begin + chunk_tokens, end); ++t) {
        const float* key = k + (h * capacity_tokens + t) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          lo[d] = std::fmin(lo[d], key[d]);
          hi[d] = std::fmax(hi[d], key[d]);
        }
      }
    }
  }
}

float ChunkScoreReference(const float* q, const float* bounds, const SparseGather& gather,
                          const AttentionParams& params, int64_t kv_head, int64_t chunk) {
  if (chunk < gather.sink_chunks) return std::numeric_limits<float>::infinity();
  const int64_t head_dim = params.head_dim, group = params.num_heads / params.num_kv_heads;
  const float* lo = bounds + (kv_head * gather.num_chunks + chunk) * 2 * head_dim;
  const float* hi = lo + head_dim;
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t g = 0; g < group; ++g) {
    const float* query = q + (kv_head * group + g) * head_dim;
    float bound = 0;
    for (int64_t d = 0; d < head_dim; ++d) bound += std::fmax(query[d] * lo[d], query[d] * hi[d]);
    best = std::fmax(best, bound);
  }
  return best;
}

std::vector<int32_t> SelectChunksReference(const float* q, const float* bounds, const SparseGather& gather,
                                           const AttentionParams& params) {
  std::vector<int32_t> chosen;
  chosen.reserve(params.num_kv_heads * gather.select);
  std::vector<float> scores(gather.candidates);
  std::vector<int32_t> ids(gather.candidates);
  for (int64_t h = 0; h < params.num_kv_heads; ++h) {
    for (int64_t c = 0; c < gather.candidates; ++c) scores[c] = ChunkScoreReference(q, bounds, gather, params, h, c);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + gather.select, ids.end(), [&scores](int32_t a, int32_t b) {
      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    });
    std::sort(ids.begin(), ids.begin() + gather.select);
    chosen.insert(chosen.end(), ids.begin(), ids.begin() + gather.select);
  }
  return chosen;
}

}  // namespace strata::engine
