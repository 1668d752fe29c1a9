// The cluster load generator's pieces: trace -> token-id prompts, the SSE parser, the completion client
// against an in-process HTTP server that streams like the front door, and the summary table.
#include <httplib.h>

#include <thread>

#include "absl/container/flat_hash_set.h"
#include "bench/cluster/burst.h"
#include "bench/cluster/completion_client.h"
#include "bench/cluster/report.h"
#include "bench/cluster/timing_channel.h"
#include "bench/cluster/trace_prompts.h"
#include "gtest/gtest.h"

namespace strata::cluster_bench {
namespace {

using scheduler::replay::TraceRequest;

PromptOptions Tiny() {
  PromptOptions options;
  options.vocab_size = 512;
  options.tokens_per_hash = 16;
  options.max_prompt_tokens = 4096;
  options.max_output_tokens = 8;
  return options;
}

TEST(TracePrompts, EqualHashIdsGiveEqualBlocksInTheVocabulary) {
  const PromptOptions options = Tiny();
  EXPECT_EQ(HashBlockTokens(7, options), HashBlockTokens(7, options));
  EXPECT_NE(HashBlockTokens(7, options), HashBlockTokens(8, options));
  absl::flat_hash_set<int32_t> distinct;
  for (uint64_t id = 0; id < 64; ++id) {
    for (int32_t token : HashBlockTokens(id, options)) {
      EXPECT_GE(token, options.first_token_id);
      EXPECT_LT(token, options.vocab_size);
      distinct.insert(token);
    }
  }
  EXPECT_GT(distinct.size(), 400u);  // spread over the vocabulary
}

TEST(TracePrompts, SharedHashPrefixesBecomeSharedTokenPrefixesScaledToBlocks) {
  // 512-token trace blocks become 16-token blocks: 1500 tokens -> 47 tokens (2 whole blocks and 15).
  std::vector<TraceRequest> trace(3);
  trace[0].input_tokens = 1500;
  trace[0].output_tokens = 100;
  trace[0].hash_ids = {1, 2, 3};
  trace[1].input_tokens = 1500;
  trace[1].output_tokens = 4;
  trace[1].hash_ids = {1, 2, 9};
  trace[2].input_tokens = 100;  // shorter than a block: 3 tokens, no whole block
  trace[2].output_tokens = 4;
  trace[2].hash_ids = {1};
  absl::StatusOr<std::vector<BenchRequest>> requests = MakeRequests(trace, Tiny());
  ASSERT_TRUE(requests.ok()) << requests.status();
  ASSERT_EQ(requests->size(), 3u);
  const BenchRequest &a = (*requests)[0], &b = (*requests)[1], &c = (*requests)[2];
  EXPECT_EQ(a.prompt_ids.size(), 47u);
  EXPECT_EQ(b.prompt_ids.size(), 47u);
  EXPECT_EQ(c.prompt_ids.size(), 3u);
  EXPECT_TRUE(std::equal(a.prompt_ids.begin(), a.prompt_ids.begin() + 32, b.prompt_ids.begin()));
  EXPECT_FALSE(std::equal(a.prompt_ids.begin() + 32, a.prompt_ids.end(), b.prompt_ids.begin() + 32));
  EXPECT_TRUE(std::equal(c.prompt_ids.begin(), c.prompt_ids.end(), a.prompt_ids.begin()));
  EXPECT_EQ(a.max_tokens, 8u);  // capped
  EXPECT_EQ(b.max_tokens, 4u);
  EXPECT_EQ(a.reusable_tokens, 0u);
  EXPECT_EQ(b.reusable_tokens, 32u);  // blocks 1, 2
  EXPECT_EQ(c.reusable_tokens, 0u);   // not a whole block
}

TEST(TracePrompts, PromptsAreCappedAndBadOptionsRefused) {
  std::vector<TraceRequest> trace(1);
  trace[0].input_tokens = 1'000'000;
  trace[0].output_tokens = 1;
  for (uint64_t i = 0; i < 1954; ++i) trace[0].hash_ids.push_back(i);
  PromptOptions options = Tiny();
  options.max_prompt_tokens = 100;
  absl::StatusOr<std::vector<BenchRequest>> requests = MakeRequests(trace, options);
  ASSERT_TRUE(requests.ok());
  EXPECT_EQ((*requests)[0].prompt_ids.size(), 100u);
  options.vocab_size = 10;
  EXPECT_EQ(MakeRequests(trace, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TracePrompts, TheRepositoryTraceMakesPromptsForTheTinyModel) {
  auto trace = scheduler::replay::ReadMooncakeTrace(std::string(STRATA_TEST_DATA_DIR) +
                                                    "/traces/mooncake_synthetic_trace.jsonl");
  ASSERT_TRUE(trace.ok()) << trace.status();
  absl::StatusOr<ModelLimits> limits = ReadModelLimits(std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny");
  ASSERT_TRUE(limits.ok()) << limits.status();
  EXPECT_EQ(limits->vocab_size, 512);
  EXPECT_EQ(limits->max_context_tokens, 8192u);
  PromptOptions options = Tiny();
  options.vocab_size = limits->vocab_size;
  trace->resize(200);
  absl::StatusOr<std::vector<BenchRequest>> requests = MakeRequests(*trace, options);
  ASSERT_TRUE(requests.ok());
  uint64_t reusable = 0;
  for (const BenchRequest& request : *requests) reusable += request.reusable_tokens;
  EXPECT_GT(reusable, 0u);  // the trace shares prefixes within its first 200 requests
  EXPECT_EQ(ReadModelLimits("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

TEST(SseParser, SplitsEventsFedInPieces) {
  std::vector<std::string> events;
  SseParser parser([&](std::string_view data) { events.emplace_back(data); });
  const std::string stream = ": comment\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\nevent: e\ndata: [DONE]\n\n";
  for (char c : stream) parser.Feed(std::string_view(&c, 1));
  EXPECT_EQ(events, (std::vector<std::string>{"{\"a\":1}", "x\ny", "[DONE]"}));
}

TEST(CompletionUsage, ReadsCachedTokensAndTheStrataExtension) {
  const nlohmann::json usage = nlohmann::json::parse(R"({"prompt_tokens": 100, "completion_tokens": 5,
      "prompt_tokens_details": {"cached_tokens": 64},
      "strata": {"worker_id": "worker-1", "cached_tokens_gpu": 16, "cached_tokens_host": 0,
                 "cached_tokens_kvstore": 48, "prefill_tokens": 36, "queue_s": 0.01, "ttft_s": 0.02}})");
  const CompletionUsage parsed = ParseUsage(usage);
  EXPECT_EQ(parsed.prompt_tokens, 100u);
  EXPECT_EQ(parsed.cached_tokens, 64u);
  EXPECT_TRUE(parsed.has_strata);
  EXPECT_EQ(parsed.worker_id, "worker-1");
  EXPECT_EQ(parsed.cached_tokens_kvstore, 48u);
  EXPECT_EQ(parsed.prefill_tokens, 36u);
  EXPECT_DOUBLE_EQ(parsed.server_ttft_s, 0.02);
}

// A stand-in front door: streams two text chunks, a usage chunk and [DONE]; or fails.
class FakeFrontDoor {
 public:
  FakeFrontDoor() {
    server_.Post("/v1/completions", [this](const httplib::Request& request, httplib::Response& response) {
      const nlohmann::json body = nlohmann::json::parse(request.body);
      last_body_ = body;
      if (body["model"] != "tiny") {
        response.status = 404;
        response.set_content(R"({"error": {"message": "no model 'x'", "type": "invalid_request_error"}})",
                             "application/json");
        return;
      }
      const bool cache_off = body.value("disable_prefix_cache", false);
      const size_t prompt = body["prompt"].size();
      nlohmann::json usage = {{"prompt_tokens", prompt},
                              {"completion_tokens", 2},
                              {"prompt_tokens_details", {{"cached_tokens", cache_off ? 0 : 16}}},
                              {"strata", {{"worker_id", "w0"}, {"cached_tokens_kvstore", cache_off ? 0 : 16},
                                          {"prefill_tokens", cache_off ? prompt : prompt - 16}}}};
      if (!body.value("stream", false)) {
        response.set_content(nlohmann::json({{"choices", {{{"text", "ab"}, {"finish_reason", "length"}}}}, {"usage", usage}}).dump(),
                             "application/json");
        return;
      }
      const bool break_mid_stream = body.value("max_tokens", 0) == 99;
      response.set_chunked_content_provider("text/event-stream", [usage, break_mid_stream](size_t, httplib::DataSink& sink) {
        auto send = [&](const nlohmann::json& chunk) {
          const std::string event = "data: " + chunk.dump() + "\n\n";
          sink.write(event.data(), event.size());
        };
        send({{"choices", {{{"text", "a"}, {"finish_reason", nullptr}}}}});
        if (break_mid_stream) {
          sink.done();
          return true;
        }
        send({{"choices", {{{"text", "b"}, {"finish_reason", "length"}}}}});
        send({{"choices", nlohmann::json::array()}, {"usage", usage}});
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  }
  ~FakeFrontDoor() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  const nlohmann::json& last_body() const { return last_body_; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  nlohmann::json last_body_;
};

CompletionClient ClientFor(const FakeFrontDoor& server) {
  CompletionClient::Options options;
  options.port = server.port();
  options.timeout_s = 10;
  return CompletionClient(options);
}

TEST(CompletionClient, StreamsTextAndReadsTheUsageChunk) {
  FakeFrontDoor server;
  const CompletionClient client = ClientFor(server);
  CompletionRequest request{"tiny", std::vector<int32_t>(40, 5), 2, true, true, false};
  const CompletionResult result = client.Complete(request);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.text, "ab");
  EXPECT_EQ(result.finish_reason, "length");
  EXPECT_EQ(result.chunks, 3u);
  EXPECT_GT(result.ttft_s, 0);
  EXPECT_LE(result.ttft_s, result.total_s);
  ASSERT_TRUE(result.has_usage);
  EXPECT_EQ(result.usage.prompt_tokens, 40u);
  EXPECT_EQ(result.usage.cached_tokens_kvstore, 16u);
  EXPECT_EQ(server.last_body()["stream_options"]["include_usage"], true);
  EXPECT_EQ(server.last_body()["prompt"].size(), 40u);
  EXPECT_FALSE(server.last_body().contains("disable_prefix_cache"));

  request.disable_prefix_cache = true;
  request.stream = false;
  const CompletionResult plain = client.Complete(request);
  ASSERT_TRUE(plain.ok) << plain.error;
  EXPECT_EQ(plain.text, "ab");
  EXPECT_EQ(plain.usage.cached_tokens, 0u);
  EXPECT_EQ(server.last_body()["disable_prefix_cache"], true);
}

TEST(CompletionClient, ReportsHttpErrorsAndStreamsThatStopShort) {
  FakeFrontDoor server;
  const CompletionClient client = ClientFor(server);
  const CompletionResult wrong = client.Complete({"x", {1, 2}, 2, true, true, false});
  EXPECT_FALSE(wrong.ok);
  EXPECT_EQ(wrong.error, "HTTP 404: no model 'x'");
  const CompletionResult cut = client.Complete({"tiny", {1, 2}, 99, true, true, false});
  EXPECT_FALSE(cut.ok);
  EXPECT_NE(cut.error.find("without [DONE]"), std::string::npos) << cut.error;
  CompletionClient::Options closed;
  closed.port = 1;
  const CompletionResult refused = CompletionClient(closed).Complete({"tiny", {1}, 1, true, true, false});
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("127.0.0.1:1"), std::string::npos) << refused.error;
}

TEST(Report, SummarizesPassesIntoATable) {
  FakeFrontDoor server;
  const CompletionClient client = ClientFor(server);
  std::vector<BenchRequest> requests(6, BenchRequest{std::vector<int32_t>(32, 7), 2, 16});
  BurstOptions options;
  options.model = "tiny";
  options.concurrency = 3;
  options.disable_prefix_cache = true;
  const BurstResult off = RunBurst(client, requests, options);
  options.disable_prefix_cache = false;
  const BurstResult on = RunBurst(client, requests, options);
  const std::vector<uint32_t> reusable(6, 16);
  const std::vector<PassSummary> passes = {Summarize("cache off", off.results, reusable, off.wall_s),
                                           Summarize("cache on", on.results, reusable, on.wall_s)};
  EXPECT_EQ(passes[0].requests, 6u);
  EXPECT_EQ(passes[0].failed, 0u);
  EXPECT_EQ(passes[0].prompt_tokens, 192u);
  EXPECT_EQ(passes[0].cached_tokens, 0u);
  EXPECT_EQ(passes[1].cached_tokens, 96u);
  EXPECT_EQ(passes[1].prefill_tokens, 96u);
  EXPECT_DOUBLE_EQ(passes[1].hit_rate(), 0.5);
  EXPECT_EQ(passes[1].requests_per_worker.at("w0"), 6u);
  const std::string table = FormatTable(passes);
  EXPECT_NE(table.find("prefix hit rate"), std::string::npos) << table;
  EXPECT_NE(table.find("50.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("w0:6"), std::string::npos) << table;
  const nlohmann::json json = ToJson(passes);
  EXPECT_EQ(json["passes"][1]["cached_tokens_kvstore"], 96);
}

TEST(Report, PercentileIsNearestRank) {
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({3, 1, 2}, 0.5), 2);
  EXPECT_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9), 9);
  EXPECT_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 1.0), 10);
}

TEST(RocAuc, IsTheChanceThatTheFirstSampleIsLargerTiesCountingHalf) {
  EXPECT_EQ(RocAuc({170, 180, 175}, {14, 15}), 1.0);  // every control slower than every hit
  EXPECT_EQ(RocAuc({14, 15}, {170, 180}), 0.0);
  EXPECT_EQ(RocAuc({1, 3}, {2}), 0.5);
  EXPECT_EQ(RocAuc({2, 2}, {2}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc({1, 2, 3, 4}, {2.5}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc({3, 4, 5}, {1, 3.5}), 5.0 / 6.0);
  EXPECT_EQ(RocAuc({}, {1}), 0.5);
}

}  // namespace
}  // namespace strata::cluster_bench
