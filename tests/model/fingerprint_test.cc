#include "model/fingerprint.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/safetensors_writer.h"

namespace strata::model {
namespace {

const std::filesystem::path kModels = std::filesystem::path(STRATA_TEST_DATA_DIR) / "models";
constexpr std::string_view kConfig = "llama|hidden=64|layers=2";

// The tensors of `checkpoint`, ready to be written back (possibly edited).
std::vector<testing::TensorToWrite> ToWrite(const Checkpoint& checkpoint) {
  std::vector<testing::TensorToWrite> out;
  for (const TensorInfo& tensor : checkpoint.tensors()) {
    out.push_back({tensor.name, tensor.dtype, tensor.shape,
                   std::string(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size())});
  }
  return out;
}

class FingerprintTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::ScratchDir::Create(::testing::TempDir(), "fingerprint_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(dir).value());
    auto llama = Checkpoint::Open(kModels / "llama3-tiny");
    ASSERT_TRUE(llama.ok()) << llama.status();
    llama_.emplace(std::move(llama).value());
  }

  // Writes `tensors` as dir()/`name`/model.safetensors and returns that directory's fingerprint.
  ModelFingerprint FingerprintOf(const std::string& name, const std::vector<testing::TensorToWrite>& tensors,
                                 std::string_view config = kConfig) {
    const std::filesystem::path model_dir = dir_->path() / name;
    std::filesystem::create_directories(model_dir);
    EXPECT_TRUE(testing::WriteSafetensors(model_dir / "model.safetensors", tensors).ok());
    const auto checkpoint = Checkpoint::Open(model_dir);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    return ComputeFingerprint(config, *checkpoint);
  }

  std::optional<testing::ScratchDir> dir_;
  std::optional<Checkpoint> llama_;
};

TEST_F(FingerprintTest, IsStableAcrossComputationsAndOpens) {
  const ModelFingerprint first = ComputeFingerprint(kConfig, *llama_);
  EXPECT_EQ(ComputeFingerprint(kConfig, *llama_), first);
  const auto reopened = Checkpoint::Open(kModels / "llama3-tiny");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(ComputeFingerprint(kConfig, *reopened), first);
  EXPECT_EQ(first.Hex().size(), 64u);
  // Rewriting the same tensors in another file layout (order, padding) does not change it.
  EXPECT_EQ(FingerprintOf("rewritten", ToWrite(*llama_)), first);
}

TEST_F(FingerprintTest, IsTheSameForAShardedCheckpoint) {
  ASSERT_TRUE(testing::ShardCheckpoint(kModels / "llama3-tiny", dir_->path() / "sharded", 3).ok());
  const auto sharded = Checkpoint::Open(dir_->path() / "sharded");
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(ComputeFingerprint(kConfig, *sharded), ComputeFingerprint(kConfig, *llama_));
}

TEST_F(FingerprintTest, DiffersBetweenModels) {
  const auto mistral = Checkpoint::Open(kModels / "mistral-tiny");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_NE(ComputeFingerprint(kConfig, *mistral), ComputeFingerprint(kConfig, *llama_));
}

TEST_F(FingerprintTest, ChangesWhenOneByteOfOneTensorChanges) {
  std::vector<testing::TensorToWrite> tensors = ToWrite(*llama_);
  const ModelFingerprint original = FingerprintOf("original", tensors);
  ASSERT_EQ(original, ComputeFingerprint(kConfig, *llama_));
  for (testing::TensorToWrite& tensor : tensors) {
    if (tensor.name == "model.layers.1.mlp.up_proj.weight") tensor.bytes[tensor.bytes.size() / 2] ^= 0x01;
  }
  EXPECT_NE(FingerprintOf("edited", tensors), original);
}

TEST_F(FingerprintTest, ChangesWhenTheConfigChanges) {
  EXPECT_NE(ComputeFingerprint("llama|hidden=64|layers=2|rope_theta=500000", *llama_),
            ComputeFingerprint(kConfig, *llama_));
  EXPECT_NE(ComputeFingerprint("", *llama_), ComputeFingerprint(kConfig, *llama_));
}

TEST_F(FingerprintTest, ChangesWhenATensorIsRenamed) {
  std::vector<testing::TensorToWrite> tensors = ToWrite(*llama_);
  for (testing::TensorToWrite& tensor : tensors) {
    if (tensor.name == "model.layers.0.self_attn.q_proj.weight")
      tensor.name = "model.layers.0.self_attn.k_proj.weight2";
  }
  EXPECT_NE(FingerprintOf("renamed", tensors), ComputeFingerprint(kConfig, *llama_));
}

TEST_F(FingerprintTest, ChangesWhenShapeOrDtypeChangesButBytesDoNot) {
  const std::string bytes = testing::EncodeTensorBytes(DType::kF32, {1, 2, 3, 4, 5, 6});
  const ModelFingerprint base = FingerprintOf("base", {{"w", DType::kF32, {2, 3}, bytes}});
  EXPECT_NE(FingerprintOf("transposed", {{"w", DType::kF32, {3, 2}, bytes}}), base);
  EXPECT_NE(FingerprintOf("flat", {{"w", DType::kF32, {6}, bytes}}), base);
  EXPECT_NE(FingerprintOf("half", {{"w", DType::kBF16, {2, 6}, bytes}}), base);
}

// Pins the hashed layout (stored KV is keyed by it): a tensor of 64 MiB + 4 bytes is two pieces.
TEST_F(FingerprintTest, MatchesTheDocumentedSchemeForMultiPieceTensors) {
  constexpr int64_t kElements = (int64_t{64} << 20) / 4 + 1;
  std::string big(kElements * 4, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + (i >> 20));
  const std::string small = testing::EncodeTensorBytes(DType::kBF16, {0.5f});
  const ModelFingerprint actual =
      FingerprintOf("big", {{"small", DType::kBF16, {}, small}, {"big", DType::kF32, {kElements}, big}}, "cfg");

  auto update_string = [](Sha256& hasher, std::string_view text) {
    hasher.UpdateLe64(text.size());
    hasher.Update(text);
  };
  Sha256 expected;
  update_string(expected, "strata-model-fingerprint-v1");
  update_string(expected, "cfg");
  expected.UpdateLe64(2);
  // "big" sorts first.
  update_string(expected, "big");
  update_string(expected, "F32");
  expected.UpdateLe64(1);
  expected.UpdateLe64(kElements);
  const Sha256Digest piece0 = Sha256Of(std::string_view(big).substr(0, size_t{64} << 20));
  const Sha256Digest piece1 = Sha256Of(std::string_view(big).substr(size_t{64} << 20));
  Sha256 big_hasher;
  big_hasher.Update(absl::MakeConstSpan(piece0));
  big_hasher.Update(absl::MakeConstSpan(piece1));
  const Sha256Digest big_digest = big_hasher.Finish();
  expected.Update(absl::MakeConstSpan(big_digest));
  update_string(expected, "small");
  update_string(expected, "BF16");
  expected.UpdateLe64(0);
  Sha256 small_hasher;
  const Sha256Digest small_piece = Sha256Of(small);
  small_hasher.Update(absl::MakeConstSpan(small_piece));
  const Sha256Digest small_digest = small_hasher.Finish();
  expected.Update(absl::MakeConstSpan(small_digest));

  EXPECT_EQ(actual.digest, expected.Finish());
}

}  // namespace
}  // namespace strata::model
