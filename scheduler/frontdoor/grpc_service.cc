#include "scheduler/frontdoor/grpc_service.h"

#include <string>
#include <utility>

#include "common/log.h"
#include "common/rpc.h"
#include "common/strings.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/frontdoor/openai_http.h"

namespace strata::frontdoor {
namespace {

std::string Authorization(const grpc::ServerContext& context) {
  auto found = context.client_metadata().find("authorization");
  if (found == context.client_metadata().end()) return "";
  return std::string(found->second.data(), found->second.size());
}

// The caller's IP from gRPC's peer string ("ipv4:10.0.0.7:5512", "ipv6:[::1]:5512"): the port changes
// with every connection, so it is left out. Anything else (a Unix socket) stays whole.
std::string PeerAddress(const grpc::ServerContext& context) {
  std::string peer = context.peer();
  const bool ip = peer.rfind("ipv4:", 0) == 0 || peer.rfind("ipv6:", 0) == 0;
  if (!ip) return peer;
  peer = peer.substr(5);
  if (const size_t colon = peer.rfind(':'); colon != std::string::npos) peer.resize(colon);
  if (peer.size() >= 2 && peer.front() == '[' && peer.back() == ']') peer = peer.substr(1, peer.size() - 2);
  return peer;
}

void ApplyOptions(const proto::GenerationOptions& options, GenerationRequest& request) {
  if (options.max_tokens() != 0) request.max_tokens = options.max_tokens();
  if (options.has_temperature()) request.temperature = options.temperature();
  if (options.has_top_p()) request.top_p = options.top_p();
  request.top_k = options.top_k();
  if (options.has_seed()) request.seed = options.seed();
  if (options.has_min_p()) request.min_p = options.min_p();
  if (options.has_presence_penalty()) request.presence_penalty = options.presence_penalty();
  if (options.has_frequency_penalty()) request.frequency_penalty = options.frequency_penalty();
  if (options.has_repetition_penalty()) request.repetition_penalty = options.repetition_penalty();
  request.stop.assign(options.stop().begin(), options.stop().end());
  request.stop_token_ids.assign(options.stop_token_ids().begin(), options.stop_token_ids().end());
  request.ignore_eos = options.ignore_eos();
  request.cache_salt = options.cache_salt();
  request.disable_prefix_cache = options.disable_prefix_cache();
  request.stream = true;
}

absl::Status CheckOptions(const GenerationRequest& request) {
  if (!(request.temperature >= 0 && request.temperature <= 2)) {
    return ApiError(absl::StatusCode::kInvalidArgument, "temperature must be in [0, 2]", {}, "temperature");
  }
  if (!(request.top_p > 0 && request.top_p <= 1)) {
    return ApiError(absl::StatusCode::kInvalidArgument, "top_p must be in (0, 1]", {}, "top_p");
  }
  if (!(request.min_p >= 0 && request.min_p <= 1)) {
    return ApiError(absl::StatusCode::kInvalidArgument, "min_p must be in [0, 1]", {}, "min_p");
  }
  for (const auto& [name, value] : {std::pair{"presence_penalty", request.presence_penalty},
                                    std::pair{"frequency_penalty", request.frequency_penalty}}) {
    if (!(value >= -2 && value <= 2)) {
      return ApiError(absl::StatusCode::kInvalidArgument, StrCat(name, " must be in [-2, 2]"), {}, name);
    }
  }
  if (!(request.repetition_penalty > 0 && request.repetition_penalty <= 2)) {
    return ApiError(absl::StatusCode::kInvalidArgument, "repetition_penalty must be in (0, 2]", {}, "repetition_penalty");
  }
  return absl::OkStatus();
}

void FillUsage(const Usage& usage, proto::Usage& out) {
  out.set_prompt_tokens(usage.prompt_tokens);
  out.set_completion_tokens(usage.completion_tokens);
  out.set_total_tokens(usage.prompt_tokens + usage.completion_tokens);
  proto::StrataUsage& s = *out.mutable_strata();
  s.set_worker_id(usage.worker_id);
  if (usage.cache_report == CacheReport::kShown) {  // hidden: left at 0
    out.set_cached_tokens(usage.cached_tokens);
    s.set_cached_tokens_gpu(usage.cached_tokens_gpu);
    s.set_cached_tokens_host(usage.cached_tokens_host);
    s.set_cached_tokens_kvstore(usage.cached_tokens_kvstore);
    s.set_prefill_tokens(usage.prefill_tokens);
  }
  s.set_queue_s(usage.queue_s);
  s.set_ttft_s(usage.ttft_s);
}

// The shared streaming loop; `name` labels the metrics.
grpc::Status Run(FrontDoor& door, const char* name, grpc::ServerContext& context, const GenerationRequest& request,
                 grpc::ServerWriter<proto::CompletionChunk>& writer) {
  const absl::Time arrived = absl::Now();
  auto fail = [&](const absl::Status& status) {
    door.CountFailure(name, status);
    if (const int64_t retry_s = RetryAfterOf(status); retry_s > 0) {
      context.AddTrailingMetadata("retry-after", StrCat(retry_s));
    }
    return ToGrpcStatus(status);
  };
  absl::StatusOr<const Caller*> caller = door.Authenticate(Authorization(context));
  if (!caller.ok()) return fail(caller.status());
  // Held until this handler returns: the stream's whole life.
  absl::StatusOr<Admission> admission = door.Admit(**caller);
  if (!admission.ok()) return fail(admission.status());
  if (absl::Status valid = CheckOptions(request); !valid.ok()) return fail(valid);
  if (absl::Status allowed = door.CheckModel(**caller, request.model); !allowed.ok()) return fail(allowed);
  const std::string id = door.NewRequestId(request.endpoint);
  absl::StatusOr<std::unique_ptr<GenerationStream>> stream =
      door.Generate(request, door.TenantOf(**caller, PeerAddress(context), request), id, arrived,
                    absl::FromChrono(context.deadline()));
  if (!stream.ok()) return fail(stream.status());
  door.StreamStarted();
  const std::string system_fingerprint = SystemFingerprint((*stream)->model_fingerprint());
  grpc::Status result = grpc::Status::OK;
  while (true) {
    absl::StatusOr<Piece> piece = (*stream)->Next();
    if (!piece.ok()) {
      LogWarning(StrCat("error=stream_failed endpoint=", name, " id=", id, " message=\"", piece.status().message(), "\""));
      result = fail(piece.status());
      break;
    }
    proto::CompletionChunk chunk;
    chunk.set_id(id);
    chunk.set_system_fingerprint(system_fingerprint);
    chunk.set_text(piece->text);
    chunk.mutable_token_ids()->Assign(piece->token_ids.begin(), piece->token_ids.end());
    if (piece->finished) {
      door.RequestFinished(arrived);
      chunk.set_finished(true);
      chunk.set_finish_reason(piece->finish_reason);
      FillUsage(piece->usage, *chunk.mutable_usage());
    }
    if (!writer.Write(chunk)) {
      (*stream)->Cancel();
      result = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      door.CountRequest(name, 499);
      break;
    }
    if (piece->finished) {
      door.CountRequest(name, 200);
      break;
    }
  }
  door.StreamEnded();
  return result;
}

}  // namespace

grpc::Status FrontDoorService::Complete(grpc::ServerContext* context, const proto::CompleteRequest* request,
                                        grpc::ServerWriter<proto::CompletionChunk>* writer) {
  GenerationRequest r;
  r.endpoint = Endpoint::kCompletions;
  r.model = request->model();
  if (request->has_token_ids()) {
    r.prompt_ids.assign(request->token_ids().ids().begin(), request->token_ids().ids().end());
  } else {
    r.prompt_text = request->text();
  }
  ApplyOptions(request->options(), r);
  return Run(*door_, "grpc:Complete", *context, r, *writer);
}

grpc::Status FrontDoorService::Chat(grpc::ServerContext* context, const proto::ChatRequest* request,
                                    grpc::ServerWriter<proto::CompletionChunk>* writer) {
  GenerationRequest r;
  r.endpoint = Endpoint::kChat;
  r.model = request->model();
  for (const proto::ChatMessage& m : request->messages()) r.messages.push_back({m.role(), m.content()});
  if (r.messages.empty()) {
    const absl::Status empty = ApiError(absl::StatusCode::kInvalidArgument, "messages must not be empty", {}, "messages");
    door_->CountFailure("grpc:Chat", empty);
    return ToGrpcStatus(empty);
  }
  ApplyOptions(request->options(), r);
  return Run(*door_, "grpc:Chat", *context, r, *writer);
}

grpc::Status FrontDoorService::ListModels(grpc::ServerContext* context, const proto::ListModelsRequest*,
                                          proto::ListModelsResponse* response) {
  absl::StatusOr<const Caller*> caller = door_->Authenticate(Authorization(*context));
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!(*caller)->MayUse(door_->model().name())) return grpc::Status::OK;  // a key sees only its models
  proto::ModelCard* card = response->add_models();
  card->set_id(door_->model().name());
  card->set_max_context_tokens(static_cast<uint32_t>(door_->model().context_tokens()));
  card->set_workers(static_cast<uint32_t>(door_->WorkerCount()));
  return grpc::Status::OK;
}

}  // namespace strata::frontdoor
