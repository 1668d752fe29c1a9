// The `strata` binary, run as a separate process on the tiny models.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"

namespace strata {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct ProcessResult {
  int exit_code = -1;
  std::string out, err;
};

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `strata` with `args` (each single-quoted for the shell) and captures both streams, in a scratch
// directory of its own so that tests running in parallel never share files.
ProcessResult Strata(const std::vector<std::string>& args) {
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "cli");
  EXPECT_TRUE(scratch.ok()) << scratch.status();
  if (!scratch.ok()) return {};
  const std::filesystem::path out = scratch->path() / "out", err = scratch->path() / "err";
  std::string command = std::string("'") + STRATA_CLI_PATH + "'";
  for (const std::string& arg : args) command += " '" + arg + "'";
  command += " >'" + out.string() + "' 2>'" + err.string() + "' </dev/null";
  const int status = std::system(command.c_str());
  ProcessResult run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.out = Slurp(out);
  run.err = Slurp(err);
  return run;
}

const std::string kLlama = (testing::TestDataDir() / "models" / "llama3-tiny").string();

TEST(StrataCli, GenerateJsonReproducesTheGreedyGolden) {
  auto golden = testing::LoadModelGolden(testing::TestDataDir() / "models/llama3-tiny/golden.json");
  ASSERT_TRUE(golden.ok());
  const ProcessResult run = Strata({"generate", "--model", kLlama, "--prompt-ids",
                                    absl::StrJoin(golden->prompt_ids, ","), "--max-new-tokens", "24", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j.at("prompt_ids").get<std::vector<int32_t>>(), golden->prompt_ids);
  EXPECT_EQ(j.at("output_ids").get<std::vector<int32_t>>(), golden->cpu.greedy_ids);
  EXPECT_TRUE(j.at("text").is_string());
  EXPECT_EQ(j.at("finish_reason"), "length");
}

TEST(StrataCli, GenerateWithKvOffloadedToHostAndSsdGivesTheGreedyGolden) {
  auto golden = testing::LoadModelGolden(testing::TestDataDir() / "models/llama3-tiny/golden.json");
  ASSERT_TRUE(golden.ok());
  auto ssd = testing::ScratchDir::Create(::testing::TempDir(), "cli-ssd");
  ASSERT_TRUE(ssd.ok()) << ssd.status();
  // llama3-tiny at 324 tokens: a KV head (K and V) is 40.5 KiB, two staging layers 162 KiB. 210 KiB
  // of "GPU" budget hold one head; the other five (202.5 KiB) do not fit 200 KiB of host memory, which
  // then holds only the SSD tier's bounce buffers (192 KiB): five heads on SSD.
  const ProcessResult run =
      Strata({"generate", "--model", kLlama, "--prompt-ids", absl::StrJoin(golden->prompt_ids, ","),
              "--max-new-tokens", "24", "--json", "--gpu-kv-budget", "210KiB", "--host-kv-budget", "200KiB",
              "--ssd-budget", "1GiB", "--ssd-dir", ssd->path().string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j.at("output_ids").get<std::vector<int32_t>>(), golden->cpu.greedy_ids);
  EXPECT_EQ(j.at("kv").at("heads_gpu").get<int>(), 1) << j.at("kv").dump();
  EXPECT_EQ(j.at("kv").at("heads_host").get<int>(), 0) << j.at("kv").dump();
  EXPECT_EQ(j.at("kv").at("heads_ssd").get<int>(), 5) << j.at("kv").dump();
  EXPECT_GT(j.at("kv").at("ssd_bytes_read").get<int64_t>(), 0) << j.at("kv").dump();
  EXPECT_GT(j.at("kv").at("bytes_downloaded").get<int64_t>(), 0);
  // Too small a budget is refused up front, naming the flag to raise.
  const ProcessResult refused =
      Strata({"generate", "--model", kLlama, "--prompt-ids", absl::StrJoin(golden->prompt_ids, ","),
              "--gpu-kv-budget", "1KiB"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("--gpu-kv-budget"));
}

TEST(StrataCli, SparseDecodeSaysWhenItWasApproximateAndIsExactWithAWholeBudget) {
  auto golden = testing::LoadModelGolden(testing::TestDataDir() / "models/llama3-tiny/golden.json");
  ASSERT_TRUE(golden.ok());
  // Two staging layers (162 KiB) and no KV head fit the "GPU" budget: every head lives in host memory.
  const std::vector<std::string> offloaded = {
      "generate",         "--model",         kLlama, "--prompt-ids", absl::StrJoin(golden->prompt_ids, ","),
      "--max-new-tokens", "24",              "--json", "--gpu-kv-budget", "162KiB", "--host-kv-budget", "1MiB"};
  std::vector<std::string> whole = offloaded;
  whole.insert(whole.end(), {"--sparse-decode-budget", "4096", "--sparse-chunk-tokens", "16"});
  const ProcessResult exact = Strata(whole);
  ASSERT_EQ(exact.exit_code, 0) << exact.err;
  auto j = nlohmann::json::parse(exact.out);
  EXPECT_EQ(j.at("output_ids").get<std::vector<int32_t>>(), golden->cpu.greedy_ids);
  EXPECT_EQ(j.at("decode"), "exact");
  EXPECT_GT(j.at("sparse_decode").at("sparse_attentions").get<int64_t>(), 0) << j.dump();
  EXPECT_EQ(j.at("kv").at("heads_gpu").get<int>(), 0) << j.at("kv").dump();

  std::vector<std::string> small = offloaded;
  small.insert(small.end(), {"--sparse-decode-budget", "48", "--sparse-chunk-tokens", "16"});
  const ProcessResult approximate = Strata(small);
  ASSERT_EQ(approximate.exit_code, 0) << approximate.err;
  j = nlohmann::json::parse(approximate.out);
  EXPECT_EQ(j.at("decode"), "approximate");
  EXPECT_GT(j.at("sparse_decode").at("approximate_attentions").get<int64_t>(), 0) << j.dump();
  // Text mode says so too.
  small.erase(std::find(small.begin(), small.end(), "--json"));
  const ProcessResult text = Strata(small);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("decode: approximate (sparse decode, 48 keys per KV head"));
  std::vector<std::string> bad = offloaded;
  bad.insert(bad.end(), {"--sparse-decode-budget", "48", "--sparse-chunk-tokens", "0"});
  const ProcessResult refused = Strata(bad);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("sparse decode"));
}

TEST(StrataCli, GenerateFromTextAddsBeginOfTextAndPrintsTheText) {
  const ProcessResult run =
      Strata({"generate", "--model", kLlama, "--prompt", "Hello, world!", "--max-new-tokens", "5", "--json",
              "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "11"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j.at("prompt_ids").get<std::vector<int32_t>>(),
            (std::vector<int32_t>{0, 41, 70, 77, 337, 13, 331, 273, 77, 69, 2}));
  EXPECT_LE(j.at("output_ids").size(), 5u);
  // Same seed, same tokens.
  const ProcessResult again =
      Strata({"generate", "--model", kLlama, "--prompt", "Hello, world!", "--max-new-tokens", "5", "--json",
              "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "11"});
  EXPECT_EQ(nlohmann::json::parse(again.out).at("output_ids"), j.at("output_ids"));
}

TEST(StrataCli, GenerateStatsPrintIdsAndTokensPerSecond) {
  const ProcessResult run = Strata({"generate", "--model", kLlama, "--prompt", "The quick brown fox",
                                    "--max-new-tokens", "8", "--ignore-eos", "--stats"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("prompt_ids: [0, "));
  EXPECT_THAT(run.out, HasSubstr("output_ids: ["));
  EXPECT_THAT(run.out, HasSubstr("tokens/s"));
}

TEST(StrataCli, TokenizeJsonGivesTheGoldenIds) {
  const ProcessResult run = Strata({"tokenize", "--model", kLlama, "--text", "Hello, world!", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(nlohmann::json::parse(run.out).at("ids").get<std::vector<int32_t>>(),
            (std::vector<int32_t>{0, 41, 70, 77, 337, 13, 331, 273, 77, 69, 2}));
  const ProcessResult plain =
      Strata({"tokenize", "--tokenizer", (testing::TestDataDir() / "tokenizer/tokenizer.json").string(), "--text",
              "Hello, world!", "--no-special"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, "41 70 77 337 13 331 273 77 69 2\n");
}

TEST(StrataCli, InspectDescribesTheModel) {
  const ProcessResult run = Strata({"inspect", kLlama});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("LlamaForCausalLM"));
  EXPECT_THAT(run.out, HasSubstr("fingerprint:"));
  const ProcessResult json = Strata({"inspect", kLlama, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  // 512x64 embeddings and LM head, 3 layers of (64 + 64x64 + 2x32x64 + 64x64 + 64 + 3x160x64), final norm.
  EXPECT_EQ(j.at("parameters"), 2 * 512 * 64 + 3 * (64 + 4096 + 2 * 2048 + 4096 + 64 + 3 * 10240) + 64);
  EXPECT_EQ(j.at("kv_bytes_per_token").at("f32"), 2 * 3 * 32 * 4);
  EXPECT_EQ(j.at("model_fingerprint").get<std::string>().size(), 64u);
}

TEST(StrataCli, BadInputExitsNonZeroWithOneLineError) {
  const ProcessResult missing = Strata({"generate", "--model", "/nonexistent/model", "--prompt", "x"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, StartsWith("strata: error: /nonexistent/model: no such directory"));

  const ProcessResult bad_ids = Strata({"generate", "--model", kLlama, "--prompt-ids", "1,x,3"});
  EXPECT_NE(bad_ids.exit_code, 0);
  EXPECT_THAT(bad_ids.err, HasSubstr("--prompt-ids: 'x' is not a token id"));

  const ProcessResult out_of_vocab = Strata({"generate", "--model", kLlama, "--prompt-ids", "1,9999"});
  EXPECT_NE(out_of_vocab.exit_code, 0);
  EXPECT_THAT(out_of_vocab.err, HasSubstr("token id 9999 at index 1 is outside the vocabulary"));

  const ProcessResult two_prompts = Strata({"generate", "--model", kLlama, "--prompt", "a", "--prompt-ids", "1"});
  EXPECT_NE(two_prompts.exit_code, 0);

  const ProcessResult no_prompt = Strata({"generate", "--model", kLlama});
  EXPECT_NE(no_prompt.exit_code, 0);
  EXPECT_THAT(no_prompt.err, HasSubstr("give exactly one of --prompt, --prompt-ids, --prompt-ids-file"));

  const ProcessResult bad_top_p = Strata({"generate", "--model", kLlama, "--prompt", "a", "--top-p", "0"});
  EXPECT_NE(bad_top_p.exit_code, 0);
  EXPECT_THAT(bad_top_p.err, HasSubstr("top_p must be in (0, 1]"));
}

TEST(StrataCli, GenerationStopsAtTheModelsContextLength) {
  // The tiny Llama with a context of 300 (8192 took 95 s under ASan to fill).
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "cli-context");
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  const std::filesystem::path model = scratch->path() / "llama3-short";
  std::filesystem::copy(kLlama, model);
  auto config = nlohmann::json::parse(Slurp(model / "config.json"));
  config["max_position_embeddings"] = 300;
  std::ofstream(model / "config.json") << config.dump();
  // 2^61 new tokens would overflow a naive capacity computation; the context ends it first.
  const ProcessResult run = Strata({"generate", "--model", model.string(), "--prompt-ids", "0,5",
                                    "--max-new-tokens", "2305843009213693952", "--ignore-eos", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j.at("output_ids").size(), 300u - 2);
  EXPECT_EQ(j.at("finish_reason"), "length");
}

TEST(StrataCli, JsonOutputSurvivesAPathThatIsNotUtf8) {
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "cli-path");
  ASSERT_TRUE(scratch.ok());
  const std::filesystem::path dir = scratch->path() / "model-\xff";
  std::filesystem::copy(kLlama, dir);
  const ProcessResult run =
      Strata({"generate", "--model", dir.string(), "--prompt-ids", "0,5", "--max-new-tokens", "2", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(nlohmann::json::parse(run.out).at("model").get<std::string>(), HasSubstr("model-\uFFFD"));
}

TEST(StrataCli, HelpExitsZero) {
  for (const char* command : {"generate", "tokenize", "inspect"}) {
    const ProcessResult run = Strata({command, "--help"});
    EXPECT_EQ(run.exit_code, 0) << command;
    EXPECT_THAT(run.out, HasSubstr("--json")) << command;
  }
}

}  // namespace
}  // namespace strata
