#include "model/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<ModelConfig> Parse(std::string_view json) { return ParseModelConfig(json, "config.json"); }

TEST(ModelConfig, ReadsTheTinyLlamaWithLlama3RopeParameters) {
  auto c = LoadModelConfig(testing::TestDataDir() / "models/llama3-tiny/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.factor, 8.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 256);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{1});
  EXPECT_EQ(c->layer_window, std::vector<int64_t>(3, 0));
}

TEST(ModelConfig, ReadsTheTinyQwen2WithBiasAndTiedEmbeddings) {
  auto c = LoadModelConfig(testing::TestDataDir() / "models/qwen2-tiny/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen2);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->rope.theta, 1e6);
  EXPECT_EQ(c->head_dim, 16);  // derived: hidden 64 / 4 heads
}

TEST(ModelConfig, ReadsTransformers4RopeSpelling) {
  // As Llama-3.1-8B's published config.json writes it.
  auto c = Parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "eos_token_id": [128001, 128008, 128009],
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLlama3);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->KvBytesPerToken(2), 131072);
}

TEST(ModelConfig, ExplicitHeadDimWins) {
  auto c = Parse(R"({"model_type": "mistral", "vocab_size": 10, "hidden_size": 5120, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->q_dim(), 4096);
}

TEST(ModelConfig, MistralSlidingWindowAppliesToEveryLayer) {
  auto c = Parse(R"({"architectures": ["MistralForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 4096})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layer_window, (std::vector<int64_t>{4096, 4096}));
}

TEST(ModelConfig, Qwen2SlidingWindowOnlyWhenEnabledAndFromMaxWindowLayers) {
  const std::string base = R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 3, "num_attention_heads": 2, "sliding_window": 64,
    "max_window_layers": 1, )";
  auto off = Parse(base + R"("use_sliding_window": false})");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->layer_window, (std::vector<int64_t>{0, 0, 0}));
  auto on = Parse(base + R"("use_sliding_window": true})");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->layer_window, (std::vector<int64_t>{0, 64, 64}));
  auto listed = Parse(base + R"("layer_types": ["sliding_attention", "full_attention", "full_attention"]})");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->layer_window, (std::vector<int64_t>{64, 0, 0}));
}

TEST(ModelConfig, CanonicalTextChangesWithTheLastDigitOfRopeTheta) {
  auto a = LoadModelConfig(testing::TestDataDir() / "models/qwen2-tiny/config.json");
  ASSERT_TRUE(a.ok());
  ModelConfig b = *a;
  b.rope.theta = 1000001.0;  // 1e6 in the file: equal to 6 significant digits
  EXPECT_NE(a->Canonical(), b.Canonical());
  EXPECT_EQ(a->Canonical(), a->Canonical());
}

struct BadConfig {
  const char* json;
  const char* error;
};

class BadConfigTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(BadConfigTest, IsRejectedWithAMessageNamingTheProblem) {
  auto c = Parse(GetParam().json);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("config.json: "));
  EXPECT_THAT(c.status().message(), HasSubstr(GetParam().error));
}

#define STRATA_BASE R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, )"
INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadConfig{"{not json", "not valid JSON"}, BadConfig{"[1, 2]", "must hold a JSON object"},
        BadConfig{R"({"architectures": ["GPT2LMHeadModel"]})", "architecture 'GPT2LMHeadModel' is not supported"},
        BadConfig{R"({"vocab_size": 3})", "neither 'architectures' nor 'model_type'"},
        BadConfig{R"({"model_type": "llama", "vocab_size": 10})", "required key 'hidden_size' is missing"},
        BadConfig{R"({"model_type": "llama", "vocab_size": "big"})", "'vocab_size' must be an integer"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE R"("num_attention_heads": 0})",
                  "'num_attention_heads' must be in [1, 16777216], got 0"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE R"("num_attention_heads": 4, "num_key_value_heads": 3})",
                  "not a multiple of num_key_value_heads"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE R"("num_attention_heads": 2, "hidden_act": "gelu"})",
                  "hidden_act 'gelu' is not supported"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE
                  R"("num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
                  "rope type 'yarn' is not supported"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE
                  R"("num_attention_heads": 2, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}})",
                  "required key 'rope_parameters.low_freq_factor' is missing"},
        BadConfig{R"({"model_type": "mistral", )" STRATA_BASE R"("num_attention_heads": 2, "sliding_window": -5})",
                  "'sliding_window' must be in [1, 16777216], got -5"},
        BadConfig{R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                    "num_hidden_layers": 1000000000000000, "num_attention_heads": 2})",
                  "'num_hidden_layers' must be in [1, 16777216]"},
        BadConfig{R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                    "num_hidden_layers": 5000, "num_attention_heads": 2})",
                  "'num_hidden_layers' must be at most 1024"},
        BadConfig{
            R"({"model_type": "qwen2", )" STRATA_BASE
            R"("num_attention_heads": 2, "sliding_window": 4, "use_sliding_window": true, "max_window_layers": -3})",
            "'max_window_layers' must be >= 0, got -3"},
        BadConfig{R"({"model_type": "llama", )" STRATA_BASE R"("num_attention_heads": 2, "eos_token_id": [1, 10]})",
                  "eos_token_id 10 is outside the vocabulary [0, 10)"}));
#undef STRATA_BASE

}  // namespace
}  // namespace strata::model
