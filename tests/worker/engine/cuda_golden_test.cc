// The CUDA backend against Hugging Face transformers' outputs for the tiny checkpoints: float32 mode
// within 1e-4 of the `cuda` reference with identical greedy tokens; BF16 mode within bounds justified by
// measurement (see BF16 below). Skips with the reason on a machine without a usable GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/generate.h"
#include "model/model.h"
#include "model/safetensors.h"

namespace strata::engine {
namespace {

constexpr double kF32Tolerance = 1e-4;  // relative L2, float32 vs float32 (the bound)

// BF16 mode against transformers' float32 logits. The issue asks for 2e-2, but the tiny models' random
// std-0.25 weights amplify rounding far more than trained weights do: rounding the weights alone to BF16
// moves llama3-tiny's logits by 2.8e-2 on the CPU (half_weights_test), and transformers itself, run in
// bfloat16 on the H100, lands this far from its own float32 logits (last prompt position; measured with
// tests/worker/engine/bf16_transformers_error.py, 2026-11-23). The justified bound is "no worse than
// transformers in bfloat16", with 25% margin; the 2e-2 bound holds only for qwen2-tiny.
double TransformersBf16Error(const std::string& model) {
  if (model == "llama3-tiny") return 0.0512;
  if (model == "qwen2-tiny") return 0.0253;
  if (model == "mistral-tiny") return 0.0394;
  if (model == "mistral-window-tiny") return 0.0603;
  if (model == "llama-bias-tiny") return 0.0399;
  return 0.02;
}
constexpr double kBf16Margin = 1.25;

#define SKIP_WITHOUT_CUDA()                                            \
  do {                                                                 \
    std::string reason;                                                \
    if (!CudaBackendAvailable(&reason)) GTEST_SKIP() << "no CUDA: " << reason; \
  } while (false)

const testing::DeviceGolden& Reference(const testing::ModelGolden& g) {
  return g.cuda.greedy_ids.empty() ? g.cpu : g.cuda;  // window/bias fixtures have CPU references only
}

std::unique_ptr<Engine> MakeEngine(const model::Model& model, DType dtype,
                                   DecodeGraphs graphs = DecodeGraphs::kCapture) {
  auto backend = CreateCudaBackend({.dtype = dtype, .decode_graphs = graphs});
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  auto engine = Engine::Create(model, *std::move(backend));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::vector<float> LastLogits(Engine& engine, const std::vector<int32_t>& prompt, std::vector<int64_t> rows) {
  auto sequence = engine.NewSequence(static_cast<int64_t>(prompt.size()));
  EXPECT_TRUE(sequence.ok());
  auto logits = engine.Forward(*sequence, prompt, rows);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : std::vector<float>();
}

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA();
    auto tiny = testing::LoadTinyModel(GetParam());
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    tiny_ = std::make_unique<testing::TinyModel>(*std::move(tiny));
  }
  std::unique_ptr<testing::TinyModel> tiny_;
};

TEST_P(CudaGoldenTest, Float32LogitsMatchTransformers) {
  auto engine = MakeEngine(tiny_->model, DType::kF32);
  ASSERT_NE(engine, nullptr);
  const auto& prompt = tiny_->golden.prompt_ids;
  const auto& ref = Reference(tiny_->golden);
  const int64_t n = static_cast<int64_t>(prompt.size()), vocab = engine->config().vocab_size;
  const std::vector<float> logits = LastLogits(*engine, prompt, {n - 4, n - 3, n - 2, n - 1});
  ASSERT_EQ(logits.size(), 4 * vocab);
  double worst = 0;
  for (int i = 0; i < 4; ++i) {
    const double e = testing::RelativeL2(absl::MakeConstSpan(logits.data() + i * vocab, vocab), ref.last_logits[i]);
    worst = std::max(worst, e);
    EXPECT_LT(e, kF32Tolerance) << "row " << n - 4 + i;
  }
  std::vector<int64_t> rows;
  for (const auto& [position, unused] : ref.logits_at) rows.push_back(position);
  const std::vector<float> at = LastLogits(*engine, prompt, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    const double e = testing::RelativeL2(absl::MakeConstSpan(at.data() + i * vocab, vocab), ref.logits_at.at(rows[i]));
    worst = std::max(worst, e);
    EXPECT_LT(e, kF32Tolerance) << "position " << rows[i];
  }
  std::printf("[cuda f32] %s: max rel L2 %.3g vs the %s reference\n", GetParam().c_str(), worst,
              tiny_->golden.cuda.greedy_ids.empty() ? "cpu" : "cuda");
}

TEST_P(CudaGoldenTest, Float32GreedyMatchesTransformers) {
  for (DecodeGraphs graphs : {DecodeGraphs::kCapture, DecodeGraphs::kOff}) {
    auto engine = MakeEngine(tiny_->model, DType::kF32, graphs);
    ASSERT_NE(engine, nullptr);
    GenerateOptions options;
    options.max_new_tokens = static_cast<int64_t>(Reference(tiny_->golden).greedy_ids.size());
    auto result = Generate(*engine, tiny_->golden.prompt_ids, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->output_ids, Reference(tiny_->golden).greedy_ids)
        << (graphs == DecodeGraphs::kCapture ? "with" : "without") << " CUDA graphs";
  }
}

// BF16 mode, three measures:
//  1. against the CPU engine (float32) running the same weights rounded to BF16: what BF16 activations,
//     KV cache and GEMM outputs add on their own;
//  2. against transformers' float32 logits: weights and activations together;
//  both bounded by transformers' own bfloat16 error on the model (TransformersBf16Error);
//  3. greedy tokens along the reference path (teacher-forced): at every step where the float32 margin
//     between the best and second-best logit exceeds twice the largest BF16 logit error at that step,
//     BF16 must pick the reference token. Steps with a smaller margin are reported, not asserted.
TEST_P(CudaGoldenTest, Bf16StaysWithinMeasuredBounds) {
  const auto& prompt = tiny_->golden.prompt_ids;
  const auto& ref = Reference(tiny_->golden);
  const int64_t n = static_cast<int64_t>(prompt.size());

  auto bf16 = MakeEngine(tiny_->model, DType::kBF16);
  ASSERT_NE(bf16, nullptr);
  const int64_t vocab = bf16->config().vocab_size;
  const std::vector<float> logits = LastLogits(*bf16, prompt, {n - 1});

  // 1. The same BF16-rounded weights in float32 on the CPU.
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "cuda-bf16");
  ASSERT_TRUE(scratch.ok());
  {
    auto file = model::SafetensorsFile::Open(tiny_->model.dir / "model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    std::vector<testing::TensorToWrite> tensors;
    for (const model::TensorInfo& t : file->tensors()) {
      std::vector<float> values(t.num_elements());
      ConvertToF32(t.dtype, t.bytes.data(), absl::MakeSpan(values));
      tensors.push_back({t.name, DType::kBF16, t.shape, testing::EncodeTensorBytes(DType::kBF16, values)});
    }
    ASSERT_TRUE(testing::WriteSafetensors(scratch->path() / "model.safetensors", tensors).ok());
    std::filesystem::copy_file(tiny_->model.dir / "config.json", scratch->path() / "config.json");
  }
  auto rounded = model::OpenModel(scratch->path());
  ASSERT_TRUE(rounded.ok()) << rounded.status();
  auto cpu = Engine::Create(*rounded, CreateCpuBackend());
  ASSERT_TRUE(cpu.ok());
  const std::vector<float> cpu_logits = LastLogits(**cpu, prompt, {n - 1});
  const double activation_error = testing::RelativeL2(logits, cpu_logits);
  const double weight_error = testing::RelativeL2(cpu_logits, ref.last_logits.back());
  const double total_error = testing::RelativeL2(logits, ref.last_logits.back());
  EXPECT_LT(total_error, kBf16Margin * TransformersBf16Error(GetParam()));
  EXPECT_LT(activation_error, kBf16Margin * TransformersBf16Error(GetParam()));

  // 3. Teacher-forced greedy path, float32 CUDA as the per-step reference.
  auto f32 = MakeEngine(tiny_->model, DType::kF32);
  ASSERT_NE(f32, nullptr);
  const auto& ids = ref.greedy_ids;
  auto seq16 = bf16->NewSequence(n + static_cast<int64_t>(ids.size()));
  auto seq32 = f32->NewSequence(n + static_cast<int64_t>(ids.size()));
  ASSERT_TRUE(seq16.ok() && seq32.ok());
  const int64_t last = n - 1, zero = 0;
  auto l16 = bf16->Forward(*seq16, prompt, {&last, 1});
  auto l32 = f32->Forward(*seq32, prompt, {&last, 1});
  int checked = 0, close_calls = 0;
  for (size_t step = 0; step < ids.size(); ++step) {
    ASSERT_TRUE(l16.ok() && l32.ok());
    std::vector<float> sorted = *l32;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const double margin = sorted[0] - sorted[1];
    double max_error = 0;
    for (int64_t i = 0; i < vocab; ++i) max_error = std::max(max_error, std::fabs(double{(*l16)[i]} - (*l32)[i]));
    const int32_t pick = static_cast<int32_t>(std::max_element(l16->begin(), l16->end()) - l16->begin());
    if (margin > 2 * max_error) {
      ++checked;
      EXPECT_EQ(pick, ids[step]) << "step " << step << ": margin " << margin << ", bf16 error " << max_error;
    } else {
      ++close_calls;
    }
    l16 = bf16->Forward(*seq16, {&ids[step], 1}, {&zero, 1});
    l32 = f32->Forward(*seq32, {&ids[step], 1}, {&zero, 1});
  }
  std::printf("[cuda bf16] %s: rel L2 %.3g vs transformers f32 (weights alone %.3g on CPU), %.3g vs the "
              "same bf16 weights in f32; greedy: %d steps checked, %d with margin < 2x bf16 error\n",
              GetParam().c_str(), total_error, weight_error, activation_error, checked, close_calls);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, CudaGoldenTest,
                         ::testing::Values("llama3-tiny", "qwen2-tiny", "mistral-tiny", "mistral-window-tiny",
                                           "llama-bias-tiny"),
                         [](const auto& info) { return testing::TestNameOf(info.param); });

// Mini-sequence prefill (chunks of 7 rows, so attention runs with first_position > 0 on every path)
// equals one-shot prefill on the GPU.
TEST(CudaEngine, MiniSequencesMatchOneShot) {
  SKIP_WITHOUT_CUDA();
  auto tiny = testing::LoadTinyModel("llama3-tiny");
  ASSERT_TRUE(tiny.ok());
  const auto& prompt = tiny->golden.prompt_ids;
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    auto whole = MakeEngine(tiny->model, dtype);
    auto backend = CreateCudaBackend({.dtype = dtype});
    ASSERT_TRUE(backend.ok());
    auto chunked = Engine::Create(tiny->model, *std::move(backend), {.mini_sequence_tokens = 7});
    ASSERT_TRUE(chunked.ok());
    const std::vector<float> a = LastLogits(*whole, prompt, {n - 1}), b = LastLogits(**chunked, prompt, {n - 1});
    EXPECT_LT(testing::RelativeL2(b, a), dtype == DType::kF32 ? 1e-5 : 2e-2) << DTypeName(dtype);
  }
}

}  // namespace
}  // namespace strata::engine
