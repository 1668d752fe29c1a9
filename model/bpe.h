// The byte-pair-encoding `model` of a tokenizer.json, run on raw bytes: vocabulary and merges are
// converted from the byte-level alphabet once at load.
//
// Supported options: ignore_merges, unk_token (with fuse_unk); dropout, byte_fallback,
// continuing_subword_prefix and end_of_word_suffix must be absent, null, false or empty.
#ifndef STRATA_MODEL_BPE_H_
#define STRATA_MODEL_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "model/tokenizer_json.h"

namespace strata::model {

// Movable. Encode is const and thread-safe: its cache is guarded by a mutex.
class BpeModel {
 public:
  // `config` is the tokenizer.json `model` value, whose vocab is written in the byte-level alphabet.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& config, const JsonLocation& where);

  // Appends to `ids` the encoding of one pre-tokenized piece of raw bytes. Bytes with no token of their
  // own become unk_token, or are dropped when there is none (as `tokenizers` does).
  void Encode(std::string_view piece, std::vector<int32_t>& ids) const;

  // The vocabulary as written in tokenizer.json (byte-level alphabet), by token.
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;    // position in `merges`: lower merges first
    int32_t result;  // id of the merged token
  };
  struct Cache {
    absl::Mutex mutex;
    absl::flat_hash_map<std::string, std::vector<int32_t>> ids_by_piece ABSL_GUARDED_BY(mutex);
  };

  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const;
  void EncodeUncached(std::string_view piece, std::vector<int32_t>& ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;         // byte-level alphabet -> id
  absl::flat_hash_map<std::string, int32_t> ids_by_bytes_;  // raw bytes -> id
  std::array<int32_t, 256> byte_ids_{};                     // id of each single byte, -1 if none
  absl::flat_hash_map<uint64_t, Merge> merges_;             // PairKey(left, right) -> merge
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();  // owned indirectly so BpeModel can move
};

}  // namespace strata::model

#endif  // STRATA_MODEL_BPE_H_
