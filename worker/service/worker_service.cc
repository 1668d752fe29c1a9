#include "worker/service/worker_service.h"

#include <atomic>
#include <cmath>
#include <cstring>

#include "common/rpc.h"
#include "common/strings.h"
#include "worker/engine/sampler.h"
#include "worker/service/logprobs_proto.h"
#include "worker/service/sampling_params.h"

namespace strata::worker {
namespace {

// How often a waiting stream checks whether its caller went away.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(20);

proto::FinishReason ToProto(engine::FinishReason reason) {
  return reason == engine::FinishReason::kStopToken ? proto::FINISH_REASON_STOP : proto::FINISH_REASON_LENGTH;
}

void AddLogprobs(absl::Span<const engine::PositionLogprobs> from,
                 google::protobuf::RepeatedPtrField<proto::PositionLogprobs>& to) {
  for (const engine::PositionLogprobs& position : from) worker::ToProto(position, *to.Add());
}

// One message of `update`'s tokens and their logprobs.
proto::GenerateResponse TokensMessage(const GenerationStream::Update& update) {
  proto::GenerateResponse response;
  response.mutable_token_ids()->Add(update.tokens.begin(), update.tokens.end());
  AddLogprobs(update.logprobs, *response.mutable_logprobs());
  AddLogprobs(update.prompt_logprobs, *response.mutable_prompt_logprobs());
  return response;
}

void FillSummary(const GenerationSummary& s, proto::GenerateResponse& response) {
  response.set_finished(true);
  response.set_finish_reason(ToProto(s.finish_reason));
  response.set_completion_tokens(static_cast<uint32_t>(s.completion_tokens));
  proto::PrefixUsage* prefix = response.mutable_prefix();
  prefix->set_prompt_tokens(static_cast<uint32_t>(s.prompt_tokens));
  prefix->set_cached_tokens(
      static_cast<uint32_t>(s.cached_tokens_gpu + s.cached_tokens_host + s.cached_tokens_kvstore));
  prefix->set_cached_tokens_gpu(static_cast<uint32_t>(s.cached_tokens_gpu));
  prefix->set_cached_tokens_host(static_cast<uint32_t>(s.cached_tokens_host));
  prefix->set_cached_tokens_kvstore(static_cast<uint32_t>(s.cached_tokens_kvstore));
  prefix->set_prefill_tokens(static_cast<uint32_t>(s.prefill_tokens));
  response.set_queue_s(s.queue_s);
  response.set_ttft_s(s.ttft_s);
  response.set_decode_s(s.decode_s);
}

std::string RequestId() {
  static std::atomic<uint64_t> next{1};
  return StrCat("req-", next.fetch_add(1));
}

}  // namespace

absl::StatusOr<GenerationRequest> ValidateGenerateRequest(const proto::GenerateRequest& request,
                                                          const ServedModel& model) {
  GenerationRequest out;
  out.request_id = request.request_id().empty() ? RequestId() : request.request_id().substr(0, 128);
  const std::string& where = out.request_id;
  const std::string& fingerprint = request.model_fingerprint();
  if (!fingerprint.empty()) {
    const Sha256Digest& ours = model.key_context.model_fingerprint;
    if (fingerprint.size() != ours.size()) {
      return absl::InvalidArgumentError(StrCat(where, ": model_fingerprint has ", fingerprint.size(),
                                               " bytes; a fingerprint is 32 (SHA-256)"));
    }
    if (std::memcmp(fingerprint.data(), ours.data(), ours.size()) != 0) {
      Sha256Digest theirs{};
      std::memcpy(theirs.data(), fingerprint.data(), theirs.size());
      return absl::FailedPreconditionError(StrCat(where, ": the request is for model fingerprint ", ToHex(theirs),
                                                  "; this worker serves ", model.name, " (", ToHex(ours),
                                                  "): route it to a worker of that model"));
    }
  }
  if (request.prompt_ids_size() == 0) return absl::InvalidArgumentError(StrCat(where, ": prompt_ids is empty"));
  for (int i = 0; i < request.prompt_ids_size(); ++i) {
    const int32_t id = request.prompt_ids(i);
    if (id < 0 || id >= model.vocab_size) {
      return absl::InvalidArgumentError(StrCat(where, ": prompt_ids[", i, "] = ", id,
                                               " is outside the vocabulary [0, ", model.vocab_size, ")"));
    }
  }
  const int64_t prompt_tokens = request.prompt_ids_size();
  if (prompt_tokens >= model.max_context_tokens) {
    return absl::InvalidArgumentError(StrCat(where, ": the prompt has ", prompt_tokens,
                                             " tokens; this worker's context is ", model.max_context_tokens,
                                             " tokens (prompt + new tokens)"));
  }
  if (request.max_new_tokens() == 0) return absl::InvalidArgumentError(StrCat(where, ": max_new_tokens must be > 0"));
  // As vLLM does, generation stops at the context's end rather than failing up front.
  out.max_new_tokens = std::min<int64_t>(request.max_new_tokens(), model.max_context_tokens - prompt_tokens);
  out.sampling = SamplingOptionsOf(request.sampling());
  if (!std::isfinite(out.sampling.temperature) || !std::isfinite(out.sampling.top_p)) {
    return absl::InvalidArgumentError(StrCat(where, ": sampling temperature and top_p must be finite"));
  }
  if (absl::Status status = engine::ValidateSamplingOptions(out.sampling); !status.ok()) {
    return absl::InvalidArgumentError(StrCat(where, ": sampling: ", status.message()));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    const int32_t id = request.stop_token_ids(i);
    if (id < 0 || id >= model.vocab_size) {
      return absl::InvalidArgumentError(StrCat(where, ": stop_token_ids[", i, "] = ", id,
                                               " is outside the vocabulary [0, ", model.vocab_size, ")"));
    }
    out.stop_token_ids.push_back(id);
  }
  if (!request.ignore_eos()) {
    out.stop_token_ids.insert(out.stop_token_ids.end(), model.eos_token_ids.begin(), model.eos_token_ids.end());
  }
  out.prompt.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  // The salt of the tenant the trusted front door named (none: the single-tenant default, all zero, as
  // the scheduler computes it).
  if (!request.tenant().empty() || !request.cache_salt().empty()) {
    out.tenant_salt = TenantSalt(request.tenant(), request.cache_salt());
  }
  out.use_prefix_cache = !request.disable_prefix_cache();
  if (request.logprobs() || request.prompt_logprobs()) {
    if (request.top_logprobs() > static_cast<uint32_t>(engine::kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(
          StrCat(where, ": top_logprobs is ", request.top_logprobs(), "; at most ", engine::kMaxTopLogprobs));
    }
  }
  if (request.logprobs()) out.top_logprobs = static_cast<int>(request.top_logprobs());
  if (request.prompt_logprobs()) {
    // The logits of a cached prefix's rows were never computed here: such a request prefills it all.
    out.prompt_logprobs = true;
    out.use_prefix_cache = false;
  }
  return out;
}

grpc::Status WorkerService::Generate(grpc::ServerContext* context, const proto::GenerateRequest* request,
                                     grpc::ServerWriter<proto::GenerateResponse>* writer) {
  absl::StatusOr<GenerationRequest> validated = ValidateGenerateRequest(*request, model_);
  if (!validated.ok()) {
    metrics_->requests_rejected.Increment();
    return ToGrpcStatus(validated.status());
  }
  absl::StatusOr<std::shared_ptr<GenerationStream>> stream = loop_->Submit(*std::move(validated));
  if (!stream.ok()) {
    metrics_->requests_rejected.Increment();
    return ToGrpcStatus(stream.status());
  }
  while (true) {
    GenerationStream::Update update = (*stream)->Next(kCancelPoll);
    if (context->IsCancelled()) {
      (*stream)->Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the request");
    }
    if (update.done && !update.status.ok()) {
      if (!update.tokens.empty()) writer->Write(TokensMessage(update));
      return ToGrpcStatus(update.status);
    }
    if (update.tokens.empty() && !update.done) continue;
    proto::GenerateResponse response = TokensMessage(update);
    if (update.done) FillSummary(*update.summary, response);
    if (!writer->Write(response)) {
      (*stream)->Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the stream to the caller broke");
    }
    if (update.done) return grpc::Status::OK;
  }
}

grpc::Status WorkerService::Info(grpc::ServerContext*, const proto::InfoRequest*, proto::InfoResponse* response) {
  response->set_model_name(model_.name);
  proto::KeyScheme* scheme = response->mutable_key_scheme();
  scheme->set_version(kBlockKeySchemeVersion);
  scheme->set_block_tokens(model_.key_context.block_tokens);
  scheme->set_model_fingerprint(std::string(model_.key_context.model_fingerprint.begin(),
                                            model_.key_context.model_fingerprint.end()));
  scheme->set_kv_dtype(std::string(DTypeName(model_.key_context.kv_dtype)));
  response->set_max_context_tokens(static_cast<uint32_t>(model_.max_context_tokens));
  response->set_backend(model_.backend);
  response->mutable_eos_token_ids()->Add(model_.eos_token_ids.begin(), model_.eos_token_ids.end());
  return grpc::Status::OK;
}

}  // namespace strata::worker
