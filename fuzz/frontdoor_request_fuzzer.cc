// The HTTP/JSON front door's request path up to the worker (scheduler/frontdoor): a body of arbitrary
// bytes for /v1/completions or /v1/chat/completions (the first byte picks which) goes through the HTTP
// face's parse step (ParseRequest: size and JSON shape limits, then the endpoint's parser), then is
// prepared against a served model (tokenized, or rendered with the real Llama-3 chat template and
// tokenized; checked against vocabulary, context and the request limits), and every error becomes
// OpenAI's error JSON.
//
// Properties: nothing faults; a prepared request holds only in-vocabulary ids, fits the context and the
// limits; every refusal is a 4xx/5xx with a JSON body that serializes.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>

#include "fuzz/fuzz_input.h"
#include "scheduler/frontdoor/limits.h"
#include "scheduler/frontdoor/openai_http.h"
#include "scheduler/frontdoor/request.h"
#include "scheduler/frontdoor/served_model.h"
#include "scheduler/frontdoor/worker_proxy.h"

namespace strata::frontdoor {
namespace {

constexpr RequestLimits kLimits{.max_request_bytes = 2048,
                                .max_prompt_tokens = 512,
                                .max_completion_tokens = 1024,
                                .json = {.max_depth = 32, .max_elements = 1024}};

const ServedModel& Model() {
  static const ServedModel* model = [] {
    const std::filesystem::path dir = fuzz::ScratchDir() / "llama3-tiny";
    const std::filesystem::path data = STRATA_TEST_DATA_DIR;
    std::filesystem::create_directories(dir);
    for (const char* file : {"tokenizer.json", "config.json"}) {
      std::filesystem::copy_file(data / "models/llama3-tiny" / file, dir / file,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    std::filesystem::copy_file(data / "chat_templates/llama3/tokenizer_config.json", dir / "tokenizer_config.json",
                               std::filesystem::copy_options::overwrite_existing);
    auto loaded = ServedModel::Load(dir, "llama3-tiny");
    STRATA_FUZZ_ASSERT(loaded.ok());
    return loaded->release();
  }();
  return *model;
}

void CheckError(const absl::Status& status) {
  const int http_status = HttpStatusOf(status);
  STRATA_FUZZ_ASSERT(http_status >= 400 && http_status < 600);
  (void)ErrorJson(status).dump();
}

}  // namespace
}  // namespace strata::frontdoor

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::frontdoor;
  const ServedModel& model = Model();
  strata::fuzz::InputReader input(data, size);
  const Endpoint endpoint = (input.Byte().value_or(0) & 1) ? Endpoint::kChat : Endpoint::kCompletions;
  absl::StatusOr<GenerationRequest> request = ParseRequest(input.Rest(), endpoint, kLimits);
  if (!request.ok()) {
    CheckError(request.status());
    return 0;
  }
  absl::StatusOr<PreparedRequest> prepared = model.Prepare(*request, kLimits);
  if (!prepared.ok()) {
    CheckError(prepared.status());
    return 0;
  }
  for (int32_t id : prepared->prompt_ids) {
    STRATA_FUZZ_ASSERT(id >= 0 && id < model.tokenizer().vocab_size());
  }
  STRATA_FUZZ_ASSERT(static_cast<int64_t>(prepared->prompt_ids.size()) + prepared->max_tokens <=
                     model.context_tokens());
  STRATA_FUZZ_ASSERT(static_cast<int64_t>(prepared->prompt_ids.size()) <= kLimits.max_prompt_tokens);
  STRATA_FUZZ_ASSERT(prepared->max_tokens <= kLimits.max_completion_tokens);
  return 0;
}
