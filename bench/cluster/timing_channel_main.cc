// strata_timing_channel_bench: the cross-caller timing channel of the prefix cache (timing_channel.h)
// against a running front door; prints one table row (--json: one object). bench/cluster/timing_channel.sh
// runs it against a local cluster in each tenancy mode (docs/BENCHMARKS.md, "Timing side channel").
#include <cstdio>
#include <iostream>
#include <numeric>
#include <string>

#include "CLI/CLI.hpp"
#include "bench/cluster/timing_channel.h"

namespace cb = strata::cluster_bench;

namespace {

double MeanMs(const std::vector<double>& seconds) {
  return seconds.empty() ? 0 : 1e3 * std::accumulate(seconds.begin(), seconds.end(), 0.0) / seconds.size();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"strata_timing_channel_bench: cross-caller hit/miss ROC AUC from TTFT"};
  cb::TimingOptions options;
  std::string host = "127.0.0.1", label = "run";
  int port = 8000;
  bool json = false;
  app.add_option("--host", host, "front door host")->capture_default_str();
  app.add_option("--port", port, "front door HTTP port")->capture_default_str();
  app.add_option("--model", options.model, "served model name")->capture_default_str();
  app.add_option("--trials", options.trials, "trials (one victim prompt and one control each)")->capture_default_str();
  app.add_option("--prompt-tokens", options.prompt_tokens, "tokens of each prompt")->capture_default_str();
  app.add_option("--vocab-size", options.vocab_size, "ids are drawn from [16, this)")->capture_default_str();
  app.add_option("--seed", options.seed, "prompts' random seed")->capture_default_str();
  app.add_option("--victim-key", options.victim.api_key, "victim's API key (empty: none)");
  app.add_option("--attacker-key", options.attacker.api_key, "attacker's API key (empty: none)");
  app.add_option("--victim-address", options.victim.local_address, "victim's source address (e.g. 127.0.0.2)");
  app.add_option("--attacker-address", options.attacker.local_address, "attacker's source address (e.g. 127.0.0.3)");
  app.add_option("--victim-user", options.victim_user, "victim's `user` field (empty: none)");
  app.add_option("--attacker-user", options.attacker_user, "attacker's `user` field (empty: none)");
  app.add_option("--label", label, "the row's name")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of a table row");
  CLI11_PARSE(app, argc, argv);
  if (options.trials < 2 || options.prompt_tokens == 0 || options.vocab_size <= 16) {
    std::cerr << "strata_timing_channel_bench: --trials >= 2, --prompt-tokens > 0 and --vocab-size > 16\n";
    return 1;
  }
  for (cb::CompletionClient::Options* client : {&options.victim, &options.attacker}) {
    client->host = host;
    client->port = port;
    client->timeout_s = 60;
  }
  absl::StatusOr<cb::TimingReport> report = cb::MeasureTimingChannel(options);
  if (!report.ok()) {
    std::cerr << "strata_timing_channel_bench: " << report.status().message() << "\n";
    return 1;
  }
  if (json) {
    std::printf(
        "{\"label\": \"%s\", \"trials\": %d, \"prompt_tokens\": %u, \"auc_cross_caller\": %.3f, "
        "\"auc_same_caller\": %.3f, \"ttft_ms_victims_prompt\": %.2f, \"ttft_ms_control\": %.2f, "
        "\"ttft_ms_own_prompt\": %.2f, \"attacker_cached_tokens\": %llu}\n",
        label.c_str(), options.trials, options.prompt_tokens, report->auc, report->own_auc, MeanMs(report->hit_ttft_s),
        MeanMs(report->control_ttft_s), MeanMs(report->own_ttft_s),
        static_cast<unsigned long long>(report->attacker_cached_tokens));
  } else {
    std::printf("| %-34s | %6d | %16.3f | %15.3f | %14.1f | %12.1f | %12.1f | %14llu |\n", label.c_str(),
                options.trials, report->auc, report->own_auc, MeanMs(report->hit_ttft_s),
                MeanMs(report->control_ttft_s), MeanMs(report->own_ttft_s),
                static_cast<unsigned long long>(report->attacker_cached_tokens));
  }
  return 0;
}
