#include "bench/cluster/timing_channel.h"

#include <random>

#include "common/status.h"
#include "common/strings.h"

namespace strata::cluster_bench {

double RocAuc(absl::Span<const double> a, absl::Span<const double> b) {
  if (a.empty() || b.empty()) return 0.5;
  double wins = 0;
  for (double x : a) {
    for (double y : b) wins += x > y ? 1.0 : x == y ? 0.5 : 0.0;
  }
  return wins / (static_cast<double>(a.size()) * static_cast<double>(b.size()));
}

namespace {

absl::StatusOr<CompletionResult> Send(const CompletionClient& client, const std::string& who, const std::string& model,
                                      const std::vector<int32_t>& prompt, const std::string& user) {
  CompletionRequest request{model, prompt, 1, true, true, false};
  request.user = user;
  CompletionResult result = client.Complete(request);
  if (!result.ok) return absl::UnavailableError(StrCat(who, "'s request failed: ", result.error));
  return result;
}

}  // namespace

absl::StatusOr<TimingReport> MeasureTimingChannel(const TimingOptions& options) {
  const CompletionClient victim(options.victim);
  const CompletionClient attacker(options.attacker);
  std::mt19937_64 random(options.seed);
  std::uniform_int_distribution<int32_t> id(16, options.vocab_size - 1);
  auto fresh = [&] {
    std::vector<int32_t> prompt(options.prompt_tokens);
    for (int32_t& token : prompt) token = id(random);
    return prompt;
  };
  TimingReport report;
  for (int trial = 0; trial < options.trials; ++trial) {
    const std::vector<int32_t> secret = fresh();
    const std::vector<int32_t> control = fresh();
    STRATA_ASSIGN_OR_RETURN(CompletionResult sent, Send(victim, "victim", options.model, secret, options.victim_user));
    // The order of the two probes alternates, so that neither always runs on a warmer machine.
    CompletionResult hit, miss;
    for (int probe = 0; probe < 2; ++probe) {
      if ((probe + trial) % 2 == 0) {
        STRATA_ASSIGN_OR_RETURN(hit, Send(attacker, "attacker", options.model, secret, options.attacker_user));
      } else {
        STRATA_ASSIGN_OR_RETURN(miss, Send(attacker, "attacker", options.model, control, options.attacker_user));
      }
    }
    STRATA_ASSIGN_OR_RETURN(CompletionResult own, Send(victim, "victim", options.model, secret, options.victim_user));
    report.hit_ttft_s.push_back(hit.ttft_s);
    report.control_ttft_s.push_back(miss.ttft_s);
    report.own_ttft_s.push_back(own.ttft_s);
    report.attacker_cached_tokens += hit.usage.cached_tokens;
    (void)sent;
  }
  report.auc = RocAuc(report.control_ttft_s, report.hit_ttft_s);
  report.own_auc = RocAuc(report.control_ttft_s, report.own_ttft_s);
  return report;
}

}  // namespace strata::cluster_bench
