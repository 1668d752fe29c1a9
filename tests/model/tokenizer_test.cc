#include "model/tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace strata::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::filesystem::path kDataDir = STRATA_TEST_DATA_DIR;
const std::filesystem::path kTokenizerJson = kDataDir / "tokenizer" / "tokenizer.json";

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_no_special;
};

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::vector<GoldenCase> LoadGolden() {
  const nlohmann::json golden = nlohmann::json::parse(ReadFile(kDataDir / "tokenizer" / "golden.json"));
  std::vector<GoldenCase> cases;
  for (const nlohmann::json& sample : golden.at("samples")) {
    cases.push_back({sample.at("text").get<std::string>(), sample.at("ids").get<std::vector<int32_t>>(),
                     sample.at("ids_no_special").get<std::vector<int32_t>>()});
  }
  return cases;
}

Tokenizer LoadTestTokenizer() {
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromFile(kTokenizerJson);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return std::move(tokenizer).value();
}

std::vector<int32_t> EncodeOk(const Tokenizer& tokenizer, std::string_view text,
                              SpecialTokens special = SpecialTokens::kInclude) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

// A small byte-level BPE tokenizer.json: "é" (bytes C3 A9, written "Ã©") is one token; "e" and the
// combining acute accent (CC 81, written "Ìģ") are bytes. `normalizer` is the normalizer's JSON.
std::string SmallTokenizerJson(const nlohmann::json& normalizer) {
  nlohmann::json config = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array({{{"id", 6},
                                               {"content", "<eos>"},
                                               {"single_word", false},
                                               {"lstrip", false},
                                               {"rstrip", false},
                                               {"normalized", false},
                                               {"special", true}}})},
      {"normalizer", normalizer},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"vocab", {{"\u00c3", 0}, {"\u00a9", 1}, {"\u00c3\u00a9", 2}, {"e", 3}, {"\u00cc", 4}, {"\u0123", 5}}},
        {"merges", nlohmann::json::array({"\u00c3 \u00a9"})}}},
  };
  return config.dump();
}

// The real test tokenizer.json with one part replaced.
std::string TestTokenizerJsonWith(const nlohmann::json::json_pointer& pointer, const nlohmann::json& value) {
  nlohmann::json config = nlohmann::json::parse(ReadFile(kTokenizerJson));
  config[pointer] = value;
  return config.dump();
}

absl::Status LoadError(std::string_view json) {
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson(json, "bad/tokenizer.json");
  EXPECT_FALSE(tokenizer.ok());
  return tokenizer.status();
}

TEST(Tokenizer, EncodesGoldenTextsAsHuggingFaceDoes) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<GoldenCase> cases = LoadGolden();
  ASSERT_EQ(cases.size(), 50u);
  for (const GoldenCase& c : cases) {
    EXPECT_EQ(EncodeOk(tokenizer, c.text), c.ids) << "text: '" << c.text << "'";
    EXPECT_EQ(EncodeOk(tokenizer, c.text, SpecialTokens::kSkip), c.ids_no_special) << "text: '" << c.text << "'";
  }
}

TEST(Tokenizer, DecodesGoldenIdsBackToTheirText) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  for (const GoldenCase& c : LoadGolden()) {
    EXPECT_EQ(tokenizer.Decode(c.ids_no_special), c.text) << "text: '" << c.text << "'";
    EXPECT_EQ(tokenizer.Decode(c.ids, SpecialTokens::kSkip), c.text) << "text: '" << c.text << "'";
    EXPECT_EQ(tokenizer.Decode(c.ids), "<|begin_of_text|>" + c.text) << "text: '" << c.text << "'";
  }
}

TEST(Tokenizer, EncodeIsThreadSafe) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<GoldenCase> cases = LoadGolden();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (const GoldenCase& c : cases) {
          absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(c.text);
          if (!ids.ok() || *ids != c.ids) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(Tokenizer, RoundTripsLongRunsOfWhitespaceAndLetters) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  // One pre-tokenized piece of 200,000 bytes each: exercises the regex engine's limits and the BPE heap.
  for (const std::string& text : {std::string(200000, ' ') + "x", std::string(200000, 'a'),
                                  std::string(100000, '\n') + "\t \t" + std::string(1000, '!')}) {
    const std::vector<int32_t> ids = EncodeOk(tokenizer, text, SpecialTokens::kSkip);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tokenizer.Decode(ids), text);
  }
}

TEST(Tokenizer, IgnoreMergesEmitsAWholeVocabularyPieceDirectly) {
  // Vocabulary {a, b, c, ab, abc} with only the merge "a b": BPE alone cannot make "abc".
  const nlohmann::json config = {
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}}},
        {"merges", nlohmann::json::array({nlohmann::json::array({"a", "b"})})},
        {"ignore_merges", true}}},
  };
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson(config.dump(), "ignore_merges");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(EncodeOk(*tokenizer, "abc"), ElementsAre(4));
  EXPECT_THAT(EncodeOk(*tokenizer, "abca"), ElementsAre(3, 2, 0));
}

TEST(Tokenizer, MapsAddedTokensInTheTextToTheirIds) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<int32_t> hello = EncodeOk(tokenizer, "Hello", SpecialTokens::kSkip);
  const std::vector<int32_t> world = EncodeOk(tokenizer, " world", SpecialTokens::kSkip);
  std::vector<int32_t> expected = hello;
  expected.push_back(1);  // <|end_of_text|>
  expected.insert(expected.end(), world.begin(), world.end());

  EXPECT_EQ(EncodeOk(tokenizer, "Hello<|end_of_text|> world", SpecialTokens::kSkip), expected);
  expected.insert(expected.begin(), 0);  // <|begin_of_text|> from the template
  EXPECT_EQ(EncodeOk(tokenizer, "Hello<|end_of_text|> world"), expected);
  EXPECT_THAT(EncodeOk(tokenizer, "<|begin_of_text|><|end_of_text|>", SpecialTokens::kSkip), ElementsAre(0, 1));
  EXPECT_EQ(tokenizer.Decode(EncodeOk(tokenizer, "Hello<|end_of_text|> world")),
            "<|begin_of_text|>Hello<|end_of_text|> world");
  EXPECT_EQ(tokenizer.Decode(EncodeOk(tokenizer, "Hello<|end_of_text|> world"), SpecialTokens::kSkip), "Hello world");
}

TEST(Tokenizer, HonorsLstripAndRstripOfAddedTokens) {
  nlohmann::json config = nlohmann::json::parse(ReadFile(kTokenizerJson));
  config["added_tokens"][1]["lstrip"] = true;
  config["added_tokens"][1]["rstrip"] = true;
  absl::StatusOr<Tokenizer> stripping = Tokenizer::FromJson(config.dump(), "stripping");
  ASSERT_TRUE(stripping.ok()) << stripping.status();
  const Tokenizer plain = LoadTestTokenizer();

  std::vector<int32_t> expected = EncodeOk(plain, "a", SpecialTokens::kSkip);
  expected.push_back(1);
  const std::vector<int32_t> b = EncodeOk(plain, "b", SpecialTokens::kSkip);
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(EncodeOk(*stripping, "a  <|end_of_text|>\t b", SpecialTokens::kSkip), expected);
}

TEST(Tokenizer, SingleWordAddedTokenMatchesOnlyWholeWords) {
  nlohmann::json config = nlohmann::json::parse(ReadFile(kTokenizerJson));
  config["added_tokens"].push_back({{"id", 512},
                                    {"content", "cat"},
                                    {"single_word", true},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"normalized", false},
                                    {"special", false}});
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson(config.dump(), "single_word");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 513);
  EXPECT_THAT(EncodeOk(*tokenizer, "cat", SpecialTokens::kSkip), ElementsAre(512));
  const std::vector<int32_t> in_word = EncodeOk(*tokenizer, "concat", SpecialTokens::kSkip);
  EXPECT_EQ(std::count(in_word.begin(), in_word.end(), 512), 0);
}

TEST(Tokenizer, RejectsInvalidUtf8Input) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  for (const std::string_view bad : {std::string_view("abc\xff"), std::string_view("\xc3"),
                                     std::string_view("\xed\xa0\x80"),  // a surrogate
                                     std::string_view("\xc0\xaf")}) {   // overlong
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(bad);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
  }
}

TEST(Tokenizer, NfcNormalizerMakesDecomposedAndPrecomposedTextEncodeAlike) {
  absl::StatusOr<Tokenizer> nfc = Tokenizer::FromJson(SmallTokenizerJson({{"type", "NFC"}}), "nfc");
  ASSERT_TRUE(nfc.ok()) << nfc.status();
  EXPECT_THAT(EncodeOk(*nfc, "\u00e9"), ElementsAre(2));
  EXPECT_THAT(EncodeOk(*nfc, "e\u0301"), ElementsAre(2));
  EXPECT_EQ(nfc->Decode({2}), "\u00e9");

  absl::StatusOr<Tokenizer> sequence = Tokenizer::FromJson(
      SmallTokenizerJson({{"type", "Sequence"}, {"normalizers", nlohmann::json::array({{{"type", "NFC"}}})}}),
      "sequence");
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(EncodeOk(*sequence, "e\u0301"), ElementsAre(2));

  // Without a normalizer the decomposed form stays three bytes.
  absl::StatusOr<Tokenizer> raw = Tokenizer::FromJson(SmallTokenizerJson(nullptr), "raw");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_THAT(EncodeOk(*raw, "e\u0301"), ElementsAre(3, 4, 5));
}

TEST(Tokenizer, MapsTokensAndIdsBothWays) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  EXPECT_EQ(tokenizer.vocab_size(), 512);
  EXPECT_EQ(tokenizer.TokenToId("<|end_of_text|>"), 1);
  EXPECT_EQ(tokenizer.IdToToken(1), "<|end_of_text|>");
  EXPECT_EQ(tokenizer.TokenToId("no such token"), std::nullopt);
  const std::optional<int32_t> space = tokenizer.TokenToId("\u0120");  // "Ġ", the byte ' '
  ASSERT_TRUE(space.has_value());
  EXPECT_EQ(tokenizer.IdToToken(*space), "\u0120");
  EXPECT_EQ(tokenizer.Decode({*space}), " ");
  EXPECT_EQ(tokenizer.IdToToken(-1), "");
  EXPECT_EQ(tokenizer.IdToToken(512), "");
}

TEST(Tokenizer, DecodesUnknownIdsAndBrokenUtf8AsReplacementCharacters) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<int32_t> a = EncodeOk(tokenizer, "a", SpecialTokens::kSkip);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(tokenizer.Decode({a[0], -5, 512, 1 << 30, a[0]}), "a\uFFFD\uFFFD\uFFFDa");
  // The first byte of an emoji alone is a truncated character.
  const std::vector<int32_t> emoji = EncodeOk(tokenizer, "\U0001F642", SpecialTokens::kSkip);
  ASSERT_GT(emoji.size(), 1u);
  EXPECT_EQ(tokenizer.Decode({emoji[0], a[0]}), "\uFFFDa");
}

TEST(StreamingDecoder, ConcatenatedChunksEqualTheGoldenText) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  for (const GoldenCase& c : LoadGolden()) {
    StreamingDecoder decoder(tokenizer, SpecialTokens::kSkip);
    std::string text;
    for (const int32_t id : c.ids) text += decoder.Push(id);
    text += decoder.Finish();
    EXPECT_EQ(text, c.text);
  }
}

TEST(StreamingDecoder, HoldsBackACharacterSplitOverTokens) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<int32_t> ids = EncodeOk(tokenizer, "ok \U0001F642!", SpecialTokens::kSkip);
  const std::vector<int32_t> emoji = EncodeOk(tokenizer, "\U0001F642", SpecialTokens::kSkip);
  ASSERT_GT(emoji.size(), 1u) << "the test needs an emoji that takes several tokens";

  StreamingDecoder decoder(tokenizer);
  std::vector<std::string> chunks;
  for (const int32_t id : ids) chunks.push_back(decoder.Push(id));
  chunks.push_back(decoder.Finish());
  std::string text;
  for (const std::string& chunk : chunks) {
    text += chunk;
    EXPECT_EQ(chunk.find("\uFFFD"), std::string::npos) << "a chunk holds a broken character";
  }
  EXPECT_EQ(text, "ok \U0001F642!");
  // The emoji's first tokens give nothing; one chunk holds the whole emoji.
  EXPECT_GE(std::count(chunks.begin(), chunks.end(), ""), 1);
  EXPECT_EQ(std::count_if(chunks.begin(), chunks.end(),
                          [](const std::string& chunk) { return chunk.find("\U0001F642") != std::string::npos; }),
            1);
}

TEST(StreamingDecoder, EqualsDecodeOnRandomIdSequences) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  std::mt19937 random(42);
  // Ids past the vocabulary included: they must stream as they decode.
  std::uniform_int_distribution<int32_t> id_distribution(-2, tokenizer.vocab_size() + 1);
  for (int round = 0; round < 500; ++round) {
    std::vector<int32_t> ids(round % 40);
    for (int32_t& id : ids) id = id_distribution(random);
    for (const SpecialTokens special : {SpecialTokens::kInclude, SpecialTokens::kSkip}) {
      StreamingDecoder decoder(tokenizer, special);
      std::string text;
      for (const int32_t id : ids) text += decoder.Push(id);
      text += decoder.Finish();
      ASSERT_EQ(text, tokenizer.Decode(ids, special)) << "round " << round;
    }
  }
}

TEST(Tokenizer, RoundTripsRandomUnicodeText) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  std::mt19937 random(7);
  const std::vector<std::string> alphabet = {"a",      "Z",          "7",      " ",      "  ",
                                             "\n",     "\t",         "'s",     "!",      "\u00e9",
                                             "\u6771", "\U0001F642", "\u0301", "\u00a0", "<|end_of_text|>",
                                             "_",      "\r\n"};
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    for (int i = 0; i < round % 60; ++i) text += alphabet[pick(random)];
    EXPECT_EQ(tokenizer.Decode(EncodeOk(tokenizer, text), SpecialTokens::kInclude), "<|begin_of_text|>" + text);
  }
}

TEST(StreamingDecoder, FinishFlushesATruncatedCharacterAsReplacement) {
  const Tokenizer tokenizer = LoadTestTokenizer();
  const std::vector<int32_t> emoji = EncodeOk(tokenizer, "\U0001F642", SpecialTokens::kSkip);
  ASSERT_GT(emoji.size(), 1u);
  StreamingDecoder decoder(tokenizer);
  EXPECT_EQ(decoder.Push(emoji[0]), "");
  EXPECT_EQ(decoder.Finish(), "\uFFFD");
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(TokenizerLoad, LoadsEveryTinyModelTokenizer) {
  for (const char* model : {"llama3-tiny", "qwen2-tiny", "mistral-tiny"}) {
    absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromFile(kDataDir / "models" / model / "tokenizer.json");
    EXPECT_TRUE(tokenizer.ok()) << model << ": " << tokenizer.status();
  }
}

TEST(TokenizerLoad, ReportsAMissingFile) {
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromFile(kDataDir / "no-such-dir" / "tokenizer.json");
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("no-such-dir/tokenizer.json"));
}

TEST(TokenizerLoad, RejectsMalformedJson) {
  const absl::Status status = LoadError("{\"model\": ");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("bad/tokenizer.json: invalid JSON"));
  EXPECT_THAT(LoadError("[1, 2]").message(), HasSubstr("bad/tokenizer.json: must hold a JSON object"));
}

TEST(TokenizerLoad, RejectsAMissingModel) {
  nlohmann::json config = nlohmann::json::parse(ReadFile(kTokenizerJson));
  config.erase("model");
  EXPECT_THAT(LoadError(config.dump()).message(), HasSubstr("bad/tokenizer.json: model is missing"));
}

TEST(TokenizerLoad, RejectsAnUnknownModelType) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/model/type"_json_pointer, "WordPiece")).message(),
              HasSubstr("bad/tokenizer.json: model.type is 'WordPiece', which Strata does not support"));
}

TEST(TokenizerLoad, RejectsAMergeNamingATokenNotInTheVocab) {
  const absl::Status status = LoadError(TestTokenizerJsonWith("/model/merges/3"_json_pointer, {"zz", "q"}));
  EXPECT_THAT(status.message(),
              HasSubstr("bad/tokenizer.json: model.merges[3] names 'zz', which is not in model.vocab"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/model/merges/0"_json_pointer, "a b c")).message(),
              HasSubstr("model.merges[0] is 'a b c', not two tokens"));
}

TEST(TokenizerLoad, RejectsATemplateTokenIdThatNamesNoToken) {
  const absl::Status status =
      LoadError(TestTokenizerJsonWith("/post_processor/special_tokens/<|begin_of_text|>/ids/0"_json_pointer, 9999));
  EXPECT_THAT(status.message(), HasSubstr("bad/tokenizer.json: post_processor adds token id 9999, which neither "
                                          "model.vocab nor added_tokens defines"));
}

TEST(TokenizerLoad, RejectsTruncationAndPadding) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/truncation"_json_pointer, {{"max_length", 4}})).message(),
              HasSubstr("bad/tokenizer.json: truncation is set, which Strata does not support"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/padding"_json_pointer, {{"length", 8}})).message(),
              HasSubstr("bad/tokenizer.json: padding is set, which Strata does not support"));
}

TEST(TokenizerLoad, ErrorsQuotingTheFileStayOnOneLine) {
  const absl::Status status = LoadError(TestTokenizerJsonWith("/model/merges/3"_json_pointer, "a\nb c"));
  EXPECT_THAT(status.message(), HasSubstr("model.merges[3] names 'a\\nb', which is not in model.vocab"));
  EXPECT_EQ(std::string(status.message()).find('\n'), std::string::npos);
}

TEST(TokenizerLoad, RejectsAnAbsurdTokenId) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/added_tokens/0/id"_json_pointer, 16777215)).message(),
              HasSubstr("uses token id 16777215; Strata supports ids below 2097152"));
}

TEST(TokenizerLoad, RejectsABadRegex) {
  const absl::Status status =
      LoadError(TestTokenizerJsonWith("/pre_tokenizer/pretokenizers/0/pattern/Regex"_json_pointer, "(a|b"));
  EXPECT_THAT(status.message(), HasSubstr("bad/tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex "
                                          "does not compile at offset 4"));
}

TEST(TokenizerLoad, RejectsUnsupportedComponents) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/normalizer"_json_pointer, {{"type", "Lowercase"}})).message(),
              HasSubstr("bad/tokenizer.json: normalizer has type 'Lowercase', which Strata does not support"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/decoder"_json_pointer, {{"type", "WordPiece"}})).message(),
              HasSubstr("bad/tokenizer.json: decoder has type 'WordPiece', which Strata does not support"));
  EXPECT_THAT(
      LoadError(TestTokenizerJsonWith("/pre_tokenizer/pretokenizers/0/behavior"_json_pointer, "Removed")).message(),
      HasSubstr("pre_tokenizer.pretokenizers[0].behavior is 'Removed', which Strata does not support"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/pre_tokenizer"_json_pointer, {{"type", "Whitespace"}})).message(),
              HasSubstr("pre_tokenizer has type 'Whitespace', which Strata does not support"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/model/byte_fallback"_json_pointer, true)).message(),
              HasSubstr("model.byte_fallback is true, which Strata does not support"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/post_processor"_json_pointer, {{"type", "BertProcessing"}})).message(),
              HasSubstr("post_processor has type 'BertProcessing', which Strata does not support"));
}

TEST(TokenizerLoad, RejectsFieldsOfTheWrongType) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/model/vocab/!"_json_pointer, -3)).message(),
              HasSubstr("bad/tokenizer.json: model.vocab.! must be a token id"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/added_tokens/0/special"_json_pointer, "yes")).message(),
              HasSubstr("added_tokens[0].special must be true or false"));
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/model/merges"_json_pointer, 7)).message(),
              HasSubstr("model.merges must be an array"));
}

TEST(TokenizerLoad, RejectsATemplateNamingAnUndefinedSpecialToken) {
  EXPECT_THAT(LoadError(TestTokenizerJsonWith("/post_processor/special_tokens"_json_pointer, nlohmann::json::object()))
                  .message(),
              HasSubstr("post_processor.single[0] names special token '<|begin_of_text|>', which special_tokens does "
                        "not define"));
}

TEST(TokenizerLoad, AcceptsMergesWrittenAsStringsAndSequencePostProcessor) {
  nlohmann::json config = nlohmann::json::parse(ReadFile(kTokenizerJson));
  for (nlohmann::json& merge : config["model"]["merges"]) {
    merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  }
  // As Llama 3.1 ships it.
  config["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       nlohmann::json::array(
           {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
            config["post_processor"]})}};
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson(config.dump(), "string-merges");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const GoldenCase& c : LoadGolden()) {
    EXPECT_EQ(EncodeOk(*tokenizer, c.text), c.ids) << "text: '" << c.text << "'";
  }
}

}  // namespace
}  // namespace strata::model
