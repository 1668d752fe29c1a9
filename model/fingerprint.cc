#include "model/fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace strata::model {
namespace {

constexpr std::string_view kSchemeTag = "strata-model-fingerprint-v1";

// Tensors are hashed in pieces of this size so that large tensors (embeddings, LM heads) spread over
// all cores. Part of the scheme: changing it changes every fingerprint (bump kSchemeTag).
constexpr uint64_t kPieceBytes = uint64_t{64} << 20;

struct Piece {
  size_t tensor;  // index into checkpoint.tensors()
  absl::Span<const std::byte> bytes;
};

void UpdateString(Sha256& hasher, std::string_view text) {
  hasher.UpdateLe64(text.size());
  hasher.Update(text);
}

absl::Span<const uint8_t> AsU8(absl::Span<const std::byte> bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

// Every byte of every tensor is hashed, never a sample: two fine-tunes of one base model may differ
// in only a few pages, and if they shared a fingerprint one would be served the other's KV blocks:
// silently wrong output, the worst failure this system can have. The cost is kept off the load path
// by hashing 64 MiB pieces on all cores (SHA-256 runs at ~1-2 GB/s per core with SHA-NI).
//
// Layout of the hashed stream (numbers as 8-byte little-endian, strings length-prefixed):
//   tag, config_canonical, tensor count, then per tensor in name order:
//   name, dtype name, rank, dims..., SHA-256(piece digest 0 || piece digest 1 || ...)
// where piece i is bytes [i * 64 MiB, (i + 1) * 64 MiB) of the tensor. Pieces depend only on the
// tensor, so the result is the same for any thread count and any sharding of the checkpoint.
ModelFingerprint ComputeFingerprint(std::string_view config_canonical, const Checkpoint& checkpoint) {
  const absl::Span<const TensorInfo> tensors = checkpoint.tensors();

  std::vector<Piece> pieces;
  std::vector<size_t> first_piece(tensors.size() + 1);  // pieces of tensor t: [first_piece[t], first_piece[t+1])
  for (size_t t = 0; t < tensors.size(); ++t) {
    first_piece[t] = pieces.size();
    const absl::Span<const std::byte> bytes = tensors[t].bytes;
    for (uint64_t offset = 0; offset < bytes.size(); offset += kPieceBytes) {
      pieces.push_back({t, bytes.subspan(offset, std::min<uint64_t>(kPieceBytes, bytes.size() - offset))});
    }
  }
  first_piece[tensors.size()] = pieces.size();

  std::vector<Sha256Digest> piece_digests(pieces.size());
  const auto num_pieces = static_cast<int64_t>(pieces.size());
  // Dynamic schedule: tensors' last pieces are short, and page faults make piece times uneven.
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < num_pieces; ++i) {
    Sha256 hasher;
    hasher.Update(AsU8(pieces[i].bytes));
    piece_digests[i] = hasher.Finish();
  }

  Sha256 hasher;
  UpdateString(hasher, kSchemeTag);
  UpdateString(hasher, config_canonical);
  hasher.UpdateLe64(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorInfo& tensor = tensors[t];
    UpdateString(hasher, tensor.name);
    UpdateString(hasher, DTypeName(tensor.dtype));
    hasher.UpdateLe64(tensor.shape.size());
    for (int64_t dim : tensor.shape) hasher.UpdateLe64(static_cast<uint64_t>(dim));
    Sha256 tensor_hasher;
    for (size_t p = first_piece[t]; p < first_piece[t + 1]; ++p) {
      tensor_hasher.Update(absl::MakeConstSpan(piece_digests[p]));
    }
    const Sha256Digest tensor_digest = tensor_hasher.Finish();
    hasher.Update(absl::MakeConstSpan(tensor_digest));
  }
  return ModelFingerprint{hasher.Finish()};
}

}  // namespace strata::model
