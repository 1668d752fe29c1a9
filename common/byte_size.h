// Byte counts as people write them: `40GiB`, `512MiB`, `1.5TB`, `4096`.
#ifndef STRATA_COMMON_BYTE_SIZE_H_
#define STRATA_COMMON_BYTE_SIZE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

// Parses a byte count: a non-negative number (decimals and exponents allowed: `1.5GiB`, `2e9`) and an
// optional unit, case-insensitive, spaces allowed between them. Binary units are powers of 1024
// (`KiB MiB GiB TiB PiB`, also `Ki Mi Gi Ti Pi` as Kubernetes writes them); decimal units are powers of 1000
// (`kB MB GB TB PB`, also `K M G T P`), as IEC and Kubernetes define them; `B` or nothing is bytes. A
// fraction of a byte is rounded down. InvalidArgument, naming the text, for anything else (a negative
// number, an unknown unit, more than 2^64 - 1 bytes).
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

// The same for a rate (`--network-bytes-per-s 10GB`): the unit's bytes per second, not rounded.
absl::StatusOr<double> ParseByteRate(std::string_view text);

// `bytes` in the largest binary unit that leaves at least 1 (`40 GiB`, `512 MiB`, `100 B`), with up to two
// decimals, for logs and messages.
std::string FormatBytes(uint64_t bytes);

}  // namespace strata

#endif  // STRATA_COMMON_BYTE_SIZE_H_
