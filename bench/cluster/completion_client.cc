#include "bench/cluster/completion_client.h"

#include <httplib.h>

#include <chrono>

#include "common/strings.h"

namespace strata::cluster_bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) { return std::chrono::duration<double>(to - from).count(); }

uint32_t U32(const nlohmann::json& object, const char* field) {
  if (!object.is_object() || !object.contains(field) || !object[field].is_number()) return 0;
  return object[field].get<uint32_t>();
}

double F64(const nlohmann::json& object, const char* field) {
  if (!object.is_object() || !object.contains(field) || !object[field].is_number()) return 0;
  return object[field].get<double>();
}

std::string ErrorMessage(const nlohmann::json& json) {
  if (json.contains("error") && json["error"].is_object() && json["error"].contains("message")) {
    return json["error"]["message"].is_string() ? json["error"]["message"].get<std::string>() : json["error"].dump();
  }
  return json.dump();
}

// Takes one response JSON object (a stream chunk or the whole non-streamed answer) into `result`.
void TakeChunk(const nlohmann::json& json, CompletionResult& result) {
  if (json.contains("error")) {
    result.ok = false;
    result.error = ErrorMessage(json);
    return;
  }
  if (json.contains("choices") && json["choices"].is_array()) {
    for (const nlohmann::json& choice : json["choices"]) {
      if (choice.contains("text") && choice["text"].is_string()) result.text += choice["text"].get<std::string>();
      if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
        result.finish_reason = choice["finish_reason"].get<std::string>();
      }
    }
  }
  if (json.contains("usage") && json["usage"].is_object()) {
    result.has_usage = true;
    result.usage = ParseUsage(json["usage"]);
  }
}

}  // namespace

void SseParser::Feed(std::string_view bytes) {
  buffer_.append(bytes.data(), bytes.size());
  size_t start = 0;
  for (size_t end; (end = buffer_.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string_view line(buffer_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    Line(line);
  }
  buffer_.erase(0, start);
}

void SseParser::Line(std::string_view line) {
  if (line.empty()) {  // end of an event
    if (has_data_) on_data_(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.substr(0, 5) != "data:") return;  // comments (":"), event:, id:, retry:
  line.remove_prefix(5);
  if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  if (has_data_) data_ += '\n';
  data_.append(line.data(), line.size());
  has_data_ = true;
}

CompletionUsage ParseUsage(const nlohmann::json& usage) {
  CompletionUsage out;
  out.prompt_tokens = U32(usage, "prompt_tokens");
  out.completion_tokens = U32(usage, "completion_tokens");
  if (usage.contains("prompt_tokens_details")) out.cached_tokens = U32(usage["prompt_tokens_details"], "cached_tokens");
  if (usage.contains("strata") && usage["strata"].is_object()) {
    const nlohmann::json& strata = usage["strata"];
    out.has_strata = true;
    if (strata.contains("worker_id") && strata["worker_id"].is_string()) out.worker_id = strata["worker_id"];
    out.cached_tokens_gpu = U32(strata, "cached_tokens_gpu");
    out.cached_tokens_host = U32(strata, "cached_tokens_host");
    out.cached_tokens_kvstore = U32(strata, "cached_tokens_kvstore");
    out.prefill_tokens = U32(strata, "prefill_tokens");
    out.queue_s = F64(strata, "queue_s");
    out.server_ttft_s = F64(strata, "ttft_s");
  }
  return out;
}

nlohmann::json CompletionClient::Body(const CompletionRequest& request) const {
  nlohmann::json body = {{"model", request.model},
                         {"prompt", request.prompt_ids},
                         {"max_tokens", request.max_tokens},
                         {"temperature", 0},
                         {"stream", request.stream}};
  if (request.stream) body["stream_options"] = {{"include_usage", true}};
  if (request.ignore_eos) body["ignore_eos"] = true;
  if (request.disable_prefix_cache) body[options_.disable_cache_field] = true;
  if (!request.user.empty()) body["user"] = request.user;
  return body;
}

CompletionResult CompletionClient::Complete(const CompletionRequest& request) const {
  CompletionResult result;
  httplib::Client http(options_.host, options_.port);
  http.set_connection_timeout(5);
  if (!options_.local_address.empty()) http.set_interface(options_.local_address);
  http.set_read_timeout(options_.timeout_s);
  http.set_write_timeout(options_.timeout_s);

  httplib::Request http_request;
  http_request.method = "POST";
  http_request.path = "/v1/completions";
  http_request.headers = {{"Accept", request.stream ? "text/event-stream" : "application/json"}};
  if (!options_.api_key.empty()) http_request.headers.emplace("Authorization", "Bearer " + options_.api_key);
  http_request.body = Body(request).dump();
  http_request.set_header("Content-Type", "application/json");

  const Clock::time_point start = Clock::now();
  std::string body;  // non-streaming answer, or an error body
  bool done = false;
  int status = 0;
  result.ok = true;
  SseParser parser([&](std::string_view data) {
    if (data == "[DONE]") {
      done = true;
      return;
    }
    const nlohmann::json chunk = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (chunk.is_discarded()) {
      result.ok = false;
      result.error = StrCat("malformed stream chunk: ", data.substr(0, 200));
      return;
    }
    if (result.chunks++ == 0) result.ttft_s = Seconds(start, Clock::now());
    TakeChunk(chunk, result);
  });
  http_request.response_handler = [&](const httplib::Response& response) {
    status = response.status;
    return true;
  };
  http_request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    if (request.stream && status == 200) {
      parser.Feed(std::string_view(data, length));
    } else {
      body.append(data, length);
    }
    return true;
  };
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  const bool sent = http.send(http_request, response, error);
  result.total_s = Seconds(start, Clock::now());
  if (!sent) {
    result.ok = false;
    result.error = StrCat("POST /v1/completions to ", options_.host, ":", options_.port, ": ", httplib::to_string(error));
    return result;
  }
  if (status != 200) {
    result.ok = false;
    const nlohmann::json json = nlohmann::json::parse(body, nullptr, false);
    result.error = StrCat("HTTP ", status, ": ", json.is_discarded() ? body.substr(0, 300) : ErrorMessage(json));
    return result;
  }
  if (!request.stream) {
    result.ttft_s = result.total_s;
    const nlohmann::json json = nlohmann::json::parse(body, nullptr, false);
    if (json.is_discarded()) {
      result.ok = false;
      result.error = StrCat("malformed response: ", body.substr(0, 300));
      return result;
    }
    result.chunks = 1;
    TakeChunk(json, result);
    return result;
  }
  if (result.ok && !done) {
    result.ok = false;
    result.error = "the stream ended without [DONE] (the server or its worker failed mid-stream)";
  }
  return result;
}

}  // namespace strata::cluster_bench
