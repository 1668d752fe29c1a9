// Engine suites parameterized over (backend, tiny model): the CPU backend everywhere (CI) and, where a
// GPU is visible, the CUDA backend in float32, each on the tiny checkpoints with their golden prompts.
//
//   class MyTest : public testing::TinyModelSuite {};
//   TEST_P(MyTest, ...) { auto backend = MakeBackend(); ... model(), prompt() ... }
//   INSTANTIATE_TEST_SUITE_P(TinyModels, MyTest, testing::BackendsAndTinyModels(), testing::SuiteParamName);
//
// Header-only: its users link strata_engine and strata_testing.
#ifndef STRATA_TESTS_TESTING_TINY_MODEL_SUITE_H_
#define STRATA_TESTS_TESTING_TINY_MODEL_SUITE_H_

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/cuda_backend.h"

namespace strata::testing {

enum class BackendKind { kCpu, kCuda };
using SuiteParam = std::tuple<BackendKind, std::string>;

class TinyModelSuite : public ::testing::TestWithParam<SuiteParam> {
 protected:
  // Skips the CUDA cases without a usable GPU (saying why); loads the model and its golden prompt.
  void SetUp() override {
    if (backend_kind() == BackendKind::kCuda) {
      std::string reason;
      if (!engine::CudaBackendAvailable(&reason)) GTEST_SKIP() << "no CUDA: " << reason;
    }
    auto tiny = LoadTinyModel(std::get<1>(GetParam()));
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    prompt_ = tiny->golden.prompt_ids;
    model_ = std::make_unique<model::Model>(std::move(tiny->model));
  }

  BackendKind backend_kind() const { return std::get<0>(GetParam()); }
  // The case's backend: CPU, or CUDA in float32 (exact comparisons) with `graphs`.
  std::unique_ptr<engine::Backend> MakeBackend(engine::DecodeGraphs graphs = engine::DecodeGraphs::kCapture) const {
    if (backend_kind() == BackendKind::kCpu) return engine::CreateCpuBackend();
    absl::StatusOr<std::unique_ptr<engine::Backend>> backend =
        engine::CreateCudaBackend({.dtype = DType::kF32, .decode_graphs = graphs});
    STRATA_CHECK(backend.ok());
    return *std::move(backend);
  }

  std::unique_ptr<model::Model> model_;
  std::vector<int32_t> prompt_;
};

// Every backend with every tiny model that has a CPU and a CUDA reference path.
inline auto BackendsAndTinyModels() {
  return ::testing::Combine(::testing::Values(BackendKind::kCpu, BackendKind::kCuda),
                            ::testing::Values("llama3-tiny", "qwen2-tiny", "mistral-window-tiny"));
}

// "cpu_llama3_tiny", "cuda_qwen2_tiny", ...
inline std::string SuiteParamName(const ::testing::TestParamInfo<SuiteParam>& info) {
  return (std::get<0>(info.param) == BackendKind::kCpu ? "cpu_" : "cuda_") + TestNameOf(std::get<1>(info.param));
}

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_TINY_MODEL_SUITE_H_
