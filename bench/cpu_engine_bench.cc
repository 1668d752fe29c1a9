// CPU engine throughput: prefill and decode tokens/s on the tiny fixtures and on a synthetic Llama,
// each beside its floor measured in this same process: the sgemm rate of OpenBLAS (prefill is GEMM
// bound) and the memory bandwidth of a large copy (decode reads every weight once per token).
//
//   build/bin/strata_cpu_engine_bench [--benchmark_filter=...]
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "benchmark/benchmark.h"
#include "common/sha256.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tests/testing/synthetic_model.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"
#include "model/model.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

// 57M parameters (25M outside the embeddings and LM head), 228 MB of float32: large enough that
// GEMMs, not per-op overheads, dominate prefill.
constexpr testing::SyntheticModelShape kSyntheticShape{};

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// OpenBLAS sgemm FLOP/s at the synthetic model's MLP shape (512 tokens), best of 30 runs after the
// thread pool has warmed up.
double MeasuredSgemmFlops() {
  static const double flops = [] {
    const int m = 512, n = 1536, k = 512;
    std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
    double best = 0;
    for (int run = 0; run < 30; ++run) {
      const auto start = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
      best = std::max(best, 2.0 * m * n * k / Seconds(start));
    }
    return best;
  }();
  return flops;
}

// Bytes/s of a 256 MiB memcpy (read + write counted once each), best of several runs.
double MeasuredCopyBandwidth() {
  static const double bandwidth = [] {
    const size_t bytes = size_t{256} << 20;
    std::vector<char> src(bytes, 1), dst(bytes);
    double best = 0;
    for (int run = 0; run < 5; ++run) {
      const auto start = Clock::now();
      std::memcpy(dst.data(), src.data(), bytes);
      best = std::max(best, 2.0 * bytes / Seconds(start));
    }
    benchmark::DoNotOptimize(dst.data());
    return best;
  }();
  return bandwidth;
}

// The synthetic model is written once per shape and reused by later runs: the directory is named by
// the shape and appears (by rename) only once complete.
std::filesystem::path ModelDir(const std::string& name) {
  if (name != "synthetic") return std::filesystem::path(STRATA_TEST_DATA_DIR) / "models" / name;
  const testing::SyntheticModelShape& s = kSyntheticShape;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("strata-bench-llama-v" + std::to_string(s.vocab_size) + "-h" + std::to_string(s.hidden_size) +
                    "-i" + std::to_string(s.intermediate_size) + "-l" + std::to_string(s.num_layers) + "-q" +
                    std::to_string(s.num_heads) + "-kv" + std::to_string(s.num_kv_heads));
  if (!std::filesystem::exists(dir)) {
    const auto partial = dir.string() + ".partial-" + std::to_string(::getpid());
    STRATA_CHECK(testing::WriteSyntheticModel(partial, s, DType::kF32, /*seed=*/1).ok());
    std::error_code error;
    std::filesystem::rename(partial, dir, error);
    if (error) std::filesystem::remove_all(partial);  // another run finished first
  }
  return dir;
}

struct LoadedModel {
  model::Model model;
  std::unique_ptr<engine::Engine> engine;
};

LoadedModel& Load(const std::string& name, int64_t mini_sequence_tokens) {
  static std::map<std::pair<std::string, int64_t>, std::unique_ptr<LoadedModel>> cache;
  auto& slot = cache[{name, mini_sequence_tokens}];
  if (!slot) {
    auto model = model::OpenModel(ModelDir(name));
    STRATA_CHECK(model.ok());
    auto engine =
        engine::Engine::Create(*model, engine::CreateCpuBackend(), {.mini_sequence_tokens = mini_sequence_tokens});
    STRATA_CHECK(engine.ok());
    slot = std::make_unique<LoadedModel>(LoadedModel{*std::move(model), *std::move(engine)});
  }
  return *slot;
}

std::vector<int32_t> RandomIds(int64_t count, int64_t vocab) {
  std::mt19937 random(7);
  std::vector<int32_t> ids(count);
  for (int32_t& id : ids) id = static_cast<int32_t>(random() % vocab);
  return ids;
}

// GEMM and attention FLOPs of a prefill of `tokens` that computes one row of logits.
double PrefillFlops(const model::ModelConfig& c, int64_t tokens) {
  const double layer_params = static_cast<double>(c.hidden_size) * (c.q_dim() + 2 * c.kv_dim() + c.q_dim()) +
                              3.0 * c.hidden_size * c.intermediate_size;
  const double attention = 4.0 * c.q_dim() * (tokens * (tokens + 1) / 2.0);  // QKᵀ and PV, causal
  return c.num_layers * (2.0 * layer_params * tokens + attention) + 2.0 * c.vocab_size * c.hidden_size;
}

// Bytes a decode step must read: every weight but the embedding table, plus the K/V of the context.
double DecodeBytes(const LoadedModel& m, int64_t context) {
  const model::ModelConfig& c = m.model.config;
  const double embedding = 4.0 * c.vocab_size * c.hidden_size;
  return static_cast<double>(m.model.checkpoint.total_bytes()) - embedding +
         static_cast<double>(c.KvBytesPerToken(4)) * context;
}

// Args: tokens, mini-sequence tokens.
void BM_Prefill(benchmark::State& state, const std::string& name) {
  const int64_t tokens = state.range(0), mini_sequence = state.range(1);
  LoadedModel& m = Load(name, mini_sequence);
  const std::vector<int32_t> ids = RandomIds(tokens, m.model.config.vocab_size);
  const int64_t last = tokens - 1;
  for (auto _ : state) {
    auto sequence = m.engine->NewSequence(tokens);
    STRATA_CHECK(sequence.ok());
    auto logits = m.engine->Forward(*sequence, ids, {&last, 1});
    STRATA_CHECK(logits.ok());
    benchmark::DoNotOptimize(logits->data());
  }
  const double flops = PrefillFlops(m.model.config, tokens);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sgemm_GFLOP/s"] = MeasuredSgemmFlops() * 1e-9;
  state.counters["floor_ms"] = flops / MeasuredSgemmFlops() * 1e3;
}

// Args: context tokens already in the cache.
void BM_Decode(benchmark::State& state, const std::string& name) {
  const int64_t context = state.range(0);
  LoadedModel& m = Load(name, 1024);
  const std::vector<int32_t> ids = RandomIds(context + 1, m.model.config.vocab_size);
  const int64_t row = 0;
  constexpr int64_t kStepsPerSequence = 64;
  auto sequence = m.engine->NewSequence(context + kStepsPerSequence);
  STRATA_CHECK(sequence.ok());
  std::vector<int64_t> none;
  STRATA_CHECK(m.engine->Forward(*sequence, absl::MakeConstSpan(ids).first(context), none).ok());
  int64_t steps = 0;
  for (auto _ : state) {
    if (steps == kStepsPerSequence) {  // the cache is full: start again from the same context
      state.PauseTiming();
      sequence = m.engine->NewSequence(context + kStepsPerSequence);
      STRATA_CHECK(sequence.ok());
      STRATA_CHECK(m.engine->Forward(*sequence, absl::MakeConstSpan(ids).first(context), none).ok());
      steps = 0;
      state.ResumeTiming();
    }
    auto logits = m.engine->Forward(*sequence, absl::MakeConstSpan(ids).subspan(context, 1), {&row, 1});
    STRATA_CHECK(logits.ok());
    benchmark::DoNotOptimize(logits->data());
    ++steps;
  }
  const double bytes = DecodeBytes(m, context);
  state.counters["tokens/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = MeasuredCopyBandwidth() * 1e-9;
  state.counters["floor_ms"] = bytes / MeasuredCopyBandwidth() * 1e3;
}

// SHA-256 bytes/s of one core (libcrypto; SHA-NI where the CPU has it), best of 5 runs over 64 MiB.
double MeasuredSha256Bandwidth() {
  static const double bandwidth = [] {
    const std::string bytes(size_t{64} << 20, 'x');
    double best = 0;
    for (int run = 0; run < 5; ++run) {
      const auto start = Clock::now();
      benchmark::DoNotOptimize(Sha256Of(bytes));
      best = std::max(best, static_cast<double>(bytes.size()) / Seconds(start));
    }
    return best;
  }();
  return bandwidth;
}

// Opening the synthetic model: config, mmap, header and tensor checks, and the fingerprint, which
// hashes all 228 MB (page cache warm). Floor: those bytes through SHA-256 on every core.
void BM_OpenModel(benchmark::State& state) {
  const std::filesystem::path dir = ModelDir("synthetic");
  uint64_t bytes = 0;
  for (auto _ : state) {
    auto model = model::OpenModel(dir);
    STRATA_CHECK(model.ok());
    bytes = model->checkpoint.total_bytes();
    benchmark::DoNotOptimize(model->fingerprint.digest.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sha256_GB/s_per_core"] = MeasuredSha256Bandwidth() * 1e-9;
  state.counters["floor_ms"] = static_cast<double>(bytes) / (MeasuredSha256Bandwidth() * omp_get_max_threads()) * 1e3;
}
BENCHMARK(BM_OpenModel)->Unit(benchmark::kMillisecond)->UseRealTime();

// Tokenizer throughput on the 50 golden texts (code, prose, Unicode) repeated to about 1 MB, encoded
// as one text: the pre-tokenizer regex, BPE with its cache warm, and the id tables.
void BM_Encode(benchmark::State& state) {
  auto tokenizer = model::Tokenizer::FromFile(std::filesystem::path(STRATA_TEST_DATA_DIR) / "tokenizer/tokenizer.json");
  STRATA_CHECK(tokenizer.ok());
  const nlohmann::json golden = nlohmann::json::parse(
      std::ifstream(std::filesystem::path(STRATA_TEST_DATA_DIR) / "tokenizer/golden.json"));
  std::string text;
  while (text.size() < (1 << 20)) {
    for (const auto& sample : golden.at("samples")) text += sample.at("text").get<std::string>();
  }
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tokenizer->Encode(text);
    STRATA_CHECK(ids.ok());
    tokens = ids->size();
  }
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(text.size()) * 1e-6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond)->UseRealTime();

// Tiny fixtures: per-op overheads dominate; the floors are far below.
BENCHMARK_CAPTURE(BM_Prefill, llama3_tiny, std::string("llama3-tiny"))
    ->Args({300, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, qwen2_tiny, std::string("qwen2-tiny"))
    ->Args({300, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, mistral_tiny, std::string("mistral-tiny"))
    ->Args({300, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, llama3_tiny, std::string("llama3-tiny"))
    ->Arg(300)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Synthetic 57M Llama: prompt tokens x mini-sequence tokens; decode after 512 and 2048 tokens.
BENCHMARK_CAPTURE(BM_Prefill, synthetic_57m, std::string("synthetic"))
    ->ArgsProduct({{512, 2048}, {1024, 128}})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, synthetic_57m, std::string("synthetic"))
    ->Arg(512)
    ->Arg(2048)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
