#include "model/safetensors.h"

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/safetensors_writer.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::filesystem::path kModels = std::filesystem::path(STRATA_TEST_DATA_DIR) / "models";

float F32At(const TensorInfo& tensor, int64_t index) {
  float value;
  std::memcpy(&value, tensor.bytes.data() + index * sizeof(float), sizeof(value));
  return value;
}

// Each test writes its inputs into a fresh directory, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::ScratchDir::Create(::testing::TempDir(), "safetensors_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(dir).value());
  }

  std::filesystem::path Path(const std::string& name) const { return dir_->path() / name; }

  // Writes a file of `header` and `data` (the 8-byte length is added) and opens it.
  absl::StatusOr<SafetensorsFile> OpenRaw(std::string_view header, std::string_view data) {
    const absl::Status written =
        testing::WriteRawFile(Path("model.safetensors"), testing::BuildRawSafetensors(header, data));
    if (!written.ok()) return written;
    return SafetensorsFile::Open(Path("model.safetensors"));
  }

  // Asserts that opening `header` + `data` fails with InvalidArgument, a one-line message that names
  // the file and contains `problem`.
  void ExpectRejected(std::string_view header, std::string_view data, const std::string& problem) {
    const absl::StatusOr<SafetensorsFile> file = OpenRaw(header, data);
    ASSERT_FALSE(file.ok()) << "accepted header " << header;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    const std::string message(file.status().message());
    EXPECT_THAT(message, HasSubstr("model.safetensors"));
    EXPECT_THAT(message, HasSubstr(problem));
    EXPECT_THAT(message, Not(HasSubstr("\n")));
  }

  std::optional<testing::ScratchDir> dir_;
};

// --- Real checkpoints --------------------------------------------------------------------------------

TEST(Safetensors, OpensLlama3TinyWithShapesDtypesAndValues) {
  const auto file = SafetensorsFile::Open(kModels / "llama3-tiny" / "model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), 30u);

  const TensorInfo* embed = file->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, DType::kF32);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(embed->num_elements(), 512 * 64);
  EXPECT_EQ(embed->bytes.size(), 512u * 64 * 4);
  EXPECT_EQ(embed->file, "model.safetensors");
  // Values read with Python's struct module.
  EXPECT_EQ(F32At(*embed, 0), -0.24767334759235382f);
  EXPECT_EQ(F32At(*embed, 1), -0.358361154794693f);
  EXPECT_EQ(F32At(*embed, 2), -0.1868692934513092f);
  EXPECT_EQ(F32At(*embed, 512 * 64 - 1), -0.053651999682188034f);

  const TensorInfo* lm_head = file->Find("lm_head.weight");
  ASSERT_NE(lm_head, nullptr);
  EXPECT_EQ(F32At(*lm_head, 0), -0.32537704706192017f);
  EXPECT_EQ(F32At(*lm_head, 512 * 64 - 1), -0.24016965925693512f);

  const TensorInfo* norm = file->Find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(F32At(*norm, 63), 1.0f);
}

TEST(Safetensors, OpensQwen2TinyWithBiasesAndNoLmHead) {
  const auto file = SafetensorsFile::Open(kModels / "qwen2-tiny" / "model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), 38u);
  EXPECT_EQ(file->Find("lm_head.weight"), nullptr);
  const TensorInfo* bias = file->Find("model.layers.1.self_attn.q_proj.bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->dtype, DType::kF32);
  EXPECT_EQ(bias->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(F32At(*bias, 0), 0.0f);
  const TensorInfo* k_bias = file->Find("model.layers.0.self_attn.k_proj.bias");
  ASSERT_NE(k_bias, nullptr);
  EXPECT_EQ(k_bias->shape, (std::vector<int64_t>{32}));
}

TEST(Safetensors, OpensMistralTiny) {
  const auto file = SafetensorsFile::Open(kModels / "mistral-tiny" / "model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), 30u);
  const TensorInfo* down = file->Find("model.layers.1.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 160}));
  EXPECT_EQ(F32At(*down, 0), 0.013740756548941135f);
  EXPECT_EQ(F32At(*down, 1), -0.08082477003335953f);
  EXPECT_EQ(F32At(*down, 64 * 160 - 1), 0.10113102942705154f);
}

TEST(Safetensors, ListsTensorsSortedByName) {
  const auto file = SafetensorsFile::Open(kModels / "llama3-tiny" / "model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const auto tensors = file->tensors();
  for (size_t i = 1; i < tensors.size(); ++i) EXPECT_LT(tensors[i - 1].name, tensors[i].name);
  EXPECT_EQ(file->Find("model.embed_tokens"), nullptr);
  EXPECT_EQ(file->Find(""), nullptr);
  EXPECT_EQ(file->Find("zzz"), nullptr);
}

TEST(Safetensors, TensorsKeepTheFileMappedAfterTheFileObjectIsGone) {
  std::optional<TensorInfo> norm;
  {
    const auto file = SafetensorsFile::Open(kModels / "llama3-tiny" / "model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    norm = *file->Find("model.norm.weight");
  }
  EXPECT_EQ(F32At(*norm, 0), 1.0f);
}

TEST(Safetensors, RejectsMissingFileAsNotFound) {
  const auto file = SafetensorsFile::Open("/nonexistent/dir/model.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("/nonexistent/dir/model.safetensors"));
}

// --- Written files -----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripsF16AndBf16Bytes) {
  const std::vector<float> values = {1.0f, -2.5f, 0.333f, 65504.0f, -0.0f, 1e-3f};
  const std::string f16 = testing::EncodeTensorBytes(DType::kF16, values);
  const std::string bf16 = testing::EncodeTensorBytes(DType::kBF16, values);
  ASSERT_TRUE(testing::WriteSafetensors(Path("model.safetensors"),
                                        {{"half", DType::kF16, {2, 3}, f16}, {"brain", DType::kBF16, {6}, bf16}},
                                        {{"format", "pt"}})
                  .ok());
  const auto file = SafetensorsFile::Open(Path("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[0].name, "brain");  // sorted by name, not by file order

  const TensorInfo* half = file->Find("half");
  ASSERT_NE(half, nullptr);
  EXPECT_EQ(half->dtype, DType::kF16);
  EXPECT_EQ(half->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(half->bytes.data()), half->bytes.size()), f16);
  std::vector<float> decoded(values.size());
  ConvertToF32(DType::kF16, half->bytes.data(), absl::MakeSpan(decoded));
  EXPECT_EQ(decoded[0], 1.0f);
  EXPECT_EQ(decoded[1], -2.5f);
  EXPECT_EQ(decoded[3], 65504.0f);

  const TensorInfo* brain = file->Find("brain");
  ASSERT_NE(brain, nullptr);
  EXPECT_EQ(brain->dtype, DType::kBF16);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(brain->bytes.data()), brain->bytes.size()), bf16);
  ConvertToF32(DType::kBF16, brain->bytes.data(), absl::MakeSpan(decoded));
  EXPECT_EQ(decoded[0], 1.0f);
  EXPECT_EQ(decoded[1], -2.5f);
}

TEST_F(SafetensorsTest, AcceptsTensorsMisalignedForTheirDtype) {
  // A 1-element F16 first puts the F32 tensor at data offset 2.
  const std::string f32 = testing::EncodeTensorBytes(DType::kF32, {3.5f, -1.0f});
  ASSERT_TRUE(testing::WriteSafetensors(Path("model.safetensors"),
                                        {{"a", DType::kF16, {1}, testing::EncodeTensorBytes(DType::kF16, {1.0f})},
                                         {"b", DType::kF32, {2}, f32}})
                  .ok());
  const auto file = SafetensorsFile::Open(Path("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* b = file->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(F32At(*b, 0), 3.5f);
  EXPECT_EQ(F32At(*b, 1), -1.0f);
}

TEST_F(SafetensorsTest, AcceptsScalarsEmptyTensorsAndMetadata) {
  const auto file =
      OpenRaw(R"({"__metadata__":{"format":"pt"},"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
              R"("scalar":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}})",
              std::string("\x80\x3f", 2));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->Find("empty")->num_elements(), 0);
  EXPECT_EQ(file->Find("empty")->bytes.size(), 0u);
  EXPECT_EQ(file->Find("scalar")->num_elements(), 1);
  EXPECT_EQ(file->Find("__metadata__"), nullptr);
}

TEST_F(SafetensorsTest, AcceptsAFileWithNoTensors) {
  const auto file = OpenRaw("{}      ", "");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->tensors().empty());
}

// --- Malformed files ---------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RejectsFileShorterThanHeaderLength) {
  ASSERT_TRUE(testing::WriteRawFile(Path("model.safetensors"), std::string("\x02\x00\x00", 3)).ok());
  const auto file = SafetensorsFile::Open(Path("model.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("model.safetensors: file has 3 bytes"));
}

TEST_F(SafetensorsTest, RejectsHeaderPastEndOfFile) {
  std::string raw = testing::BuildRawSafetensors("{}", "");
  raw[0] = 100;  // claims a 100-byte header in a 10-byte file
  ASSERT_TRUE(testing::WriteRawFile(Path("model.safetensors"), raw).ok());
  const auto file = SafetensorsFile::Open(Path("model.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("header length 100 reaches past the end of the file"));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("model.safetensors"));
}

TEST_F(SafetensorsTest, RejectsAbsurdHeaderLength) {
  std::string raw = testing::BuildRawSafetensors("{}", "");
  for (int i = 0; i < 8; ++i) raw[i] = '\xff';  // 2^64 - 1: must not overflow the bounds check
  ASSERT_TRUE(testing::WriteRawFile(Path("model.safetensors"), raw).ok());
  auto file = SafetensorsFile::Open(Path("model.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("exceeds the limit of 100000000 bytes"));

  raw[0] = '\x01', raw[1] = '\xe1', raw[2] = '\xf5', raw[3] = '\x05';  // 100'000'001
  for (int i = 4; i < 8; ++i) raw[i] = 0;
  ASSERT_TRUE(testing::WriteRawFile(Path("model.safetensors"), raw).ok());
  file = SafetensorsFile::Open(Path("model.safetensors"));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("header length 100000001 exceeds the limit"));
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  ExpectRejected(R"({"a": {"dtype": )", "", "header is not valid JSON");
  ExpectRejected("\xff\xfe{}", "", "header is not valid JSON");
  ExpectRejected("{\"a\xff\": 1}", "", "header is not valid JSON");  // invalid UTF-8
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  ExpectRejected("[1, 2]", "", "header is not a JSON object");
  ExpectRejected("\"text\"", "", "header is not a JSON object");
}

TEST_F(SafetensorsTest, RejectsEntryThatIsNotAnObject) {
  ExpectRejected(R"({"w": [1, 2]})", "", "tensor 'w' is not a JSON object");
}

TEST_F(SafetensorsTest, RejectsEntryMissingAField) {
  ExpectRejected(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "abcd", "tensor 'w' has no 'dtype'");
  ExpectRejected(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "abcd", "tensor 'w' has no 'shape'");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd", "tensor 'w' has no 'data_offsets'");
}

TEST_F(SafetensorsTest, RejectsFieldsOfWrongJsonType) {
  ExpectRejected(R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", "abcd",
                 "'dtype' that is not a string");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", "abcd",
                 "'shape' that is not an array");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})", "abcd",
                 "shape dimension 0 that is not an integer");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})", "abcd",
                 "shape dimension 0 that is not an integer");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "abcd",
                 "'data_offsets' that is not an array of two non-negative integers");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}})", "abcd",
                 "'data_offsets' that is not an array of two non-negative integers");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 4]}})", "abcd",
                 "'data_offsets' that is not an array of two non-negative integers");
  ExpectRejected(R"({"__metadata__": {"format": 1}})", "", "'__metadata__' is not an object of strings");
}

TEST_F(SafetensorsTest, RejectsNegativeDimension) {
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]}})", "abcd",
                 "tensor 'w' has negative shape dimension 1 (-3)");
}

TEST_F(SafetensorsTest, RejectsUnsupportedDtypeNamingTheSupportedOnes) {
  ExpectRejected(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", "abcdefgh",
                 "tensor 'w' has unsupported dtype 'F64' (supported: F32, F16, BF16)");
  ExpectRejected(R"({"w": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", "a", "unsupported dtype 'I8'");
}

TEST_F(SafetensorsTest, RejectsTensorEndingPastTheDataSection) {
  ExpectRejected(R"({"model.layers.3.mlp.up_proj.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}})",
                 "abcdefgh", "tensor 'model.layers.3.mlp.up_proj.weight' ends at byte 12 but the data section has 8");
}

TEST_F(SafetensorsTest, RejectsBeginPastEnd) {
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", "abcd",
                 "tensor 'w' has data_offsets [4, 0]: begin is past end");
}

TEST_F(SafetensorsTest, RejectsByteSizeThatDisagreesWithShape) {
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", "abcd",
                 "tensor 'w' has 4 bytes but shape [2] of F32 needs 2 x 4");
  ExpectRejected(R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 4]}})", "abcd",
                 "tensor 'w' has 4 bytes but shape [3] of BF16");
}

TEST_F(SafetensorsTest, RejectsShapesWhoseSizeOverflows) {
  // 2^62 * 2^62 elements overflow int64; 2^62 F32 elements fit but their bytes (2^64) do not.
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904],)"
                 R"( "data_offsets": [0, 4]}})",
                 "abcd", "element count overflows");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}})", "abcd",
                 "tensor 'w' has 4 bytes but shape [4611686018427387904] of F32");
  ExpectRejected(R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})", "abcd",
                 "element count overflows");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  ExpectRejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                 R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                 "abcdefghijkl", "tensor 'b' at bytes [4, 12) overlaps tensor 'a' which ends at byte 8");
}

TEST_F(SafetensorsTest, RejectsGapsBetweenTensors) {
  ExpectRejected(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                 R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                 "abcdefghijkl", "bytes [4, 8) of the data section belong to no tensor");
  ExpectRejected(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", "abcdefgh",
                 "bytes [0, 4) of the data section belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsTrailingBytesAfterTheLastTensor) {
  ExpectRejected(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", "abcdefgh",
                 "bytes [4, 8) of the data section belong to no tensor");
}

TEST_F(SafetensorsTest, EscapesControlCharactersInNamesToKeepMessagesOneLine) {
  ExpectRejected(R"({"a\nb": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", "abcdefgh",
                 R"(tensor 'a\nb' has unsupported dtype)");
}

}  // namespace
}  // namespace strata::model
