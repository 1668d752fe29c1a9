#include "bench/cluster/burst.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

namespace strata::cluster_bench {

BurstResult RunBurst(const CompletionClient& client, const std::vector<BenchRequest>& requests,
                     const BurstOptions& options) {
  BurstResult burst;
  burst.results.resize(requests.size());
  if (requests.empty()) return burst;  // (std::clamp below needs 1 <= requests.size())
  std::atomic<size_t> next{0};
  const auto start = std::chrono::steady_clock::now();
  auto sender = [&] {
    for (size_t i; (i = next.fetch_add(1)) < requests.size();) {
      CompletionRequest request;
      request.model = options.model;
      request.prompt_ids = requests[i].prompt_ids;
      request.max_tokens = requests[i].max_tokens;
      request.stream = options.stream;
      request.disable_prefix_cache = options.disable_prefix_cache;
      burst.results[i] = client.Complete(request);
    }
  };
  std::vector<std::thread> threads;
  const size_t count = std::clamp<size_t>(static_cast<size_t>(std::max(options.concurrency, 1)), 1, requests.size());
  for (size_t t = 0; t < count; ++t) threads.emplace_back(sender);
  for (std::thread& thread : threads) thread.join();
  burst.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return burst;
}

}  // namespace strata::cluster_bench
