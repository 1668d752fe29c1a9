// tokenizer.json of arbitrary bytes (model/tokenizer.h): FromJson either refuses it or gives a
// tokenizer that encodes and decodes text without faulting.
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using strata::model::SpecialTokens;
  auto tokenizer = strata::model::Tokenizer::FromJson(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
  if (!tokenizer.ok()) return 0;
  for (std::string_view text : {"", "Hello world, it's 2025!\n  \tcafé 🦊", "<|end_of_text|>x"}) {
    for (SpecialTokens special : {SpecialTokens::kInclude, SpecialTokens::kSkip}) {
      auto ids = tokenizer->Encode(text, special);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) STRATA_FUZZ_ASSERT(id >= 0 && id < tokenizer->vocab_size());
      (void)tokenizer->Decode(*ids, special);
    }
  }
  const int32_t vocab = std::min(tokenizer->vocab_size(), 4096);
  std::vector<int32_t> all(static_cast<size_t>(vocab) + 2);
  for (int32_t i = 0; i < vocab; ++i) all[i] = i;
  all[vocab] = -1;
  all[vocab + 1] = tokenizer->vocab_size();
  (void)tokenizer->Decode(all, SpecialTokens::kInclude);
  for (int32_t i = 0; i < vocab; ++i) {
    std::string_view token = tokenizer->IdToToken(i);
    if (!token.empty()) (void)tokenizer->TokenToId(token);
  }
  return 0;
}
