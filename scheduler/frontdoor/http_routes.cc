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
  if (response.status == 401) response.set_header("WWW-Authenticate", "Bearer");
  if (const int64_t retry_s = RetryAfterOf(status); retry_s > 0) response.set_header("Retry-After", StrCat(retry_s));
  response.set_content(Dump(ErrorJson(status)), kJson);
}

// SendError for a request whose body was not read to its end: what is left of it is still on the
// connection and must never be taken for the next request (request smuggling), so the connection closes
// after this response. cpp-httplib 0.11 keeps a connection open whatever the response's headers say,
// unless a content provider fails: this one writes the whole error, then fails.
void SendErrorAndClose(httplib::Response& response, const absl::Status& status) {
  SendError(response, status);
  auto body = std::make_shared<std::string>(std::move(response.body));
  response.body.clear();
  response.set_header("Connection", "close");
  response.set_content_provider(body->size(), kJson, [body](size_t offset, size_t length, httplib::DataSink& sink) {
    sink.write(body->data() + offset, length);
    return false;  // closes the connection once the bytes are out
  });
}

// Reads a request body as it arrives (chunked and compressed bodies decoded), holding at most `limit`
// bytes (0: no limit); a declared Content-Length over it was refused by cpp-httplib before any byte was
// read (set_payload_max_length).
absl::StatusOr<std::string> ReadBody(const httplib::ContentReader& reader, const httplib::Response& response,
                                     uint64_t limit) {
  std::string body;
  bool too_large = false;
  const bool read = reader([&](const char* data, size_t length) {
    if (limit > 0 && body.size() + length > limit) {
      too_large = true;
      return false;
    }
    body.append(data, length);
    return true;
  });
  if (too_large || response.status == 413) return RequestTooLarge(limit);
  if (!read) {
    return ApiError(absl::StatusCode::kInvalidArgument,
                    "The request body could not be read (a malformed chunk or encoding, or the client stopped).");
  }
  return body;
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
  Admission admission;  // the caller's concurrency slot, until the stream ends
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
    absl::StatusOr<const Caller*> caller = Authenticate(request.get_header_value("Authorization"));
    if (!caller.ok()) {
      SendError(response, caller.status());
      CountFailure("/v1/models", caller.status());
      return;
    }
    Json data = Json::array();
    if ((*caller)->MayUse(model_->name())) {  // a key sees only the models it may use
      data.push_back({{"id", model_->name()},
                      {"object", "model"},
                      {"created", started_unix_s_},
                      {"owned_by", "strata"},
                      {"max_model_len", model_->context_tokens()},
                      {"workers", WorkerCount()}});
    }
    response.set_content(Dump(Json{{"object", "list"}, {"data", data}}), kJson);
    CountRequest("/v1/models", 200);
  });

  auto generation = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& request, httplib::Response& response,
                            const httplib::ContentReader& reader) {
      const absl::Time arrived = absl::Now();
      const char* name = EndpointName(endpoint);
      auto fail = [&](const absl::Status& status) {
        SendError(response, status);
        CountFailure(name, status);
      };
      // The body first, so that a refused request never leaves unread bytes on a kept-alive connection.
      absl::StatusOr<std::string> body = ReadBody(reader, response, request_limits().max_request_bytes);
      if (!body.ok()) {
        SendErrorAndClose(response, body.status());
        CountFailure(name, body.status());
        return;
      }
      absl::StatusOr<const Caller*> caller = Authenticate(request.get_header_value("Authorization"));
      if (!caller.ok()) return fail(caller.status());
      // Held until the response is complete (a stream: until it ends or its client goes away).
      absl::StatusOr<Admission> admission = Admit(**caller);
      if (!admission.ok()) return fail(admission.status());
      absl::StatusOr<GenerationRequest> parsed = ParseRequest(*body, endpoint, request_limits());
      if (!parsed.ok()) return fail(parsed.status());
      if (absl::Status allowed = CheckModel(**caller, parsed->model); !allowed.ok()) return fail(allowed);
      ResponseHeader header{NewRequestId(endpoint), absl::ToUnixSeconds(arrived), model_->name()};
      absl::StatusOr<std::unique_ptr<GenerationStream>> stream =
          Generate(*parsed, (*caller)->tenant, header.id, arrived);
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
      state->admission = *std::move(admission);
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
            state->admission.Release();
            state->door->StreamEnded();
          });
      CountRequest(name, 200);
    };
  };
  http_->Post("/v1/completions", generation(Endpoint::kCompletions));
  http_->Post("/v1/chat/completions", generation(Endpoint::kChat));
  // Elsewhere cpp-httplib reads a body whole before routing, bounded only where its length is declared:
  // bodies of undeclared (chunked) or unbounded (compressed) size are refused there unread.
  http_->set_pre_routing_handler([this](const httplib::Request& request, httplib::Response& response) {
    const bool reads_its_body = request.method == "POST" && (request.path == EndpointName(Endpoint::kCompletions) ||
                                                            request.path == EndpointName(Endpoint::kChat));
    if (reads_its_body || (!request.has_header("Transfer-Encoding") && !request.has_header("Content-Encoding"))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const absl::Status refused =
        ApiError(absl::StatusCode::kInvalidArgument,
                 StrCat("Only POST /v1/completions and /v1/chat/completions take a chunked or compressed body, not ",
                        request.method, " ", request.path, "."),
                 "request_too_large", {}, 413);
    SendErrorAndClose(response, refused);
    RefusalCounter(RefusalReasonOf(refused))->Increment();
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors the routes did not answer themselves (unknown path or method, a declared body over the
  // limit): OpenAI's shape too.
  httplib::Server::HandlerWithResponse error_handler = [this](const httplib::Request& request,
                                                             httplib::Response& response) {
    // A route answered already (a body, or a provider's: both set the Content-Type).
    if (!response.body.empty() || response.has_header("Content-Type")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (response.status == 413) {
      SendError(response, RequestTooLarge(request_limits().max_request_bytes));
      RefusalCounter("request_too_large")->Increment();
      return httplib::Server::HandlerResponse::Handled;
    }
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
