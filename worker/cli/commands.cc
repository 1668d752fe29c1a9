#include "worker/cli/commands.h"

#include <charconv>
#include <map>

#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/hf_cache.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace strata::cli {
namespace {

using nlohmann::json;

// One line (or `indent`ed) of JSON; strings that are not UTF-8 (a path, say) get U+FFFD rather than
// an exception.
std::string Dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerateCommand& c, const model::Model& model) {
  const int sources = c.prompt.has_value() + c.prompt_ids.has_value() + c.prompt_ids_file.has_value();
  if (sources != 1) {
    return absl::InvalidArgumentError("give exactly one of --prompt, --prompt-ids, --prompt-ids-file");
  }
  if (c.prompt_ids) return ParseTokenIds(*c.prompt_ids, "--prompt-ids");
  if (c.prompt_ids_file) {
    STRATA_ASSIGN_OR_RETURN(std::string text, ReadFile(*c.prompt_ids_file));
    return ParseTokenIds(text, c.prompt_ids_file->string());
  }
  if (!model.tokenizer) {
    return absl::InvalidArgumentError(
        StrCat((model.dir / "tokenizer.json").string(), " does not exist: pass --prompt-ids instead of --prompt"));
  }
  return model.tokenizer->Encode(*c.prompt);
}

double PerSecond(double count, double seconds) { return seconds > 0 ? count / seconds : 0.0; }

}  // namespace

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(std::string_view text, std::string_view source) {
  std::vector<int32_t> ids;
  size_t i = 0;
  auto is_separator = [](char ch) { return ch == ',' || ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r'; };
  if (const size_t open = text.find_first_not_of(" \n\t\r"); open != std::string_view::npos && text[open] == '[') {
    const size_t close = text.find_last_not_of(" \n\t\r");
    if (text[close] != ']') return absl::InvalidArgumentError(StrCat(source, ": '[' without a closing ']'"));
    text = text.substr(open + 1, close - open - 1);
  }
  while (i < text.size()) {
    if (is_separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !is_separator(text[end])) ++end;
    const std::string_view word = text.substr(i, end - i);
    int32_t id = 0;
    auto [ptr, error] = std::from_chars(word.data(), word.data() + word.size(), id);
    if (error != std::errc() || ptr != word.data() + word.size() || id < 0) {
      return absl::InvalidArgumentError(StrCat(source, ": '", word, "' is not a token id"));
    }
    ids.push_back(id);
    i = end;
  }
  if (ids.empty()) return absl::InvalidArgumentError(StrCat(source, ": no token ids"));
  return ids;
}

absl::Status RunGenerate(const GenerateCommand& c, std::ostream& out) {
  STRATA_RETURN_IF_ERROR(engine::ValidateSamplingOptions(c.sampling));
  STRATA_ASSIGN_OR_RETURN(const ResolvedModel resolved, ResolveModel(c.model_dir.string()));
  STRATA_ASSIGN_OR_RETURN(model::Model model, model::OpenModel(resolved.dir));
  STRATA_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(c, model));
  std::unique_ptr<engine::Backend> backend;
  if (c.backend == BackendKind::kCuda) {
    STRATA_ASSIGN_OR_RETURN(backend, engine::CreateCudaBackend({.dtype = c.cuda_dtype}));
  } else {
    backend = engine::CreateCpuBackend({.threads = c.threads});
  }
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                          engine::Engine::Create(model, std::move(backend),
                                                 {.mini_sequence_tokens = c.mini_sequence_tokens}));

  engine::GenerateOptions options{.max_new_tokens = c.max_new_tokens, .sampling = c.sampling};
  if (c.gpu_kv_budget_bytes >= 0) options.kv_placement.budgets.device_bytes = c.gpu_kv_budget_bytes;
  options.kv_placement.budgets.host_bytes = c.host_kv_budget_bytes;
  options.kv_placement.budgets.ssd_bytes = c.ssd_budget_bytes;
  options.kv_placement.budgets.ssd_dir = c.ssd_dir;
  options.kv_placement.sparse.budget_tokens = c.sparse_decode_budget_tokens;
  options.kv_placement.sparse.chunk_tokens = c.sparse_chunk_tokens;
  if (!c.ssd_dir.empty()) STRATA_RETURN_IF_ERROR(CreateDirectories(c.ssd_dir, "--ssd-dir"));
  if (!c.ignore_eos) {
    for (int64_t id : model.config.eos_token_ids) options.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  const model::Tokenizer* tokenizer = model.tokenizer ? &*model.tokenizer : nullptr;
  std::optional<model::StreamingDecoder> stream;
  if (tokenizer != nullptr && c.format == OutputFormat::kText) stream.emplace(*tokenizer, model::SpecialTokens::kSkip);
  STRATA_ASSIGN_OR_RETURN(engine::GenerateResult result, engine::Generate(*engine, prompt, options, [&](int32_t token) {
                            if (stream) out << stream->Push(token) << std::flush;
                          }));
  // The first new token comes from the prefill; the rest are decode steps.
  const double decode_tokens = result.output_ids.empty() ? 0.0 : static_cast<double>(result.output_ids.size() - 1);
  const std::string finish = result.finish_reason == engine::FinishReason::kStopToken ? "stop" : "length";
  // Sparse decode never passes silently: whether any step left keys out is part of every output.
  const engine::KvTransferStats& t = result.transfers;
  const bool approximate = t.approximate_attentions > 0;

  if (c.format == OutputFormat::kJson) {
    json j = {
        {"model", model.dir.string()},
        {"model_fingerprint", model.fingerprint.Hex()},
        {"prompt_ids", prompt},
        {"output_ids", result.output_ids},
        {"text", tokenizer ? json(tokenizer->Decode(result.output_ids, model::SpecialTokens::kSkip)) : json(nullptr)},
        {"finish_reason", finish},
        {"prefill_seconds", result.prefill_seconds},
        {"decode_seconds", result.decode_seconds},
        {"prefill_tokens_per_second", PerSecond(static_cast<double>(prompt.size()), result.prefill_seconds)},
        {"decode_tokens_per_second", PerSecond(decode_tokens, result.decode_seconds)},
        {"kv",
         {{"heads_gpu", result.memory.residency.HeadsIn(engine::KvTier::kDevice)},
          {"heads_host", result.memory.residency.HeadsIn(engine::KvTier::kHost)},
          {"heads_ssd", result.memory.residency.HeadsIn(engine::KvTier::kSsd)},
          {"gpu_bytes", result.memory.kv.device_bytes},
          {"host_bytes", result.memory.kv.host_bytes},
          {"ssd_bytes", result.memory.kv.ssd_bytes},
          {"bytes_uploaded", result.transfers.bytes_uploaded},
          {"bytes_downloaded", result.transfers.bytes_downloaded},
          {"ssd_bytes_read", result.transfers.ssd_bytes_read},
          {"compute_stall_seconds", result.transfers.compute_stall_s}}},
        {"decode", approximate ? "approximate" : "exact"},
        {"sparse_decode",
         {{"budget_tokens", c.sparse_decode_budget_tokens},
          {"chunk_tokens", c.sparse_chunk_tokens},
          {"sparse_attentions", t.sparse_attentions},
          {"approximate_attentions", t.approximate_attentions}}},
    };
    out << Dump(j) << "\n";
    return absl::OkStatus();
  }
  if (stream) out << stream->Finish() << "\n";
  if (approximate) {
    out << "decode: approximate (sparse decode, " << c.sparse_decode_budget_tokens << " keys per KV head and step; "
        << t.approximate_attentions << " of " << t.sparse_attentions << " layer attentions left keys out)\n";
  }
  if (c.stats || tokenizer == nullptr) {
    out << "prompt_ids: [" << absl::StrJoin(prompt, ", ") << "]\n";
    out << "output_ids: [" << absl::StrJoin(result.output_ids, ", ") << "]\n";
  }
  if (c.stats) {
    out << "finish: " << finish << "\n";
    out << "prefill: " << prompt.size() << " tokens in " << result.prefill_seconds * 1e3 << " ms ("
        << PerSecond(static_cast<double>(prompt.size()), result.prefill_seconds) << " tokens/s)\n";
    out << "decode: " << decode_tokens << " tokens in " << result.decode_seconds * 1e3 << " ms ("
        << PerSecond(decode_tokens, result.decode_seconds) << " tokens/s)\n";
    const engine::ResidencyPlan& plan = result.memory.residency;
    if (!plan.AllOnDevice()) {
      out << "kv heads: " << plan.HeadsIn(engine::KvTier::kDevice) << " gpu, " << plan.HeadsIn(engine::KvTier::kHost)
          << " host, " << plan.HeadsIn(engine::KvTier::kSsd) << " ssd; moved " << result.transfers.bytes_uploaded
          << " bytes in, " << result.transfers.bytes_downloaded << " out; compute waited "
          << result.transfers.compute_stall_s * 1e3 << " ms\n";
    }
  }
  return absl::OkStatus();
}

absl::Status RunTokenize(const TokenizeCommand& c, std::ostream& out) {
  if (c.model_dir.has_value() == c.tokenizer_file.has_value()) {
    return absl::InvalidArgumentError("give exactly one of --model, --tokenizer");
  }
  const std::filesystem::path path = c.tokenizer_file ? *c.tokenizer_file : *c.model_dir / "tokenizer.json";
  STRATA_ASSIGN_OR_RETURN(model::Tokenizer tokenizer, model::Tokenizer::FromFile(path));
  STRATA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer.Encode(c.text, c.special));
  if (c.format == OutputFormat::kJson) {
    std::vector<std::string> tokens;
    for (int32_t id : ids) tokens.emplace_back(tokenizer.IdToToken(id));
    out << Dump(json{{"ids", ids}, {"tokens", tokens}}) << "\n";
  } else {
    out << absl::StrJoin(ids, " ") << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunInspect(const InspectCommand& c, std::ostream& out) {
  STRATA_ASSIGN_OR_RETURN(const ResolvedModel resolved, ResolveModel(c.model_dir.string()));
  STRATA_ASSIGN_OR_RETURN(model::Model model, model::OpenModel(resolved.dir));
  const model::ModelConfig& cfg = model.config;
  int64_t parameters = 0;
  std::map<std::string, int64_t> tensors_by_dtype;
  for (const model::TensorInfo& t : model.checkpoint.tensors()) {
    parameters += t.num_elements();
    ++tensors_by_dtype[std::string(DTypeName(t.dtype))];
  }
  const std::string rope = cfg.rope.type == model::RopeType::kLlama3 ? "llama3" : "default";
  json j = {
      {"architecture", ArchitectureName(cfg.architecture)},
      {"layers", cfg.num_layers},
      {"hidden_size", cfg.hidden_size},
      {"intermediate_size", cfg.intermediate_size},
      {"attention_heads", cfg.num_heads},
      {"kv_heads", cfg.num_kv_heads},
      {"head_dim", cfg.head_dim},
      {"vocab_size", cfg.vocab_size},
      {"rope", {{"type", rope}, {"theta", cfg.rope.theta}}},
      {"tied_embeddings", cfg.tie_word_embeddings},
      {"parameters", parameters},
      {"weight_bytes", model.checkpoint.total_bytes()},
      {"weight_files", model.checkpoint.files().size()},
      {"tensors_by_dtype", tensors_by_dtype},
      {"kv_bytes_per_token", {{"f32", cfg.KvBytesPerToken(4)}, {"bf16", cfg.KvBytesPerToken(2)}}},
      {"bos_token_id", cfg.bos_token_id},
      {"eos_token_ids", cfg.eos_token_ids},
      {"model_fingerprint", model.fingerprint.Hex()},
  };
  if (c.format == OutputFormat::kJson) {
    out << Dump(j, 2) << "\n";
    return absl::OkStatus();
  }
  std::vector<std::string> dtypes;
  for (const auto& [dtype, count] : tensors_by_dtype) dtypes.push_back(StrCat(dtype, " x", count));
  out << "architecture:       " << ArchitectureName(cfg.architecture) << "\n"
      << "layers:             " << cfg.num_layers << " (hidden " << cfg.hidden_size << ", intermediate "
      << cfg.intermediate_size << ")\n"
      << "attention:          " << cfg.num_heads << " query heads, " << cfg.num_kv_heads << " KV heads, head_dim "
      << cfg.head_dim << "\n"
      << "vocabulary:         " << cfg.vocab_size << (cfg.tie_word_embeddings ? " (tied embeddings)" : "") << "\n"
      << "rope:               " << rope << ", theta " << cfg.rope.theta << "\n"
      << "parameters:         " << parameters << "\n"
      << "weights:            " << model.checkpoint.total_bytes() << " bytes in " << model.checkpoint.files().size()
      << " file(s); " << absl::StrJoin(dtypes, ", ") << "\n"
      << "kv bytes per token: " << cfg.KvBytesPerToken(4) << " (f32), " << cfg.KvBytesPerToken(2) << " (bf16)\n"
      << "fingerprint:        " << model.fingerprint.Hex() << "\n";
  return absl::OkStatus();
}

}  // namespace strata::cli
