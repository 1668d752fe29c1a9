// The worker's KV block MAC (worker/prefix/block_mac.h, AES-256-GMAC) against the kvstore's xxh3
// checksum (the baseline every block already pays) and HMAC-SHA256 (the obvious alternative), one core,
// over block payloads of 12 KiB (llama3-tiny), 256 KiB and 2 MiB (Llama-3-8B, 16 tokens, bf16).
//
//   build/bin/strata_block_mac_bench --benchmark_min_time=0.5
//
// bytes_per_second is the rate per core; the goal is >= 2 GB/s (docs/BENCHMARKS.md, "KV block MAC").
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kvstore/checksum.h"
#include "worker/prefix/block_mac.h"

namespace strata::worker {
namespace {

std::vector<std::byte> RandomPayload(size_t bytes) {
  std::vector<std::byte> payload(bytes);
  std::mt19937_64 rng(42);
  for (std::byte& b : payload) b = static_cast<std::byte>(rng());
  return payload;
}

BlockKey SomeKey() {
  BlockKey key;
  for (size_t i = 0; i < key.bytes.size(); ++i) key.bytes[i] = static_cast<uint8_t>(i * 7);
  return key;
}

void BM_Xxh3(benchmark::State& state) {
  const std::vector<std::byte> payload = RandomPayload(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(kvstore::BlockChecksum(payload.data(), payload.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_MacSeal(benchmark::State& state) {
  const std::vector<std::byte> payload = RandomPayload(static_cast<size_t>(state.range(0)));
  const BlockMac mac = BlockMac::Generate();
  std::vector<std::byte> trailer(kBlockMacBytes);
  for (auto _ : state) {
    mac.Seal(SomeKey(), payload, absl::MakeSpan(trailer));
    benchmark::DoNotOptimize(trailer.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_MacVerify(benchmark::State& state) {
  const std::vector<std::byte> payload = RandomPayload(static_cast<size_t>(state.range(0)));
  const BlockMac mac = BlockMac::Generate();
  std::vector<std::byte> trailer(kBlockMacBytes);
  mac.Seal(SomeKey(), payload, absl::MakeSpan(trailer));
  for (auto _ : state) {
    if (!mac.Verify(SomeKey(), payload, trailer)) state.SkipWithError("a sealed block failed to verify");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_HmacSha256(benchmark::State& state) {
  const std::vector<std::byte> payload = RandomPayload(static_cast<size_t>(state.range(0)));
  const std::vector<uint8_t> key(32, 7);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  for (auto _ : state) {
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(payload.data()),
         payload.size(), digest, &digest_bytes);
    benchmark::DoNotOptimize(digest);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

#define STRATA_BLOCK_SIZES ->Arg(12 << 10)->Arg(256 << 10)->Arg(2 << 20)
BENCHMARK(BM_Xxh3) STRATA_BLOCK_SIZES;
BENCHMARK(BM_MacSeal) STRATA_BLOCK_SIZES;
BENCHMARK(BM_MacVerify) STRATA_BLOCK_SIZES;
BENCHMARK(BM_HmacSha256) STRATA_BLOCK_SIZES;

}  // namespace
}  // namespace strata::worker

BENCHMARK_MAIN();
