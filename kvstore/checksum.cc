#include "kvstore/checksum.h"

#include <xxhash.h>

namespace strata::kvstore {

#if defined(__x86_64__)
// checksum_avx2.cc, built with -mavx2
uint64_t BlockChecksumAvx2(const void* data, size_t bytes);
void* ChecksumStreamCreateAvx2();
void ChecksumStreamUpdateAvx2(void* state, const void* data, size_t bytes);
uint64_t ChecksumStreamDigestAvx2(const void* state);
void ChecksumStreamFreeAvx2(void* state);

namespace {
bool Avx2() {
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2;
}
}  // namespace

uint64_t BlockChecksum(const void* data, size_t bytes) {
  return Avx2() ? BlockChecksumAvx2(data, bytes) : XXH3_64bits(data, bytes);
}
#else
namespace {
bool Avx2() { return false; }
void* ChecksumStreamCreateAvx2() { return nullptr; }
void ChecksumStreamUpdateAvx2(void*, const void*, size_t) {}
uint64_t ChecksumStreamDigestAvx2(const void*) { return 0; }
void ChecksumStreamFreeAvx2(void*) {}
}  // namespace

uint64_t BlockChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }
#endif

ChecksumStream::ChecksumStream() {
  if (Avx2()) {
    state_ = ChecksumStreamCreateAvx2();
  } else {
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    state_ = state;
  }
}

ChecksumStream::~ChecksumStream() {
  if (Avx2()) {
    ChecksumStreamFreeAvx2(state_);
  } else {
    XXH3_freeState(static_cast<XXH3_state_t*>(state_));
  }
}

void ChecksumStream::Update(const void* data, size_t bytes) {
  if (Avx2()) {
    ChecksumStreamUpdateAvx2(state_, data, bytes);
  } else {
    XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, bytes);
  }
}

uint64_t ChecksumStream::Digest() const {
  return Avx2() ? ChecksumStreamDigestAvx2(state_) : XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

}  // namespace strata::kvstore
