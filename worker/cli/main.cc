// strata: command-line front end of the engine. Flags map 1:1 onto the commands' option structs.
#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "common/flag_sources.h"
#include "common/size_flags.h"
#include "worker/cli/commands.h"
#include "worker/cli/kv_command.h"
#include "worker/cli/serve_command.h"

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
      ->transform(strata::ByteSizeFlag());
  gen->add_option("--host-kv-budget", generate.host_kv_budget_bytes, "KV bytes in pinned host memory")
      ->transform(strata::ByteSizeFlag());
  gen->add_option("--ssd-budget", generate.ssd_budget_bytes, "KV bytes in files under --ssd-dir")
      ->transform(strata::ByteSizeFlag());
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

  strata::cli::ServeCommand serve;
  CLI::App* srv = app.add_subcommand(
      "serve", "Serve a model over the OpenAI API on one machine: the scheduler and front door, a worker per GPU "
               "(or one on the CPU) and, with --kvstore-*, a kvstore, as child processes");
  srv->add_option("model", serve.model,
                  "Model directory, or a Hugging Face id (org/name) in the local hub cache ($HF_HUB_CACHE, "
                  "$HF_HOME/hub, ~/.cache/huggingface/hub; never downloaded)")
      ->required();
  srv->add_option("--host", serve.host, "HTTP address of the OpenAI API (0.0.0.0: every interface)")
      ->capture_default_str();
  srv->add_option("--port", serve.port, "HTTP port of the OpenAI API")->capture_default_str();
  srv->add_option("--api-key", serve.api_key, "Requests need `Authorization: Bearer KEY`");
  srv->add_option("--api-keys", serve.api_keys_file,
                  "File of `key tenant [rps= burst= concurrency= models=]` lines instead of one --api-key");
  srv->add_option("--served-model-name", serve.served_model_name,
                  "The model name clients ask for (default: the id as given, or the directory's name)");
  srv->add_option("--backend", serve.backend,
                  "auto: a CUDA worker per visible GPU where there is one, else one CPU worker; cpu; cuda")
      ->transform(CLI::CheckedTransformer(std::map<std::string, strata::cli::ServeCommand::Backend>{
                                              {"auto", strata::cli::ServeCommand::Backend::kAuto},
                                              {"cpu", strata::cli::ServeCommand::Backend::kCpu},
                                              {"cuda", strata::cli::ServeCommand::Backend::kCuda}},
                                          CLI::ignore_case))
      ->default_str("auto");
  srv->add_option("--dtype", serve.dtype, "CUDA backend: bf16 or f32")->capture_default_str();
  srv->add_option("--gpu-memory-fraction", serve.gpu_memory_fraction,
                  "CUDA: the KV pool's share of the GPU memory left after weights and activations")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  srv->add_option("--max-model-len", serve.max_model_len, "Most prompt + generated tokens (0: the model's)")
      ->capture_default_str();
  srv->add_option("--kv-pool-bytes", serve.kv_pool_bytes,
                  "Tier G per worker, e.g. 20GiB (0: --gpu-memory-fraction on CUDA, 1GiB on the CPU)")
      ->transform(strata::ByteSizeFlag());
  srv->add_option("--host-cache-bytes", serve.host_cache_bytes, "Tier H per worker, host memory (0: off)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  srv->add_option("--threads", serve.threads, "CPU worker threads (0: every core)")->capture_default_str();
  srv->add_option("--block-tokens", serve.block_tokens, "Tokens per KV block")->capture_default_str();
  srv->add_option("--kvstore-dram-bytes", serve.kvstore_dram_bytes,
                  "Start a kvstore with this much DRAM (tier S), e.g. 64GiB")
      ->transform(strata::ByteSizeFlag());
  srv->add_option("--kvstore-ssd-dir", serve.kvstore_ssd_dir,
                  "Start a kvstore with its SSD tier (D) in this directory (created when missing)");
  srv->add_option("--kvstore-ssd-bytes", serve.kvstore_ssd_bytes, "The SSD tier's capacity (0: the disk)")
      ->transform(strata::ByteSizeFlag());
  srv->add_flag("--shared-prefix-cache", serve.shared_prefix_cache,
                "Every caller shares one prefix cache (default: one per client address; shared KV is a timing "
                "side channel between callers)");
  srv->add_option("--metrics-port", serve.metrics_port,
                  "Prometheus /metrics of the scheduler and front door, on 127.0.0.1 (0: any free port, logged)")
      ->capture_default_str();
  srv->add_option("--scheduler-arg", serve.scheduler_args,
                  "Extra strata-scheduler flag, e.g. --scheduler-arg=--policy=least-loaded (repeat)");
  srv->add_option("--worker-arg", serve.worker_args,
                  "Extra strata-worker flag, e.g. --worker-arg=--prefill-chunk-tokens=1024 (repeat)");
  srv->add_option("--kvstore-arg", serve.kvstore_args, "Extra strata-kvstore flag (repeat)");
  srv->add_option("--bin-dir", serve.bin_dir,
                  "Where strata-scheduler, strata-worker and strata-kvstore are (default: beside strata)");
  srv->add_option("--start-timeout-s", serve.start_timeout_s, "How long the workers may take to load and register")
      ->capture_default_str();
  srv->add_option("--stop-timeout-s", serve.stop_timeout_s, "On SIGINT/SIGTERM: drain, then SIGKILL after this")
      ->capture_default_str();
  strata::FlagSources serve_sources(*srv);
  // A pass-through flag may hold commas (--worker-arg=--kvstore=a:1,b:2): one value each, never split.
  for (const char* pass_through : {"--scheduler-arg", "--worker-arg", "--kvstore-arg"}) {
    srv->get_option(pass_through)->delimiter('\0');
  }

  if (std::optional<int> exit_code = serve_sources.Parse(app, argc, argv)) return *exit_code;

  if (srv->parsed()) {
    serve.unset_env = serve_sources.EnvironmentNames();
    return Finish(strata::cli::RunServe(serve));
  }

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
