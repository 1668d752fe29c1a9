// Synthetic Llama checkpoints of any shape, with random weights, for benchmarks and tests that need a
// model larger than the tiny fixtures.
#ifndef STRATA_TESTS_TESTING_SYNTHETIC_MODEL_H_
#define STRATA_TESTS_TESTING_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <filesystem>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace strata::testing {

struct SyntheticModelShape {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 1536;
  int64_t num_layers = 8;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 2;
};

// Writes dir/config.json (LlamaForCausalLM, rope theta 500000) and dir/model.safetensors with every
// tensor the config needs: normal(0, 0.02) matrices, norms of ones, all in `dtype`. Deterministic in `seed`.
absl::Status WriteSyntheticModel(const std::filesystem::path& dir, const SyntheticModelShape& shape, DType dtype,
                                 uint64_t seed);

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_SYNTHETIC_MODEL_H_
