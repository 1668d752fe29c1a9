// A Llama-3-8B-shaped model with random BF16 weights, made on the GPU (no checkpoint files): what the
// CUDA benchmarks run. Weights are N(0, 0.02) as transformers initializes Llama; norms 1 + N(0, 0.02) so
// activations keep their scale through 32 layers.
#ifndef STRATA_BENCH_CUDA_RANDOM_LLAMA_H_
#define STRATA_BENCH_CUDA_RANDOM_LLAMA_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/llama.h"
#include "model/config.h"

namespace strata::bench {

model::ModelConfig Llama3_8B();

struct BenchModel {
  std::unique_ptr<engine::Backend> backend;
  model::ModelConfig config;
  engine::Tensor embed, final_norm, lm_head;
  std::vector<engine::LlamaLayerWeights> layers;
  std::unique_ptr<engine::LlamaModel> model;
};

absl::StatusOr<BenchModel> MakeModel(engine::DecodeGraphs graphs);

// `n` token ids drawn uniformly from the first 128,000 of the vocabulary, the same for the same seed.
std::vector<int32_t> RandomTokenIds(int64_t n, uint32_t seed);

}  // namespace strata::bench

#endif  // STRATA_BENCH_CUDA_RANDOM_LLAMA_H_
