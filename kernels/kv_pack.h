// KV packing between the engine's per-layer cache ([num_kv_heads][capacity_tokens][head_dim] for K and
// for V, engine/backend.h KvLayer) and one layer's section of a block payload (ARCHITECTURE.md:
// [layer][K|V][kv_head][token][head_dim]). Each direction is two strided 2-D copies on the stream (the
// copy engine does the gather), so blocks move between GPU memory, pinned host memory and the wire
// without a host-side gather. Source and destination may be device or pinned host memory (UVA).
#ifndef STRATA_KERNELS_KV_PACK_H_
#define STRATA_KERNELS_KV_PACK_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace strata::kernels {

struct KvCacheLayout {
  DType dtype = DType::kBF16;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t capacity_tokens = 0;  // tokens between consecutive heads of the cache
};

// Bytes of one layer's [K|V][kv_head][token][head_dim] section for `tokens` tokens.
int64_t KvLayerPayloadBytes(const KvCacheLayout& layout, int64_t tokens);

// Copies tokens [first_token, first_token + tokens) of K and V into `payload` (KvLayerPayloadBytes).
absl::Status PackKvLayer(const KvCacheLayout& layout, const void* k_cache, const void* v_cache, int64_t first_token,
                         int64_t tokens, void* payload, cudaStream_t stream);

// The inverse: writes the payload's tokens at [first_token, first_token + tokens) of the cache.
absl::Status UnpackKvLayer(const KvCacheLayout& layout, const void* payload, int64_t first_token, int64_t tokens,
                           void* k_cache, void* v_cache, cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_KV_PACK_H_
