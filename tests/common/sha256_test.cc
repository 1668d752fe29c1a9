#include "common/sha256.h"

#include "gtest/gtest.h"

namespace strata {
namespace {

// FIPS 180-2 test vectors.
TEST(Sha256, MatchesTheStandardVectors) {
  EXPECT_EQ(ToHex(Sha256Of("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ToHex(Sha256Of("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ToHex(Sha256Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, IncrementalUpdatesEqualOneShot) {
  Sha256 hasher;
  hasher.Update("abcdbcdecdefdefgefgh");
  hasher.Update("fghighijhijkijkljklmklmnlmnomnopnopq");
  EXPECT_EQ(hasher.Finish(), Sha256Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"));
}

TEST(Sha256, Le64AppendsEightLittleEndianBytes) {
  Sha256 hasher;
  hasher.UpdateLe64(0x0102030405060708ull);
  EXPECT_EQ(hasher.Finish(), Sha256Of(std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8)));
}

}  // namespace
}  // namespace strata
