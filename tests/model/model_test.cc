// Opening a model directory: the weights must be exactly those the config implies.
#include "model/model.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"
#include "model/safetensors.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;

const std::filesystem::path kLlama = testing::TestDataDir() / "models" / "llama3-tiny";

// A copy of llama3-tiny whose tensors went through `edit` first.
class EditedModel {
 public:
  explicit EditedModel(const std::function<void(std::vector<testing::TensorToWrite>&)>& edit) {
    auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "model-test");
    STRATA_CHECK(scratch.ok());
    dir_.emplace(*std::move(scratch));
    auto file = SafetensorsFile::Open(kLlama / "model.safetensors");
    STRATA_CHECK(file.ok());
    std::vector<testing::TensorToWrite> tensors;
    for (const TensorInfo& t : file->tensors()) {
      tensors.push_back(
          {t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size())});
    }
    edit(tensors);
    STRATA_CHECK(testing::WriteSafetensors(path() / "model.safetensors", tensors).ok());
    std::filesystem::copy_file(kLlama / "config.json", path() / "config.json");
  }
  const std::filesystem::path& path() const { return dir_->path(); }

 private:
  std::optional<testing::ScratchDir> dir_;
};

TEST(OpenModel, OpensEveryTinyModelWithItsTokenizer) {
  for (const char* name : {"llama3-tiny", "qwen2-tiny", "mistral-tiny"}) {
    auto model = OpenModel(testing::TestDataDir() / "models" / name);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_TRUE(model->tokenizer.has_value());
    EXPECT_EQ(model->fingerprint.Hex().size(), 64u);
  }
}

TEST(OpenModel, DifferentModelsHaveDifferentFingerprints) {
  auto llama = OpenModel(kLlama);
  auto mistral = OpenModel(testing::TestDataDir() / "models" / "mistral-tiny");
  ASSERT_TRUE(llama.ok() && mistral.ok());
  EXPECT_NE(llama->fingerprint, mistral->fingerprint);
}

TEST(OpenModel, RejectsAMissingTensor) {
  EditedModel edited([](auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.name == "model.layers.2.mlp.up_proj.weight"; });
  });
  auto model = OpenModel(edited.path());
  EXPECT_THAT(model.status().message(),
              HasSubstr("tensor 'model.layers.2.mlp.up_proj.weight' is missing from the checkpoint"));
}

TEST(OpenModel, RejectsAnExtraTensor) {
  EditedModel edited([](auto& tensors) {
    tensors.push_back({"model.layers.0.self_attn.q_norm.weight", DType::kF32, {16}, std::string(64, '\0')});
  });
  auto model = OpenModel(edited.path());
  EXPECT_THAT(model.status().message(),
              HasSubstr("model.safetensors: unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"));
}

TEST(OpenModel, RejectsATensorWhoseShapeDisagreesWithTheConfig) {
  EditedModel edited([](auto& tensors) {
    for (auto& t : tensors) {
      if (t.name == "model.norm.weight") {
        t.shape = {32};
        t.bytes.resize(32 * 4);
      }
    }
  });
  auto model = OpenModel(edited.path());
  EXPECT_THAT(model.status().message(),
              HasSubstr("tensor 'model.norm.weight' has shape [32] but config.json implies [64]"));
}

TEST(OpenModel, ToleratesRotaryBuffersOfOlderExports) {
  EditedModel edited([](auto& tensors) {
    tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", DType::kF32, {8}, std::string(32, '\0')});
  });
  EXPECT_TRUE(OpenModel(edited.path()).ok());
}

TEST(OpenModel, RejectsAnUnsupportedArchitecture) {
  EditedModel edited([](auto&) {});
  std::ofstream(edited.path() / "config.json") << R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 512})";
  EXPECT_THAT(OpenModel(edited.path()).status().message(),
              HasSubstr("architecture 'GPT2LMHeadModel' is not supported"));
}

TEST(OpenModel, RejectsADirectoryWithoutWeights) {
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "no-weights");
  ASSERT_TRUE(scratch.ok());
  std::filesystem::copy_file(kLlama / "config.json", scratch->path() / "config.json");
  EXPECT_EQ(OpenModel(scratch->path()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strata::model
