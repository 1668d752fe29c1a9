// strata-worker as a process on loopback gRPC: batching gives the ids of running each request alone,
// streams interleave, cancel frees the slot, prefix reuse from tiers G and H and from a kvstore (a second
// worker process), recompute when the kvstore is down, refused requests, scheduler registration and KV
// events. Tiny models from tests/data/models, blocks of 16 tokens.
#include <signal.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/block_key.h"
#include "gtest/gtest.h"
#include "tests/kvstore/daemon_process.h"
#include "tests/scheduler/grpc_testing.h"
#include "tests/worker/service/worker_testing.h"

namespace strata::worker::testing {
namespace {

using strata::testing::WaitFor;

// Bytes of a 16-token KV block of llama3-tiny (3 layers, K and V, 2 KV heads of 16, float32): what
// --kv-pool-bytes counts in.
constexpr int kTinyBlockBytes = 2 * 3 * 2 * 16 * 16 * 4;

// Every request at once, one thread each; the results in request order.
std::vector<StreamResult> GenerateConcurrently(proto::Worker::Stub& stub,
                                               const std::vector<proto::GenerateRequest>& requests) {
  std::vector<StreamResult> results(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(stub, requests[i]); });
  }
  for (auto& t : threads) t.join();
  return results;
}

std::unique_ptr<WorkerProcess> StartWorker(const std::string& model, std::vector<std::string> args = {}) {
  auto worker = WorkerProcess::Start(ModelDir(model), std::move(args));
  EXPECT_TRUE(worker.ok()) << worker.status();
  return worker.ok() ? *std::move(worker) : nullptr;
}

class BatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchingTest, ConcurrentRequestsGiveTheIdsOfEachRunAlone) {
  const std::string model = GetParam();
  // Small chunks and budget so that prefills and decodes of different requests share steps.
  auto worker = StartWorker(model, {"--prefill-chunk-tokens", "24", "--step-token-budget", "40"});
  ASSERT_NE(worker, nullptr);
  std::vector<proto::GenerateRequest> requests;
  for (int i = 0; i < 5; ++i) requests.push_back(GreedyRequest(Prompt(20 + 37 * i, i), 12 + 3 * i, i % 2 == 0));
  const std::vector<StreamResult> results = GenerateConcurrently(worker->stub(), requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].ids, GenerateAlone(ModelDir(model), requests[i])) << "request " << i;
    ASSERT_TRUE(results[i].last().finished());
    EXPECT_EQ(results[i].last().completion_tokens(), results[i].ids.size());
    EXPECT_EQ(results[i].last().prefix().prompt_tokens(), requests[i].prompt_ids_size());
  }
  // Some step ran more than one sequence.
  EXPECT_GT(worker->Metric("strata_worker_batch_requests_count"), 0);
  EXPECT_LT(worker->Metric("strata_worker_batch_requests_bucket{le=\"1\"}"),
            worker->Metric("strata_worker_batch_requests_count"));
}

INSTANTIATE_TEST_SUITE_P(TinyModels, BatchingTest, ::testing::Values("llama3-tiny", "qwen2-tiny"));

TEST(WorkerProcess, LongPromptIsPrefilledBetweenDecodeStepsOfARunningStream) {
  auto worker = StartWorker("llama3-tiny", {"--prefill-chunk-tokens", "16", "--step-token-budget", "17"});
  ASSERT_NE(worker, nullptr);
  absl::Mutex mutex;
  int a_tokens = 0;
  int a_tokens_when_b_started = -1, a_tokens_at_b_first = -1;
  std::atomic<bool> a_streaming{false};
  std::jthread a([&] {  // joined on a failed ASSERT too
    Generate(worker->stub(), GreedyRequest(Prompt(8, 1), 400, true), [&](const proto::GenerateResponse& r, auto&) {
      absl::MutexLock lock(&mutex);
      a_tokens += r.token_ids_size();
      a_streaming = true;
    });
  });
  ASSERT_TRUE(WaitFor([&] { return a_streaming.load(); }, std::chrono::seconds(30)));
  {
    absl::MutexLock lock(&mutex);
    a_tokens_when_b_started = a_tokens;
  }
  // 320 prompt tokens in chunks of 16: 20 steps of prefill, each also one decode step of A.
  const StreamResult b =
      Generate(worker->stub(), GreedyRequest(Prompt(320, 2), 1, true), [&](const proto::GenerateResponse&, auto&) {
        absl::MutexLock lock(&mutex);
        if (a_tokens_at_b_first < 0) a_tokens_at_b_first = a_tokens;
      });
  a.join();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  // Without chunked prefill A would get at most a token or two while B's prompt runs.
  EXPECT_GE(a_tokens_at_b_first - a_tokens_when_b_started, 10)
      << "A had " << a_tokens_when_b_started << " tokens when B was sent and " << a_tokens_at_b_first
      << " when B's first token arrived";
}

TEST(WorkerProcess, DecodesThatFillTheStepBudgetDoNotStarveANewPrompt) {
  // Two decoding requests use the whole budget of 2 tokens a step; the third request's prompt is still
  // prefilled (a chunk a step) while they run.
  auto worker = StartWorker("llama3-tiny", {"--step-token-budget", "2", "--prefill-chunk-tokens", "16"});
  ASSERT_NE(worker, nullptr);
  std::atomic<bool> c_done{false};
  std::atomic<int> streaming{0};
  std::vector<StreamResult> long_results(2);
  std::vector<std::jthread> long_runs;  // joined on a failed ASSERT too (std::thread would terminate)
  for (int i = 0; i < 2; ++i) {
    long_runs.emplace_back([&, i] {
      bool counted = false;
      long_results[i] = Generate(worker->stub(), GreedyRequest(Prompt(8, 20 + i), 8000, true),
                                 [&](const proto::GenerateResponse&, grpc::ClientContext& context) {
                                   if (!counted) streaming += 1;
                                   counted = true;
                                   if (c_done) context.TryCancel();
                                 });
    });
  }
  ASSERT_TRUE(WaitFor([&] { return streaming.load() == 2; }, std::chrono::seconds(30)));
  const StreamResult c = Generate(worker->stub(), GreedyRequest(Prompt(40, 22), 4, true));
  c_done = true;
  for (auto& t : long_runs) t.join();
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(c.ids.size(), 4u);
  // The long requests were still running when the new one finished (they were cancelled after it).
  for (const StreamResult& r : long_results) EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST(WorkerProcess, CancelledRequestLeavesTheBatchAndFreesItsSlot) {
  auto worker = StartWorker("llama3-tiny", {"--max-running-requests", "1"});
  ASSERT_NE(worker, nullptr);
  // A would run for 8000 tokens; it is cancelled after its first message.
  const StreamResult a = Generate(worker->stub(), GreedyRequest(Prompt(10, 3), 8000, true),
                                  [](const proto::GenerateResponse&, grpc::ClientContext& context) {
                                    context.TryCancel();
                                  });
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor(
      [&] {
        return worker->Metric("strata_worker_requests_total{outcome=\"cancelled\",model_name=\"llama3-tiny\"}") == 1;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(worker->Metric("strata_worker_running_requests"), 0);
  // The only slot is free again: B runs now (with A still running it would wait for 8000 tokens).
  const StreamResult b =
      Generate(worker->stub(), GreedyRequest(Prompt(10, 4), 4, true), nullptr, std::chrono::seconds(20));
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(b.ids.size(), 4u);
}

TEST(WorkerProcess, FullQueueIsResourceExhausted) {
  auto worker = StartWorker("llama3-tiny", {"--max-running-requests", "1", "--max-queued-requests", "0"});
  ASSERT_NE(worker, nullptr);
  const StreamResult r = Generate(worker->stub(), GreedyRequest(Prompt(10, 3), 4, true));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("queue is full"), std::string::npos) << r.status.error_message();
}

TEST(WorkerProcess, ServesWhileTheSchedulerIsUnreachable) {
  // Nothing listens on port 1: registration fails and is retried in the background.
  auto worker = StartWorker("llama3-tiny", {"--scheduler", "127.0.0.1:1"});
  ASSERT_NE(worker, nullptr);
  const proto::GenerateRequest request = GreedyRequest(Prompt(40, 3), 6);
  const StreamResult r = Generate(worker->stub(), request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, GenerateAlone(ModelDir("llama3-tiny"), request));
  EXPECT_EQ(worker->Metric("strata_holder_agent_connected"), 0);
}

TEST(WorkerProcess, SharedPrefixIsAttachedFromTierG) {
  auto worker = StartWorker("llama3-tiny");
  ASSERT_NE(worker, nullptr);
  const std::vector<int32_t> first = Prompt(100, 5);
  std::vector<int32_t> second(first.begin(), first.begin() + 83);  // 5 full blocks shared
  const std::vector<int32_t> tail = Prompt(40, 6);
  second.insert(second.end(), tail.begin(), tail.end());

  const StreamResult cold = Generate(worker->stub(), GreedyRequest(first, 8));
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  EXPECT_EQ(cold.last().prefix().cached_tokens(), 0u);
  EXPECT_EQ(cold.last().prefix().prefill_tokens(), 100u);
  EXPECT_EQ(worker->Metric("strata_worker_gpu_cache_blocks"), 6);  // 100 tokens: 6 full blocks stay in HBM
  // Nothing runs now: the pool's used blocks are the cached ones (published after the step that finished).
  auto used_blocks = [&] {
    return worker->Metric("strata_worker_kv_pool_usage") * worker->Metric("strata_worker_kv_pool_blocks");
  };
  EXPECT_TRUE(WaitFor([&] { return used_blocks() > 5.5; }, std::chrono::seconds(5)));
  EXPECT_NEAR(used_blocks(), 6, 1e-6);
  EXPECT_GT(worker->Metric("strata_worker_kv_pool_blocks"), 6);

  const proto::GenerateRequest request = GreedyRequest(second, 10);
  const StreamResult warm = Generate(worker->stub(), request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  const proto::PrefixUsage& prefix = warm.last().prefix();
  EXPECT_EQ(prefix.cached_tokens_gpu(), 80u);
  EXPECT_EQ(prefix.cached_tokens(), 80u);
  EXPECT_EQ(prefix.cached_tokens_host(), 0u);
  EXPECT_EQ(prefix.prefill_tokens(), 123u - 80u);
  EXPECT_EQ(warm.ids, GenerateAlone(ModelDir("llama3-tiny"), request));

  // The same prompt again: every full block but the one holding the last token is reused.
  const StreamResult again = Generate(worker->stub(), GreedyRequest(first, 8));
  EXPECT_EQ(again.last().prefix().cached_tokens_gpu(), 96u);
  EXPECT_EQ(again.ids, cold.ids);
  EXPECT_EQ(worker->Metric("strata_worker_cached_tokens_total{tier=\"gpu\",model_name=\"llama3-tiny\"}"), 176);

  // With the prefix cache off nothing is read (nor written).
  proto::GenerateRequest uncached = GreedyRequest(first, 8);
  uncached.set_disable_prefix_cache(true);
  const StreamResult off = Generate(worker->stub(), uncached);
  EXPECT_EQ(off.last().prefix().cached_tokens(), 0u);
  EXPECT_EQ(off.ids, cold.ids);

  // Another tenant shares nothing.
  proto::GenerateRequest other = GreedyRequest(first, 8);
  other.set_tenant("tenant-b");
  const StreamResult isolated = Generate(worker->stub(), other);
  EXPECT_EQ(isolated.last().prefix().cached_tokens(), 0u);
  EXPECT_EQ(isolated.ids, cold.ids);
}

TEST(WorkerProcess, BlocksTierGLetGoAreReadFromTheHostCache) {
  // A pool of 12 blocks.
  auto worker = StartWorker("llama3-tiny", {"--kv-pool-bytes", std::to_string(12 * kTinyBlockBytes)});
  ASSERT_NE(worker, nullptr);
  const std::vector<int32_t> first = Prompt(100, 5);
  const StreamResult cold = Generate(worker->stub(), GreedyRequest(first, 8));
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  // An unrelated request needs the whole pool: tier G gives up every block it kept.
  const StreamResult big = Generate(worker->stub(), GreedyRequest(Prompt(180, 9), 12));
  ASSERT_TRUE(big.status.ok()) << big.status.error_message();
  EXPECT_EQ(worker->Metric("strata_worker_gpu_cache_blocks"), 11);  // now the big request's 11 full blocks

  std::vector<int32_t> second(first.begin(), first.begin() + 83);
  const std::vector<int32_t> tail = Prompt(40, 6);
  second.insert(second.end(), tail.begin(), tail.end());
  const proto::GenerateRequest request = GreedyRequest(second, 10);
  const StreamResult warm = Generate(worker->stub(), request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.last().prefix().cached_tokens_gpu(), 0u);
  EXPECT_EQ(warm.last().prefix().cached_tokens_host(), 80u);
  EXPECT_EQ(warm.ids, GenerateAlone(ModelDir("llama3-tiny"), request));
  // KV usage of tier H: the fraction of --host-cache-bytes (1 GiB by default) its blocks take.
  const double host_bytes = worker->Metric("strata_worker_host_cache_bytes");
  EXPECT_GT(host_bytes, 0);
  EXPECT_NEAR(worker->Metric("strata_worker_host_cache_usage") * (1 << 30), host_bytes, host_bytes * 1e-4);
  // A request larger than the whole pool is refused, and the worker serves on.
  const StreamResult refused = Generate(worker->stub(), GreedyRequest(Prompt(200, 3), 8));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
  const StreamResult after = Generate(worker->stub(), GreedyRequest(first, 8));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids, cold.ids);
}

TEST(WorkerProcess, RequestsThatDoNotFitThePoolTogetherWaitForItAndGiveTheirIds) {
  // 12 blocks of 16 tokens; each request takes 6 to 9 of them, so at most one or two run at once.
  auto worker = StartWorker("llama3-tiny", {"--kv-pool-bytes", std::to_string(12 * kTinyBlockBytes),
                                            "--prefill-chunk-tokens", "32"});
  ASSERT_NE(worker, nullptr);
  std::vector<proto::GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(GreedyRequest(Prompt(80 + 15 * i, 20 + i), 16, true));
  const std::vector<StreamResult> results = GenerateConcurrently(worker->stub(), requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << "request " << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].ids, GenerateAlone(ModelDir("llama3-tiny"), requests[i])) << "request " << i;
  }
  EXPECT_EQ(worker->Metric("strata_worker_requests_total{outcome=\"error\",model_name=\"llama3-tiny\"}"), 0);
}

TEST(WorkerProcess, TheNextTurnOfAConversationReusesTheGeneratedBlocks) {
  auto worker = StartWorker("llama3-tiny");
  ASSERT_NE(worker, nullptr);
  const std::vector<int32_t> prompt = Prompt(40, 12);
  const StreamResult first = Generate(worker->stub(), GreedyRequest(prompt, 30, true));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  // 40 + 30 tokens, 69 of them with KV: blocks 0-3; the prompt gave 0-1, the answer completed 2-3.
  std::vector<int32_t> next = prompt;
  next.insert(next.end(), first.ids.begin(), first.ids.end());
  const std::vector<int32_t> user = Prompt(10, 13);
  next.insert(next.end(), user.begin(), user.end());
  const proto::GenerateRequest request = GreedyRequest(next, 8);
  const StreamResult second = Generate(worker->stub(), request);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.last().prefix().cached_tokens_gpu(), 64u);
  EXPECT_EQ(second.last().prefix().prefill_tokens(), 80u - 64u);
  EXPECT_EQ(second.ids, GenerateAlone(ModelDir("llama3-tiny"), request));
}

// Blocks are spread over the kvstores by key; every one is read back from where it went.
class KvstoreTest : public ::testing::TestWithParam<int> {};

TEST_P(KvstoreTest, SecondWorkerFetchesThePrefixFromTheKvstores) {
  std::vector<std::unique_ptr<kvstore::testing::DaemonProcess>> kvstores;
  std::vector<std::string> args;
  for (int i = 0; i < GetParam(); ++i) {
    auto kvstore = kvstore::testing::DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
    ASSERT_TRUE(kvstore.ok()) << kvstore.status();
    args.insert(args.end(), {"--kvstore", (*kvstore)->address()});
    kvstores.push_back(*std::move(kvstore));
  }
  auto writer = StartWorker("llama3-tiny", args);
  ASSERT_NE(writer, nullptr);
  const proto::GenerateRequest request = GreedyRequest(Prompt(150, 7), 10);
  const StreamResult cold = Generate(writer->stub(), request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  EXPECT_EQ(cold.ids, GenerateAlone(ModelDir("llama3-tiny"), request));
  // 150 tokens: 9 full blocks, written behind the request's back.
  ASSERT_TRUE(WaitFor([&] { return writer->Metric("strata_worker_kvstore_written_blocks_total") == 9; },
                      std::chrono::seconds(20)))
      << writer->Metrics();

  auto reader = StartWorker("llama3-tiny", args);
  ASSERT_NE(reader, nullptr);
  const StreamResult warm = Generate(reader->stub(), request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.last().prefix().cached_tokens_kvstore(), 144u);
  EXPECT_EQ(warm.last().prefix().cached_tokens_host(), 0u);
  EXPECT_EQ(warm.last().prefix().prefill_tokens(), 6u);
  EXPECT_EQ(warm.ids, cold.ids);
  EXPECT_EQ(reader->Metric("strata_worker_kvstore_fetch_failures_total"), 0);
  EXPECT_EQ(reader->Metric("strata_worker_kvstore_fetch_seconds_count"), 1);
  // Kept in the reader's tier G (and promoted into its tier H) on use.
  const StreamResult again = Generate(reader->stub(), request);
  EXPECT_EQ(again.last().prefix().cached_tokens_gpu(), 144u);
  EXPECT_EQ(again.ids, cold.ids);
}

INSTANTIATE_TEST_SUITE_P(Daemons, KvstoreTest, ::testing::Values(1, 2));

TEST(WorkerProcess, KvstoreDownMeansRecomputeWithTheSameOutput) {
  auto kvstore = kvstore::testing::DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(kvstore.ok()) << kvstore.status();
  const std::vector<std::string> args = {"--kvstore", (*kvstore)->address()};
  auto writer = StartWorker("llama3-tiny", args);
  ASSERT_NE(writer, nullptr);
  const proto::GenerateRequest request = GreedyRequest(Prompt(70, 8), 10);
  const StreamResult cold = Generate(writer->stub(), request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_TRUE(WaitFor([&] { return writer->Metric("strata_worker_kvstore_written_blocks_total") == 4; },
                      std::chrono::seconds(20)));
  auto reader = StartWorker("llama3-tiny", args);
  ASSERT_NE(reader, nullptr);
  (*kvstore)->Kill();

  const StreamResult warm = Generate(reader->stub(), request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.ids, cold.ids);
  EXPECT_EQ(warm.last().prefix().cached_tokens(), 0u);
  EXPECT_EQ(warm.last().prefix().prefill_tokens(), 70u);
  EXPECT_GE(reader->Metric("strata_worker_kvstore_fetch_failures_total"), 1);
}

TEST(WorkerProcess, AKvstoreBlockOfTheWrongSizeIsNeverLoaded) {
  auto kvstore = kvstore::testing::DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(kvstore.ok()) << kvstore.status();
  auto worker = StartWorker("llama3-tiny", {"--kvstore", (*kvstore)->address()});
  ASSERT_NE(worker, nullptr);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  proto::InfoResponse info;
  ASSERT_TRUE(worker->stub().Info(&context, proto::InfoRequest(), &info).ok());
  // Under the key of the prompt's first block, a block that is not this model's block size (another
  // writer's bytes): checksummed correctly, so only the size check can catch it.
  const proto::GenerateRequest request = GreedyRequest(Prompt(40, 11), 6);
  BlockKeyContext key_context;
  std::memcpy(key_context.model_fingerprint.data(), info.key_scheme().model_fingerprint().data(), 32);
  key_context.block_tokens = 16;
  key_context.kv_dtype = DType::kF32;
  const std::vector<int32_t> prompt(request.prompt_ids().begin(), request.prompt_ids().end());
  const std::vector<BlockKey> keys = ComputeBlockKeys(key_context, prompt);
  auto client = (*kvstore)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::byte> bogus(1000, std::byte{7});
  ASSERT_TRUE((*client)->RegisterMemory(bogus.data(), bogus.size()).ok());
  ASSERT_TRUE((*client)->Put({{keys[0], bogus.data(), bogus.size(), std::nullopt}}).ok());

  const StreamResult r = Generate(worker->stub(), request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.last().prefix().cached_tokens(), 0u);
  EXPECT_EQ(r.ids, GenerateAlone(ModelDir("llama3-tiny"), request));
  EXPECT_GE(worker->Metric("strata_worker_kvstore_fetch_failures_total"), 1);
  // The bad block was deleted and the computed one took its place.
  ASSERT_TRUE(WaitFor([&] { return worker->Metric("strata_worker_kvstore_written_blocks_total") == 2; },
                      std::chrono::seconds(20)));
  std::vector<std::byte> read(kTinyBlockBytes + 32);  // the payload and its MAC trailer
  ASSERT_TRUE((*client)->RegisterMemory(read.data(), read.size()).ok());
  auto got = (*client)->Get({{keys[0], read.data(), read.size()}});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE((*got)[0].found);
  EXPECT_EQ((*got)[0].size_bytes, read.size());
}

// The keys of `request`'s full blocks as `worker` names them (its model fingerprint, 16-token f32 blocks,
// no tenant).
std::vector<BlockKey> KeysOf(WorkerProcess& worker, const proto::GenerateRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  proto::InfoResponse info;
  EXPECT_TRUE(worker.stub().Info(&context, proto::InfoRequest(), &info).ok());
  BlockKeyContext key_context;
  std::memcpy(key_context.model_fingerprint.data(), info.key_scheme().model_fingerprint().data(), 32);
  key_context.block_tokens = 16;
  key_context.kv_dtype = DType::kF32;
  return ComputeBlockKeys(key_context, std::vector<int32_t>(request.prompt_ids().begin(), request.prompt_ids().end()));
}

// Issue 24's forged block: anyone who reaches a kvstore can write a block under a real prefix's key with a
// valid xxh3 (the kvstore client computes it), but not the workers' MAC. A worker that fetches it never
// attends over it: it recomputes (the same ids as with no cache at all), counts the forgery, and the
// block computed instead replaces it.
TEST(WorkerProcess, AForgedKvstoreBlockIsNeverServedAndIsCounted) {
  auto kvstore = kvstore::testing::DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(kvstore.ok()) << kvstore.status();
  // Fetch whatever the kvstore may hold: the fetch policy could judge a tiny model's blocks cheaper to compute.
  const std::vector<std::string> args = {"--kvstore", (*kvstore)->address(), "--kvstore-fetch", "always"};
  auto writer = StartWorker("llama3-tiny", args);
  ASSERT_NE(writer, nullptr);
  const proto::GenerateRequest request = GreedyRequest(Prompt(40, 12), 8);
  const std::vector<int32_t> uncached = GenerateAlone(ModelDir("llama3-tiny"), request);
  const StreamResult cold = Generate(writer->stub(), request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_EQ(cold.ids, uncached);
  ASSERT_TRUE(WaitFor([&] { return writer->Metric("strata_worker_kvstore_written_blocks_total") == 2; },
                      std::chrono::seconds(20)));

  // The forger reads the real first block (payload ‖ trailer), puts chosen K/V in its place and writes it
  // back under the same key with the original trailer.
  const std::vector<BlockKey> keys = KeysOf(*writer, request);
  ASSERT_EQ(keys.size(), 2u);
  auto client = (*kvstore)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::byte> block(kTinyBlockBytes + 32);
  ASSERT_TRUE((*client)->RegisterMemory(block.data(), block.size()).ok());
  auto got = (*client)->Get({{keys[0], block.data(), block.size()}});
  ASSERT_TRUE(got.ok() && (*got)[0].found && (*got)[0].size_bytes == block.size()) << got.status();
  const float chosen = 3.0f;
  for (size_t at = 0; at + sizeof(float) <= kTinyBlockBytes; at += sizeof(float)) {
    std::memcpy(block.data() + at, &chosen, sizeof(float));
  }
  ASSERT_TRUE((*client)->Delete({keys[0]}).ok());
  auto put = (*client)->Put({{keys[0], block.data(), block.size(), std::nullopt}});
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ((*put)[0], kvstore::PutOutcome::kStored);

  auto reader = StartWorker("llama3-tiny", args);  // the cluster's MAC secret (worker_testing.cc)
  ASSERT_NE(reader, nullptr);
  const StreamResult warm = Generate(reader->stub(), request);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.ids, uncached);
  EXPECT_EQ(warm.last().prefix().cached_tokens(), 0u);  // nothing after the forged block either
  EXPECT_EQ(warm.last().prefix().prefill_tokens(), 40u);
  EXPECT_EQ(reader->Metric("strata_worker_kv_mac_failures_total{tier=\"kvstore\"}"), 1);
  // The block computed instead takes the forged one's place; a third worker then fetches both blocks.
  ASSERT_TRUE(WaitFor([&] { return reader->Metric("strata_worker_kvstore_written_blocks_total") >= 1; },
                      std::chrono::seconds(20)));
  auto third = StartWorker("llama3-tiny", args);
  ASSERT_NE(third, nullptr);
  const StreamResult healed = Generate(third->stub(), request);
  ASSERT_TRUE(healed.status.ok()) << healed.status.error_message();
  EXPECT_EQ(healed.ids, uncached);
  EXPECT_EQ(healed.last().prefix().cached_tokens_kvstore(), 32u);
  EXPECT_EQ(third->Metric("strata_worker_kv_mac_failures_total{tier=\"kvstore\"}"), 0);
}

TEST(WorkerProcess, AnotherModelsFingerprintIsFailedPrecondition) {
  auto worker = StartWorker("llama3-tiny");
  ASSERT_NE(worker, nullptr);
  proto::GenerateRequest request = GreedyRequest(Prompt(10, 1), 4);
  request.set_model_fingerprint(std::string(32, '\x5a'));
  const StreamResult r = Generate(worker->stub(), request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(r.status.error_message().find("this worker serves llama3-tiny"), std::string::npos)
      << r.status.error_message();

  // Its own fingerprint (from Info) is accepted.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  proto::InfoResponse info;
  ASSERT_TRUE(worker->stub().Info(&context, proto::InfoRequest(), &info).ok());
  EXPECT_EQ(info.model_name(), "llama3-tiny");
  EXPECT_EQ(info.key_scheme().version(), kBlockKeySchemeVersion);
  EXPECT_EQ(info.key_scheme().block_tokens(), 16u);
  EXPECT_EQ(info.key_scheme().kv_dtype(), "F32");
  EXPECT_EQ(info.max_context_tokens(), 8192u);
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_EQ(std::vector<int32_t>(info.eos_token_ids().begin(), info.eos_token_ids().end()), std::vector<int32_t>{1});
  request.set_model_fingerprint(info.key_scheme().model_fingerprint());
  EXPECT_TRUE(Generate(worker->stub(), request).status.ok());
}

TEST(WorkerProcess, BadInputIsInvalidArgumentSayingWhat) {
  auto worker = StartWorker("qwen2-tiny", {"--max-context-tokens", "64"});
  ASSERT_NE(worker, nullptr);
  struct Case {
    proto::GenerateRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({GreedyRequest({}, 4), "prompt_ids is empty"});
  cases.push_back({GreedyRequest({5, 512, 7}, 4), "prompt_ids[1] = 512 is outside the vocabulary [0, 512)"});
  cases.push_back({GreedyRequest({5, -3}, 4), "prompt_ids[1] = -3 is outside the vocabulary"});
  cases.push_back({GreedyRequest({5, 6}, 0), "max_new_tokens must be > 0"});
  cases.push_back({GreedyRequest(Prompt(64, 1), 4), "the prompt has 64 tokens; this worker's context is 64"});
  proto::GenerateRequest hot = GreedyRequest({5, 6}, 4);
  hot.mutable_sampling()->set_temperature(-1);
  cases.push_back({hot, "sampling: "});
  proto::GenerateRequest short_fingerprint = GreedyRequest({5, 6}, 4);
  short_fingerprint.set_model_fingerprint("abc");
  cases.push_back({short_fingerprint, "model_fingerprint has 3 bytes"});
  for (const Case& c : cases) {
    const StreamResult r = Generate(worker->stub(), c.request);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_NE(r.status.error_message().find(c.message), std::string::npos) << r.status.error_message();
  }
  // Near the context's end generation stops there instead of failing.
  const StreamResult edge = Generate(worker->stub(), GreedyRequest(Prompt(60, 2), 50, true));
  ASSERT_TRUE(edge.status.ok()) << edge.status.error_message();
  EXPECT_EQ(edge.ids.size(), 4u);
  EXPECT_EQ(edge.last().finish_reason(), proto::FINISH_REASON_LENGTH);
}

TEST(WorkerProcess, SigtermFinishesRunningRequestsAndRefusesNewOnes) {
  // A drain budget far past the stream's length: under ASan on a loaded 2-core machine its 3000 tokens took
  // 11 s alone and over 30 s beside other suites.
  auto worker = StartWorker("llama3-tiny", {"--drain-ms", "120000"});
  ASSERT_NE(worker, nullptr);
  auto channel = grpc::CreateChannel(worker->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(scheduler::testing::HealthStatus(channel), 1);  // SERVING
  // Long enough to be running still when the next request is refused (3000 tokens: seconds here, and at
  // least 0.2 s at the engine's full decode rate on this model; the refusal comes within ~50 ms).
  const proto::GenerateRequest long_request = GreedyRequest(Prompt(12, 4), 3000, true);
  std::atomic<bool> started{false};
  StreamResult running;
  std::jthread client([&] {  // joined on a failed ASSERT too
    running = Generate(
        worker->stub(), long_request, [&](const proto::GenerateResponse&, auto&) { started = true; },
        std::chrono::seconds(120));
  });
  ASSERT_TRUE(WaitFor([&] { return started.load(); }, std::chrono::seconds(20)));
  worker->process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return scheduler::testing::HealthStatus(channel) == 2; }, std::chrono::seconds(20)));
  const StreamResult refused = Generate(worker->stub(), GreedyRequest(Prompt(12, 5), 4));
  client.join();
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.status.error_message();
  EXPECT_NE(refused.status.error_message().find("draining"), std::string::npos) << refused.status.error_message();
  ASSERT_TRUE(running.status.ok()) << running.status.error_message();
  EXPECT_EQ(running.ids.size(), 3000u);
  EXPECT_EQ(worker->process().Wait(std::chrono::seconds(120)), 0);
}

TEST(WorkerProcess, ABadModelOrFlagExitsOneWithOneLine) {
  strata::testing::ChildProcess missing({STRATA_WORKER_PATH, "--model", "/nonexistent/model", "--metrics-port", "-1"});
  EXPECT_EQ(missing.Wait(std::chrono::seconds(30)), 1);
  EXPECT_NE(missing.err().find("strata-worker: --model: /nonexistent/model: no such directory"), std::string::npos)
      << missing.err();
  strata::testing::ChildProcess zero_block({STRATA_WORKER_PATH, "--model", ModelDir("llama3-tiny"), "--block-tokens",
                                            "0", "--metrics-port", "-1", "--grpc-address", "127.0.0.1:0"});
  EXPECT_EQ(zero_block.Wait(std::chrono::seconds(30)), 1);
  EXPECT_NE(zero_block.err().find("--block-tokens must be > 0"), std::string::npos) << zero_block.err();
  // A KV MAC secret too short to be one (under 32 bytes) stops the worker, naming the flag and the file.
  const strata::testing::ScratchDir dir = strata::testing::MakeTempDir("strata-worker-key-test");
  const std::string short_key = (dir.path() / "kv-mac.key").string();
  std::ofstream(short_key) << "too-short-a-secret\n";
  strata::testing::ChildProcess weak_key({STRATA_WORKER_PATH, "--model", ModelDir("llama3-tiny"), "--kv-mac-key-file",
                                          short_key, "--metrics-port", "-1", "--grpc-address", "127.0.0.1:0"});
  EXPECT_EQ(weak_key.Wait(std::chrono::seconds(30)), 1);
  EXPECT_NE(weak_key.err().find("--kv-mac-key-file: " + short_key + ": KV MAC secret of 18 bytes; need at least 32"),
            std::string::npos)
      << weak_key.err();
}

TEST(WorkerProcess, RegistersWithTheSchedulerAndItsStoredBlocksRouteToIt) {
  auto scheduler = SchedulerProcess::Start();
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  // A pool of 12 blocks, so that a large request later makes tier G let blocks go.
  auto worker = StartWorker("llama3-tiny", {"--scheduler", (*scheduler)->address(), "--worker-id", "worker-a",
                                            "--served-model-name", "tiny", "--kv-pool-bytes",
                                            std::to_string(12 * kTinyBlockBytes)});
  ASSERT_NE(worker, nullptr);
  auto list = [&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    proto::ListHoldersResponse response;
    (void)(*scheduler)->stub().ListHolders(&context, proto::ListHoldersRequest(), &response);
    return response;
  };
  ASSERT_TRUE(WaitFor([&] { return list().holders_size() == 1; }, std::chrono::seconds(20)));
  const proto::HolderStatus holder = list().holders(0);
  EXPECT_EQ(holder.holder_id(), "worker-a");
  EXPECT_EQ(holder.kind(), proto::HOLDER_KIND_WORKER);
  EXPECT_EQ(holder.address(), worker->address());

  const std::vector<int32_t> prompt = Prompt(100, 9);
  ASSERT_TRUE(Generate(worker->stub(), GreedyRequest(prompt, 4)).status.ok());
  grpc::ClientContext info_context;
  info_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  proto::InfoResponse info;
  ASSERT_TRUE(worker->stub().Info(&info_context, proto::InfoRequest(), &info).ok());
  proto::RouteRequest route;
  route.set_model_fingerprint(info.key_scheme().model_fingerprint());
  route.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  proto::RouteResponse routed;
  auto route_until = [&](auto done) {
    return WaitFor(
        [&] {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          return (*scheduler)->stub().Route(&context, route, &routed).ok() && done();
        },
        std::chrono::seconds(20));
  };
  // STORED events reach the index: the prompt's 6 full blocks are in this worker's tier G (and H, which
  // the index need not know: a block is priced at the worker's fastest tier).
  ASSERT_TRUE(route_until([&] { return routed.blocks_gpu() == 6; }))
      << "blocks_gpu=" << routed.blocks_gpu() << " blocks_host=" << routed.blocks_host();
  EXPECT_EQ(routed.blocks_host(), 0u);
  EXPECT_EQ(routed.worker_id(), "worker-a");
  EXPECT_EQ(routed.worker_address(), worker->address());
  EXPECT_EQ(list().holders(0).blocks(), 6u);
  // A request that needs the whole pool: tier G lets the blocks go, they are still in tier H.
  ASSERT_TRUE(Generate(worker->stub(), GreedyRequest(Prompt(180, 10), 12)).status.ok());
  ASSERT_TRUE(route_until([&] { return routed.blocks_host() == 6; }))
      << "blocks_gpu=" << routed.blocks_gpu() << " blocks_host=" << routed.blocks_host();
  EXPECT_EQ(routed.blocks_gpu(), 0u);

  // SIGTERM: drains, deregisters and exits 0.
  worker->process().Signal(SIGTERM);
  EXPECT_EQ(worker->process().Wait(std::chrono::seconds(30)), 0);
  EXPECT_TRUE(WaitFor([&] { return list().holders_size() == 0; }, std::chrono::seconds(10)));
}

}  // namespace
}  // namespace strata::worker::testing
