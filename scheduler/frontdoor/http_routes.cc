// The HTTP face of FrontDoor: OpenAI's routes on cpp-httplib. A streaming response holds its HTTP thread
// for the stream's life and writes server-sent events as the worker's pieces arrive.
#include <httplib.h>
#include <malloc.h>

#include <memory>
#include <utility>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/frontdoor/json_shape.h"
#include "scheduler/frontdoor/logprobs.h"
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

// A request's body as read: the bytes when accepted, else the refusal; and whether it was read to its
// end (false: the rest is still on the connection, which must then close).
struct Body {
  absl::StatusOr<std::string> bytes;
  bool whole = false;
  uint64_t held_bytes = 0;  // the most it held at once (memory worth returning after a refusal)
};

// Reads a request body as it arrives (chunked and compressed bodies decoded as they come, so an
// inflated body is bounded as it inflates, never after). Keeps it while `refusal` is OK and the body stays
// within limits.max_request_bytes and limits.json (checked byte by byte, before any parsing). Once refused,
// a plain body is read on and dropped up to max_request_bytes, so that a client still sending reads the
// error rather than a reset connection; a compressed one is not (draining it would inflate it): reading
// stops there, as it does past the limit, and the connection then closes. A declared Content-Length over
// the limit was refused by cpp-httplib before any byte was read (set_payload_max_length).
Body ReadBody(const httplib::Request& request, const httplib::ContentReader& reader, const httplib::Response& response,
              const RequestLimits& limits, absl::Status refusal = absl::OkStatus()) {
  const std::string encoding = request.get_header_value("Content-Encoding");
  const bool compressed = !encoding.empty() && encoding != "identity";
  Body out;
  std::string body;
  absl::Status status = std::move(refusal);
  JsonShapeScanner shape(limits.json);
  uint64_t seen = 0;
  const uint64_t limit = limits.max_request_bytes;
  const bool read = reader([&](const char* data, size_t length) {
    seen += length;
    if (limit > 0 && seen > limit) {
      if (status.ok()) status = RequestTooLarge(limit);
      return false;
    }
    if (!status.ok()) return !compressed;  // draining a refused body
    status = shape.Feed(std::string_view(data, length));
    if (status.ok()) {
      body.append(data, length);
      out.held_bytes = body.capacity();
      return true;
    }
    std::string().swap(body);
    return !compressed;
  });
  out.whole = read;
  if (status.ok() && response.status == 413) status = RequestTooLarge(limit);
  if (!read && status.ok()) {
    status = ApiError(absl::StatusCode::kInvalidArgument,
                      "The request body could not be read (a malformed chunk or encoding, or the client stopped).");
  }
  if (status.ok()) {
    out.bytes = std::move(body);
  } else {
    out.bytes = status;
  }
  return out;
}

// After a refused request that held this much, the allocator's free memory goes back to the system: glibc
// keeps a freed multi-megabyte body (and a parse tree's many small blocks) in its arenas, one per HTTP
// thread, so without this each hostile request would leave the process larger.
constexpr uint64_t kTrimAfterBytes = 1 << 20;

void ReturnMemory(uint64_t held_bytes) {
  if (held_bytes >= kTrimAfterBytes) malloc_trim(0);
}

const char* EndpointName(Endpoint endpoint) {
  return endpoint == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions";
}

// A response's choices as they build up: the text and logprobs of each, rendered in the endpoint's shapes.
class ChoiceWriter {
 public:
  ChoiceWriter(Endpoint endpoint, const model::Tokenizer& tokenizer, size_t choices, bool logprobs)
      : endpoint_(endpoint), tokenizer_(tokenizer), logprobs_(logprobs), offsets_(choices, 0) {}

  // The logprobs object of `tokens` for choice `index` (null without logprobs); completions' text
  // offsets run on from the choice's previous tokens.
  Json Logprobs(uint32_t index, absl::Span<const TokenLogprobs> tokens) {
    if (!logprobs_) return nullptr;
    return endpoint_ == Endpoint::kChat ? ChatLogprobsJson(tokenizer_, tokens)
                                        : CompletionLogprobsJson(tokenizer_, tokens, offsets_[index]);
  }
  bool logprobs() const { return logprobs_; }

 private:
  Endpoint endpoint_;
  const model::Tokenizer& tokenizer_;
  bool logprobs_;
  std::vector<uint64_t> offsets_;  // completions' text_offset, per choice
};

// What echo puts before each choice's text: the prompt as sent (text), or its ids decoded.
std::string EchoText(const GenerationRequest& request, const model::Tokenizer& tokenizer,
                     const std::vector<int32_t>& prompt_ids) {
  if (!request.echo) return "";
  return request.prompt_text ? *request.prompt_text : tokenizer.Decode(prompt_ids, model::SpecialTokens::kInclude);
}

// The usage of all choices: the prompt and its cache once (choice 0's), the completion tokens of all.
void AddChoiceUsage(uint32_t index, const Usage& choice, Usage& total) {
  const uint32_t completion = total.completion_tokens + choice.completion_tokens;
  if (index == 0) total = choice;
  total.completion_tokens = completion;
}

// Everything a streaming response needs after the handler returned.
struct StreamState {
  FrontDoor* door = nullptr;
  std::unique_ptr<ChoiceStreams> choices;
  ResponseHeader header;
  Endpoint endpoint = Endpoint::kCompletions;
  bool include_usage = false;
  std::string echo;  // text before each choice's (completions' echo)
  std::optional<ChoiceWriter> writer;
  absl::Time arrived;
  Admission admission;  // the caller's concurrency slot, until the stream ends
};

// Writes the whole stream; false when the client went away (the workers' calls are then cancelled).
bool WriteStream(StreamState& state, httplib::DataSink& sink) {
  auto write = [&](const std::string& bytes) { return sink.write(bytes.data(), bytes.size()); };
  auto chunk = [&](const Choice& choice, bool first) {
    return write(SseEvent(ChunkJson(state.header, state.endpoint, choice, first, state.include_usage)));
  };
  const size_t n = state.choices->size();
  for (uint32_t i = 0; i < n; ++i) {
    if (state.endpoint == Endpoint::kChat && !chunk(Choice{i}, /*first=*/true)) return false;
    if (!state.echo.empty() || !state.choices->prompt_logprobs().empty()) {
      if (!chunk(Choice{i, state.echo, "", state.writer->Logprobs(i, state.choices->prompt_logprobs())}, false)) {
        return false;
      }
    }
  }
  std::vector<bool> finished(n, false);
  Usage usage;
  while (std::optional<ChoiceStreams::Event> event = state.choices->Next()) {
    const uint32_t i = event->index;
    if (!event->piece.ok()) {
      // A worker failed mid-stream: every choice still open ends with finish_reason "abort" (vLLM's name
      // for a request that ended without stop or length), then the error event, as vLLM streams one.
      state.choices->Cancel();
      state.door->CountStreamFailure();
      LogWarning(StrCat("error=stream_failed endpoint=", EndpointName(state.endpoint), " id=", state.header.id,
                        " choice=", i, " message=\"", event->piece.status().message(), "\""));
      for (uint32_t j = 0; j < n; ++j) {
        if (!finished[j] && !chunk(Choice{j, "", "abort"}, false)) return false;
      }
      return write(SseEvent(ErrorJson(event->piece.status()))) && write(std::string(kSseDone));
    }
    Piece& piece = *event->piece;
    Choice choice{i, std::move(piece.text), piece.finished ? piece.finish_reason : "",
                  piece.logprobs.empty() ? Json(nullptr) : state.writer->Logprobs(i, piece.logprobs)};
    if (piece.finished) {
      finished[i] = true;
      AddChoiceUsage(i, piece.usage, usage);
    }
    if ((piece.finished || !choice.text.empty() || !piece.logprobs.empty()) && !chunk(choice, false)) return false;
  }
  state.door->RequestFinished(state.arrived);
  if (state.include_usage && !write(SseEvent(UsageChunkJson(state.header, state.endpoint, usage)))) return false;
  return write(std::string(kSseDone));
}

}  // namespace

void FrontDoor::InstallHttpRoutes() {
  // /healthz: the front door answers (liveness: scripts wait on it before any worker starts). /health:
  // it can serve, i.e. a live worker serves its model (vLLM's meaning; 503 with the reason otherwise).
  http_->Get("/healthz", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Dump(Json{{"status", "ok"}, {"model", model_->name()}}), kJson);
  });
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& response) {
    const int workers = WorkerCount();
    Json body{{"status", workers > 0 ? "ok" : "unavailable"}, {"model", model_->name()}, {"workers", workers}};
    if (workers == 0) {
      response.status = 503;
      body["reason"] = StrCat("no live worker serves model '", model_->name(), "'");
    }
    response.set_content(Dump(body), kJson);
  });
  http_->Get("/version", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(Dump(Json{{"version", std::string(StrataVersion())}}), kJson);
  });
  // vLLM's /tokenize and /detokenize: the key (401), its rate (429), the body's shape and parse (400) and
  // the key's models (403) as for generation; no worker is involved.
  auto utility = [this](const char* name, auto answer) {
    return [this, name, answer](const httplib::Request& request, httplib::Response& response) {
      auto fail = [&](const absl::Status& status) {
        SendError(response, status);
        CountFailure(name, status);
      };
      absl::StatusOr<const Caller*> caller = Authenticate(request.get_header_value("Authorization"));
      if (!caller.ok()) return fail(caller.status());
      absl::StatusOr<Admission> admission = Admit(**caller);
      if (!admission.ok()) return fail(admission.status());
      if (absl::Status shape = CheckJsonShape(request.body, request_limits().json); !shape.ok()) return fail(shape);
      absl::StatusOr<Json> out = answer(**caller, request.body);
      if (!out.ok()) return fail(out.status());
      response.set_content(Dump(*out), kJson);
      CountRequest(name, 200);
    };
  };
  http_->Post("/tokenize", utility("/tokenize", [this](const Caller& caller, std::string_view body) -> absl::StatusOr<Json> {
    STRATA_ASSIGN_OR_RETURN(GenerationRequest parsed, ParseTokenizeRequest(body));
    STRATA_RETURN_IF_ERROR(CheckModel(caller, parsed.model));
    STRATA_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, model_->Tokenize(parsed));
    return Json{{"count", tokens.size()}, {"max_model_len", model_->context_tokens()}, {"tokens", tokens}};
  }));
  http_->Post("/detokenize", utility("/detokenize", [this](const Caller& caller, std::string_view body) -> absl::StatusOr<Json> {
    STRATA_ASSIGN_OR_RETURN(DetokenizeRequest parsed, ParseDetokenizeRequest(body));
    STRATA_RETURN_IF_ERROR(CheckModel(caller, parsed.model));
    STRATA_RETURN_IF_ERROR(model_->CheckName(parsed.model));
    const int32_t vocab = model_->tokenizer().vocab_size();
    for (int32_t id : parsed.tokens) {
      if (id >= vocab) {
        return ApiError(absl::StatusCode::kInvalidArgument,
                        StrCat("token id ", id, " is outside the vocabulary of `", model_->name(), "` (", vocab, " ids)"),
                        {}, "tokens");
      }
    }
    return Json{{"prompt", model_->tokenizer().Decode(parsed.tokens, model::SpecialTokens::kInclude)}};
  }));
  if (http_metrics_ == scheduler::HttpMetrics::kOn) {  // else only on the metrics port: the registry is not public
    http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics_->RenderText(), "text/plain; version=0.0.4; charset=utf-8");
    });
  }
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
      // The key before any byte of the body: an unauthenticated (or over-limit) caller's body is only
      // drained, never held or parsed. A body not read to its end closes the connection, so that what is
      // left of it is never taken for the next request (request smuggling).
      absl::StatusOr<const Caller*> caller = Authenticate(request.get_header_value("Authorization"));
      // Held until the response is complete (a stream: until it ends or its client goes away).
      absl::StatusOr<Admission> admission = caller.ok() ? Admit(**caller) : absl::StatusOr<Admission>(caller.status());
      Body body = ReadBody(request, reader, response, request_limits(), admission.status());
      if (!body.bytes.ok()) {
        body.whole ? SendError(response, body.bytes.status()) : SendErrorAndClose(response, body.bytes.status());
        CountFailure(name, body.bytes.status());
        return ReturnMemory(body.held_bytes);
      }
      absl::StatusOr<GenerationRequest> parsed = ParseRequest(*body.bytes, endpoint, request_limits());
      std::string().swap(*body.bytes);
      if (!parsed.ok()) {
        fail(parsed.status());
        return ReturnMemory(body.held_bytes);
      }
      if (absl::Status allowed = CheckModel(**caller, parsed->model); !allowed.ok()) return fail(allowed);
      ResponseHeader header{NewRequestId(endpoint), absl::ToUnixSeconds(arrived), model_->name()};
      absl::StatusOr<std::unique_ptr<ChoiceStreams>> choices =
          GenerateChoices(*parsed, TenantOf(**caller, request.remote_addr, *parsed), header.id, arrived);
      if (!choices.ok()) return fail(choices.status());
      header.system_fingerprint = SystemFingerprint((*choices)->stream(0).model_fingerprint());
      const std::string echo = EchoText(*parsed, model_->tokenizer(), (*choices)->prompt_ids());
      ChoiceWriter writer(endpoint, model_->tokenizer(), parsed->n, parsed->top_logprobs >= 0);

      if (!parsed->stream) {
        StreamStarted();
        const size_t n = (*choices)->size();
        std::vector<Choice> out(n);
        std::vector<std::vector<TokenLogprobs>> logprobs(n, (*choices)->prompt_logprobs());
        Usage usage;
        absl::Status failed;
        for (uint32_t i = 0; i < n; ++i) {
          out[i].index = i;
          out[i].text = echo;
        }
        while (std::optional<ChoiceStreams::Event> event = (*choices)->Next()) {
          if (!event->piece.ok()) {
            failed = event->piece.status();
            break;
          }
          Piece& piece = *event->piece;
          out[event->index].text += piece.text;
          logprobs[event->index].insert(logprobs[event->index].end(), piece.logprobs.begin(), piece.logprobs.end());
          if (piece.finished) {
            out[event->index].finish_reason = piece.finish_reason;
            AddChoiceUsage(event->index, piece.usage, usage);
          }
        }
        choices->reset();  // cancels the rest after a failure
        StreamEnded();
        if (!failed.ok()) {
          LogWarning(
              StrCat("error=request_failed endpoint=", name, " id=", header.id, " message=\"", failed.message(), "\""));
          return fail(failed);
        }
        for (uint32_t i = 0; i < n; ++i) out[i].logprobs = writer.Logprobs(i, logprobs[i]);
        RequestFinished(arrived);
        response.set_content(Dump(CompletionJson(header, endpoint, out, usage)), kJson);
        CountRequest(name, 200);
        return;
      }

      auto state = std::make_shared<StreamState>();
      state->door = this;
      state->choices = *std::move(choices);
      state->header = std::move(header);
      state->endpoint = endpoint;
      state->include_usage = parsed->include_usage;
      state->echo = echo;
      state->writer.emplace(writer);
      state->arrived = arrived;
      state->admission = *std::move(admission);
      StreamStarted();
      response.set_header("Cache-Control", "no-cache");
      response.set_chunked_content_provider(
          "text/event-stream",
          [state](size_t, httplib::DataSink& sink) {
            if (!WriteStream(*state, sink)) {
              state->choices->Cancel();
              return false;
            }
            sink.done();
            return true;
          },
          [state](bool) {
            state->choices.reset();  // reaps the workers' calls now, not when the last copy goes
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
