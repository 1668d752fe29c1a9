// CUDA backend benchmark on a Llama-3-8B-shaped model with random BF16 weights made here (no files):
// measured ceilings (cuBLAS BF16 GEMM rate, HBM copy bandwidth), prefill attention TFLOP/s, time to
// first token through the engine's forward pass, batch-1 decode through the engine (each step captured
// in a CUDA graph), and batched decode steps (B sequences, one token each, GPU argmax) replayed from
// one CUDA graph. Prints a table and writes JSON; bench/cuda/report.py puts the PyTorch baseline and the
// floors beside it.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "kernels/attention.h"
#include "kernels/cuda_owners.h"
#include "kernels/cuda_status.h"
#include "kernels/cudnn_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/sampling.h"
#include "worker/engine/cuda_backend.h"
#include "bench/cuda/random_llama.h"
#include "worker/engine/llama.h"

namespace strata::bench {
namespace {

using engine::Backend;
using engine::KvLayer;
using engine::LlamaLayerWeights;
using engine::LlamaModel;
using engine::Tensor;

std::map<std::string, double> results;

void Record(const std::string& key, double value) {
  results[key] = value;
  std::printf("  %-44s %12.4g\n", key.c_str(), value);
  std::fflush(stdout);
}

// Median milliseconds of `reps` runs of `fn` on `stream`, after `warmup` runs, timed with events.
template <typename F>
absl::StatusOr<double> TimeMs(cudaStream_t stream, int warmup, int reps, F&& fn) {
  for (int i = 0; i < warmup; ++i) STRATA_RETURN_IF_ERROR(fn());
  STRATA_ASSIGN_OR_RETURN(kernels::Event start, kernels::CreateEvent(true));
  STRATA_ASSIGN_OR_RETURN(kernels::Event stop, kernels::CreateEvent(true));
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), stream));
    STRATA_RETURN_IF_ERROR(fn());
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), stream));
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
    float ms = 0;
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Ceilings measured on this GPU: the cuBLAS BF16 GEMM rate and the device-to-device copy bandwidth.
absl::Status MeasureCeilings(cudaStream_t stream) {
  std::printf("ceilings\n");
  constexpr int64_t kN = 8192;
  STRATA_ASSIGN_OR_RETURN(kernels::Gemm gemm, kernels::Gemm::Create(stream));
  STRATA_ASSIGN_OR_RETURN(auto a, kernels::DeviceBuffer::Allocate(kN * kN * 2));
  STRATA_ASSIGN_OR_RETURN(auto b, kernels::DeviceBuffer::Allocate(kN * kN * 2));
  STRATA_ASSIGN_OR_RETURN(auto c, kernels::DeviceBuffer::Allocate(kN * kN * 2));
  STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, a.data(), kN * kN, 1.0f, 1, stream));
  STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, b.data(), kN * kN, 1.0f, 2, stream));
  STRATA_ASSIGN_OR_RETURN(double ms, TimeMs(stream, 3, 10, [&] { return gemm.MatmulBf16(a.data(), b.data(), kN, kN, kN, c.data()); }));
  Record("gemm_bf16_8192_tflops", 2.0 * kN * kN * kN / (ms * 1e-3) / 1e12);
  constexpr size_t kCopyBytes = size_t{4} << 30;
  STRATA_ASSIGN_OR_RETURN(auto src, kernels::DeviceBuffer::Allocate(kCopyBytes));
  STRATA_ASSIGN_OR_RETURN(auto dst, kernels::DeviceBuffer::Allocate(kCopyBytes));
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(src.data(), 1, kCopyBytes, stream));
  STRATA_ASSIGN_OR_RETURN(ms, TimeMs(stream, 2, 10, [&]() -> absl::Status {
    STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.data(), src.data(), kCopyBytes, cudaMemcpyDeviceToDevice, stream));
    return absl::OkStatus();
  }));
  Record("hbm_copy_gbps_read_plus_write", 2.0 * kCopyBytes / (ms * 1e-3) / 1e9);
  return absl::OkStatus();
}

// Random BF16 attention inputs for the Llama-3-8B shape: `rows` queries of 32 heads (head_dim 128) over
// `keys` keys of `kv_heads` heads, head-major K/V as in the engine's cache, and the output buffer.
struct AttentionProblem {
  static constexpr int64_t kHeads = 32, kHeadDim = 128, kBytes = 2;
  kernels::DeviceBuffer q, k, v, out;

  static absl::StatusOr<AttentionProblem> Make(int64_t rows, int64_t keys, int64_t kv_heads, uint64_t seed,
                                               cudaStream_t stream) {
    AttentionProblem p;
    STRATA_ASSIGN_OR_RETURN(p.q, kernels::DeviceBuffer::Allocate(rows * kHeads * kHeadDim * kBytes));
    STRATA_ASSIGN_OR_RETURN(p.k, kernels::DeviceBuffer::Allocate(keys * kv_heads * kHeadDim * kBytes));
    STRATA_ASSIGN_OR_RETURN(p.v, kernels::DeviceBuffer::Allocate(keys * kv_heads * kHeadDim * kBytes));
    STRATA_ASSIGN_OR_RETURN(p.out, kernels::DeviceBuffer::Allocate(rows * kHeads * kHeadDim * kBytes));
    STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, p.q.data(), rows * kHeads * kHeadDim, 1.0f, seed, stream));
    STRATA_RETURN_IF_ERROR(
        kernels::FillNormal(DType::kBF16, p.k.data(), keys * kv_heads * kHeadDim, 1.0f, seed + 1, stream));
    STRATA_RETURN_IF_ERROR(
        kernels::FillNormal(DType::kBF16, p.v.data(), keys * kv_heads * kHeadDim, 1.0f, seed + 2, stream));
    return p;
  }

  // Causal attention of the `rows` queries, the last one at position keys - 1.
  kernels::AttentionArgs Args(int64_t rows, int64_t keys, int64_t kv_heads) const {
    kernels::AttentionArgs a;
    a.q = q.data();
    a.q_row_stride = kHeads * kHeadDim;
    a.k = k.data();
    a.v = v.data();
    a.kv_head_stride = keys;
    a.kv_end = keys;
    a.out = out.data();
    a.out_row_stride = kHeads * kHeadDim;
    a.rows = rows;
    a.num_heads = kHeads;
    a.num_kv_heads = kv_heads;
    a.head_dim = kHeadDim;
    a.first_position = keys - rows;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    return a;
  }
};

// The BF16 attention output of `rows` rows, as floats on the host.
absl::StatusOr<std::vector<float>> OutputAsFloats(const kernels::DeviceBuffer& out, int64_t rows, cudaStream_t stream) {
  const int64_t count = rows * AttentionProblem::kHeads * AttentionProblem::kHeadDim;
  STRATA_ASSIGN_OR_RETURN(kernels::DeviceBuffer floats, kernels::DeviceBuffer::Allocate(count * sizeof(float)));
  STRATA_RETURN_IF_ERROR(kernels::Convert(DType::kBF16, out.data(), DType::kF32, floats.data(), count, stream));
  std::vector<float> host(count);
  STRATA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host.data(), floats.data(), count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return host;
}

// Causal prefill attention at S tokens, 32 query heads, head_dim 128, over 8 KV heads (the model) and
// 32 (as the SDPA baseline); FLOPs counted as the baseline does: 4 * S^2 / 2 * heads * head_dim.
absl::Status MeasureAttention(cudaStream_t stream) {
  std::printf("prefill attention (causal, head_dim 128, 32 query heads)\n");
  for (int64_t s : {8192, 32768}) {
    for (int64_t kv_heads : {8, 32}) {
      STRATA_ASSIGN_OR_RETURN(AttentionProblem problem, AttentionProblem::Make(s, s, kv_heads, 3, stream));
      const kernels::AttentionArgs a = problem.Args(s, s, kv_heads);
      for (auto [tiling, suffix] : {std::pair{kernels::kDefaultFlashTiling, ""},
                                    std::pair{kernels::FlashTiling::k4Warps32Rows, "_4x32"}}) {
        STRATA_ASSIGN_OR_RETURN(double ms, TimeMs(stream, 2, 5, [&] {
          return kernels::FlashAttentionPrefill(a, stream, tiling);
        }));
        Record(StrCat("attention_S", s, "_kv", kv_heads, "_tflops", suffix),
               4.0 * s * s / 2 * 32 * 128 / (ms * 1e-3) / 1e12);
      }
      if (!kernels::CudnnAttentionLoaded()) continue;
      // cuDNN's fused attention on the same inputs; its first call builds the plan for the shape.
      const auto start = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(kernels::CudnnAttention(a, stream));
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
      Record(StrCat("attention_S", s, "_kv", kv_heads, "_cudnn_first_call_ms"),
             1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      STRATA_ASSIGN_OR_RETURN(double ms, TimeMs(stream, 2, 5, [&] { return kernels::CudnnAttention(a, stream); }));
      Record(StrCat("attention_S", s, "_kv", kv_heads, "_tflops_cudnn"), 4.0 * s * s / 2 * 32 * 128 / (ms * 1e-3) / 1e12);
    }
  }
  // The last 8192-row mini-sequence of a 32k prompt (queries after 24k cached keys), as prefill runs it.
  constexpr int64_t kRows = 8192, kKeys = 32768;
  STRATA_ASSIGN_OR_RETURN(AttentionProblem problem, AttentionProblem::Make(kRows, kKeys, 8, 5, stream));
  const kernels::AttentionArgs a = problem.Args(kRows, kKeys, 8);
  const double flops = 4.0 * kRows * (kKeys - kRows / 2.0) * 32 * 128;
  STRATA_ASSIGN_OR_RETURN(double own_ms, TimeMs(stream, 2, 5, [&] { return kernels::FlashAttentionPrefill(a, stream); }));
  Record("attention_chunk8192_of_32768_tflops", flops / (own_ms * 1e-3) / 1e12);
  if (kernels::CudnnAttentionLoaded()) {
    STRATA_ASSIGN_OR_RETURN(std::vector<float> own, OutputAsFloats(problem.out, kRows, stream));
    STRATA_ASSIGN_OR_RETURN(double ms, TimeMs(stream, 2, 5, [&] { return kernels::CudnnAttention(a, stream); }));
    Record("attention_chunk8192_of_32768_tflops_cudnn", flops / (ms * 1e-3) / 1e12);
    // The two kernels agree at this size (the tests check each against a float64 reference at small ones).
    STRATA_ASSIGN_OR_RETURN(std::vector<float> cudnn, OutputAsFloats(problem.out, kRows, stream));
    double diff = 0, norm = 0;
    for (size_t i = 0; i < own.size(); ++i) {
      diff += (own[i] - cudnn[i]) * static_cast<double>(own[i] - cudnn[i]);
      norm += own[i] * static_cast<double>(own[i]);
    }
    Record("attention_chunk8192_of_32768_cudnn_vs_own_rel_l2", std::sqrt(diff / norm));
  }
  return absl::OkStatus();
}

// One decode query (32 heads over 8 KV heads, head_dim 128) over a long context: flash-decoding splits
// the keys over the whole GPU. Floor: the K and V bytes over the measured copy bandwidth.
absl::Status MeasureDecodeAttention(cudaStream_t stream) {
  std::printf("decode attention, one query, 32 q / 8 KV heads, head_dim 128\n");
  for (int64_t s : {int64_t{32768}, int64_t{1} << 20}) {
    const int64_t kv_elements = 8 * s * 128;
    STRATA_ASSIGN_OR_RETURN(AttentionProblem problem, AttentionProblem::Make(1, s, 8, 6, stream));
    STRATA_ASSIGN_OR_RETURN(auto workspace, kernels::DeviceBuffer::Allocate(size_t{64} << 20));
    const kernels::AttentionArgs a = problem.Args(1, s, 8);
    STRATA_ASSIGN_OR_RETURN(double ms, TimeMs(stream, 2, 10, [&] {
      return kernels::Attention(a, workspace.data(), workspace.bytes(), stream);
    }));
    Record(StrCat("decode_attention_S", s, "_ms"), ms);
    Record(StrCat("decode_attention_S", s, "_gbps"), 2.0 * kv_elements * 2 / (ms * 1e-3) / 1e9);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<engine::KvCache>> MakeKv(BenchModel& m, int64_t capacity) {
  const engine::KvShape shape{.num_layers = m.config.num_layers,
                              .num_kv_heads = m.config.num_kv_heads,
                              .head_dim = m.config.head_dim,
                              .capacity_tokens = capacity,
                              .dtype = DType::kBF16};
  return engine::KvCache::Create(
      *m.backend, shape, engine::ResidencyPlan::Uniform(shape.num_layers, shape.num_kv_heads, engine::KvTier::kDevice));
}

// The logits of row `logit_row` of `ids` run at `first_position` of `kv`.
absl::StatusOr<std::vector<float>> RunForward(BenchModel& m, absl::Span<const int32_t> ids, int64_t first_position,
                                              engine::KvCache& kv, int64_t logit_row, int64_t mini) {
  const LlamaModel::Segment segment{
      .ids = ids, .first_position = first_position, .kv = &kv, .logit_rows = {&logit_row, 1}};
  STRATA_ASSIGN_OR_RETURN(auto logits, m.model->Forward(*m.backend, {&segment, 1}, mini));
  return std::move(logits[0]);
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Time to first token: the whole prompt through every layer (mini-sequences of `mini` rows), logits of
// the last row to the host. Wall clock around the engine's Forward, which returns host logits.
absl::Status MeasureTtft(BenchModel& m, const std::vector<int64_t>& lengths, int64_t mini, std::string_view suffix) {
  std::printf("time to first token (engine forward, mini-sequence %lld%s)\n", static_cast<long long>(mini),
              std::string(suffix).c_str());
  {  // warm-up: handles, kernels, the pool
    STRATA_ASSIGN_OR_RETURN(auto kv, MakeKv(m, 4096));
    const auto ids = RandomTokenIds(4096, 1);
    const int64_t last = 4095;
    STRATA_RETURN_IF_ERROR(RunForward(m, ids, 0, *kv, last, mini).status());
  }
  for (int64_t s : lengths) {
    STRATA_ASSIGN_OR_RETURN(auto kv, MakeKv(m, s));
    const auto ids = RandomTokenIds(s, 2);
    const int64_t last = s - 1;
    // Twice: the first prompt of this length builds the attention plans it needs (cuDNN), the second finds
    // them, as every later prompt of a running engine does.
    for (const char* pass : {"", "_again"}) {
      const auto start = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(RunForward(m, ids, 0, *kv, last, mini).status());
      Record(StrCat("ttft_S", s, "_s", suffix, pass), Seconds(start));
    }
  }
  return absl::OkStatus();
}

// Batch-1 decode through the engine's forward pass (host logits back each step, host argmax) after a
// prompt of `context` tokens, with the backend's decode-graph mode `label`.
absl::Status MeasureEngineDecode(BenchModel& m, int64_t context, const std::string& label) {
  std::printf("decode, batch 1, engine forward (context %lld, graphs %s)\n", static_cast<long long>(context),
              label.c_str());
  constexpr int kSteps = 64;
  STRATA_ASSIGN_OR_RETURN(auto kv, MakeKv(m, context + kSteps + 8));
  const auto ids = RandomTokenIds(context, 3);
  const int64_t last = context - 1, zero = 0;
  STRATA_RETURN_IF_ERROR(RunForward(m, ids, 0, *kv, last, 8192).status());
  int32_t token = 7;
  for (int i = 0; i < 4; ++i) {  // warm-up steps (first capture, instantiation)
    STRATA_RETURN_IF_ERROR(RunForward(m, {&token, 1}, context + i, *kv, zero, 8192).status());
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kSteps; ++i) {
    STRATA_ASSIGN_OR_RETURN(std::vector<float> logits, RunForward(m, {&token, 1}, context + 4 + i, *kv, zero, 8192));
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  Record(StrCat("engine_decode_b1_S", context, "_", label, "_tok_s"), kSteps / Seconds(start));
  return absl::OkStatus();
}

// A batched decode step written directly over the kernels (the engine serves one sequence per Forward
// today): B sequences at the same position `context`, each with its own KV cache, one token each;
// projections as [B, *] GEMMs, flash-decoding over the batch, LM head and GPU argmax. Captured once into
// a CUDA graph and replayed (positions fixed), so it measures the GPU time of a step without launch gaps.
absl::Status MeasureBatchedDecode(BenchModel& m, int64_t context, const std::vector<int64_t>& batches) {
  std::printf("batched decode step (kernels directly, CUDA graph replay, context %lld, GPU argmax)\n",
              static_cast<long long>(context));
  const auto& c = m.config;
  STRATA_ASSIGN_OR_RETURN(kernels::Stream stream, kernels::CreateStream());
  STRATA_ASSIGN_OR_RETURN(kernels::Gemm gemm, kernels::Gemm::Create(stream.get()));
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int64_t capacity = context + 1;
  const int64_t kv_per_seq = c.num_kv_heads * capacity * c.head_dim;  // elements per layer per sequence
  std::vector<kernels::DeviceBuffer> k_cache, v_cache;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    STRATA_ASSIGN_OR_RETURN(auto kb, kernels::DeviceBuffer::Allocate(max_batch * kv_per_seq * 2));
    STRATA_ASSIGN_OR_RETURN(auto vb, kernels::DeviceBuffer::Allocate(max_batch * kv_per_seq * 2));
    STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, kb.data(), max_batch * kv_per_seq, 1.0f, 10 + l, stream.get()));
    STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, vb.data(), max_batch * kv_per_seq, 1.0f, 99 + l, stream.get()));
    k_cache.push_back(std::move(kb));
    v_cache.push_back(std::move(vb));
  }
  auto buffer = [&](int64_t elements) { return kernels::DeviceBuffer::Allocate(elements * 4); };
  STRATA_ASSIGN_OR_RETURN(auto hidden, buffer(max_batch * c.hidden_size));
  STRATA_ASSIGN_OR_RETURN(auto normed, buffer(max_batch * c.hidden_size));
  STRATA_ASSIGN_OR_RETURN(auto q, buffer(max_batch * c.q_dim()));
  STRATA_ASSIGN_OR_RETURN(auto k, buffer(max_batch * c.kv_dim()));
  STRATA_ASSIGN_OR_RETURN(auto v, buffer(max_batch * c.kv_dim()));
  STRATA_ASSIGN_OR_RETURN(auto attn, buffer(max_batch * c.q_dim()));
  STRATA_ASSIGN_OR_RETURN(auto projected, buffer(max_batch * c.hidden_size));
  STRATA_ASSIGN_OR_RETURN(auto gate, buffer(max_batch * c.intermediate_size));
  STRATA_ASSIGN_OR_RETURN(auto up, buffer(max_batch * c.intermediate_size));
  STRATA_ASSIGN_OR_RETURN(auto logits, buffer(max_batch * c.vocab_size));
  STRATA_ASSIGN_OR_RETURN(auto logits_f32, buffer(max_batch * c.vocab_size));
  STRATA_ASSIGN_OR_RETURN(auto ids, buffer(max_batch));
  STRATA_ASSIGN_OR_RETURN(auto workspace, kernels::DeviceBuffer::Allocate(size_t{256} << 20));
  std::vector<float> inv_freq(c.head_dim / 2);
  for (int64_t i = 0; i < c.head_dim / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / c.head_dim);
  STRATA_ASSIGN_OR_RETURN(auto freq, buffer(c.head_dim / 2));
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(freq.data(), inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice));
  std::vector<int32_t> host_ids(max_batch, 11);
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(ids.data(), host_ids.data(), max_batch * 4, cudaMemcpyHostToDevice));
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t s = stream.get();
  constexpr DType kT = DType::kBF16;

  auto step = [&](int64_t batch) -> absl::Status {
    STRATA_RETURN_IF_ERROR(kernels::EmbedRows(kT, m.embed.data(), c.vocab_size, c.hidden_size, ids.data<int32_t>(),
                                              batch, hidden.data(), s));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const LlamaLayerWeights& w = m.layers[l];
      STRATA_RETURN_IF_ERROR(kernels::AddRmsNorm(kT, hidden.data(), nullptr, w.attn_norm.data(), eps, batch,
                                                 c.hidden_size, normed.data(), s));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, w.q.data(), c.q_dim(), q.data()));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, w.k.data(), c.kv_dim(), k.data()));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, w.v.data(), c.kv_dim(), v.data()));
      // Every sequence is at position `context`: the batch is one "row" of batch * heads heads.
      STRATA_RETURN_IF_ERROR(kernels::Rope(kT, freq.data<float>(), c.head_dim, context, 1, q.data(),
                                           batch * c.q_dim(), k.data(), batch * c.kv_dim(), s));
      STRATA_RETURN_IF_ERROR(kernels::WriteKvCache(kT, k.data(), v.data(), 1, batch * c.num_kv_heads, c.head_dim,
                                                   context, capacity, k_cache[l].data(), v_cache[l].data(), s));
      kernels::AttentionArgs a;
      a.q = q.data();
      a.q_row_stride = c.q_dim();
      a.k = k_cache[l].data();
      a.v = v_cache[l].data();
      a.kv_head_stride = capacity;
      a.kv_end = context + 1;
      a.out = attn.data();
      a.out_row_stride = c.q_dim();
      a.rows = 1;
      a.num_heads = c.num_heads;
      a.num_kv_heads = c.num_kv_heads;
      a.head_dim = c.head_dim;
      a.first_position = context;
      a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      a.batch = batch;
      a.q_batch_stride = c.q_dim();
      a.out_batch_stride = c.q_dim();
      a.kv_batch_stride = kv_per_seq;
      STRATA_RETURN_IF_ERROR(kernels::Attention(a, workspace.data(), workspace.bytes(), s));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, attn.data(), batch, c.q_dim(), w.o.data(), c.hidden_size, projected.data()));
      STRATA_RETURN_IF_ERROR(kernels::AddRmsNorm(kT, hidden.data(), projected.data(), w.mlp_norm.data(), eps, batch,
                                                 c.hidden_size, normed.data(), s));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, w.gate.data(), c.intermediate_size, gate.data()));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, w.up.data(), c.intermediate_size, up.data()));
      STRATA_RETURN_IF_ERROR(kernels::SwiGlu(kT, gate.data(), up.data(), batch * c.intermediate_size, gate.data(), s));
      STRATA_RETURN_IF_ERROR(gemm.Linear(kT, gate.data(), batch, c.intermediate_size, w.down.data(), c.hidden_size, projected.data()));
      STRATA_RETURN_IF_ERROR(kernels::Add(kT, projected.data(), batch * c.hidden_size, hidden.data(), s));
    }
    STRATA_RETURN_IF_ERROR(kernels::AddRmsNorm(kT, hidden.data(), nullptr, m.final_norm.data(), eps, batch,
                                               c.hidden_size, normed.data(), s));
    STRATA_RETURN_IF_ERROR(gemm.Linear(kT, normed.data(), batch, c.hidden_size, m.lm_head.data(), c.vocab_size, logits.data()));
    STRATA_RETURN_IF_ERROR(kernels::Convert(kT, logits.data(), DType::kF32, logits_f32.data(), batch * c.vocab_size, s));
    return kernels::ArgmaxRows(logits_f32.data<float>(), batch, c.vocab_size, ids.data<int32_t>(), s);
  };

  for (int64_t batch : batches) {
    STRATA_RETURN_IF_ERROR(step(batch));  // warm-up outside the graph (cuBLAS picks its kernels)
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    const absl::Status captured = step(batch);
    cudaGraph_t raw = nullptr;
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(s, &raw));
    STRATA_RETURN_IF_ERROR(captured);
    kernels::Graph graph(raw);
    cudaGraphExec_t raw_exec = nullptr;
    STRATA_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&raw_exec, graph.get(), 0));
    kernels::GraphExec exec(raw_exec);
    STRATA_ASSIGN_OR_RETURN(double graph_ms, TimeMs(s, 3, 20, [&]() -> absl::Status {
      STRATA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec.get(), s));
      return absl::OkStatus();
    }));
    STRATA_ASSIGN_OR_RETURN(double eager_ms, TimeMs(s, 1, 5, [&] { return step(batch); }));
    Record(StrCat("decode_step_B", batch, "_graph_ms"), graph_ms);
    Record(StrCat("decode_step_B", batch, "_eager_ms"), eager_ms);
    Record(StrCat("decode_B", batch, "_tok_s"), batch * 1e3 / graph_ms);
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& json_path) {
  STRATA_ASSIGN_OR_RETURN(kernels::Stream stream, kernels::CreateStream());
  cudaDeviceProp prop;
  STRATA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  STRATA_RETURN_IF_ERROR(MeasureCeilings(stream.get()));
  STRATA_RETURN_IF_ERROR(MeasureAttention(stream.get()));
  STRATA_RETURN_IF_ERROR(MeasureDecodeAttention(stream.get()));
  STRATA_ASSIGN_OR_RETURN(BenchModel m, MakeModel(engine::DecodeGraphs::kCapture));
  // Batched decode first: its caches are plain allocations, freed before the engine's pool grows.
  STRATA_RETURN_IF_ERROR(MeasureBatchedDecode(m, 4096, {1, 2, 4, 8, 16, 32, 64}));
  // Prefill attention on cuDNN where it loaded (the default), then on the own kernel.
  std::printf("prefill attention kernel: %s\n", kernels::CudnnDescription().c_str());
  STRATA_RETURN_IF_ERROR(MeasureTtft(m, {32768, 98304}, 8192, ""));
  const kernels::CudnnAttentionStats cudnn = kernels::GetCudnnAttentionStats();
  Record("cudnn_plans_built", static_cast<double>(cudnn.plans_built));
  Record("cudnn_plan_build_s", cudnn.build_seconds);
  if (kernels::CudnnAttentionLoaded()) {
    kernels::SetPrefillKernel(kernels::PrefillKernel::kOwn);
    STRATA_RETURN_IF_ERROR(MeasureTtft(m, {32768, 98304}, 8192, "_own"));
    kernels::SetPrefillKernel(kernels::PrefillKernel::kAuto);
  }
  STRATA_RETURN_IF_ERROR(MeasureEngineDecode(m, 4096, "capture"));
  {
    STRATA_ASSIGN_OR_RETURN(BenchModel eager, MakeModel(engine::DecodeGraphs::kOff));
    STRATA_RETURN_IF_ERROR(MeasureEngineDecode(eager, 4096, "off"));
  }
  std::ofstream out(json_path);
  out << "{\n";
  for (auto it = results.begin(); it != results.end(); ++it) {
    out << "  \"" << it->first << "\": " << it->second << (std::next(it) == results.end() ? "\n" : ",\n");
  }
  out << "}\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  const std::string json = argc > 1 ? argv[1] : "cuda_engine_bench.json";
  const absl::Status status = strata::bench::Run(json);
  if (!status.ok()) {
    std::fprintf(stderr, "cuda_engine_bench: %s\n", std::string(status.message()).c_str());
    const std::string partial = json + ".partial";
    std::ofstream out(partial);
    for (const auto& [k, v] : strata::bench::results) out << k << " " << v << "\n";
    return 1;
  }
  return 0;
}
