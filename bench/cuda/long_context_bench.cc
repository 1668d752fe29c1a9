// Long-context benchmark (issue 13): a Llama-3-8B-shaped model with random BF16 weights prefills a
// prompt of --prompt-tokens layer by layer in mini-sequences, with its KV placed head by head over HBM,
// pinned host memory and SSD by the budgets given, then decodes --decode-tokens greedy tokens. Prints
// time to first token, decode tokens/s against the transfer floor (off-GPU KV bytes per token over the
// measured pinned H2D bandwidth), the stall of compute on transfers, SSD bandwidth, and peak GPU and
// host memory; one JSON line per run (--json appends it to a file).
//
//   strata_long_context_bench --prompt-tokens 131072 --gpu-kv-budget-gib 4 --host-kv-budget-gib 64
//       --compare-all-gpu          # the same prompt all in HBM first, in the same process
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/cuda/random_llama.h"
#include "common/status.h"
#include "common/strings.h"
#include "kernels/cuda_owners.h"
#include "kernels/cuda_status.h"
#include "nlohmann/json.hpp"
#include "worker/engine/engine.h"

namespace strata::bench {
namespace {

constexpr double kGiB = double{1 << 30};

struct Options {
  int64_t prompt_tokens = 32768;
  int64_t decode_tokens = 16;
  int64_t mini_sequence_tokens = 16384;
  double gpu_kv_budget_gib = -1;  // < 0: unlimited (all in HBM)
  double host_kv_budget_gib = 0;
  double ssd_budget_gib = 0;
  std::string ssd_dir;
  bool compare_all_gpu = false;
  std::string json_path;
  std::string label = "run";
};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Peak resident memory of this process (VmHWM), pinned host memory included once touched.
int64_t PeakHostBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

int64_t UsedGpuBytes() {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return 0;
  return static_cast<int64_t>(total_bytes - free_bytes);
}

void Log(const std::string& text) {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", std::gmtime(&now));
  std::printf("[%s] %s\n", stamp, text.c_str());
  std::fflush(stdout);
}

// Pinned host -> device bandwidth, 1 GiB copies, best of 5: the floor decode's transfers are priced at.
absl::StatusOr<double> MeasureH2dBytesPerSecond() {
  constexpr size_t kBytes = size_t{1} << 30;
  STRATA_ASSIGN_OR_RETURN(kernels::PinnedBuffer host, kernels::PinnedBuffer::Allocate(kBytes));
  STRATA_ASSIGN_OR_RETURN(kernels::DeviceBuffer device, kernels::DeviceBuffer::Allocate(kBytes));
  STRATA_ASSIGN_OR_RETURN(kernels::Stream stream, kernels::CreateStream());
  std::memset(host.data(), 1, kBytes);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device.data(), host.data(), kBytes, cudaMemcpyHostToDevice, stream.get()));
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream.get()));
    best = std::max(best, kBytes / Seconds(start));
  }
  return best;
}

int64_t GiBToBytes(double gib) { return gib < 0 ? engine::KvBudgets::kUnlimited : static_cast<int64_t>(gib * kGiB); }

// One prompt through the engine with `placement`: prefill, then greedy decode. Returns the JSON row.
absl::StatusOr<nlohmann::json> RunOnce(engine::Engine& engine, const Options& o, const engine::KvPlacement& placement,
                                       const std::string& label, double h2d_bytes_per_s) {
  const std::vector<int32_t> prompt = RandomTokenIds(o.prompt_tokens, 7);
  const int64_t capacity = o.prompt_tokens + o.decode_tokens;
  STRATA_ASSIGN_OR_RETURN(engine::MemoryPlan plan, engine.PlanMemory(capacity, o.prompt_tokens, placement));
  engine::KvPlacement planned = placement;
  planned.plan = plan.residency;
  const engine::ResidencyPlan& r = plan.residency;
  Log(StrCat(label, ": ", o.prompt_tokens, " tokens; KV heads G/H/S = ", r.HeadsIn(engine::KvTier::kDevice), "/",
             r.HeadsIn(engine::KvTier::kHost), "/", r.HeadsIn(engine::KvTier::kSsd), "; KV on GPU ",
             plan.kv.device_bytes / kGiB, " GiB, host ", plan.kv.host_bytes / kGiB, " GiB, SSD ",
             plan.kv.ssd_bytes / kGiB, " GiB; activations ", plan.activation_bytes / kGiB, " GiB"));
  auto start = std::chrono::steady_clock::now();
  STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine.NewSequence(capacity, planned));
  const double allocate_s = Seconds(start);
  Log(StrCat(label, ": KV allocated in ", allocate_s, " s; prefill starts"));
  const int64_t last = o.prompt_tokens - 1;
  start = std::chrono::steady_clock::now();
  STRATA_ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(sequence, prompt, {&last, 1}));
  const double ttft_s = Seconds(start);
  const engine::KvTransferStats after_prefill = sequence.transfer_stats();
  const int64_t gpu_after_prefill = UsedGpuBytes();
  Log(StrCat(label, ": time to first token ", ttft_s, " s; compute stalled ", after_prefill.compute_stall_s, " s"));

  int32_t token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const int64_t zero = 0;
  double decode_s = 0;
  int64_t timed_steps = 0;
  engine::KvTransferStats before_timed = after_prefill;
  for (int64_t step = 0; step + 1 < o.decode_tokens; ++step) {
    // The first step is not timed: it pays for the prefill's last write-backs.
    if (step == 1) before_timed = sequence.transfer_stats();
    start = std::chrono::steady_clock::now();
    STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, {&token, 1}, {&zero, 1}));
    if (step >= 1) {
      decode_s += Seconds(start);
      ++timed_steps;
    }
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    Log(StrCat(label, ": decode step ", step + 1, " in ", Seconds(start), " s"));
  }
  const engine::KvTransferStats end = sequence.transfer_stats();
  const double uploaded_per_step =
      timed_steps > 0 ? static_cast<double>(end.bytes_uploaded - before_timed.bytes_uploaded) / timed_steps : 0;
  const double decode_tok_s = timed_steps > 0 ? timed_steps / decode_s : 0;
  const double floor_tok_s = uploaded_per_step > 0 ? h2d_bytes_per_s / uploaded_per_step : 0;
  const double ssd_read_gbps = end.ssd_read_s > 0 ? static_cast<double>(end.ssd_bytes_read) / end.ssd_read_s / 1e9 : 0;
  nlohmann::json row = {
      {"label", label},
      {"prompt_tokens", o.prompt_tokens},
      {"heads_gpu", r.HeadsIn(engine::KvTier::kDevice)},
      {"heads_host", r.HeadsIn(engine::KvTier::kHost)},
      {"heads_ssd", r.HeadsIn(engine::KvTier::kSsd)},
      {"kv_gpu_gib", plan.kv.device_bytes / kGiB},
      {"kv_host_gib", plan.kv.host_bytes / kGiB},
      {"kv_ssd_gib", plan.kv.ssd_bytes / kGiB},
      {"ttft_s", ttft_s},
      {"prefill_compute_stall_s", after_prefill.compute_stall_s},
      {"decode_tok_s", decode_tok_s},
      {"decode_offgpu_bytes_per_token", uploaded_per_step},
      {"decode_transfer_floor_tok_s", floor_tok_s},
      {"decode_fraction_of_floor", floor_tok_s > 0 ? decode_tok_s / floor_tok_s : 0},
      {"decode_compute_stall_s", end.compute_stall_s - after_prefill.compute_stall_s},
      {"ssd_bytes_read", end.ssd_bytes_read},
      {"ssd_read_gbps", ssd_read_gbps},
      {"ssd_bytes_written", end.ssd_bytes_written},
      {"peak_gpu_gib", std::max(gpu_after_prefill, UsedGpuBytes()) / kGiB},
      {"peak_host_gib", PeakHostBytes() / kGiB},
      {"kv_allocate_s", allocate_s},
  };
  Log(StrCat(label, ": ", row.dump()));
  return row;
}

absl::Status Run(const Options& o) {
  STRATA_ASSIGN_OR_RETURN(const double h2d, MeasureH2dBytesPerSecond());
  Log(StrCat("pinned H2D bandwidth ", h2d / 1e9, " GB/s"));
  STRATA_ASSIGN_OR_RETURN(BenchModel m, MakeModel(engine::DecodeGraphs::kCapture));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                          engine::Engine::Create(std::move(m.backend), std::move(*m.model),
                                                 {.mini_sequence_tokens = o.mini_sequence_tokens}));
  m.model.reset();
  Log(StrCat("model ready; GPU memory used ", UsedGpuBytes() / kGiB, " GiB"));
  std::vector<nlohmann::json> rows;
  if (o.compare_all_gpu) {
    STRATA_ASSIGN_OR_RETURN(nlohmann::json row, RunOnce(*engine, o, engine::KvPlacement{}, "all_gpu", h2d));
    rows.push_back(row);
  }
  engine::KvPlacement placement;
  placement.budgets = engine::KvBudgets{.device_bytes = GiBToBytes(o.gpu_kv_budget_gib),
                                        .host_bytes = GiBToBytes(o.host_kv_budget_gib),
                                        .ssd_bytes = GiBToBytes(o.ssd_budget_gib),
                                        .ssd_dir = o.ssd_dir};
  STRATA_ASSIGN_OR_RETURN(nlohmann::json row, RunOnce(*engine, o, placement, o.label, h2d));
  row["h2d_gbps"] = h2d / 1e9;
  if (!rows.empty()) row["ttft_vs_all_gpu"] = row["ttft_s"].get<double>() / rows[0]["ttft_s"].get<double>();
  rows.push_back(row);
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path, std::ios::app);
    for (const auto& r : rows) out << r.dump() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  strata::bench::Options o;
  CLI::App app("Long-context prefill and decode with head-wise KV offload (Llama-3-8B shape, random weights)");
  app.add_option("--prompt-tokens", o.prompt_tokens)->capture_default_str();
  app.add_option("--decode-tokens", o.decode_tokens)->capture_default_str();
  app.add_option("--mini-sequence", o.mini_sequence_tokens)->capture_default_str();
  app.add_option("--gpu-kv-budget-gib", o.gpu_kv_budget_gib, "< 0: all KV in HBM")->capture_default_str();
  app.add_option("--host-kv-budget-gib", o.host_kv_budget_gib)->capture_default_str();
  app.add_option("--ssd-budget-gib", o.ssd_budget_gib)->capture_default_str();
  app.add_option("--ssd-dir", o.ssd_dir);
  app.add_flag("--compare-all-gpu", o.compare_all_gpu, "Run the prompt with all KV in HBM first");
  app.add_option("--json", o.json_path, "Append one JSON line per run to this file");
  app.add_option("--label", o.label)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = strata::bench::Run(o);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
