// Block key scheme v1 is a public contract: these keys were computed by an independent implementation
// (Python's hashlib, following ARCHITECTURE.md to the letter). If one of them changes, every cache in
// the field is invalidated: bump kBlockKeySchemeVersion instead.
#include "common/block_key.h"

#include <numeric>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace strata {
namespace {

BlockKeyContext PinnedContext() {
  BlockKeyContext context;
  std::iota(context.model_fingerprint.begin(), context.model_fingerprint.end(), 0);  // bytes 0..31
  context.block_tokens = 4;
  context.kv_dtype = DType::kBF16;
  return context;
}

std::vector<std::string> Hexes(const std::vector<BlockKey>& keys) {
  std::vector<std::string> out;
  for (const BlockKey& key : keys) out.push_back(key.Hex());
  return out;
}

TEST(BlockKey, SchemeV1KeysArePinned) {
  std::vector<int32_t> tokens(10);
  std::iota(tokens.begin(), tokens.end(), 1000);
  EXPECT_EQ(RootKey(PinnedContext()).Hex(), "856ec53fa94c261f637302112a96d772");
  // 10 tokens in blocks of 4: two full blocks; the partial third gets no key.
  EXPECT_EQ(Hexes(ComputeBlockKeys(PinnedContext(), tokens)),
            (std::vector<std::string>{"41a70297071eb1919a7fd4d43f579827", "e09f2fdc1845a0d97ed59aa25474905a"}));
}

TEST(BlockKey, TenantSaltChangesEveryKey) {
  std::vector<int32_t> tokens(10);
  std::iota(tokens.begin(), tokens.end(), 1000);
  BlockKeyContext context = PinnedContext();
  context.tenant_salt = TenantSalt("acme");
  EXPECT_EQ(Hexes(ComputeBlockKeys(context, tokens)),
            (std::vector<std::string>{"14a1ee68ab57d199880c8c254063b7b4", "804c290a6549d70f516dcd806099c7b6"}));
  EXPECT_NE(TenantSalt("acme"), TenantSalt("acme", "narrower"));
  EXPECT_NE(TenantSalt("ac", "me"), TenantSalt("acme"));  // lengths are hashed: no concatenation clash
}

TEST(BlockKey, TokenIdsAreLittleEndian32BitWordsOfTheirTwosComplement) {
  EXPECT_EQ(Hexes(ComputeBlockKeys(PinnedContext(), std::vector<int32_t>{-1, 0, 2147483647, 7})),
            (std::vector<std::string>{"02d9eb84d9a737ec6dd0c22938188cf4"}));
}

TEST(BlockKey, KeyNamesTheWholePrefix) {
  std::vector<int32_t> a(12, 5), b(12, 5);
  b[1] = 6;  // differs in block 0 only
  const auto keys_a = ComputeBlockKeys(PinnedContext(), a);
  const auto keys_b = ComputeBlockKeys(PinnedContext(), b);
  ASSERT_EQ(keys_a.size(), 3u);
  for (size_t i = 0; i < keys_a.size(); ++i) EXPECT_NE(keys_a[i], keys_b[i]) << i;
  // Blocks 1 and 2 hold the same tokens in both, and in a, block 1 equals block 2: still distinct keys.
  EXPECT_NE(keys_a[1], keys_a[2]);
}

TEST(BlockKey, EveryRootInputMatters) {
  const BlockKey base = RootKey(PinnedContext());
  BlockKeyContext context = PinnedContext();
  context.block_tokens = 8;
  EXPECT_NE(RootKey(context), base);
  context = PinnedContext();
  context.kv_dtype = DType::kF32;
  EXPECT_NE(RootKey(context), base);
  context = PinnedContext();
  context.model_fingerprint[31] ^= 1;
  EXPECT_NE(RootKey(context), base);
}

TEST(BlockKey, ChainKeyExtendsAChainBlockByBlock) {
  std::vector<int32_t> tokens(8);
  std::iota(tokens.begin(), tokens.end(), 0);
  const auto keys = ComputeBlockKeys(PinnedContext(), tokens);
  const BlockKey first = ChainKey(RootKey(PinnedContext()), absl::MakeConstSpan(tokens).subspan(0, 4));
  EXPECT_EQ(first, keys[0]);
  EXPECT_EQ(ChainKey(first, absl::MakeConstSpan(tokens).subspan(4, 4)), keys[1]);
}

TEST(BlockKey, BytesAndHexRoundTrip) {
  const BlockKey key = RootKey(PinnedContext());
  EXPECT_EQ(*BlockKeyFromBytes(key.ToBytes()), key);
  EXPECT_EQ(*BlockKeyFromHex(key.Hex()), key);
  EXPECT_EQ(*BlockKeyFromHex("856EC53FA94C261F637302112A96D772"), key);
  EXPECT_EQ(BlockKeyFromBytes("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockKeyFromHex("zz6ec53fa94c261f637302112a96d772").status().code(), absl::StatusCode::kInvalidArgument);
  absl::flat_hash_set<BlockKey> set = {key, key};
  EXPECT_EQ(set.size(), 1u);
}

}  // namespace
}  // namespace strata
