// The HTTP face of FrontDoor: OpenAI's routes on cpp-httplib. A streaming response holds its HTTP thread
// for the stream's life and writes server-sent events as the worker's pieces arrive.
#include <httplib.h>

#include <memory>
#include <utility>

#include "common/log.h"
#include "common/strings.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/frontdoor/openai_http.h"

namespace strata::frontdoor {
namespace {

using Json = nlohmann::json;

constexpr char kJson[] = "application/json";

// Never throws: bytes that are not UTF-8 (none should reach here) become U+FFFD.
std::string Dump(const Json& json) { return json.dump(-1, ' ', false, Json::error_handler_t::replace); }

void SendError(httplib::Response& response, const absl::Status& status) {
  response.status = HttpStatusOf(status);
  response.set_content(Dump(ErrorJson(status)), kJson);
}

const char* EndpointName(Endpoint endpoint) {
  return endpoint == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions";
}

// Everything a streaming response needs after the handler returned.
struct StreamState {
  FrontDoor* door = nullptr;
  std::unique_ptr<GenerationStream> stream;
  ResponseHeader header;
  Endpoint endpoint = Endpoint::kCompletions;
  bool include_usage = false;
};

// Writes the whole stream; false when the client went away (the worker's call is then cancelled).
bool WriteStream(StreamState& state, httplib::DataSink& sink) {
  auto write = [&](const std::string& bytes) { return sink.write(bytes.data(), bytes.size()); };
  const bool null_usage = state.include_usage;
  if (state.endpoint == Endpoint::kChat &&
      !write(SseEvent(ChunkJson(state.header, state.endpoint, "", /*first=*/true, "", null_usage)))) {
    return false;
  }
  while (true) {
    absl::StatusOr<Piece> piece = state.stream->Next();
    if (!piece.ok()) {
      state.door->CountStreamFailure();
      LogWarning(StrCat("error=stream_failed endpoint=", EndpointName(state.endpoint), " id=", state.header.id,
                        " message=\"", piece.status().message(), "\""));
      return write(SseEvent(ErrorJson(piece.status()))) && write(std::string(kSseDone));
    }
    if (!piece->text.empty() && !piece->finished) {
      if (!write(SseEvent(ChunkJson(state.header, state.endpoint, piece->text, false, "", null_usage)))) return false;
    }
    if (piece->finished) {
      if (!write(SseEvent(ChunkJson(state.header, state.endpoint, piece->text, false, piece->finish_reason, null_usage)))) {
        return false;
      }
      if (state.include_usage && !write(SseEvent(UsageChunkJson(state.header, state.endpoint, piece->usage)))) {
        return false;
      }
      return write(std::string(kSseDone));
    }
  }
}

}  // namespace

void FrontDoor::InstallHttpRoutes() {
  auto health = [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Dump(Json{{"status", "ok"}, {"model", model_->name()}}), kJson);
  };
  http_->Get("/health", health);
  http_->Get("/healthz", health);
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(metrics_->RenderText(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/v1/models", [this](const httplib::Request& request, httplib::Response& response) {
    absl::StatusOr<std::string> tenant = Authenticate(request.get_header_value("Authorization"));
    if (!tenant.ok()) {
      SendError(response, tenant.status());
      CountRequest("/v1/models", response.status);
      return;
    }
    Json card = {{"id", model_->name()},          {"object", "model"},
                 {"created", started_unix_s_},    {"owned_by", "strata"},
                 {"max_model_len", model_->context_tokens()}, {"workers", WorkerCount()}};
    response.set_content(Dump(Json{{"object", "list"}, {"data", Json::array({card})}}), kJson);
    CountRequest("/v1/models", 200);
  });

  auto generation = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& request, httplib::Response& response) {
      const absl::Time arrived = absl::Now();
      const char* name = EndpointName(endpoint);
      auto fail = [&](const absl::Status& status) {
        SendError(response, status);
        CountRequest(name, response.status);
      };
      absl::StatusOr<std::string> tenant = Authenticate(request.get_header_value("Authorization"));
      if (!tenant.ok()) return fail(tenant.status());
      absl::StatusOr<GenerationRequest> parsed =
          endpoint == Endpoint::kChat ? ParseChatRequest(request.body) : ParseCompletionRequest(request.body);
      if (!parsed.ok()) return fail(parsed.status());
      ResponseHeader header{NewRequestId(endpoint), absl::ToUnixSeconds(arrived), model_->name()};
      absl::StatusOr<std::unique_ptr<GenerationStream>> stream = Generate(*parsed, *tenant, header.id, arrived);
      if (!stream.ok()) return fail(stream.status());

      if (!parsed->stream) {
        StreamStarted();
        std::string text;
        absl::StatusOr<Piece> piece;
        do {
          piece = (*stream)->Next();
          if (piece.ok()) text += piece->text;
        } while (piece.ok() && !piece->finished);
        StreamEnded();
        if (!piece.ok()) {
          LogWarning(StrCat("error=request_failed endpoint=", name, " id=", header.id, " message=\"",
                            piece.status().message(), "\""));
          return fail(piece.status());
        }
        response.set_content(Dump(CompletionJson(header, endpoint, text, piece->finish_reason, piece->usage)), kJson);
        CountRequest(name, 200);
        return;
      }

      auto state = std::make_shared<StreamState>();
      state->door = this;
      state->stream = *std::move(stream);
      state->header = std::move(header);
      state->endpoint = endpoint;
      state->include_usage = parsed->include_usage;
      StreamStarted();
      response.set_header("Cache-Control", "no-cache");
      response.set_chunked_content_provider(
          "text/event-stream",
          [state](size_t, httplib::DataSink& sink) {
            if (!WriteStream(*state, sink)) {
              state->stream->Cancel();
              return false;
            }
            sink.done();
            return true;
          },
          [state](bool) {
            state->stream.reset();  // reaps the worker call now, not when the last copy goes
            state->door->StreamEnded();
          });
      CountRequest(name, 200);
    };
  };
  http_->Post("/v1/completions", generation(Endpoint::kCompletions));
  http_->Post("/v1/chat/completions", generation(Endpoint::kChat));
  // Errors the routes did not answer themselves (unknown path or method): OpenAI's shape too.
  httplib::Server::HandlerWithResponse error_handler = [](const httplib::Request& request,
                                                         httplib::Response& response) {
    if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const bool not_found = response.status == 404;
    // The path may hold any bytes a client sent: Dump replaces what is not UTF-8.
    response.set_content(
        Dump(Json{{"error",
                   {{"message", not_found ? "Unknown request URL: " + request.method + " " + request.path + "."
                                          : "The request could not be served (HTTP " +
                                                std::to_string(response.status) + ")."},
                    {"type", "invalid_request_error"},
                    {"param", nullptr},
                    {"code", not_found ? Json("unknown_url") : Json(nullptr)}}}}),
        kJson);
    return httplib::Server::HandlerResponse::Handled;
  };
  http_->set_error_handler(std::move(error_handler));
}

}  // namespace strata::frontdoor
