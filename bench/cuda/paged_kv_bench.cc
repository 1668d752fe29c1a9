// Paged KV on a Llama-3-8B-shaped model (32 layers, 8 KV heads, head_dim 128, BF16; random weights
// made on the GPU), each figure beside its baseline from the same process:
//  - block movement (16-token blocks of 2 MiB): the pool's bulk export and import (KvPool::CopyToHost /
//    CopyFromHost) into and out of payloads in page-locked slots of one region (the worker's payload
//    pool: straight DMA per run of blocks) and into and out of ordinary pageable payloads (a gather or
//    scatter kernel and chunked DMA through pinned staging), against one plain cudaMemcpy of the same
//    bytes between device memory and pinned memory (the floor), and against the path they replace: a
//    contiguous per-sequence cache read and written per (layer, K|V, head) slice, 512 copies a block
//    (KvCache::ReadRows / WriteRows);
//  - time to first token of a fully cached 8,192-token prompt: its blocks attached from the pool (tier
//    G), imported from page-locked host payloads (tier H), against computing the whole prompt;
//  - batched decode through Engine::ForwardBatch at a 4,096-token context (batched attention over block
//    tables, logits to the host), against the HBM floor (weights + every sequence's KV at the measured
//    copy bandwidth).
// Prints a table; --json FILE writes the numbers.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "kernels/cuda_owners.h"
#include "kernels/cuda_status.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/kv_pool.h"
#include "bench/cuda/random_llama.h"
#include "worker/engine/engine.h"
#include "worker/prefix/block_payload.h"

namespace strata::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kLayers = 32, kKvHeads = 8, kHeadDim = 128, kBlockTokens = 16;
constexpr int64_t kPoolBlocks = 1024;  // 2 GiB
constexpr int kReps = 5;

std::map<std::string, double> results;

void Record(const std::string& key, double value) {
  results[key] = value;
  std::printf("  %-48s %10.2f\n", key.c_str(), value);
  std::fflush(stdout);
}

// Median seconds of kReps runs of `fn` (each complete when it returns), after one warm-up.
template <typename F>
absl::StatusOr<double> MedianSeconds(F&& fn) {
  STRATA_RETURN_IF_ERROR(fn());
  std::vector<double> times;
  for (int i = 0; i < kReps; ++i) {
    const auto start = Clock::now();
    STRATA_RETURN_IF_ERROR(fn());
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

absl::Status MeasureTransfers() {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Backend> backend, engine::CreateCudaBackend({}));
  const engine::KvPoolShape shape{.num_layers = kLayers,
                                  .num_kv_heads = kKvHeads,
                                  .head_dim = kHeadDim,
                                  .dtype = DType::kBF16,
                                  .block_tokens = kBlockTokens};
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::KvPool> pool, engine::KvPool::Create(*backend, shape, kPoolBlocks));
  const int64_t block_bytes = shape.BlockBytes();
  std::printf("block transfers: 8B-shaped KV, %lld-token blocks of %.2f MiB, pool of %lld blocks\n",
              static_cast<long long>(kBlockTokens), block_bytes / 1048576.0, static_cast<long long>(kPoolBlocks));
  std::mt19937 rng(7);
  for (int64_t count : {1, 16, 64, 256}) {
    // Blocks scattered over the pool, as a prefix's blocks are after a while.
    STRATA_ASSIGN_OR_RETURN(std::vector<int32_t> blocks, pool->Allocate(kPoolBlocks));
    std::shuffle(blocks.begin(), blocks.end(), rng);
    pool->Unref(absl::MakeConstSpan(blocks).subspan(count));
    blocks.resize(count);
    std::vector<std::vector<std::byte>> payloads(count, std::vector<std::byte>(block_bytes, std::byte{0x5a}));
    std::vector<std::byte*> out;
    std::vector<const std::byte*> in;
    for (auto& p : payloads) {
      out.push_back(p.data());
      in.push_back(p.data());
    }
    // The worker's payloads: slots of one page-locked region, in the order a payload pool hands them out,
    // each payload followed by its MAC trailer (so payloads are SlotBytes apart, not adjacent).
    const int64_t slot_bytes = static_cast<int64_t>(worker::PayloadPool::SlotBytes(block_bytes));
    STRATA_ASSIGN_OR_RETURN(engine::Tensor region, backend->AllocateHost(DType::kBF16, count, slot_bytes / 2));
    std::memset(region.data(), 0x5a, region.bytes());
    std::vector<std::byte*> slot_out;
    std::vector<const std::byte*> slot_in;
    for (int64_t b = 0; b < count; ++b) {
      slot_out.push_back(region.data<std::byte>() + b * slot_bytes);
      slot_in.push_back(slot_out.back());
    }
    const double bytes = static_cast<double>(count * block_bytes);
    STRATA_ASSIGN_OR_RETURN(const double import_s, MedianSeconds([&] { return pool->CopyFromHost(slot_in, blocks); }));
    STRATA_ASSIGN_OR_RETURN(const double export_s, MedianSeconds([&] { return pool->CopyToHost(blocks, slot_out); }));
    STRATA_ASSIGN_OR_RETURN(const double pageable_import_s,
                            MedianSeconds([&] { return pool->CopyFromHost(in, blocks); }));
    STRATA_ASSIGN_OR_RETURN(const double pageable_export_s,
                            MedianSeconds([&] { return pool->CopyToHost(blocks, out); }));

    // The floor: one plain copy of the same bytes between device and pinned host memory.
    STRATA_ASSIGN_OR_RETURN(kernels::DeviceBuffer device, kernels::DeviceBuffer::Allocate(count * block_bytes));
    STRATA_ASSIGN_OR_RETURN(kernels::PinnedBuffer pinned, kernels::PinnedBuffer::Allocate(count * block_bytes));
    std::memset(pinned.data(), 1, pinned.bytes());
    STRATA_ASSIGN_OR_RETURN(const double h2d_s, MedianSeconds([&]() -> absl::Status {
      STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(device.data(), pinned.data(), pinned.bytes(), cudaMemcpyHostToDevice));
      return absl::OkStatus();
    }));
    STRATA_ASSIGN_OR_RETURN(const double d2h_s, MedianSeconds([&]() -> absl::Status {
      STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(pinned.data(), device.data(), pinned.bytes(), cudaMemcpyDeviceToHost));
      return absl::OkStatus();
    }));

    // The path it replaces: a contiguous cache, one copy per (layer, K|V, head) slice of each block.
    const engine::KvShape cache_shape{.num_layers = kLayers,
                                      .num_kv_heads = kKvHeads,
                                      .head_dim = kHeadDim,
                                      .capacity_tokens = count * kBlockTokens,
                                      .dtype = DType::kBF16};
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::KvCache> cache,
                            engine::KvCache::Create(*backend, cache_shape,
                                                    engine::ResidencyPlan::Uniform(kLayers, kKvHeads,
                                                                                   engine::KvTier::kDevice)));
    const int64_t slice_bytes = kBlockTokens * cache_shape.RowBytes();
    auto per_slice = [&](bool write) -> absl::Status {
      for (int64_t b = 0; b < count; ++b) {
        std::byte* p = payloads[b].data();
        for (int64_t layer = 0; layer < kLayers; ++layer) {
          for (engine::KvPart part : {engine::KvPart::kKey, engine::KvPart::kValue}) {
            for (int64_t head = 0; head < kKvHeads; ++head, p += slice_bytes) {
              STRATA_RETURN_IF_ERROR(write ? cache->WriteRows(layer, head, part, b * kBlockTokens, kBlockTokens, p)
                                           : cache->ReadRows(layer, head, part, b * kBlockTokens, kBlockTokens, p));
            }
          }
        }
      }
      return absl::OkStatus();
    };
    STRATA_ASSIGN_OR_RETURN(const double old_import_s, MedianSeconds([&] { return per_slice(true); }));
    STRATA_ASSIGN_OR_RETURN(const double old_export_s, MedianSeconds([&] { return per_slice(false); }));

    const std::string n = std::to_string(count);
    Record("import_" + n + "_blocks_gbps", bytes / import_s / 1e9);
    Record("import_" + n + "_blocks_pageable_gbps", bytes / pageable_import_s / 1e9);
    Record("import_" + n + "_blocks_plain_h2d_gbps", bytes / h2d_s / 1e9);
    Record("import_" + n + "_blocks_per_slice_gbps", bytes / old_import_s / 1e9);
    Record("export_" + n + "_blocks_gbps", bytes / export_s / 1e9);
    Record("export_" + n + "_blocks_pageable_gbps", bytes / pageable_export_s / 1e9);
    Record("export_" + n + "_blocks_plain_d2h_gbps", bytes / d2h_s / 1e9);
    Record("export_" + n + "_blocks_per_slice_gbps", bytes / old_export_s / 1e9);
    pool->Unref(blocks);
  }
  return absl::OkStatus();
}

// Device-to-device copy bandwidth (bytes read + written), the decode floor's rate.
absl::StatusOr<double> CopyBandwidth() {
  constexpr size_t kBytes = size_t{2} << 30;
  STRATA_ASSIGN_OR_RETURN(kernels::DeviceBuffer a, kernels::DeviceBuffer::Allocate(kBytes));
  STRATA_ASSIGN_OR_RETURN(kernels::DeviceBuffer b, kernels::DeviceBuffer::Allocate(kBytes));
  STRATA_ASSIGN_OR_RETURN(const double s, MedianSeconds([&]() -> absl::Status {
    // A device-to-device cudaMemcpy returns before the copy is done.
    STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(b.data(), a.data(), kBytes, cudaMemcpyDeviceToDevice));
    STRATA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return absl::OkStatus();
  }));
  return 2.0 * kBytes / s;
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// An engine over the random 8B-shaped model with a pool of `pool_blocks` 16-token blocks.
absl::StatusOr<std::unique_ptr<engine::Engine>> MakeEngine(int64_t pool_blocks) {
  STRATA_ASSIGN_OR_RETURN(BenchModel m, MakeModel(engine::DecodeGraphs::kCapture));
  return engine::Engine::Create(std::move(m.backend), std::move(*m.model),
                                {.mini_sequence_tokens = 4096, .kv_pool_blocks = pool_blocks,
                                 .kv_block_tokens = kBlockTokens});
}

absl::Status MeasureCachedPrompt(engine::Engine& engine) {
  constexpr int64_t kPrompt = 8192;
  const std::vector<int32_t> ids = RandomTokenIds(kPrompt, 5);
  const int64_t last = kPrompt - 1;
  const int64_t cached_blocks = (kPrompt - 1) / kBlockTokens;  // the block with the last token is computed
  // Computed: the whole prompt, logits of its last row.
  auto compute = [&]() -> absl::StatusOr<engine::Sequence> {
    STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(kPrompt + 1));
    STRATA_RETURN_IF_ERROR(engine.Forward(sequence, ids, {&last, 1}).status());
    return sequence;
  };
  STRATA_ASSIGN_OR_RETURN(engine::Sequence source, compute());
  std::vector<double> times;
  for (int i = 0; i < kReps; ++i) {
    const auto start = Clock::now();
    STRATA_RETURN_IF_ERROR(compute().status());
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  const double compute_s = times[kReps / 2];
  // The rest after a cached prefix: the last block's tokens.
  const std::vector<int32_t> tail(ids.begin() + cached_blocks * kBlockTokens, ids.end());
  const int64_t tail_last = static_cast<int64_t>(tail.size()) - 1;
  // Tier G: the prefix's blocks attached from the pool.
  const std::vector<int32_t> prefix(source.blocks().begin(), source.blocks().begin() + cached_blocks);
  STRATA_ASSIGN_OR_RETURN(const double gpu_s, MedianSeconds([&]() -> absl::Status {
    STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(kPrompt + 1, prefix));
    return engine.Forward(sequence, tail, {&tail_last, 1}).status();
  }));
  // Tier H: the prefix imported from page-locked host payloads (the worker's payload pool) in one bulk copy.
  const int64_t payload_bytes = engine.KvPayloadBytes(kBlockTokens);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<std::byte> region, engine.AllocateHostBytes(cached_blocks * payload_bytes));
  std::vector<std::byte*> out;
  std::vector<const std::byte*> in;
  for (int64_t b = 0; b < cached_blocks; ++b) {
    out.push_back(region.get() + b * payload_bytes);
    in.push_back(out.back());
  }
  STRATA_RETURN_IF_ERROR(engine.ExportBlocks(source, 0, out));
  STRATA_ASSIGN_OR_RETURN(const double host_s, MedianSeconds([&]() -> absl::Status {
    STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(kPrompt + 1));
    STRATA_RETURN_IF_ERROR(engine.ImportBlocks(sequence, in));
    return engine.Forward(sequence, tail, {&tail_last, 1}).status();
  }));
  std::printf("time to first token, 8,192-token prompt (8,176 tokens cached in 511 blocks)\n");
  Record("ttft_8192_computed_ms", compute_s * 1e3);
  Record("ttft_8192_from_tier_g_ms", gpu_s * 1e3);
  Record("ttft_8192_from_tier_h_ms", host_s * 1e3);
  return absl::OkStatus();
}

// B sequences of a 4,096-token context (their KV imported from random host payloads: prefilling 64 of them
// would take minutes) decode one token each per ForwardBatch.
absl::Status MeasureBatchedDecode(engine::Engine& engine, double copy_bytes_per_s, int64_t weight_bytes) {
  constexpr int64_t kContext = 4096, kSteps = 16;
  const int64_t blocks = kContext / kBlockTokens, payload_bytes = engine.KvPayloadBytes(kBlockTokens);
  // Random BF16 values of N(0, 1) scale: the attention sees ordinary scores, no NaN.
  std::vector<std::vector<std::byte>> payloads(blocks, std::vector<std::byte>(payload_bytes));
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& p : payloads) {
    for (size_t i = 0; i + 1 < p.size(); i += 2) {
      const uint16_t bits = F32ToBf16(normal(rng));
      std::memcpy(&p[i], &bits, 2);
    }
  }
  std::vector<const std::byte*> in;
  for (const auto& p : payloads) in.push_back(p.data());
  std::printf("batched decode, engine ForwardBatch, 4,096-token context each (logits to the host)\n");
  for (int64_t batch : {1, 8, 32, 64}) {
    std::vector<engine::Sequence> sequences;
    for (int64_t b = 0; b < batch; ++b) {
      STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(kContext + kSteps + 4));
      STRATA_RETURN_IF_ERROR(engine.ImportBlocks(sequence, in));
      sequences.push_back(std::move(sequence));
    }
    std::vector<int32_t> tokens(batch, 7);
    const int64_t zero = 0;
    auto step = [&]() -> absl::Status {
      std::vector<engine::Engine::BatchItem> items;
      for (int64_t b = 0; b < batch; ++b) {
        items.push_back({.sequence = &sequences[b], .ids = {&tokens[b], 1}, .logit_rows = {&zero, 1}});
      }
      return engine.ForwardBatch(items).status();
    };
    STRATA_RETURN_IF_ERROR(step());  // warm-up
    const engine::DecodeGraphStats before = engine::DecodeGraphStatsOf(engine.backend()).value_or(engine::DecodeGraphStats{});
    const auto start = Clock::now();
    for (int i = 0; i < kSteps; ++i) STRATA_RETURN_IF_ERROR(step());
    const double step_s = std::chrono::duration<double>(Clock::now() - start).count() / kSteps;
    const engine::DecodeGraphStats after = engine::DecodeGraphStatsOf(engine.backend()).value_or(engine::DecodeGraphStats{});
    // How the measured steps ran: the previous graph replayed, updated in place, or instantiated anew.
    Record(StrCat("decode_B", batch, "_graphs_replayed"), static_cast<double>(after.replayed - before.replayed));
    Record(StrCat("decode_B", batch, "_graphs_updated"), static_cast<double>(after.updated - before.updated));
    Record(StrCat("decode_B", batch, "_graphs_instantiated"),
           static_cast<double>(after.instantiated - before.instantiated));
    const double kv_bytes = static_cast<double>(batch) * kContext * engine.KvPayloadBytes(1);
    const double floor_s = (static_cast<double>(weight_bytes) + kv_bytes) / copy_bytes_per_s;
    Record(StrCat("decode_B", batch, "_tok_s"), batch / step_s);
    Record(StrCat("decode_B", batch, "_floor_tok_s"), batch / floor_s);
    Record(StrCat("decode_B", batch, "_of_floor"), floor_s / step_s);
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& json_path) {
  STRATA_RETURN_IF_ERROR(MeasureTransfers());
  STRATA_ASSIGN_OR_RETURN(const double copy_bytes_per_s, CopyBandwidth());
  Record("copy_d2d_gbps", copy_bytes_per_s / 1e9);
  // 64 x 4,112 tokens of decode (and 3 x 8k of prompt) fit 17,000 blocks (34 GiB).
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine, MakeEngine(17000));
  STRATA_RETURN_IF_ERROR(MeasureCachedPrompt(*engine));
  // What a decode step must read besides KV: every weight but the embedding table (one row of it).
  const model::ModelConfig c = engine->config();
  const int64_t weight_bytes =
      2 * (c.num_layers * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * c.hidden_size +
                           3 * c.hidden_size * c.intermediate_size) +
           c.vocab_size * c.hidden_size);
  STRATA_RETURN_IF_ERROR(MeasureBatchedDecode(*engine, copy_bytes_per_s, weight_bytes));
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{";
    bool first = true;
    for (const auto& [key, value] : results) {
      out << (first ? "" : ",") << "\"" << key << "\":" << value;
      first = false;
    }
    out << "}\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  const std::string json = argc > 2 && std::string(argv[1]) == "--json" ? argv[2] : "";
  const absl::Status status = strata::bench::Run(json);
  if (!status.ok()) {
    std::fprintf(stderr, "strata_paged_kv_bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
