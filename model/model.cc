#include "model/model.h"

#include "common/status.h"
#include "common/strings.h"
#include "model/weight_layout.h"

namespace strata::model {

absl::StatusOr<Model> OpenModel(const std::filesystem::path& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::NotFoundError(StrCat(dir.string(), ": not a model directory"));
  }
  STRATA_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir / "config.json"));
  STRATA_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(dir));
  if (absl::Status status = CheckTensors(config, checkpoint); !status.ok()) {
    return absl::Status(status.code(), StrCat(dir.string(), ": ", status.message()));
  }
  std::optional<Tokenizer> tokenizer;
  absl::StatusOr<Tokenizer> loaded = Tokenizer::FromFile(dir / "tokenizer.json");
  if (loaded.ok()) {
    tokenizer = *std::move(loaded);
  } else if (loaded.status().code() != absl::StatusCode::kNotFound) {
    return loaded.status();  // present but unreadable or malformed: say so, do not run without it
  }
  ModelFingerprint fingerprint = ComputeFingerprint(config.Canonical(), checkpoint);
  return Model{.dir = dir,
               .config = std::move(config),
               .checkpoint = std::move(checkpoint),
               .tokenizer = std::move(tokenizer),
               .fingerprint = fingerprint};
}

}  // namespace strata::model
