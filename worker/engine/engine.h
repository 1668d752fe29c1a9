// Engine: one model on one backend. Runs tokens of a sequence through the model, mini-sequence by
// mini-sequence, and keeps each sequence's KV cache.
#ifndef STRATA_WORKER_ENGINE_ENGINE_H_
#define STRATA_WORKER_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/backend.h"
#include "worker/model/model.h"

namespace strata::engine {

class LlamaModel;  // llama.h, private to the engine

struct EngineOptions {
  // Rows that the projections, the MLP and the LM head see at once during prefill (MsT / MOM
  // mini-sequences). Smaller bounds activation memory; any value gives the same outputs. Default 1024.
  int64_t mini_sequence_tokens = 1024;
};

// One request's tokens and their KV cache on the engine's backend. Move-only; create with
// Engine::NewSequence.
class Sequence {
 public:
  int64_t length() const { return length_; }      // tokens whose KV is cached
  int64_t capacity() const { return capacity_; }  // tokens the cache can hold

 private:
  friend class Engine;
  std::vector<KvLayer> layers_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

// Not thread-safe: one caller at a time (the backend orders its work on one stream).
class Engine {
 public:
  // Binds `model`'s weights on `backend` (the engine keeps the weights' memory alive; `model` may be
  // destroyed afterwards).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const model::Model& model, std::unique_ptr<Backend> backend,
                                                        const EngineOptions& options = {});

  // A sequence whose KV cache holds up to `capacity_tokens` tokens.
  absl::StatusOr<Sequence> NewSequence(int64_t capacity_tokens);

  // Appends `ids` to `sequence` (prefill when many, a decode step when one) and returns the logits of the
  // rows `logit_rows` (indices into `ids`), row-major [logit_rows.size(), vocab_size]. Only those rows
  // reach the LM head. On error the sequence is unchanged.
  absl::StatusOr<std::vector<float>> Forward(Sequence& sequence, absl::Span<const int32_t> ids,
                                             absl::Span<const int64_t> logit_rows);

  const model::ModelConfig& config() const;

  ~Engine();

 private:
  Engine(std::unique_ptr<Backend> backend, std::unique_ptr<LlamaModel> model, const EngineOptions& options);

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;  // declared after backend_: weights are released first
  EngineOptions options_;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_ENGINE_H_
