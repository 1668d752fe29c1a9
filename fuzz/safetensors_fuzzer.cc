// A safetensors file of arbitrary bytes (model/safetensors.h). Open() either refuses it or every
// tensor it returns lies inside the file's data section, without overlaps, with exactly the bytes its
// shape and dtype need; reading each one whole must not fault.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "fuzz/fuzz_input.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path path = strata::fuzz::ScratchDir() / "model.safetensors";
  strata::fuzz::WriteFileOrDie(path, std::string_view(reinterpret_cast<const char*>(data), size));
  auto file = strata::model::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  uint64_t total = 0;
  std::string copy;
  const strata::model::TensorInfo* previous = nullptr;
  for (const strata::model::TensorInfo& tensor : file->tensors()) {
    STRATA_FUZZ_ASSERT(tensor.bytes.size() ==
                       static_cast<uint64_t>(tensor.num_elements()) * strata::DTypeSize(tensor.dtype));
    total += tensor.bytes.size();
    copy.assign(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size());  // must not fault
    STRATA_FUZZ_ASSERT(file->Find(tensor.name) == &tensor);
    if (previous != nullptr) STRATA_FUZZ_ASSERT(previous->name < tensor.name);
    previous = &tensor;
  }
  STRATA_FUZZ_ASSERT(total + 8 <= size);
  return 0;
}
