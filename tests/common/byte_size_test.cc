#include "common/byte_size.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

TEST(ByteSize, BinaryUnitsArePowersOf1024AndDecimalUnitsPowersOf1000) {
  EXPECT_EQ(*ParseByteSize("40GiB"), 40ull << 30);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("512Mi"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("4KiB"), 4096u);
  EXPECT_EQ(*ParseByteSize("2TiB"), 2ull << 40);
  EXPECT_EQ(*ParseByteSize("40GB"), 40'000'000'000ull);
  EXPECT_EQ(*ParseByteSize("40G"), 40'000'000'000ull);
  EXPECT_EQ(*ParseByteSize("3kB"), 3000u);
  EXPECT_EQ(*ParseByteSize("1.5TB"), 1'500'000'000'000ull);
}

TEST(ByteSize, PlainNumbersFractionsCaseAndSpaces) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  EXPECT_EQ(*ParseByteSize("17179869184"), 17179869184ull);
  EXPECT_EQ(*ParseByteSize("100B"), 100u);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), 3ull << 29);
  EXPECT_EQ(*ParseByteSize("1.5 gib"), 3ull << 29);
  EXPECT_EQ(*ParseByteSize(" 2 MIB "), 2ull << 20);
  EXPECT_EQ(*ParseByteSize("2e9"), 2'000'000'000ull);
  EXPECT_EQ(*ParseByteSize("0.5"), 0u) << "a fraction of a byte is rounded down";
  EXPECT_EQ(*ParseByteSize("18446744073709549568"), 18446744073709549568ull);
}

TEST(ByteSize, RejectsWhatIsNotASizeNamingTheText) {
  for (const char* bad : {"", "GiB", "-1GiB", "+5", "40 GiBs", "40XB", "inf", "nan", "0x10", "1..2", "1e", "4 2"}) {
    absl::StatusOr<uint64_t> parsed = ParseByteSize(bad);
    ASSERT_FALSE(parsed.ok()) << "'" << bad << "' parsed as " << *parsed;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr(std::string("'") + bad + "'"));
  }
  EXPECT_THAT(ParseByteSize("40XB").status().message(), HasSubstr("unknown unit 'xb'"));
  EXPECT_THAT(ParseByteSize("20EiB").status().message(), HasSubstr("unknown unit"));
  EXPECT_THAT(ParseByteSize("16384PiB").status().message(), HasSubstr("more bytes than 2^64 - 1"));
}

TEST(ByteSize, RatesKeepFractions) {
  EXPECT_DOUBLE_EQ(*ParseByteRate("10GB"), 1e10);
  EXPECT_DOUBLE_EQ(*ParseByteRate("2.0e+9"), 2e9);
  EXPECT_DOUBLE_EQ(*ParseByteRate("0.5"), 0.5);
  EXPECT_FALSE(ParseByteRate("-1").ok());
}

TEST(ByteSize, FormatsInTheLargestBinaryUnit) {
  EXPECT_EQ(FormatBytes(100), "100 B");
  EXPECT_EQ(FormatBytes(1024), "1 KiB");
  EXPECT_EQ(FormatBytes(512ull << 20), "512 MiB");
  EXPECT_EQ(FormatBytes(3ull << 29), "1.5 GiB");
  EXPECT_EQ(FormatBytes(40ull << 30), "40 GiB");
}

}  // namespace
}  // namespace strata
