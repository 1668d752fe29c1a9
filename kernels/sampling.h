// Token selection on the GPU from float32 logits [rows, vocab]: greedy argmax, and temperature, top-k,
// top-p sampling with a counter-based random stream (no host round trip, no sort).
#ifndef STRATA_KERNELS_SAMPLING_H_
#define STRATA_KERNELS_SAMPLING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace strata::kernels {

// ids[r] = argmax of row r, lowest index on ties; NaN logits are never chosen.
absl::Status ArgmaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids, cudaStream_t stream);

struct SampleOptions {
  float temperature = 1.0f;  // > 0; temperature 0 is ArgmaxRows
  int64_t top_k = 0;         // 0 keeps all; else the k largest logits and any tied with the k-th
  float top_p = 1.0f;        // (0, 1]: the smallest most-likely set whose probability reaches top_p
  uint64_t seed = 0;
  uint64_t step = 0;  // advances the random stream: the draw of row r uses counter step * rows + r
};

// Draws ids[r] from softmax(logits[r] / temperature) restricted by top-k, then top-p (transformers'
// order). Same seed, step and logits give the same ids.
absl::Status SampleRows(const float* logits, int64_t rows, int64_t vocab, const SampleOptions& options, int32_t* ids,
                        cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_SAMPLING_H_
