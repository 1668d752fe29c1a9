// The replay's table, JSON and load-sweep plot.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/strings.h"
#include "scheduler/replay/replay.h"

namespace strata::scheduler::replay {
namespace {

struct Field {
  const char* name;
  double PolicyResult::*member;
  enum Format { kPercent, kThreeDecimals, kOneDecimal } format;
};

constexpr Field kFields[] = {
    {"hit_rate_gpu", &PolicyResult::hit_rate_gpu, Field::kPercent},
    {"hit_rate_host", &PolicyResult::hit_rate_host, Field::kPercent},
    {"hit_rate_kvstore_dram", &PolicyResult::hit_rate_kvstore_dram, Field::kPercent},
    {"hit_rate_kvstore_ssd", &PolicyResult::hit_rate_kvstore_ssd, Field::kPercent},
    {"hit_rate_total", &PolicyResult::hit_rate_total, Field::kPercent},
    {"hit_rate_of_ideal", &PolicyResult::hit_rate_of_ideal, Field::kPercent},
    {"prefill_tokens_saved", &PolicyResult::prefill_tokens_saved, Field::kPercent},
    {"ttft_p50_s", &PolicyResult::ttft_p50_s, Field::kThreeDecimals},
    {"ttft_p90_s", &PolicyResult::ttft_p90_s, Field::kThreeDecimals},
    {"ttft_p99_s", &PolicyResult::ttft_p99_s, Field::kThreeDecimals},
    {"throughput_req_s", &PolicyResult::throughput_req_s, Field::kThreeDecimals},
    {"within_slo", &PolicyResult::within_slo, Field::kPercent},
    {"max_worker_share", &PolicyResult::max_worker_share, Field::kPercent},
    {"worker_busy", &PolicyResult::worker_busy, Field::kPercent},
    {"route_us_p50", &PolicyResult::route_us_p50, Field::kOneDecimal},
    {"route_us_p99", &PolicyResult::route_us_p99, Field::kOneDecimal},
};

std::string Cell(const Field& field, const PolicyResult& result) {
  const double value = result.*(field.member);
  switch (field.format) {
    case Field::kPercent:
      return absl::StrFormat("%.1f%%", 100 * value);
    case Field::kThreeDecimals:
      return absl::StrFormat("%.3f", value);
    case Field::kOneDecimal:
      return absl::StrFormat("%.1f", value);
  }
  return "";
}

nlohmann::json RowJson(const PolicyResult& result) {
  nlohmann::json row;
  row["requests"] = result.requests;
  for (const Field& field : kFields) row[field.name] = result.*(field.member);
  return row;
}

}  // namespace

std::string FormatTable(const ReplayReport& report) {
  const ReplayOptions& o = report.options;
  std::string out = absl::StrFormat("workers %d (G %d + H %d blocks each), ", o.workers, o.gpu_blocks_per_worker,
                                    o.host_blocks_per_worker);
  out += o.kvstores == 0 ? std::string("no kvstore")
                         : absl::StrFormat("kvstores %d (S %d + D %d blocks each)", o.kvstores, o.kvstore_dram_blocks,
                                           o.kvstore_ssd_blocks);
  out += absl::StrFormat(
      ", block %d tokens, load x%g, TTFT SLO %g s, requests %d, ideal (infinite cache) hit rate %.1f%%\n\n",
      o.block_tokens, o.time_scale, o.slo_ttft_s, report.results.empty() ? 0 : report.results[0].requests,
      100 * report.ideal_hit_rate);
  out += absl::StrFormat("| %-22s |", "metric");
  for (const PolicyResult& r : report.results) out += absl::StrFormat(" %12s |", std::string(PolicyName(r.policy)));
  out += "\n|---|";
  for (size_t i = 0; i < report.results.size(); ++i) out += "---:|";
  out += "\n";
  for (const Field& field : kFields) {
    out += absl::StrFormat("| %-22s |", field.name);
    for (const PolicyResult& r : report.results) out += absl::StrFormat(" %12s |", Cell(field, r));
    out += "\n";
  }
  return out;
}

std::string FormatJson(const ReplayReport& report) {
  const ReplayOptions& o = report.options;
  nlohmann::json json;
  json["config"] = {{"workers", o.workers},
                    {"gpu_blocks_per_worker", o.gpu_blocks_per_worker},
                    {"host_blocks_per_worker", o.host_blocks_per_worker},
                    {"kvstores", o.kvstores},
                    {"kvstore_dram_blocks", o.kvstore_dram_blocks},
                    {"kvstore_ssd_blocks", o.kvstore_ssd_blocks},
                    {"block_tokens", o.block_tokens},
                    {"time_scale", o.time_scale},
                    {"slo_ttft_s", o.slo_ttft_s}};
  json["ideal_hit_rate"] = report.ideal_hit_rate;
  nlohmann::json policies = nlohmann::json::object();
  for (const PolicyResult& r : report.results) {
    policies[std::string(PolicyName(r.policy))] = RowJson(r);
  }
  json["policies"] = policies;
  return json.dump(2);
}

std::string FormatSweepTable(const std::vector<SweepPoint>& sweep) {
  if (sweep.empty()) return "";
  std::string out = "| load | metric |";
  for (const PolicyResult& r : sweep[0].results) out += StrCat(" ", PolicyName(r.policy), " |");
  out += "\n|---:|---|";
  for (size_t i = 0; i < sweep[0].results.size(); ++i) out += "---:|";
  out += "\n";
  for (const SweepPoint& point : sweep) {
    for (const char* metric : {"ttft_p90_s", "hit_rate_total", "within_slo"}) {
      out += absl::StrFormat("| x%g | %s |", point.time_scale, metric);
      for (const PolicyResult& r : point.results) {
        if (std::string_view(metric) == "ttft_p90_s") {
          out += absl::StrFormat(" %.3f |", r.ttft_p90_s);
        } else {
          out += absl::StrFormat(" %.1f%% |",
                                 100 * (std::string_view(metric) == "within_slo" ? r.within_slo : r.hit_rate_total));
        }
      }
      out += "\n";
    }
  }
  return out;
}

std::string FormatSweepJson(const std::vector<SweepPoint>& sweep) {
  nlohmann::json points = nlohmann::json::array();
  for (const SweepPoint& point : sweep) {
    nlohmann::json policies = nlohmann::json::object();
    for (const PolicyResult& r : point.results) {
      policies[std::string(PolicyName(r.policy))] = RowJson(r);
    }
    points.push_back({{"time_scale", point.time_scale}, {"policies", policies}});
  }
  return nlohmann::json{{"sweep", points}}.dump(2);
}

absl::Status PlotSweep(const std::vector<SweepPoint>& sweep, const ReplayOptions& o, const std::string& png_path) {
  if (sweep.empty()) return absl::InvalidArgumentError("plot: empty sweep");
  std::string title = absl::StrFormat("TTFT p90 vs load: %d workers (G %d + H %d blocks each), ", o.workers,
                                      o.gpu_blocks_per_worker, o.host_blocks_per_worker);
  title += o.kvstores == 0 ? std::string("no kvstore")
                           : absl::StrFormat("%d kvstore(s) (S %d + D %d blocks)", o.kvstores, o.kvstore_dram_blocks,
                                             o.kvstore_ssd_blocks);
  const std::string dat = png_path + ".dat";
  const std::string gp = png_path + ".gp";
  {
    std::ofstream out(dat);
    out << "# load";
    for (const PolicyResult& r : sweep[0].results) out << " " << PolicyName(r.policy);
    out << "\n";
    for (const SweepPoint& point : sweep) {
      out << point.time_scale;
      for (const PolicyResult& r : point.results) out << " " << r.ttft_p90_s;
      out << "\n";
    }
    if (!out) return absl::UnavailableError(StrCat(dat, ": cannot write"));
  }
  {
    std::ofstream out(gp);
    out << "set terminal pngcairo size 900,560 noenhanced\n"
        << "set output '" << png_path << "'\n"
        << "set title '" << title << "'\n"
        << "set xlabel 'load (trace time compressed x)'\nset ylabel 'TTFT p90 (s)'\n"
        << "set logscale xy\nset grid\nset key top left\nset xtics (";
    for (size_t i = 0; i < sweep.size(); ++i) out << (i ? "," : "") << sweep[i].time_scale;
    out << ")\nset xrange [" << sweep.front().time_scale * 0.9 << ":" << sweep.back().time_scale * 1.1 << "]\nplot";
    for (size_t i = 0; i < sweep[0].results.size(); ++i) {
      out << (i ? "," : "") << " '" << dat << "' using 1:" << i + 2 << " with linespoints lw 2 title '"
          << PolicyName(sweep[0].results[i].policy) << "'";
    }
    out << "\n";
    if (!out) return absl::UnavailableError(StrCat(gp, ": cannot write"));
  }
  const std::string command = StrCat("gnuplot '", gp, "'");
  if (std::system(command.c_str()) != 0) {
    return absl::UnavailableError(StrCat("plot: `", command, "` failed (is gnuplot installed? Debian: gnuplot-nox)"));
  }
  return absl::OkStatus();
}

}  // namespace strata::scheduler::replay
