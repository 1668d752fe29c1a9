#include "model/checkpoint.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/safetensors_writer.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::filesystem::path kModels = std::filesystem::path(STRATA_TEST_DATA_DIR) / "models";

std::string BytesOf(const TensorInfo& tensor) {
  return std::string(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size());
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::ScratchDir::Create(::testing::TempDir(), "checkpoint_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(dir).value());
  }

  const std::filesystem::path& dir() const { return dir_->path(); }

  // Writes shard `name` holding F32 tensors of one element each, named `tensors`.
  void WriteShard(const std::string& name, const std::vector<std::string>& tensors) {
    std::vector<testing::TensorToWrite> to_write;
    for (const std::string& tensor : tensors) {
      to_write.push_back({tensor, DType::kF32, {1}, testing::EncodeTensorBytes(DType::kF32, {1.0f})});
    }
    ASSERT_TRUE(testing::WriteSafetensors(dir() / name, to_write).ok());
  }

  void WriteIndex(std::string_view json) {
    ASSERT_TRUE(testing::WriteRawFile(dir() / "model.safetensors.index.json", json).ok());
  }

  // Asserts that opening dir() fails with `code` and a one-line message naming the index and
  // containing `problem`.
  void ExpectRejected(absl::StatusCode code, const std::string& problem) {
    const absl::StatusOr<Checkpoint> checkpoint = Checkpoint::Open(dir());
    ASSERT_FALSE(checkpoint.ok());
    EXPECT_EQ(checkpoint.status().code(), code) << checkpoint.status();
    const std::string message(checkpoint.status().message());
    EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
    EXPECT_THAT(message, HasSubstr(problem));
    EXPECT_THAT(message, Not(HasSubstr("\n")));
  }

  std::optional<testing::ScratchDir> dir_;
};

TEST(Checkpoint, OpensSingleFileDirectory) {
  const auto checkpoint = Checkpoint::Open(kModels / "llama3-tiny");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->tensors().size(), 30u);
  ASSERT_EQ(checkpoint->files().size(), 1u);
  EXPECT_EQ(checkpoint->files()[0], kModels / "llama3-tiny" / "model.safetensors");
  // File size minus the 8-byte length and the 3072-byte header.
  EXPECT_EQ(checkpoint->total_bytes(), 783112u - 8 - 3072);
  const TensorInfo* q = checkpoint->Find("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(checkpoint->Find("model.layers.3.self_attn.q_proj.weight"), nullptr);
}

TEST(Checkpoint, OpensEveryTinyModel) {
  for (const char* model : {"llama3-tiny", "qwen2-tiny", "mistral-tiny"}) {
    const auto checkpoint = Checkpoint::Open(kModels / model);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    EXPECT_NE(checkpoint->Find("model.embed_tokens.weight"), nullptr) << model;
  }
}

TEST(Checkpoint, RejectsDirectoryWithoutWeightsAsNotFound) {
  const auto checkpoint = Checkpoint::Open("/nonexistent/model");
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(checkpoint.status().message()),
              HasSubstr("/nonexistent/model: has neither model.safetensors nor model.safetensors.index.json"));
}

TEST_F(CheckpointTest, ShardedCheckpointHasTheSameTensorsAndBytesAsTheSingleFile) {
  ASSERT_TRUE(testing::ShardCheckpoint(kModels / "llama3-tiny", dir(), 3).ok());
  const auto single = Checkpoint::Open(kModels / "llama3-tiny");
  const auto sharded = Checkpoint::Open(dir());
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_TRUE(sharded.ok()) << sharded.status();

  ASSERT_EQ(sharded->files().size(), 3u);
  EXPECT_EQ(sharded->files()[0], dir() / "model-00001-of-00003.safetensors");
  EXPECT_EQ(sharded->files()[2], dir() / "model-00003-of-00003.safetensors");
  EXPECT_EQ(sharded->total_bytes(), single->total_bytes());
  ASSERT_EQ(sharded->tensors().size(), single->tensors().size());
  for (size_t i = 0; i < single->tensors().size(); ++i) {
    const TensorInfo& a = single->tensors()[i];
    const TensorInfo& b = sharded->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_TRUE(BytesOf(a) == BytesOf(b)) << a.name;
  }
  EXPECT_TRUE(std::filesystem::exists(dir() / "config.json"));
  EXPECT_TRUE(std::filesystem::exists(dir() / "tokenizer.json"));
}

TEST_F(CheckpointTest, TensorsOfSeveralShardsAreFoundAndNameTheirShard) {
  ASSERT_TRUE(testing::ShardCheckpoint(kModels / "qwen2-tiny", dir(), 2).ok());
  const auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TensorInfo* first = checkpoint->Find("model.embed_tokens.weight");
  const TensorInfo* last = checkpoint->Find("model.norm.weight");
  ASSERT_NE(first, nullptr);
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(first->file, "model-00001-of-00002.safetensors");
  EXPECT_EQ(last->file, "model-00002-of-00002.safetensors");
}

TEST_F(CheckpointTest, IndexWinsOverSingleFile) {
  ASSERT_TRUE(testing::ShardCheckpoint(kModels / "llama3-tiny", dir(), 2).ok());
  std::filesystem::copy_file(kModels / "qwen2-tiny" / "model.safetensors", dir() / "model.safetensors");
  const auto checkpoint = Checkpoint::Open(dir());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->files().size(), 2u);
  EXPECT_NE(checkpoint->Find("lm_head.weight"), nullptr);  // llama3-tiny has one, qwen2-tiny does not
}

TEST_F(CheckpointTest, RejectsIndexThatIsNotJson) {
  WriteIndex("{\"weight_map\": ");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "not valid JSON");
}

TEST_F(CheckpointTest, RejectsIndexWithoutWeightMap) {
  WriteIndex(R"({"metadata": {"total_size": 4}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "has no 'weight_map'");
  WriteIndex(R"([])");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "not a JSON object");
  WriteIndex(R"({"weight_map": ["a"]})");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "'weight_map' is not an object");
  WriteIndex(R"({"weight_map": {"a": 1}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "weight_map entry for tensor 'a' is not a string");
}

TEST_F(CheckpointTest, RejectsMissingShardAsNotFoundNamingIt) {
  WriteShard("model-00001-of-00002.safetensors", {"a"});
  WriteIndex(R"({"weight_map": {"a": "model-00001-of-00002.safetensors",)"
             R"( "b": "model-00002-of-00002.safetensors"}})");
  ExpectRejected(absl::StatusCode::kNotFound, "lists shard 'model-00002-of-00002.safetensors'");
}

TEST_F(CheckpointTest, RejectsShardNameOutsideTheModelDirectory) {
  WriteIndex(R"({"weight_map": {"a": "../elsewhere/model.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "not a file name inside the model directory");
  WriteIndex(R"({"weight_map": {"a": "/etc/model.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument, "not a file name inside the model directory");
}

TEST_F(CheckpointTest, RejectsTensorMappedToAShardThatDoesNotHoldIt) {
  WriteShard("s1.safetensors", {"a"});
  WriteShard("s2.safetensors", {"b"});
  WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument,
                 "weight_map puts tensor 'c' in shard 's2.safetensors', which does not hold it");
  // The tensor exists, but in another shard than the index says.
  WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument,
                 "weight_map puts tensor 'b' in shard 's1.safetensors', which does not hold it");
}

TEST_F(CheckpointTest, RejectsTensorPresentInTwoShards) {
  WriteShard("s1.safetensors", {"a", "b"});
  WriteShard("s2.safetensors", {"b", "c"});
  WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument,
                 "tensor 'b' is in two shards, 's1.safetensors' and 's2.safetensors'");
}

TEST_F(CheckpointTest, RejectsShardTensorTheIndexDoesNotList) {
  WriteShard("s1.safetensors", {"a", "extra"});
  WriteIndex(R"({"weight_map": {"a": "s1.safetensors"}})");
  ExpectRejected(absl::StatusCode::kInvalidArgument,
                 "shard 's1.safetensors' holds tensor 'extra', which the weight_map does not list");
}

TEST_F(CheckpointTest, ReportsMalformedShardByItsFileName) {
  ASSERT_TRUE(testing::WriteRawFile(dir() / "s1.safetensors", testing::BuildRawSafetensors("[]", "")).ok());
  WriteIndex(R"({"weight_map": {"a": "s1.safetensors"}})");
  const auto checkpoint = Checkpoint::Open(dir());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("s1.safetensors: header is not a JSON object"));
}

TEST_F(CheckpointTest, ShardCheckpointRefusesMoreShardsThanTensors) {
  const absl::Status status = testing::ShardCheckpoint(kModels / "llama3-tiny", dir(), 31);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::model
