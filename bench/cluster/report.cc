#include "bench/cluster/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace strata::cluster_bench {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(values.size())));
  return values[std::max<size_t>(rank, 1) - 1];
}

PassSummary Summarize(std::string name, const std::vector<CompletionResult>& results,
                      const std::vector<uint32_t>& reusable_tokens, double wall_s) {
  PassSummary summary;
  summary.name = std::move(name);
  summary.requests = static_cast<uint32_t>(results.size());
  summary.wall_s = wall_s;
  std::vector<double> ttfts;
  for (size_t i = 0; i < results.size(); ++i) {
    const CompletionResult& result = results[i];
    if (!result.ok) {
      if (summary.failed++ == 0) summary.first_error = result.error;
      continue;
    }
    ttfts.push_back(result.ttft_s);
    if (i < reusable_tokens.size()) summary.reusable_tokens += reusable_tokens[i];
    const CompletionUsage& usage = result.usage;
    summary.prompt_tokens += usage.prompt_tokens;
    summary.cached_tokens += usage.cached_tokens;
    summary.cached_gpu += usage.cached_tokens_gpu;
    summary.cached_host += usage.cached_tokens_host;
    summary.cached_kvstore += usage.cached_tokens_kvstore;
    summary.prefill_tokens += usage.has_strata ? usage.prefill_tokens : usage.prompt_tokens - usage.cached_tokens;
    summary.completion_tokens += usage.completion_tokens;
    ++summary.requests_per_worker[usage.worker_id.empty() ? "?" : usage.worker_id];
  }
  summary.ttft_p50_s = Percentile(ttfts, 0.5);
  summary.ttft_p90_s = Percentile(ttfts, 0.9);
  double sum = 0;
  for (double t : ttfts) sum += t;
  summary.ttft_mean_s = ttfts.empty() ? 0 : sum / static_cast<double>(ttfts.size());
  summary.output_tokens_per_s = wall_s > 0 ? static_cast<double>(summary.completion_tokens) / wall_s : 0;
  return summary;
}

namespace {

std::string Percent(double rate) { return absl::StrFormat("%.1f%%", 100 * rate); }
std::string Ms(double s) { return absl::StrFormat("%.1f ms", 1000 * s); }

std::string Workers(const PassSummary& pass) {
  std::string out;
  for (const auto& [worker, count] : pass.requests_per_worker) {
    absl::StrAppend(&out, out.empty() ? "" : " ", worker, ":", count);
  }
  return out.empty() ? "-" : out;
}

}  // namespace

std::string FormatTable(const std::vector<PassSummary>& passes) {
  std::vector<std::pair<std::string, std::vector<std::string>>> rows = {
      {"requests (failed)", {}},        {"prompt tokens", {}},          {"prefix hit rate", {}},
      {"  from worker GPU", {}},        {"  from worker host", {}},     {"  from kvstore", {}},
      {"trace ceiling (ideal)", {}},    {"prefill tokens", {}},         {"prefill tokens saved", {}},
      {"TTFT p50", {}},                 {"TTFT p90", {}},               {"TTFT mean", {}},
      {"output tokens/s", {}},          {"wall time", {}},              {"requests per worker", {}},
  };
  for (const PassSummary& pass : passes) {
    const std::vector<std::string> values = {
        StrCat(pass.requests, " (", pass.failed, ")"),
        StrCat(pass.prompt_tokens),
        Percent(pass.hit_rate()),
        Percent(pass.tier_rate(pass.cached_gpu)),
        Percent(pass.tier_rate(pass.cached_host)),
        Percent(pass.tier_rate(pass.cached_kvstore)),
        Percent(pass.tier_rate(pass.reusable_tokens)),
        StrCat(pass.prefill_tokens),
        StrCat(pass.prompt_tokens - std::min(pass.prompt_tokens, pass.prefill_tokens)),
        Ms(pass.ttft_p50_s),
        Ms(pass.ttft_p90_s),
        Ms(pass.ttft_mean_s),
        absl::StrFormat("%.1f", pass.output_tokens_per_s),
        absl::StrFormat("%.2f s", pass.wall_s),
        Workers(pass),
    };
    for (size_t i = 0; i < rows.size(); ++i) rows[i].second.push_back(values[i]);
  }
  size_t label_width = 0;
  for (const auto& row : rows) label_width = std::max(label_width, row.first.size());
  std::vector<size_t> widths(passes.size(), 0);
  for (size_t p = 0; p < passes.size(); ++p) {
    widths[p] = passes[p].name.size();
    for (const auto& row : rows) widths[p] = std::max(widths[p], row.second[p].size());
  }
  std::string out = absl::StrFormat("%-*s", static_cast<int>(label_width), "");
  for (size_t p = 0; p < passes.size(); ++p) absl::StrAppend(&out, absl::StrFormat("  %*s", static_cast<int>(widths[p]), passes[p].name));
  absl::StrAppend(&out, "\n");
  for (const auto& row : rows) {
    absl::StrAppend(&out, absl::StrFormat("%-*s", static_cast<int>(label_width), row.first));
    for (size_t p = 0; p < passes.size(); ++p) absl::StrAppend(&out, absl::StrFormat("  %*s", static_cast<int>(widths[p]), row.second[p]));
    absl::StrAppend(&out, "\n");
  }
  for (const PassSummary& pass : passes) {
    if (pass.failed > 0) absl::StrAppend(&out, pass.name, ": first error: ", pass.first_error, "\n");
  }
  return out;
}

nlohmann::json ToJson(const std::vector<PassSummary>& passes) {
  nlohmann::json out = nlohmann::json::object();
  nlohmann::json list = nlohmann::json::array();
  for (const PassSummary& pass : passes) {
    list.push_back({{"name", pass.name},
                    {"requests", pass.requests},
                    {"failed", pass.failed},
                    {"first_error", pass.first_error},
                    {"wall_s", pass.wall_s},
                    {"prompt_tokens", pass.prompt_tokens},
                    {"cached_tokens", pass.cached_tokens},
                    {"cached_tokens_gpu", pass.cached_gpu},
                    {"cached_tokens_host", pass.cached_host},
                    {"cached_tokens_kvstore", pass.cached_kvstore},
                    {"reusable_tokens", pass.reusable_tokens},
                    {"prefill_tokens", pass.prefill_tokens},
                    {"prefix_hit_rate", pass.hit_rate()},
                    {"completion_tokens", pass.completion_tokens},
                    {"ttft_p50_s", pass.ttft_p50_s},
                    {"ttft_p90_s", pass.ttft_p90_s},
                    {"ttft_mean_s", pass.ttft_mean_s},
                    {"output_tokens_per_s", pass.output_tokens_per_s},
                    {"requests_per_worker", pass.requests_per_worker}});
  }
  out["passes"] = std::move(list);
  return out;
}

}  // namespace strata::cluster_bench
