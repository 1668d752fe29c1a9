// Payload checksums: xxh3-64, computed by the writer, checked at commit and on every SSD read.
#ifndef STRATA_KVSTORE_CHECKSUM_H_
#define STRATA_KVSTORE_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace strata::kvstore {

// XXH3_64bits (seed 0). Where the CPU has AVX2 this runs xxHash's AVX2 code (~25 GB/s on the dev VM);
// Debian's libxxhash is built for baseline x86-64 (SSE2, ~11 GB/s). Both give the same value.
uint64_t BlockChecksum(const void* data, size_t bytes);

// The same value, computed over consecutive pieces.
class ChecksumStream {
 public:
  ChecksumStream();
  ~ChecksumStream();
  ChecksumStream(const ChecksumStream&) = delete;
  ChecksumStream& operator=(const ChecksumStream&) = delete;
  void Update(const void* data, size_t bytes);
  uint64_t Digest() const;

 private:
  void* state_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_CHECKSUM_H_
