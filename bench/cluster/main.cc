// strata_cluster_bench: replays the head of a Mooncake-format trace as a burst of streamed token-id
// completions against a running cluster's front door (deploy/local-cluster.sh), once per pass (prefix
// cache off, then on, by default), and prints what the cache saved: hit rate per tier, prefill tokens,
// TTFT p50/p90, output tokens/s (docs/BENCHMARKS.md, "cluster"). Exits 1 when a request failed.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "bench/cluster/burst.h"
#include "bench/cluster/report.h"
#include "bench/cluster/trace_prompts.h"
#include "common/strings.h"
#include "scheduler/replay/trace.h"

namespace cb = strata::cluster_bench;

int Fail(const std::string& message) {
  std::cerr << "strata_cluster_bench: " << message << "\n";
  return 1;
}

int main(int argc, char** argv) {
  CLI::App app{"strata_cluster_bench: a trace burst against the front door, prefix cache off vs on"};
  cb::CompletionClient::Options client_options;
  cb::PromptOptions prompt_options;
  cb::BurstOptions burst_options;
  burst_options.model = "strata";
  std::string trace_path, model_dir, passes_list = "off,on", label, json_out;
  size_t requests = 32, offset = 0;
  int32_t vocab_size = 0;
  uint32_t max_context = 0;
  bool json = false, no_stream = false;
  app.add_option("--host", client_options.host, "front door host")->capture_default_str();
  app.add_option("--port", client_options.port, "front door HTTP port")->capture_default_str();
  app.add_option("--trace", trace_path, "Mooncake-format JSONL trace")->required();
  app.add_option("--model", model_dir, "model directory: vocab_size and context from its config.json");
  app.add_option("--vocab-size", vocab_size, "instead of --model: the vocabulary");
  app.add_option("--max-context", max_context, "instead of --model: the context in tokens");
  app.add_option("--served-model-name", burst_options.model, "the OpenAI model name")->capture_default_str();
  app.add_option("--requests", requests, "trace requests to send")->capture_default_str();
  app.add_option("--offset", offset, "skip this many trace requests first")->capture_default_str();
  app.add_option("--concurrency", burst_options.concurrency, "requests in flight")->capture_default_str();
  app.add_option("--tokens-per-hash", prompt_options.tokens_per_hash, "tokens per trace block (the cluster's --block-tokens)")
      ->capture_default_str();
  app.add_option("--trace-block-tokens", prompt_options.trace_block_tokens, "tokens of a trace block in the trace")
      ->capture_default_str();
  app.add_option("--max-prompt-tokens", prompt_options.max_prompt_tokens, "cap on a scaled prompt (also: context - output)")
      ->capture_default_str();
  app.add_option("--max-output-tokens", prompt_options.max_output_tokens, "cap on a request's output")->capture_default_str();
  app.add_option("--passes", passes_list, "comma-separated: off (prefix cache disabled per request) and on")
      ->capture_default_str();
  app.add_option("--label", label, "appended to each pass's name (e.g. the placement policy)");
  app.add_option("--disable-cache-field", client_options.disable_cache_field, "the request field that disables the cache")
      ->capture_default_str();
  app.add_option("--timeout-s", client_options.timeout_s, "per-request timeout")->capture_default_str();
  app.add_flag("--no-stream", no_stream, "non-streaming requests (TTFT is then the whole request)");
  app.add_flag("--json", json, "print one JSON object instead of the table");
  app.add_option("--json-out", json_out, "also write the JSON object to this file");
  CLI11_PARSE(app, argc, argv);
  burst_options.stream = !no_stream;

  if (!model_dir.empty()) {
    absl::StatusOr<cb::ModelLimits> limits = cb::ReadModelLimits(model_dir);
    if (!limits.ok()) return Fail(std::string(limits.status().message()));
    if (vocab_size == 0) vocab_size = limits->vocab_size;
    if (max_context == 0) max_context = limits->max_context_tokens;
  }
  if (vocab_size <= 0 || max_context == 0) return Fail("give --model DIR, or --vocab-size and --max-context");
  prompt_options.vocab_size = vocab_size;
  if (max_context <= prompt_options.max_output_tokens) return Fail("--max-output-tokens leaves no room for a prompt");
  prompt_options.max_prompt_tokens = std::min(prompt_options.max_prompt_tokens, max_context - prompt_options.max_output_tokens);

  auto trace = strata::scheduler::replay::ReadMooncakeTrace(trace_path, prompt_options.trace_block_tokens);
  if (!trace.ok()) return Fail(std::string(trace.status().message()));
  if (requests == 0) return Fail("--requests must be > 0");
  if (offset >= trace->size()) return Fail(strata::StrCat("--offset ", offset, ": the trace has ", trace->size(), " requests"));
  std::vector<strata::scheduler::replay::TraceRequest> head(
      trace->begin() + static_cast<ptrdiff_t>(offset),
      trace->begin() + static_cast<ptrdiff_t>(std::min(trace->size(), offset + requests)));
  absl::StatusOr<std::vector<cb::BenchRequest>> bench_requests = cb::MakeRequests(head, prompt_options);
  if (!bench_requests.ok()) return Fail(std::string(bench_requests.status().message()));
  std::vector<uint32_t> reusable;
  for (const cb::BenchRequest& request : *bench_requests) reusable.push_back(request.reusable_tokens);

  const cb::CompletionClient client(client_options);
  std::vector<cb::PassSummary> passes;
  for (absl::string_view pass : absl::StrSplit(passes_list, ',', absl::SkipEmpty())) {
    if (pass != "off" && pass != "on") return Fail(strata::StrCat("--passes: '", pass, "' is neither off nor on"));
    burst_options.disable_prefix_cache = pass == "off";
    std::string name = strata::StrCat("cache ", pass);
    if (!label.empty()) name = strata::StrCat(label, " ", name);
    for (const cb::PassSummary& earlier : passes) {
      if (earlier.name == name) name += " (again)";
    }
    if (!json) std::fprintf(stderr, "%s: %zu requests, concurrency %d ...\n", name.c_str(), bench_requests->size(),
                            burst_options.concurrency);
    cb::BurstResult burst = cb::RunBurst(client, *bench_requests, burst_options);
    passes.push_back(cb::Summarize(name, burst.results, reusable, burst.wall_s));
  }
  nlohmann::json out = cb::ToJson(passes);
  out["trace"] = trace_path;
  out["requests"] = bench_requests->size();
  out["concurrency"] = burst_options.concurrency;
  out["tokens_per_hash"] = prompt_options.tokens_per_hash;
  if (json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s", cb::FormatTable(passes).c_str());
  }
  if (!json_out.empty()) {
    std::ofstream file(json_out);
    file << out.dump(2) << "\n";
    if (!file.flush()) return Fail(strata::StrCat(json_out, ": cannot write the JSON"));
  }
  for (const cb::PassSummary& pass : passes) {
    if (pass.failed > 0) return 1;
  }
  return 0;
}
