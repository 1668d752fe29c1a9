// strata: command-line front end of the engine. Flags map 1:1 onto the commands' option structs.
#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "worker/cli/commands.h"
#include "worker/cli/kv_command.h"

namespace {

int Finish(const absl::Status& status) {
  if (status.ok()) return 0;
  std::cerr << "strata: error: " << status.message() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using strata::cli::OutputFormat;
  CLI::App app{"Strata: long-context LLM inference over a tiered KV cache"};
  app.require_subcommand(1);

  strata::cli::GenerateCommand generate;
  bool generate_json = false;
  std::string prompt, prompt_ids, prompt_ids_file;
  CLI::App* gen = app.add_subcommand("generate", "Generate text from a prompt");
  gen->add_option("--model", generate.model_dir, "Hugging Face model directory")->required();
  auto* prompt_opt = gen->add_option("--prompt", prompt, "Prompt text (tokenized with the model's tokenizer)");
  auto* ids_opt = gen->add_option("--prompt-ids", prompt_ids, "Prompt token ids, comma-separated");
  auto* file_opt = gen->add_option("--prompt-ids-file", prompt_ids_file, "File of prompt token ids");
  prompt_opt->excludes(ids_opt)->excludes(file_opt);
  ids_opt->excludes(file_opt);
  gen->add_option("--max-new-tokens", generate.max_new_tokens, "Tokens to generate at most")->capture_default_str();
  gen->add_option("--temperature", generate.sampling.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", generate.sampling.top_k, "0 = off")->capture_default_str();
  gen->add_option("--top-p", generate.sampling.top_p, "1 = off")->capture_default_str();
  gen->add_option("--seed", generate.sampling.seed, "Random seed for sampling")->capture_default_str();
  gen->add_flag("--ignore-eos", generate.ignore_eos, "Do not stop at the model's end-of-sequence tokens");
  gen->add_option("--mini-sequence", generate.mini_sequence_tokens, "Prefill mini-sequence length in tokens")
      ->capture_default_str();
  gen->add_option("--threads", generate.threads, "CPU threads (0 = one per core)")->capture_default_str();
  gen->add_option("--backend", generate.backend, "cpu or cuda")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, strata::cli::BackendKind>{{"cpu", strata::cli::BackendKind::kCpu},
                                                          {"cuda", strata::cli::BackendKind::kCuda}}));
  gen->add_option("--dtype", generate.cuda_dtype, "CUDA backend activations: bf16 (default) or f32")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, strata::DType>{{"bf16", strata::DType::kBF16}, {"f32", strata::DType::kF32}}));
  gen->add_option("--gpu-kv-budget", generate.gpu_kv_budget_bytes,
                  "KV bytes in GPU memory (e.g. 40GiB); the rest is offloaded head by head (default: all)")
      ->transform(CLI::AsSizeValue(false));
  gen->add_option("--host-kv-budget", generate.host_kv_budget_bytes, "KV bytes in pinned host memory")
      ->transform(CLI::AsSizeValue(false));
  gen->add_option("--ssd-budget", generate.ssd_budget_bytes, "KV bytes in files under --ssd-dir")
      ->transform(CLI::AsSizeValue(false));
  gen->add_option("--ssd-dir", generate.ssd_dir, "Directory for the SSD tier (direct I/O)");
  gen->add_option("--sparse-decode-budget", generate.sparse_decode_budget_tokens,
                  "Approximate decode: keys read per KV head and step from offloaded layers, chosen by importance "
                  "(0: exact)")
      ->capture_default_str();
  gen->add_option("--sparse-chunk-tokens", generate.sparse_chunk_tokens, "Keys per chunk of sparse decode")
      ->capture_default_str();
  gen->add_flag("--stats", generate.stats, "Also print the ids, tokens/s and the KV placement");
  gen->add_flag("--json", generate_json, "Print one JSON object");

  strata::cli::TokenizeCommand tokenize;
  bool tokenize_json = false, no_special = false;
  std::string tokenize_model, tokenizer_file;
  CLI::App* tok = app.add_subcommand("tokenize", "Turn text into token ids");
  auto* tok_model = tok->add_option("--model", tokenize_model, "Model directory (uses its tokenizer.json)");
  auto* tok_file = tok->add_option("--tokenizer", tokenizer_file, "A tokenizer.json file");
  tok_model->excludes(tok_file);
  tok->add_option("--text", tokenize.text, "Text to tokenize")->required();
  tok->add_flag("--no-special", no_special, "Do not add special tokens (BOS)");
  tok->add_flag("--json", tokenize_json, "Print {\"ids\": [...], \"tokens\": [...]}");

  strata::cli::InspectCommand inspect;
  bool inspect_json = false;
  CLI::App* ins = app.add_subcommand("inspect", "Describe a model directory");
  ins->add_option("model", inspect.model_dir, "Hugging Face model directory")->required();
  ins->add_flag("--json", inspect_json, "Print JSON");

  strata::cli::KvCommand kv_command;
  CLI::App* kv = strata::cli::AddKvCommand(app, kv_command);

  CLI11_PARSE(app, argc, argv);

  if (gen->parsed()) {
    if (!prompt_opt->empty()) generate.prompt = prompt;
    if (!ids_opt->empty()) generate.prompt_ids = prompt_ids;
    if (!file_opt->empty()) generate.prompt_ids_file = prompt_ids_file;
    generate.format = generate_json ? OutputFormat::kJson : OutputFormat::kText;
    return Finish(strata::cli::RunGenerate(generate, std::cout));
  }
  if (tok->parsed()) {
    if (!tok_model->empty()) tokenize.model_dir = tokenize_model;
    if (!tok_file->empty()) tokenize.tokenizer_file = tokenizer_file;
    tokenize.special = no_special ? strata::model::SpecialTokens::kSkip : strata::model::SpecialTokens::kInclude;
    tokenize.format = tokenize_json ? OutputFormat::kJson : OutputFormat::kText;
    return Finish(strata::cli::RunTokenize(tokenize, std::cout));
  }
  if (kv->parsed()) return Finish(strata::cli::RunKv(kv_command, std::cout));
  inspect.format = inspect_json ? OutputFormat::kJson : OutputFormat::kText;
  return Finish(strata::cli::RunInspect(inspect, std::cout));
}
