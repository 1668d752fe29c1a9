// One OpenAI-style `/v1/completions` call with a token-id prompt, streamed (server-sent events) or not,
// measured: time to the first chunk (TTFT), total time, the text, and the final usage with Strata's
// extension (`usage.strata`: which worker, tokens reused from each tier, tokens prefilled, queue time).
#ifndef STRATA_BENCH_CLUSTER_COMPLETION_CLIENT_H_
#define STRATA_BENCH_CLUSTER_COMPLETION_CLIENT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace strata::cluster_bench {

// Splits a server-sent-event stream fed in arbitrary pieces into the payloads of its `data:` lines (one
// call per event; an event's several data lines are joined with '\n', as the SSE spec says).
class SseParser {
 public:
  explicit SseParser(std::function<void(std::string_view data)> on_data) : on_data_(std::move(on_data)) {}
  void Feed(std::string_view bytes);

 private:
  void Line(std::string_view line);
  std::function<void(std::string_view)> on_data_;
  std::string buffer_;
  std::string data_;
  bool has_data_ = false;
};

struct CompletionUsage {
  uint32_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  // usage.strata (zero when the server does not send it)
  std::string worker_id;
  uint32_t cached_tokens_gpu = 0, cached_tokens_host = 0, cached_tokens_kvstore = 0, prefill_tokens = 0;
  double queue_s = 0, server_ttft_s = 0;
  bool has_strata = false;
};

// Reads an OpenAI usage object (with optional prompt_tokens_details.cached_tokens and strata{...}).
CompletionUsage ParseUsage(const nlohmann::json& usage);

struct CompletionRequest {
  std::string model;
  std::vector<int32_t> prompt_ids;
  uint32_t max_tokens = 16;
  bool stream = true;
  bool ignore_eos = true;            // sent as the `ignore_eos` extension, so lengths are the asked ones
  bool disable_prefix_cache = false;  // sent as the request field named by CompletionClient::Options
  std::string user;                   // OpenAI's `user` (sent when not empty)
};

struct CompletionResult {
  bool ok = false;
  std::string error;   // HTTP status and body, a transport error, or the stream's error event
  double ttft_s = 0;   // request sent -> first chunk with text (streaming) or the response (non-streaming)
  double total_s = 0;
  std::string text;
  std::string finish_reason;
  uint32_t chunks = 0;
  bool has_usage = false;
  CompletionUsage usage;
};

class CompletionClient {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 8000;
    int timeout_s = 120;
    // The request field that turns the prefix cache off for one request (the front door passes it to the
    // worker as GenerateRequest.disable_prefix_cache).
    std::string disable_cache_field = "disable_prefix_cache";
    std::string api_key;  // sent as `Authorization: Bearer` when not empty
    // The connection's source address (a client of its own on loopback: 127.0.0.2, ...); empty: any.
    std::string local_address;
  };
  explicit CompletionClient(Options options) : options_(std::move(options)) {}

  // The JSON body of `request` (exposed for tests).
  nlohmann::json Body(const CompletionRequest& request) const;
  // Thread-safe: each call opens its own connection.
  CompletionResult Complete(const CompletionRequest& request) const;

 private:
  Options options_;
};

}  // namespace strata::cluster_bench

#endif  // STRATA_BENCH_CLUSTER_COMPLETION_CLIENT_H_
