// CLI11 transforms that let every byte flag take a human size (`40GiB`, `512MiB`; common/byte_size.h).
#ifndef STRATA_COMMON_SIZE_FLAGS_H_
#define STRATA_COMMON_SIZE_FLAGS_H_

#include "CLI/CLI.hpp"

namespace strata {

// `->transform(ByteSizeFlag())`: the flag's text becomes its count of bytes before the option converts it
// (to any integer type); a bad size is a parse error naming the flag and the text.
CLI::Validator ByteSizeFlag();
// The same for a bytes-per-second flag (to a floating-point option): `10GB` is 1e10.
CLI::Validator ByteRateFlag();

}  // namespace strata

#endif  // STRATA_COMMON_SIZE_FLAGS_H_
