// The `strata` command's subcommands, each an Options struct and a Run function. main.cc maps flags
// onto the structs 1:1; everything else lives here.
#ifndef STRATA_WORKER_CLI_COMMANDS_H_
#define STRATA_WORKER_CLI_COMMANDS_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "worker/engine/sampler.h"
#include "model/tokenizer.h"

namespace strata::cli {

enum class OutputFormat { kText, kJson };
enum class BackendKind { kCpu, kCuda };

struct GenerateCommand {
  std::filesystem::path model_dir;
  // Exactly one prompt source.
  std::optional<std::string> prompt;
  std::optional<std::string> prompt_ids;                 // "1,2,3"
  std::optional<std::filesystem::path> prompt_ids_file;  // ids separated by commas or whitespace
  int64_t max_new_tokens = 32;
  engine::SamplingOptions sampling;
  bool ignore_eos = false;  // keep going past the model's end-of-sequence tokens
  int64_t mini_sequence_tokens = 1024;
  int threads = 0;     // 0: one per core
  BackendKind backend = BackendKind::kCpu;
  DType cuda_dtype = DType::kBF16;  // --backend cuda only: BF16 or F32
  // Where the KV lives (worker/engine/kv_cache.h): all in backend memory unless the GPU budget is set,
  // then head by head in HBM up to it, pinned host memory up to the host budget, SSD files under ssd_dir.
  int64_t gpu_kv_budget_bytes = -1;  // < 0: unlimited
  int64_t host_kv_budget_bytes = 0;
  int64_t ssd_budget_bytes = 0;
  std::string ssd_dir;
  // Sparse (approximate) decode over offloaded layers (engine::SparseDecode): keys per KV head and step;
  // 0 is exact decode (default).
  int64_t sparse_decode_budget_tokens = 0;
  int64_t sparse_chunk_tokens = 32;
  bool stats = false;  // text mode: also print ids and tokens/s
  OutputFormat format = OutputFormat::kText;
};

struct TokenizeCommand {
  std::optional<std::filesystem::path> model_dir;  // uses model_dir/tokenizer.json
  std::optional<std::filesystem::path> tokenizer_file;
  std::string text;
  model::SpecialTokens special = model::SpecialTokens::kInclude;
  OutputFormat format = OutputFormat::kText;
};

struct InspectCommand {
  std::filesystem::path model_dir;
  OutputFormat format = OutputFormat::kText;
};

// Each writes its result to `out` (generated text is streamed as it is produced) and returns an error
// with a one-line message on bad input.
absl::Status RunGenerate(const GenerateCommand& command, std::ostream& out);
absl::Status RunTokenize(const TokenizeCommand& command, std::ostream& out);
absl::Status RunInspect(const InspectCommand& command, std::ostream& out);

// Parses "1, 2,3" or "[1 2 3]" into token ids; `source` names the input in errors.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(std::string_view text, std::string_view source);

}  // namespace strata::cli

#endif  // STRATA_WORKER_CLI_COMMANDS_H_
