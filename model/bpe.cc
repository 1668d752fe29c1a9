#include "model/bpe.h"

#include <queue>
#include <utility>

#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/strings.h"
#include "model/byte_level.h"

namespace strata::model {
namespace {

// Pieces longer than this are encoded afresh each time (long pieces rarely repeat).
constexpr size_t kMaxCachedPieceBytes = 256;
// The cache is emptied when it holds this many pieces, which bounds its memory.
constexpr size_t kCacheCapacityPieces = 1 << 16;

absl::StatusOr<std::pair<std::string, std::string>> ParseMergeEntry(const nlohmann::json& entry,
                                                                    const JsonLocation& where) {
  if (entry.is_string()) {
    const std::vector<std::string> parts = absl::StrSplit(entry.get<std::string>(), ' ');
    if (parts.size() != 2) {
      return where.Error(strata::StrCat("is '", entry.get<std::string>(), "', not two tokens separated by one space"));
    }
    return std::make_pair(parts[0], parts[1]);
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return std::make_pair(entry[0].get<std::string>(), entry[1].get<std::string>());
  }
  return where.Error("must be a string \"left right\" or a pair of strings [\"left\", \"right\"]");
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& config, const JsonLocation& where) {
  STRATA_ASSIGN_OR_RETURN(const std::string type, RequiredString(config, "type", where));
  if (type != "BPE") {
    return where.Field("type").Error(strata::StrCat("is '", type, "', which Strata does not support (supported: BPE)"));
  }
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* dropout, OptionalField(config, "dropout", where));
  if (dropout != nullptr) {
    return where.Field("dropout").Error("is set, which Strata does not support (it must be null)");
  }
  STRATA_ASSIGN_OR_RETURN(const bool byte_fallback, OptionalBool(config, "byte_fallback", false, where));
  if (byte_fallback) return where.Field("byte_fallback").Error("is true, which Strata does not support");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    STRATA_ASSIGN_OR_RETURN(const std::string value, OptionalString(config, affix, where));
    if (!value.empty()) {
      return where.Field(affix).Error(
          strata::StrCat("is '", value, "', which Strata does not support (it must be null)"));
    }
  }

  BpeModel model;
  STRATA_ASSIGN_OR_RETURN(model.ignore_merges_, OptionalBool(config, "ignore_merges", false, where));
  STRATA_ASSIGN_OR_RETURN(model.fuse_unk_, OptionalBool(config, "fuse_unk", false, where));
  model.byte_ids_.fill(-1);

  const JsonLocation vocab_where = where.Field("vocab");
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* vocab, RequiredField(config, "vocab", where));
  if (!vocab->is_object()) return vocab_where.Error(strata::StrCat("must be an object, not ", vocab->type_name()));
  model.vocab_.reserve(vocab->size());
  absl::flat_hash_map<int32_t, const std::string*> token_by_id;
  token_by_id.reserve(vocab->size());
  for (const auto& [token, id_value] : vocab->items()) {
    STRATA_ASSIGN_OR_RETURN(const int32_t id, TokenIdValue(id_value, vocab_where.Field(token)));
    const auto [it, inserted] = model.vocab_.emplace(token, id);
    const auto [previous, id_is_new] = token_by_id.emplace(id, &it->first);
    if (!id_is_new) {
      return vocab_where.Error(strata::StrCat("gives id ", id, " to both '", *previous->second, "' and '", token, "'"));
    }
    // A token with a character outside the byte-level alphabet cannot come out of BPE over bytes.
    if (std::optional<std::string> bytes = ByteLevelToBytes(token)) {
      if (bytes->size() == 1) model.byte_ids_[static_cast<unsigned char>((*bytes)[0])] = id;
      model.ids_by_bytes_.emplace(std::move(*bytes), id);
    }
  }

  STRATA_ASSIGN_OR_RETURN(const std::string unk_token, OptionalString(config, "unk_token", where));
  if (!unk_token.empty()) {
    const auto it = model.vocab_.find(unk_token);
    if (it == model.vocab_.end()) {
      return where.Field("unk_token").Error(strata::StrCat("is '", unk_token, "', which is not in model.vocab"));
    }
    model.unk_id_ = it->second;
  }

  const JsonLocation merges_where = where.Field("merges");
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* merges, OptionalField(config, "merges", where));
  if (merges != nullptr) {
    if (!merges->is_array()) return merges_where.Error(strata::StrCat("must be an array, not ", merges->type_name()));
    if (merges->size() > static_cast<size_t>(INT32_MAX)) return merges_where.Error("has too many entries");
    model.merges_.reserve(merges->size());
    for (size_t rank = 0; rank < merges->size(); ++rank) {
      const JsonLocation entry_where = merges_where.Element(rank);
      STRATA_ASSIGN_OR_RETURN(const auto pair, ParseMergeEntry((*merges)[rank], entry_where));
      int32_t ids[2];
      const std::string* parts[2] = {&pair.first, &pair.second};
      for (int side = 0; side < 2; ++side) {
        const auto it = model.vocab_.find(*parts[side]);
        if (it == model.vocab_.end()) {
          return entry_where.Error(strata::StrCat("names '", *parts[side], "', which is not in model.vocab"));
        }
        ids[side] = it->second;
      }
      const std::string merged = pair.first + pair.second;
      const auto it = model.vocab_.find(merged);
      if (it == model.vocab_.end()) {
        return entry_where.Error(strata::StrCat("makes '", merged, "', which is not in model.vocab"));
      }
      // A repeated pair takes its last rank, as in `tokenizers`.
      model.merges_.insert_or_assign(PairKey(ids[0], ids[1]), Merge{static_cast<int32_t>(rank), it->second});
    }
  }
  return model;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  const auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (const auto it = ids_by_bytes_.find(absl::string_view(piece.data(), piece.size())); it != ids_by_bytes_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_->mutex);
    if (const auto it = cache_->ids_by_piece.find(absl::string_view(piece.data(), piece.size()));
        it != cache_->ids_by_piece.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> piece_ids;
  EncodeUncached(piece, piece_ids);
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_->mutex);
    if (cache_->ids_by_piece.size() >= kCacheCapacityPieces) cache_->ids_by_piece.clear();
    cache_->ids_by_piece.emplace(piece, std::move(piece_ids));
  }
}

// Merges by rank with a min-heap of candidate pairs over a doubly linked list of symbols: O(n log n)
// in the piece length. Ties between equal ranks go to the leftmost pair. Heap entries go stale when a
// neighbour merges; they are recognized on pop and dropped, exactly as `tokenizers` does.
void BpeModel::EncodeUncached(std::string_view piece, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;    // false once merged into its left neighbour
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // index of the pair's left symbol
    int32_t result;
  };
  struct LaterCandidate {  // orders the priority queue as a min-heap on (rank, left)
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
    }
  };

  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (const char c : piece) {
    int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id < 0) {
      if (!unk_id_.has_value()) continue;
      const bool previous_is_unk = !symbols.empty() && symbols.back().id == *unk_id_;
      if (fuse_unk_ && previous_is_unk) continue;
      id = *unk_id_;
    }
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate, std::vector<Candidate>, LaterCandidate> queue(LaterCandidate{}, std::move(storage));
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* merge = FindMerge(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{merge->rank, static_cast<int32_t>(i), merge->result});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* current = FindMerge(left.id, right.id);
    if (current == nullptr || current->result != top.result) continue;  // stale
    left.id = top.result;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    if (left.prev >= 0) {
      if (const Merge* merge = FindMerge(symbols[left.prev].id, left.id)) {
        queue.push(Candidate{merge->rank, left.prev, merge->result});
      }
    }
    if (left.next >= 0) {
      if (const Merge* merge = FindMerge(left.id, symbols[left.next].id)) {
        queue.push(Candidate{merge->rank, top.left, merge->result});
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace strata::model
