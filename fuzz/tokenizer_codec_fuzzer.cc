// Encode and Decode of arbitrary bytes with the test tokenizer (tests/data/tokenizer/tokenizer.json, a
// byte-level BPE with the Llama-3 split regex). Properties the tokenizer promises (model/tokenizer.h):
// Encode refuses invalid UTF-8 and otherwise gives in-vocabulary ids whose Decode is the text again (a
// byte-level BPE loses nothing); Decode of any ids never faults; streaming decode equals Decode.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "model/tokenizer.h"

namespace {

const strata::model::Tokenizer& TestTokenizer() {
  static const strata::model::Tokenizer* tokenizer = [] {
    auto loaded = strata::model::Tokenizer::FromFile(STRATA_TEST_DATA_DIR "/tokenizer/tokenizer.json");
    if (!loaded.ok()) {
      std::fprintf(stderr, "strata fuzz: %s\n", loaded.status().ToString().c_str());
      std::abort();
    }
    return new strata::model::Tokenizer(*std::move(loaded));
  }();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using strata::model::SpecialTokens;
  const strata::model::Tokenizer& tokenizer = TestTokenizer();
  strata::fuzz::InputReader input(data, size);
  const uint8_t mode = input.Byte().value_or(0);
  const SpecialTokens special = (mode & 1) ? SpecialTokens::kSkip : SpecialTokens::kInclude;
  std::string_view rest = input.Rest();

  if ((mode & 2) == 0) {
    // The bytes as text.
    auto ids = tokenizer.Encode(rest, special);
    if (!ids.ok()) return 0;
    for (int32_t id : *ids) STRATA_FUZZ_ASSERT(id >= 0 && id < tokenizer.vocab_size());
    auto plain = tokenizer.Encode(rest, SpecialTokens::kSkip);
    STRATA_FUZZ_ASSERT(plain.ok());
    STRATA_FUZZ_ASSERT(tokenizer.Decode(*plain, SpecialTokens::kInclude) == rest);
    return 0;
  }
  // The bytes as ids (little-endian int32), any value.
  std::vector<int32_t> ids(rest.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
  const std::string text = tokenizer.Decode(ids, special);
  strata::model::StreamingDecoder stream(tokenizer, special);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Push(id);
  streamed += stream.Finish();
  STRATA_FUZZ_ASSERT(streamed == text);
  return 0;
}
