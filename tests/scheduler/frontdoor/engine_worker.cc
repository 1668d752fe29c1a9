#include "tests/scheduler/frontdoor/engine_worker.h"

#include <chrono>
#include <thread>

#include "common/block_key.h"
#include "common/strings.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/generate.h"
#include "worker/service/logprobs_proto.h"
#include "worker/service/sampling_params.h"

namespace strata::frontdoor::testing {

absl::StatusOr<std::unique_ptr<EngineWorker>> EngineWorker::Start(const std::filesystem::path& dir,
                                                                  std::string model_name, uint32_t block_tokens) {
  std::unique_ptr<EngineWorker> worker(new EngineWorker());
  worker->model_name_ = std::move(model_name);
  worker->block_tokens_ = block_tokens;
  absl::StatusOr<model::Model> opened = model::OpenModel(dir);
  if (!opened.ok()) return opened.status();
  worker->model_ = std::make_unique<model::Model>(*std::move(opened));
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(*worker->model_, engine::CreateCpuBackend());
  if (!engine.ok()) return engine.status();
  worker->engine_ = *std::move(engine);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &worker->port_);
  builder.RegisterService(worker.get());
  worker->server_ = builder.BuildAndStart();
  if (worker->server_ == nullptr || worker->port_ == 0) return absl::UnavailableError("engine worker: cannot listen");
  return worker;
}

EngineWorker::~EngineWorker() { Kill(); }

void EngineWorker::Kill() {
  if (killed_ || server_ == nullptr) return;
  killed_ = true;
  server_->Shutdown(std::chrono::system_clock::now());
}

scheduler::Registration EngineWorker::MakeRegistration(const std::string& holder_id) const {
  scheduler::Registration r;
  r.holder_id = holder_id;
  r.kind = scheduler::HolderKind::kWorker;
  r.scheme_version = kBlockKeySchemeVersion;
  r.key_context.model_fingerprint = model_->fingerprint.digest;
  r.key_context.block_tokens = block_tokens_;
  r.key_context.kv_dtype = engine_->kv_dtype();
  r.address = address();
  r.worker.gpu_kv_blocks = 1000;
  r.worker.host_kv_blocks = 1000;
  r.worker.block_bytes = static_cast<uint64_t>(engine_->KvPayloadBytes(block_tokens_));
  r.worker.prefill_linear_s_per_token = 1e-4;
  r.worker.prefill_quadratic_s_per_token2 = 0;
  r.worker.host_to_gpu_bytes_per_s = 1e10;
  r.worker.network_bytes_per_s = 1e9;
  r.worker.decode_tokens_per_s = 100;
  return r;
}

grpc::Status EngineWorker::Info(grpc::ServerContext*, const proto::InfoRequest*, proto::InfoResponse* response) {
  response->set_model_name(model_name_);
  proto::KeyScheme* scheme = response->mutable_key_scheme();
  scheme->set_version(kBlockKeySchemeVersion);
  scheme->set_block_tokens(block_tokens_);
  scheme->set_model_fingerprint(std::string(model_->fingerprint.digest.begin(), model_->fingerprint.digest.end()));
  scheme->set_kv_dtype(std::string(DTypeName(engine_->kv_dtype())));
  response->set_max_context_tokens(static_cast<uint32_t>(model_->config.max_position_embeddings));
  response->set_backend(std::string(engine_->backend_name()));
  for (int64_t id : model_->config.eos_token_ids) response->add_eos_token_ids(static_cast<int32_t>(id));
  return grpc::Status::OK;
}

grpc::Status EngineWorker::Generate(grpc::ServerContext* context, const proto::GenerateRequest* request,
                                    grpc::ServerWriter<proto::GenerateResponse>* writer) {
  {
    absl::MutexLock lock(&last_mutex_);
    last_request_ = *request;
  }
  ++generate_calls_;
  const auto& fingerprint = model_->fingerprint.digest;
  if (!request->model_fingerprint().empty() &&
      request->model_fingerprint() != std::string(fingerprint.begin(), fingerprint.end())) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "model fingerprint mismatch");
  }
  if (request->prompt_ids_size() == 0 || request->max_new_tokens() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty prompt or max_new_tokens 0");
  }
  engine::GenerateOptions options;
  options.max_new_tokens = request->max_new_tokens();
  options.sampling = worker::SamplingOptionsOf(request->sampling());
  options.stop_token_ids.assign(request->stop_token_ids().begin(), request->stop_token_ids().end());
  if (!request->ignore_eos()) {
    for (int64_t id : model_->config.eos_token_ids) options.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  if (request->logprobs()) options.top_logprobs = static_cast<int>(request->top_logprobs());
  options.prompt_logprobs = request->prompt_logprobs();
  const std::vector<int32_t> prompt(request->prompt_ids().begin(), request->prompt_ids().end());
  const auto admitted = std::chrono::steady_clock::now();
  double ttft_s = 0;
  int sent = 0;
  bool writing = true;
  std::optional<engine::PositionLogprobs> token_logprobs;  // of the token about to be sent
  absl::MutexLock lock(&engine_mutex_);
  std::vector<engine::PositionLogprobs> prompt_logprobs;  // sent with the first token
  absl::StatusOr<engine::GenerateResult> result = engine::Generate(
      *engine_, prompt, options,
      [&](int32_t token) {
        if (!writing) return;
        if (sent == 0) ttft_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - admitted).count();
        proto::GenerateResponse message;
        message.add_token_ids(token);
        if (token_logprobs) worker::ToProto(*token_logprobs, *message.add_logprobs());
        if (sent == 0) {
          for (const engine::PositionLogprobs& p : prompt_logprobs) worker::ToProto(p, *message.add_prompt_logprobs());
        }
        if (!writer->Write(message)) writing = false;
        ++sent;
        if (hold_after_tokens_ >= 0 && sent >= hold_after_tokens_) {
          const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          while (!context->IsCancelled() && hold_after_tokens_ >= 0 && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          if (hold_after_tokens_ >= 0) writing = false;  // held to the end; a lifted hold goes on
        }
        if (context->IsCancelled()) writing = false;
      },
      [&](const engine::PositionLogprobs& logprobs) { token_logprobs = logprobs; },
      [&](absl::Span<const engine::PositionLogprobs> logprobs) {
        prompt_logprobs.assign(logprobs.begin(), logprobs.end());
      });
  if (!result.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(result.status().message()));
  }
  if (!writing || context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  proto::GenerateResponse last;
  last.set_finished(true);
  last.set_finish_reason(result->finish_reason == engine::FinishReason::kStopToken ? proto::FINISH_REASON_STOP
                                                                                   : proto::FINISH_REASON_LENGTH);
  last.set_completion_tokens(static_cast<uint32_t>(result->output_ids.size()));
  proto::PrefixUsage* prefix = last.mutable_prefix();
  prefix->set_prompt_tokens(static_cast<uint32_t>(prompt.size()));
  prefix->set_prefill_tokens(static_cast<uint32_t>(prompt.size()));
  last.set_ttft_s(ttft_s);
  last.set_decode_s(result->decode_seconds);
  writer->Write(last);
  return grpc::Status::OK;
}

}  // namespace strata::frontdoor::testing
