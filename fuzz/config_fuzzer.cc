// config.json of arbitrary bytes (model/config.h): parsed or refused, and what is accepted
// describes a forward pass the engine can size without overflow.
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_input.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = strata::model::ParseModelConfig(std::string_view(reinterpret_cast<const char*>(data), size),
                                                "fuzz/config.json");
  if (!config.ok()) return 0;
  (void)config->Canonical();
  STRATA_FUZZ_ASSERT(config->layer_window.empty() ||
                     config->layer_window.size() == static_cast<size_t>(config->num_layers));
  (void)config->KvBytesPerToken(2);
  return 0;
}
