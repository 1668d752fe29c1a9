#include "kvstore/checksum.h"

#include <xxhash.h>

namespace strata::kvstore {

#if defined(__x86_64__)
uint64_t BlockChecksumAvx2(const void* data, size_t bytes);  // checksum_avx2.cc, built with -mavx2

uint64_t BlockChecksum(const void* data, size_t bytes) {
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2 ? BlockChecksumAvx2(data, bytes) : XXH3_64bits(data, bytes);
}
#else
uint64_t BlockChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }
#endif

}  // namespace strata::kvstore
