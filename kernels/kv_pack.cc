#include "kernels/kv_pack.h"

#include "common/strings.h"
#include "kernels/cuda_status.h"

namespace strata::kernels {
namespace {

absl::Status CheckRange(const KvCacheLayout& layout, int64_t first_token, int64_t tokens) {
  if (layout.num_kv_heads <= 0 || layout.head_dim <= 0 || first_token < 0 || tokens < 0 ||
      first_token + tokens > layout.capacity_tokens) {
    return absl::OutOfRangeError(StrCat("KV pack: tokens [", first_token, ", ", first_token + tokens,
                                        ") of a cache of ", layout.capacity_tokens, " tokens x ", layout.num_kv_heads,
                                        " heads x ", layout.head_dim));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t KvLayerPayloadBytes(const KvCacheLayout& layout, int64_t tokens) {
  return 2 * layout.num_kv_heads * tokens * layout.head_dim * static_cast<int64_t>(DTypeSize(layout.dtype));
}

absl::Status PackKvLayer(const KvCacheLayout& layout, const void* k_cache, const void* v_cache, int64_t first_token,
                         int64_t tokens, void* payload, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(CheckRange(layout, first_token, tokens));
  if (tokens == 0) return absl::OkStatus();
  const size_t element = DTypeSize(layout.dtype);
  const size_t row_bytes = tokens * layout.head_dim * element;  // one head's tokens, contiguous
  const size_t cache_pitch = layout.capacity_tokens * layout.head_dim * element;
  const size_t offset = first_token * layout.head_dim * element;
  auto* out = static_cast<std::byte*>(payload);
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(out, row_bytes, static_cast<const std::byte*>(k_cache) + offset,
                                                cache_pitch, row_bytes, layout.num_kv_heads, cudaMemcpyDefault,
                                                stream));
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(out + layout.num_kv_heads * row_bytes, row_bytes,
                                                static_cast<const std::byte*>(v_cache) + offset, cache_pitch,
                                                row_bytes, layout.num_kv_heads, cudaMemcpyDefault, stream));
  return absl::OkStatus();
}

absl::Status UnpackKvLayer(const KvCacheLayout& layout, const void* payload, int64_t first_token, int64_t tokens,
                           void* k_cache, void* v_cache, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(CheckRange(layout, first_token, tokens));
  if (tokens == 0) return absl::OkStatus();
  const size_t element = DTypeSize(layout.dtype);
  const size_t row_bytes = tokens * layout.head_dim * element;
  const size_t cache_pitch = layout.capacity_tokens * layout.head_dim * element;
  const size_t offset = first_token * layout.head_dim * element;
  const auto* in = static_cast<const std::byte*>(payload);
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(static_cast<std::byte*>(k_cache) + offset, cache_pitch, in,
                                                row_bytes, row_bytes, layout.num_kv_heads, cudaMemcpyDefault, stream));
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(static_cast<std::byte*>(v_cache) + offset, cache_pitch,
                                                in + layout.num_kv_heads * row_bytes, row_bytes, row_bytes,
                                                layout.num_kv_heads, cudaMemcpyDefault, stream));
  return absl::OkStatus();
}

}  // namespace strata::kernels
