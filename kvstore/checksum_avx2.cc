// xxHash compiled into this file (XXH_INLINE_ALL: static, XXH_INLINE_-prefixed symbols) with -mavx2, so
// that XXH3 takes its AVX2 path; called only when the CPU has AVX2 (checksum.cc).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(__AVX2__)
#error "checksum_avx2.cc must be built with -mavx2"
#endif

namespace strata::kvstore {

uint64_t BlockChecksumAvx2(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace strata::kvstore

namespace strata::kvstore {

void* ChecksumStreamCreateAvx2() {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  return state;
}
void ChecksumStreamUpdateAvx2(void* state, const void* data, size_t bytes) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, bytes);
}
uint64_t ChecksumStreamDigestAvx2(const void* state) {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state));
}
void ChecksumStreamFreeAvx2(void* state) { XXH3_freeState(static_cast<XXH3_state_t*>(state)); }

}  // namespace strata::kvstore
