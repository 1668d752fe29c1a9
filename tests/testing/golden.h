// Reference outputs of Hugging Face transformers (tests/data/models/*/golden.json) and the measures
// used to compare against them.
#ifndef STRATA_TESTS_TESTING_GOLDEN_H_
#define STRATA_TESTS_TESTING_GOLDEN_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/model.h"

namespace strata::testing {

// Results of one transformers run (float32) on one device.
struct DeviceGolden {
  std::vector<std::vector<float>> last_logits;      // logits of the last 4 prompt positions
  std::map<int64_t, std::vector<float>> logits_at;  // position -> logits
  std::vector<int32_t> greedy_ids;                  // 24 greedy tokens, KV cache on
  double greedy_margin_min = 0;                     // smallest top-1/top-2 gap along that path
};

struct ModelGolden {
  std::string model;
  std::vector<int32_t> prompt_ids;
  DeviceGolden cpu;
  DeviceGolden cuda;  // empty for fixtures made on the CPU only (tests/data/tools/make_tiny_golden.py)
};

absl::StatusOr<ModelGolden> LoadModelGolden(const std::filesystem::path& path);

// A fixture model of tests/data/models/ with its goldens.
struct TinyModel {
  model::Model model;
  ModelGolden golden;
};
absl::StatusOr<TinyModel> LoadTinyModel(const std::string& name);

// A gtest parameter name for a fixture model name ("llama3-tiny" -> "llama3_tiny").
std::string TestNameOf(std::string model_name);

// ‖a − b‖₂ / ‖b‖₂.
double RelativeL2(absl::Span<const float> a, absl::Span<const float> b);

// tests/data of the source tree ($STRATA_TEST_DATA_DIR when set: a build run on another machine).
std::filesystem::path TestDataDir();

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_GOLDEN_H_
