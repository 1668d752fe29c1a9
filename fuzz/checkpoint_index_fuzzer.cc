// model.safetensors.index.json of arbitrary bytes (model/checkpoint.h) over two real shards:
// Checkpoint::Open either refuses it or the index and the shards agree, and no shard name leads out of
// the model directory.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_input.h"
#include "model/checkpoint.h"

namespace {

// A safetensors file of F32 tensors of one element each, named `names`, the header padded to 8 bytes.
std::string Shard(std::initializer_list<std::string_view> names) {
  std::string header = "{";
  std::string data;
  for (std::string_view name : names) {
    if (header.size() > 1) header += ",";
    header += "\"" + std::string(name) + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + 4) + "]}";
    data.append("\0\0\x80\x3f", 4);  // 1.0f
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return file + header + data;
}

const std::filesystem::path& ModelDir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d = strata::fuzz::ScratchDir() / "model";
    std::filesystem::create_directories(d);
    strata::fuzz::WriteFileOrDie(d / "model-00001-of-00002.safetensors", Shard({"a", "b"}));
    strata::fuzz::WriteFileOrDie(d / "model-00002-of-00002.safetensors", Shard({"c"}));
    // Outside the model directory: an index that reaches it must be refused.
    strata::fuzz::WriteFileOrDie(strata::fuzz::ScratchDir() / "outside.safetensors", Shard({"x"}));
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& dir = ModelDir();
  strata::fuzz::WriteFileOrDie(dir / strata::model::kShardIndexFileName,
                               std::string_view(reinterpret_cast<const char*>(data), size));
  auto checkpoint = strata::model::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return 0;
  for (const std::filesystem::path& file : checkpoint->files()) {
    STRATA_FUZZ_ASSERT(file.filename() != "outside.safetensors");
  }
  for (const strata::model::TensorInfo& tensor : checkpoint->tensors()) {
    STRATA_FUZZ_ASSERT(tensor.name != "x");
    STRATA_FUZZ_ASSERT(checkpoint->Find(tensor.name) == &tensor);
  }
  return 0;
}
