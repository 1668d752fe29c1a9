// Sparse (importance-aware) decode against exact decode, in the same process (issue 25):
//
//   --mode attention   attention-level accuracy: one layer of 8 KV heads (32 query heads, head_dim 128)
//                      with random keys and planted "needle" keys that align with the query, at each
//                      --contexts length; per budget, the relative L2 of the attention output against
//                      exact attention and the recall of the true top-64 keys of every query head.
//   --mode speed       decode tokens/s of a Llama-3-8B-shaped model (random BF16 weights) with its KV off
//                      the GPU as the budgets say, exact and at every budget on the same sequence, and the
//                      bytes read over the bus per step. --random-kv fills the context with random KV
//                      instead of prefilling it (decode speed does not depend on the values).
//   --mode match       the fraction of decode steps whose argmax matches exact decode, teacher-forced with
//                      exact decode's tokens, on a prefilled random prompt whose first 64 tokens recur at
//                      its end (the needle).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/cuda/random_llama.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "worker/engine/chunk_selection.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/kv_cache.h"

namespace strata::bench {
namespace {

constexpr double kGiB = double{1 << 30};

struct Options {
  std::string mode = "speed";
  std::vector<int64_t> contexts = {131072};
  std::vector<int64_t> budgets = {2048, 8192, 32768};
  int64_t chunk_tokens = 32;
  int64_t steps = 8;
  double gpu_kv_budget_gib = 8;
  double host_kv_budget_gib = 100;
  bool random_kv = false;
  std::string json_path;
};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Log(const std::string& text) {
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Emit(const Options& o, const nlohmann::json& row) {
  Log(row.dump());
  if (!o.json_path.empty()) std::ofstream(o.json_path, std::ios::app) << row.dump() << "\n";
}

uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}
float FromBf16(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// ---------------------------------------------------------------------------------------------------
// Attention-level accuracy.

// `values` (already BF16-representable) as a BF16 tensor in the backend's memory: the CUDA backend's
// kernels take its activation dtype only (Backend::Upload gives F32).
absl::StatusOr<engine::Tensor> UploadBf16(engine::Backend& backend, const std::vector<float>& values, int64_t rows,
                                          int64_t cols) {
  STRATA_ASSIGN_OR_RETURN(engine::Tensor host, backend.AllocateHost(DType::kBF16, rows, cols));
  uint16_t* bits = host.data<uint16_t>();
  for (size_t i = 0; i < values.size(); ++i) bits[i] = ToBf16(values[i]);
  STRATA_ASSIGN_OR_RETURN(engine::Tensor device, backend.Allocate(DType::kBF16, rows, cols));
  STRATA_RETURN_IF_ERROR(backend.CopyRows(host, 0, device, 0, rows, engine::Queue::kCompute));
  STRATA_ASSIGN_OR_RETURN(engine::Fence done, backend.Record(engine::Queue::kCompute));
  STRATA_RETURN_IF_ERROR(backend.Synchronize(done));
  return device;
}

absl::Status RunAttention(const Options& o) {
  constexpr int64_t kKvHeads = 8, kHeads = 32, kHeadDim = 128, kNeedles = 8, kTopK = 64;
  constexpr int64_t kRecent = 256, kSink = 32;
  const int64_t group = kHeads / kKvHeads;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Backend> backend, engine::CreateCudaBackend({}));
  for (const int64_t context : o.contexts) {
    std::mt19937 rng(static_cast<uint32_t>(context));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // The query, then keys and values head-major, rounded to BF16 so host and device see the same values.
    std::vector<float> q(kHeads * kHeadDim);
    for (float& x : q) x = FromBf16(ToBf16(normal(rng)));
    std::vector<float> keys(kKvHeads * context * kHeadDim), values(keys.size());
    for (float& x : keys) x = FromBf16(ToBf16(normal(rng)));
    for (float& x : values) x = FromBf16(ToBf16(normal(rng)));
    // Needles: keys along the mean direction of the head's query group, at positions spread over the context.
    std::uniform_int_distribution<int64_t> position(kSink, context - kRecent - 1);
    for (int64_t h = 0; h < kKvHeads; ++h) {
      std::vector<float> direction(kHeadDim, 0.0f);
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t d = 0; d < kHeadDim; ++d) direction[d] += q[((h * group) + g) * kHeadDim + d];
      }
      double norm = 0;
      for (float x : direction) norm += double{x} * x;
      for (int64_t n = 0; n < kNeedles; ++n) {
        const int64_t t = position(rng);
        for (int64_t d = 0; d < kHeadDim; ++d) {
          keys[(h * context + t) * kHeadDim + d] =
              FromBf16(ToBf16(static_cast<float>(direction[d] / std::sqrt(norm) * std::sqrt(double{kHeadDim}))));
        }
      }
    }
    // On the device: the layer, its bounds, the query.
    engine::KvLayer layer{.num_kv_heads = kKvHeads, .capacity_tokens = context};
    STRATA_ASSIGN_OR_RETURN(layer.k, UploadBf16(*backend, keys, kKvHeads * context, kHeadDim));
    STRATA_ASSIGN_OR_RETURN(layer.v, UploadBf16(*backend, values, kKvHeads * context, kHeadDim));
    STRATA_ASSIGN_OR_RETURN(engine::Tensor device_q, UploadBf16(*backend, q, 1, kHeads * kHeadDim));
    const int64_t chunks = (context + o.chunk_tokens - 1) / o.chunk_tokens;
    STRATA_ASSIGN_OR_RETURN(engine::Tensor bounds, backend->Allocate(DType::kBF16, kKvHeads * chunks, 2 * kHeadDim));
    STRATA_RETURN_IF_ERROR(backend->UpdateKeyBounds(layer, 0, context, o.chunk_tokens, bounds));
    std::vector<float> host_bounds(kKvHeads * chunks * 2 * kHeadDim);
    engine::UpdateKeyBoundsReference(keys.data(), kKvHeads, context, kHeadDim, 0, context, o.chunk_tokens, chunks,
                                     host_bounds.data());
    const engine::AttentionParams params{.num_heads = kHeads,
                                         .num_kv_heads = kKvHeads,
                                         .head_dim = kHeadDim,
                                         .scale = 1.0f / std::sqrt(float{kHeadDim}),
                                         .first_position = context - 1};
    STRATA_ASSIGN_OR_RETURN(engine::Tensor exact_out, backend->Allocate(DType::kBF16, 1, kHeads * kHeadDim));
    STRATA_RETURN_IF_ERROR(backend->Attention(device_q, layer, params, exact_out));
    std::vector<float> exact(kHeads * kHeadDim);
    STRATA_RETURN_IF_ERROR(backend->CopyToHost(exact_out, absl::MakeSpan(exact)));
    // The true top-k keys of every query head.
    std::vector<std::vector<int64_t>> top(kHeads);
    std::vector<std::pair<float, int64_t>> dots(context);
    for (int64_t head = 0; head < kHeads; ++head) {
      const int64_t h = head / group;
      for (int64_t t = 0; t < context; ++t) {
        float dot = 0;
        for (int64_t d = 0; d < kHeadDim; ++d) dot += q[head * kHeadDim + d] * keys[(h * context + t) * kHeadDim + d];
        dots[t] = {dot, t};
      }
      std::partial_sort(dots.begin(), dots.begin() + kTopK, dots.end(), std::greater<>());
      for (int64_t i = 0; i < kTopK; ++i) top[head].push_back(dots[i].second);
    }
    for (const int64_t budget : o.budgets) {
      const engine::SparseDecode options{.budget_tokens = budget, .chunk_tokens = o.chunk_tokens,
                                        .sink_tokens = kSink, .recent_tokens = kRecent};
      engine::SparseGather gather = options.Layout(context - 1, context);
      const int64_t tail_first = context - gather.tail_rows;
      for (int64_t h = 0; h < kKvHeads; ++h) {
        gather.k_homes.push_back(layer.k.Rows(h * context, context));
        gather.v_homes.push_back(layer.v.Rows(h * context, context));
        gather.k_tail.push_back(layer.k.Rows(h * context + tail_first, gather.tail_rows));
        gather.v_tail.push_back(layer.v.Rows(h * context + tail_first, gather.tail_rows));
      }
      engine::KvLayer chosen{.num_kv_heads = kKvHeads, .capacity_tokens = gather.select * o.chunk_tokens + gather.tail_rows};
      STRATA_ASSIGN_OR_RETURN(chosen.k, backend->Allocate(DType::kBF16, kKvHeads * chosen.capacity_tokens, kHeadDim));
      STRATA_ASSIGN_OR_RETURN(chosen.v, backend->Allocate(DType::kBF16, kKvHeads * chosen.capacity_tokens, kHeadDim));
      STRATA_RETURN_IF_ERROR(backend->GatherImportantKv(device_q, bounds, gather, params, chosen));
      engine::AttentionParams sparse_params = params;
      sparse_params.first_position = chosen.capacity_tokens - 1;
      STRATA_ASSIGN_OR_RETURN(engine::Tensor sparse_out, backend->Allocate(DType::kBF16, 1, kHeads * kHeadDim));
      STRATA_RETURN_IF_ERROR(backend->Attention(device_q, chosen, sparse_params, sparse_out));
      std::vector<float> sparse(kHeads * kHeadDim);
      STRATA_RETURN_IF_ERROR(backend->CopyToHost(sparse_out, absl::MakeSpan(sparse)));
      double diff = 0, norm = 0;
      for (size_t i = 0; i < exact.size(); ++i) {
        diff += (double{sparse[i]} - exact[i]) * (double{sparse[i]} - exact[i]);
        norm += double{exact[i]} * exact[i];
      }
      // Recall, from the reference choice (the kernels' choice agrees up to float rounding of scores).
      const std::vector<int32_t> ids = engine::SelectChunksReference(q.data(), host_bounds.data(), gather, params);
      int64_t found = 0;
      for (int64_t head = 0; head < kHeads; ++head) {
        const int64_t h = head / group;
        const auto begin = ids.begin() + h * gather.select, end = begin + gather.select;
        for (const int64_t t : top[head]) {
          found += t >= tail_first || std::binary_search(begin, end, static_cast<int32_t>(t / o.chunk_tokens));
        }
      }
      Emit(o, {{"mode", "attention"},
               {"context", context},
               {"budget_tokens", budget},
               {"chunk_tokens", o.chunk_tokens},
               {"keys_read_per_head", gather.select * o.chunk_tokens + gather.tail_rows},
               {"relative_l2", std::sqrt(diff / norm)},
               {"top64_recall", static_cast<double>(found) / (kHeads * kTopK)}});
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------
// Engine-level decode: speed and argmax agreement.

int32_t Argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

engine::KvPlacement Placement(const Options& o) {
  engine::KvPlacement placement;
  placement.budgets.device_bytes = static_cast<int64_t>(o.gpu_kv_budget_gib * kGiB);
  placement.budgets.host_bytes = static_cast<int64_t>(o.host_kv_budget_gib * kGiB);
  // Sparse decode on (budget set per phase): the cache keeps chunk bounds from the start.
  placement.sparse.budget_tokens = 1;
  placement.sparse.chunk_tokens = o.chunk_tokens;
  return placement;
}

// Appends `tokens` of random KV (BF16 values of N(0, 1)-like spread) to `sequence`, a piece at a time.
absl::Status FillRandomKv(engine::Engine& engine, engine::Sequence& sequence, int64_t tokens) {
  constexpr int64_t kPieceTokens = 8192;
  std::vector<uint16_t> payload(engine.KvPayloadBytes(kPieceTokens) / 2);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (uint16_t& x : payload) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    x = ToBf16(static_cast<float>(static_cast<int64_t>(state >> 40) - (int64_t{1} << 23)) / (1 << 22));
  }
  for (int64_t done = 0; done < tokens; done += kPieceTokens) {
    const int64_t n = std::min(kPieceTokens, tokens - done);
    const auto bytes = absl::MakeConstSpan(reinterpret_cast<const std::byte*>(payload.data()),
                                           static_cast<size_t>(engine.KvPayloadBytes(n)));
    STRATA_RETURN_IF_ERROR(engine.AppendKv(sequence, bytes, n));
  }
  return absl::OkStatus();
}

absl::Status RunSpeed(const Options& o, engine::Engine& engine) {
  for (const int64_t context : o.contexts) {
    const int64_t capacity = context + (o.budgets.size() + 1) * (o.steps + 1) + 1;
    const engine::KvPlacement placement = Placement(o);
    STRATA_ASSIGN_OR_RETURN(engine::MemoryPlan plan, engine.PlanMemory(capacity, o.random_kv ? 1 : context, placement));
    engine::KvPlacement planned = placement;
    planned.plan = plan.residency;
    auto start = std::chrono::steady_clock::now();
    STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(capacity, planned));
    Log(StrCat("context ", context, ": KV heads G/H ", plan.residency.HeadsIn(engine::KvTier::kDevice), "/",
               plan.residency.HeadsIn(engine::KvTier::kHost), ", allocated in ", Seconds(start), " s"));
    start = std::chrono::steady_clock::now();
    std::vector<float> logits;
    int32_t token = 1;
    const int64_t zero = 0;
    if (o.random_kv) {
      STRATA_RETURN_IF_ERROR(FillRandomKv(engine, sequence, context - 1));
      Log(StrCat("context ", context, ": random KV in ", Seconds(start), " s"));
    } else {
      const std::vector<int32_t> prompt = RandomTokenIds(context - 1, 7);
      const int64_t last = context - 2;
      STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, prompt, {&last, 1}));
      token = Argmax(logits);
      Log(StrCat("context ", context, ": prefill in ", Seconds(start), " s"));
    }
    double exact_tok_s = 0;
    for (size_t phase = 0; phase <= o.budgets.size(); ++phase) {
      const int64_t budget = phase == 0 ? 0 : o.budgets[phase - 1];
      STRATA_RETURN_IF_ERROR(sequence.SetSparseDecodeBudget(budget));
      // One untimed step: it pays for the previous phase's last write-backs.
      STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, {&token, 1}, {&zero, 1}));
      token = Argmax(logits);
      const engine::KvTransferStats before = sequence.transfer_stats();
      start = std::chrono::steady_clock::now();
      for (int64_t s = 0; s < o.steps; ++s) {
        STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, {&token, 1}, {&zero, 1}));
        token = Argmax(logits);
      }
      const double tok_s = o.steps / Seconds(start);
      const engine::KvTransferStats after = sequence.transfer_stats();
      if (phase == 0) exact_tok_s = tok_s;
      Emit(o, {{"mode", "speed"},
               {"context", context},
               {"budget_tokens", budget},
               {"chunk_tokens", o.chunk_tokens},
               {"heads_gpu", plan.residency.HeadsIn(engine::KvTier::kDevice)},
               {"heads_host", plan.residency.HeadsIn(engine::KvTier::kHost)},
               {"decode_tok_s", tok_s},
               {"speedup_vs_exact", tok_s / exact_tok_s},
               {"bytes_read_per_step", static_cast<double>(after.bytes_uploaded - before.bytes_uploaded) / o.steps},
               {"approximate_attentions_per_step",
                static_cast<double>(after.approximate_attentions - before.approximate_attentions) / o.steps}});
    }
  }
  return absl::OkStatus();
}

absl::Status RunMatch(const Options& o, engine::Engine& engine) {
  constexpr int64_t kNeedleTokens = 64;
  for (const int64_t context : o.contexts) {
    std::vector<int32_t> prompt = RandomTokenIds(context, 11);
    std::copy(prompt.begin() + 1, prompt.begin() + 1 + kNeedleTokens, prompt.end() - kNeedleTokens);
    const int64_t capacity = context + o.steps + 1, last = context - 1, zero = 0;
    std::vector<int32_t> inputs, exact_argmax;
    for (size_t phase = 0; phase <= o.budgets.size(); ++phase) {
      const int64_t budget = phase == 0 ? 0 : o.budgets[phase - 1];
      const engine::KvPlacement placement = Placement(o);
      STRATA_ASSIGN_OR_RETURN(engine::MemoryPlan plan, engine.PlanMemory(capacity, context, placement));
      engine::KvPlacement planned = placement;
      planned.plan = plan.residency;
      STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(capacity, planned));
      STRATA_ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(sequence, prompt, {&last, 1}));
      STRATA_RETURN_IF_ERROR(sequence.SetSparseDecodeBudget(budget));
      if (phase == 0) inputs.push_back(Argmax(logits));
      int64_t matches = 0;
      for (int64_t s = 0; s < o.steps; ++s) {
        STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, {&inputs[s], 1}, {&zero, 1}));
        if (phase == 0) {
          exact_argmax.push_back(Argmax(logits));
          inputs.push_back(exact_argmax.back());
        } else {
          matches += Argmax(logits) == exact_argmax[s];
        }
      }
      if (phase == 0) continue;
      Emit(o, {{"mode", "match"},
               {"context", context},
               {"budget_tokens", budget},
               {"chunk_tokens", o.chunk_tokens},
               {"steps", o.steps},
               {"argmax_match", static_cast<double>(matches) / o.steps},
               {"approximate_attentions", sequence.transfer_stats().approximate_attentions}});
    }
  }
  return absl::OkStatus();
}

absl::Status Run(const Options& o) {
  if (o.mode == "attention") return RunAttention(o);
  STRATA_ASSIGN_OR_RETURN(BenchModel m, MakeModel(engine::DecodeGraphs::kCapture));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                          engine::Engine::Create(std::move(m.backend), std::move(*m.model),
                                                 {.mini_sequence_tokens = 16384}));
  m.model.reset();
  if (o.mode == "speed") return RunSpeed(o, *engine);
  if (o.mode == "match") return RunMatch(o, *engine);
  return absl::InvalidArgumentError(StrCat("--mode: attention, speed or match, got '", o.mode, "'"));
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  strata::bench::Options o;
  CLI::App app("Sparse (importance-aware) decode against exact decode (Llama-3-8B shape, random weights)");
  app.add_option("--mode", o.mode, "attention, speed or match")->capture_default_str();
  app.add_option("--contexts", o.contexts, "Context lengths in tokens")->delimiter(',');
  app.add_option("--budgets", o.budgets, "Sparse-decode budgets, keys per KV head and step")->delimiter(',');
  app.add_option("--chunk-tokens", o.chunk_tokens)->capture_default_str();
  app.add_option("--steps", o.steps, "Timed (or compared) decode steps per budget")->capture_default_str();
  app.add_option("--gpu-kv-budget-gib", o.gpu_kv_budget_gib)->capture_default_str();
  app.add_option("--host-kv-budget-gib", o.host_kv_budget_gib)->capture_default_str();
  app.add_flag("--random-kv", o.random_kv, "speed: random KV instead of a prefill");
  app.add_option("--json", o.json_path, "Append one JSON line per row to this file");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = strata::bench::Run(o);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
