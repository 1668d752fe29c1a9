// BlockMac: a pinned vector (computed independently with Python's `cryptography` AES-GCM), round trips,
// and every tampering — a payload byte, the key, the trailer, another worker's secret — rejected.
#include "worker/prefix/block_mac.h"

#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"

namespace strata::worker {
namespace {

std::vector<uint8_t> Secret(uint8_t first = 0) {
  std::vector<uint8_t> secret(48);
  std::iota(secret.begin(), secret.end(), first);
  return secret;
}

BlockKey Key() {
  BlockKey key;
  std::iota(key.bytes.begin(), key.bytes.end(), uint8_t{0});
  return key;
}

std::vector<std::byte> Payload(size_t bytes = 64) {
  std::vector<std::byte> payload(bytes);
  for (size_t i = 0; i < bytes; ++i) payload[i] = static_cast<std::byte>((i * 3) & 0xff);
  return payload;
}

std::vector<std::byte> Sealed(const BlockMac& mac, const BlockKey& key, const std::vector<std::byte>& payload) {
  std::vector<std::byte> trailer(kBlockMacBytes);
  mac.Seal(key, payload, absl::MakeSpan(trailer));
  return trailer;
}

TEST(BlockMac, MatchesTheKnownVector) {
  // secret 00..2f, block key 00..0f, payload (3i mod 256) for i < 64, IV a0..af:
  //   AESGCM(SHA256("strata-kv-mac-key-v1" ‖ secret)).encrypt(IV, b"", "strata-kv-mac-v1" ‖ key ‖ payload)
  auto mac = BlockMac::FromSecret(Secret());
  ASSERT_TRUE(mac.ok()) << mac.status();
  const std::string trailer_bytes = absl::HexStringToBytes(
      "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
      "cb0c81d35e756e455626c2d03ea3c678");
  const auto trailer = absl::MakeConstSpan(reinterpret_cast<const std::byte*>(trailer_bytes.data()), trailer_bytes.size());
  EXPECT_TRUE(mac->Verify(Key(), Payload(), trailer));
}

TEST(BlockMac, SealedBlocksVerifyWithFreshIvs) {
  auto mac = BlockMac::FromSecret(Secret());
  ASSERT_TRUE(mac.ok());
  const std::vector<std::byte> payload = Payload(12288);
  const std::vector<std::byte> a = Sealed(*mac, Key(), payload);
  const std::vector<std::byte> b = Sealed(*mac, Key(), payload);
  EXPECT_TRUE(mac->Verify(Key(), payload, a));
  EXPECT_TRUE(mac->Verify(Key(), payload, b));
  EXPECT_NE(a, b);  // a random IV each time
  // A copy holds the same key; an empty payload is a block like any other.
  const BlockMac copy = *mac;
  EXPECT_TRUE(copy.Verify(Key(), payload, a));
  EXPECT_TRUE(copy.Verify(Key(), {}, Sealed(*mac, Key(), {})));
}

TEST(BlockMac, RejectsATamperedPayloadKeyOrTrailer) {
  auto mac = BlockMac::FromSecret(Secret());
  ASSERT_TRUE(mac.ok());
  const std::vector<std::byte> payload = Payload(12288);
  const std::vector<std::byte> trailer = Sealed(*mac, Key(), payload);
  for (size_t at : {size_t{0}, size_t{5000}, payload.size() - 1}) {
    std::vector<std::byte> flipped = payload;
    flipped[at] ^= std::byte{1};
    EXPECT_FALSE(mac->Verify(Key(), flipped, trailer)) << "payload byte " << at;
  }
  std::vector<std::byte> shorter(payload.begin(), payload.end() - 1);
  EXPECT_FALSE(mac->Verify(Key(), shorter, trailer));
  BlockKey other = Key();
  other.bytes[15] ^= 1;
  EXPECT_FALSE(mac->Verify(other, payload, trailer));
  for (size_t at : {size_t{0}, size_t{16}, kBlockMacBytes - 1}) {  // the IV, the tag
    std::vector<std::byte> bad = trailer;
    bad[at] ^= std::byte{0x80};
    EXPECT_FALSE(mac->Verify(Key(), payload, bad)) << "trailer byte " << at;
  }
  EXPECT_FALSE(mac->Verify(Key(), payload, absl::MakeConstSpan(trailer).subspan(1)));
  EXPECT_FALSE(mac->Verify(Key(), payload, std::vector<std::byte>(kBlockMacBytes)));
}

TEST(BlockMac, AnotherSecretsBlocksDoNotVerify) {
  auto mine = BlockMac::FromSecret(Secret(0));
  auto theirs = BlockMac::FromSecret(Secret(1));
  ASSERT_TRUE(mine.ok() && theirs.ok());
  const std::vector<std::byte> payload = Payload();
  EXPECT_FALSE(mine->Verify(Key(), payload, Sealed(*theirs, Key(), payload)));
  EXPECT_FALSE(BlockMac::Generate().Verify(Key(), payload, Sealed(*mine, Key(), payload)));
}

TEST(BlockMac, KeyFileIsTrimmedAndMustHoldEnoughSecret) {
  const strata::testing::ScratchDir dir = strata::testing::MakeTempDir("block-mac-test");
  const std::filesystem::path good = dir.path() / "good", short_file = dir.path() / "short";
  const std::vector<uint8_t> secret = Secret(0x30);  // printable: '0'..'_'
  std::ofstream(good) << std::string(secret.begin(), secret.end()) << "\n";
  std::ofstream(short_file) << "0123456789abcdef0123456789abcde\n";  // 31 bytes once trimmed
  auto from_file = BlockMac::FromFile(good);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  auto from_secret = BlockMac::FromSecret(secret);
  ASSERT_TRUE(from_secret.ok());
  const std::vector<std::byte> payload = Payload();
  EXPECT_TRUE(from_file->Verify(Key(), payload, Sealed(*from_secret, Key(), payload)));

  const absl::Status too_short = BlockMac::FromFile(short_file).status();
  EXPECT_TRUE(absl::IsInvalidArgument(too_short)) << too_short;
  EXPECT_NE(too_short.message().find(short_file.string()), std::string::npos) << too_short;
  EXPECT_NE(too_short.message().find("31 bytes"), std::string::npos) << too_short;
  const absl::Status missing = BlockMac::FromFile(dir.path() / "absent").status();
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
}

}  // namespace
}  // namespace strata::worker
