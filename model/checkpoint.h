// Checkpoint: the weights of a Hugging Face model directory, from one safetensors file or from the
// shards listed by `model.safetensors.index.json`, as one name-sorted set of tensors.
#ifndef STRATA_MODEL_CHECKPOINT_H_
#define STRATA_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/safetensors.h"

namespace strata::model {

inline constexpr char kSingleFileName[] = "model.safetensors";
inline constexpr char kShardIndexFileName[] = "model.safetensors.index.json";

// The tensors of a model directory. Each TensorInfo keeps its own file mapped, so tensors may be
// copied out and outlive the Checkpoint.
//
// Movable, copyable (copies share the mappings). Thread-safe for concurrent reads.
class Checkpoint {
 public:
  // Opens model_dir/model.safetensors.index.json if it exists (the index wins when both exist), else
  // model_dir/model.safetensors. Every shard is validated as SafetensorsFile::Open does, and the
  // index must agree with the shards exactly: each listed tensor is in the shard it names, no tensor
  // is in two shards, and no shard holds a tensor the index does not list. The index's "metadata"
  // (total_size) is not checked: published checkpoints often get it slightly wrong.
  //
  // NotFound if neither file exists or a listed shard is missing; InvalidArgument, with a one-line
  // message naming the file and the problem, for malformed content.
  static absl::StatusOr<Checkpoint> Open(const std::filesystem::path& model_dir);

  // Every tensor of every shard, sorted by name (names are unique).
  absl::Span<const TensorInfo> tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr. The pointer is valid while this object lives unmoved.
  const TensorInfo* Find(std::string_view name) const;
  // Bytes of tensor data, summed over all tensors (headers excluded).
  uint64_t total_bytes() const { return total_bytes_; }
  // The safetensors files read: the single file, or the shards in name order.
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  Checkpoint(std::vector<TensorInfo> tensors, std::vector<std::filesystem::path> files);

  std::vector<TensorInfo> tensors_;  // sorted by name, unique
  std::vector<std::filesystem::path> files_;
  uint64_t total_bytes_ = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_CHECKPOINT_H_
