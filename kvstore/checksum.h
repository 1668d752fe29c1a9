// Payload checksums: xxh3-64, computed by the writer, checked at commit and on every SSD read.
#ifndef STRATA_KVSTORE_CHECKSUM_H_
#define STRATA_KVSTORE_CHECKSUM_H_

#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace strata::kvstore {

inline uint64_t BlockChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_CHECKSUM_H_
