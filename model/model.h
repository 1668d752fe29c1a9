// Model: a Hugging Face model directory opened and checked: config, weights, tokenizer, fingerprint.
#ifndef STRATA_MODEL_MODEL_H_
#define STRATA_MODEL_MODEL_H_

#include <filesystem>
#include <optional>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/fingerprint.h"
#include "model/tokenizer.h"

namespace strata::model {

struct Model {
  std::filesystem::path dir;
  ModelConfig config;
  Checkpoint checkpoint;               // memory-mapped weights, checked against `config`
  std::optional<Tokenizer> tokenizer;  // absent when the directory has no tokenizer.json
  ModelFingerprint fingerprint;
};

// Opens `dir`/config.json, the weights (single file or shards), and `dir`/tokenizer.json when present;
// checks that the weights are exactly those the config needs; computes the fingerprint (reads every
// weight byte once, in parallel). Errors name the file and the problem.
absl::StatusOr<Model> OpenModel(const std::filesystem::path& dir);

}  // namespace strata::model

#endif  // STRATA_MODEL_MODEL_H_
