#include "tests/testing/safetensors_writer.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "model/safetensors.h"

namespace strata::testing {
namespace {

using Json = nlohmann::json;

std::string Le64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(value >> (8 * i));
  return out;
}

void AppendLe16(std::string& out, uint16_t value) {
  out.push_back(static_cast<char>(value & 0xff));
  out.push_back(static_cast<char>(value >> 8));
}

absl::Status FromErrorCode(const std::error_code& error, std::string_view what, const std::filesystem::path& path) {
  return absl::UnknownError(absl::StrCat(path.string(), ": ", std::string(what), ": ", error.message()));
}

}  // namespace

std::string EncodeTensorBytes(DType dtype, absl::Span<const float> values) {
  std::string out;
  out.reserve(values.size() * DTypeSize(dtype));
  for (float value : values) {
    switch (dtype) {
      case DType::kF32: {
        uint32_t bits;
        std::memcpy(&bits, &value, sizeof(bits));
        AppendLe16(out, static_cast<uint16_t>(bits & 0xffff));
        AppendLe16(out, static_cast<uint16_t>(bits >> 16));
        break;
      }
      case DType::kF16:
        AppendLe16(out, F32ToF16(value));
        break;
      case DType::kBF16:
        AppendLe16(out, F32ToBf16(value));
        break;
    }
  }
  return out;
}

absl::Status WriteSafetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    uint64_t elements = 1;
    for (int64_t dim : tensor.shape) elements *= static_cast<uint64_t>(dim);
    if (elements * DTypeSize(tensor.dtype) != tensor.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path.string(), ": tensor '", tensor.name, "' has ",
                                                     tensor.bytes.size(), " bytes, its shape and dtype need ",
                                                     elements * DTypeSize(tensor.dtype)));
    }
    if (!names.insert(tensor.name).second || tensor.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path.string(), ": tensor name '", tensor.name, "' repeated"));
    }
    header[tensor.name] = {{"dtype", std::string(DTypeName(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.bytes.size()}}};
    offset += tensor.bytes.size();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string data;
  data.reserve(offset);
  for (const TensorToWrite& tensor : tensors) data += tensor.bytes;
  return WriteRawFile(path, BuildRawSafetensors(header_text, data));
}

absl::Status ShardCheckpoint(const std::filesystem::path& src_dir, const std::filesystem::path& dst_dir,
                             int num_shards) {
  STRATA_ASSIGN_OR_RETURN(const model::SafetensorsFile source,
                          model::SafetensorsFile::Open(src_dir / "model.safetensors"));
  const absl::Span<const model::TensorInfo> tensors = source.tensors();
  if (num_shards < 1 || static_cast<size_t>(num_shards) > tensors.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ShardCheckpoint: cannot split ", tensors.size(), " tensors into ", num_shards, " shards"));
  }
  std::error_code error;
  std::filesystem::create_directories(dst_dir, error);
  if (error) return FromErrorCode(error, "cannot create directory", dst_dir);

  Json weight_map = Json::object();
  uint64_t total_bytes = 0;
  for (int shard = 0; shard < num_shards; ++shard) {
    const std::string shard_name = absl::StrFormat("model-%05d-of-%05d.safetensors", shard + 1, num_shards);
    const size_t begin = tensors.size() * shard / num_shards;
    const size_t end = tensors.size() * (shard + 1) / num_shards;
    std::vector<TensorToWrite> shard_tensors;
    for (size_t i = begin; i < end; ++i) {
      const model::TensorInfo& tensor = tensors[i];
      shard_tensors.push_back({tensor.name, tensor.dtype, tensor.shape,
                               std::string(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size())});
      weight_map[tensor.name] = shard_name;
      total_bytes += tensor.bytes.size();
    }
    STRATA_RETURN_IF_ERROR(WriteSafetensors(dst_dir / shard_name, shard_tensors, {{"format", "pt"}}));
  }
  const Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  STRATA_RETURN_IF_ERROR(WriteRawFile(dst_dir / "model.safetensors.index.json", index.dump(2) + "\n"));

  for (const char* name : {"config.json", "tokenizer.json"}) {
    if (!std::filesystem::exists(src_dir / name)) continue;
    std::filesystem::copy_file(src_dir / name, dst_dir / name, std::filesystem::copy_options::overwrite_existing,
                               error);
    if (error) return FromErrorCode(error, "cannot copy", src_dir / name);
  }
  return absl::OkStatus();
}

std::string BuildRawSafetensors(std::string_view header_json, std::string_view data) {
  std::string out = Le64(header_json.size());
  out.append(header_json);
  out.append(data);
  return out;
}

absl::Status WriteRawFile(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::UnknownError(absl::StrCat(path.string(), ": cannot open for writing"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::UnknownError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace strata::testing
