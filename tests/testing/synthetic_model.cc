#include "tests/testing/synthetic_model.h"

#include <fstream>
#include <random>

#include "absl/strings/match.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "tests/testing/safetensors_writer.h"
#include "model/config.h"
#include "model/weight_layout.h"

namespace strata::testing {

absl::Status WriteSyntheticModel(const std::filesystem::path& dir, const SyntheticModelShape& shape, DType dtype,
                                 uint64_t seed) {
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"vocab_size", shape.vocab_size},
      {"hidden_size", shape.hidden_size},
      {"intermediate_size", shape.intermediate_size},
      {"num_hidden_layers", shape.num_layers},
      {"num_attention_heads", shape.num_heads},
      {"num_key_value_heads", shape.num_kv_heads},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"max_position_embeddings", 131072},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"tie_word_embeddings", false},
  };
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(StrCat(dir.string(), ": cannot create: ", error.message()));
  std::ofstream(dir / "config.json") << config.dump(2);
  STRATA_ASSIGN_OR_RETURN(const model::ModelConfig parsed,
                          model::ParseModelConfig(config.dump(), (dir / "config.json").string()));

  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<TensorToWrite> tensors;
  for (const model::TensorSpec& spec : model::ExpectedTensors(parsed)) {
    int64_t elements = 1;
    for (int64_t dim : spec.shape) elements *= dim;
    std::vector<float> values(elements);
    const bool is_norm = absl::EndsWith(spec.name, "norm.weight");
    for (float& v : values) v = is_norm ? 1.0f : normal(random);
    tensors.push_back({spec.name, dtype, spec.shape, EncodeTensorBytes(dtype, values)});
  }
  return WriteSafetensors(dir / "model.safetensors", tensors);
}

}  // namespace strata::testing
