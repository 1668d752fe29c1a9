#include "tests/testing/golden.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace strata::testing {
namespace {

DeviceGolden ParseDevice(const nlohmann::json& j) {
  DeviceGolden d;
  d.last_logits = j.at("last_logits").get<std::vector<std::vector<float>>>();
  for (const auto& [position, logits] : j.at("logits_at").items()) {
    d.logits_at[std::stoll(position)] = logits.get<std::vector<float>>();
  }
  d.greedy_ids = j.at("greedy_ids").get<std::vector<int32_t>>();
  d.greedy_margin_min = j.at("greedy_margin_min").get<double>();
  return d;
}

}  // namespace

absl::StatusOr<ModelGolden> LoadModelGolden(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat(path.string(), ": cannot open"));
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    ModelGolden golden;
    golden.model = j.at("model").get<std::string>();
    golden.prompt_ids = j.at("prompt_ids").get<std::vector<int32_t>>();
    golden.cpu = ParseDevice(j.at("cpu"));
    if (j.contains("cuda")) golden.cuda = ParseDevice(j.at("cuda"));
    return golden;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(StrCat(path.string(), ": ", e.what()));
  }
}

double RelativeL2(absl::Span<const float> a, absl::Span<const float> b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

std::filesystem::path TestDataDir() {
  // A build carried to another machine finds the fixtures through the environment.
  if (const char* dir = std::getenv("STRATA_TEST_DATA_DIR"); dir != nullptr && *dir != '\0') return dir;
  return STRATA_TEST_DATA_DIR;
}

absl::StatusOr<TinyModel> LoadTinyModel(const std::string& name) {
  const std::filesystem::path dir = TestDataDir() / "models" / name;
  STRATA_ASSIGN_OR_RETURN(ModelGolden golden, LoadModelGolden(dir / "golden.json"));
  STRATA_ASSIGN_OR_RETURN(model::Model model, model::OpenModel(dir));
  return TinyModel{std::move(model), std::move(golden)};
}

std::string TestNameOf(std::string model_name) {
  std::replace(model_name.begin(), model_name.end(), '-', '_');
  return model_name;
}

}  // namespace strata::testing
