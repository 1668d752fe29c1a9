// strata_soak_bench: a local cluster under a Mooncake trace for --duration-s with faults injected at
// random (bench/soak/README.md). Exit status 0 only when no output was wrong and every failure is put
// down to a fault.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "bench/soak/soak.h"

int main(int argc, char** argv) {
  strata::soak::SoakOptions options;
  options.scheduler_path = STRATA_SCHEDULER_PATH;
  options.kvstore_path = STRATA_KVSTORE_PATH;
  options.io_fault_shim = STRATA_IO_FAULT_SHIM_PATH;
  options.worker_path = STRATA_WORKER_PATH;
  options.model_dir = STRATA_SOURCE_DIR "/tests/data/models/llama3-tiny";
  options.trace_path = STRATA_SOURCE_DIR "/tests/data/traces/mooncake_synthetic_trace.jsonl";
  bool json = false;
  CLI::App app{"strata_soak_bench: the local cluster under a trace, with kill -9s, restarts and stalls at random"};
  app.add_option("--duration-s", options.duration_s, "how long to run")->capture_default_str();
  app.add_option("--model", options.model_dir, "model directory the workers serve")->capture_default_str();
  app.add_option("--trace", options.trace_path, "Mooncake-format JSONL trace")->capture_default_str();
  app.add_option("--workers", options.workers, "strata-worker processes")->capture_default_str();
  app.add_option("--concurrency", options.concurrency, "client threads")->capture_default_str();
  app.add_option("--prompts", options.prompts, "distinct prompts from the head of the trace")->capture_default_str();
  app.add_option("--max-prompt-tokens", options.max_prompt_tokens, "cap on a prompt")->capture_default_str();
  app.add_option("--max-tokens", options.max_tokens, "tokens generated per request")->capture_default_str();
  app.add_option("--mean-fault-interval-s", options.mean_fault_interval_s, "mean time between faults")
      ->capture_default_str();
  app.add_option("--lease-ms", options.lease_ms, "the scheduler's lease")->capture_default_str();
  app.add_option("--seed", options.seed, "fault and request choice")->capture_default_str();
  app.add_option("--scheduler-bin", options.scheduler_path, "strata-scheduler binary")->capture_default_str();
  app.add_option("--kvstore-bin", options.kvstore_path, "strata-kvstore binary")->capture_default_str();
  app.add_option("--io-fault-shim", options.io_fault_shim,
                 "LD_PRELOAD library that fails the kvstore's SSD writes on command (empty: no disk faults)")
      ->capture_default_str();
  app.add_option("--worker-bin", options.worker_path, "strata-worker binary")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of the summary");
  CLI11_PARSE(app, argc, argv);
  if (options.duration_s <= 0 || options.workers < 1 || options.concurrency < 1 || options.prompts == 0) {
    std::fprintf(stderr, "strata_soak_bench: --duration-s, --workers, --concurrency and --prompts must be > 0\n");
    return 2;
  }

  auto report = strata::soak::RunSoak(options);
  if (!report.ok()) {
    std::fprintf(stderr, "strata_soak_bench: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::printf("%s", json ? (report->ToJson().dump() + "\n").c_str() : report->ToText().c_str());
  return report->wrong == 0 && report->unexplained_failures == 0 ? 0 : 1;
}
