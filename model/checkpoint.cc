#include "model/checkpoint.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "model/json_errors.h"

namespace strata::model {
namespace {

using Json = nlohmann::json;

absl::StatusOr<bool> Exists(const std::filesystem::path& path) {
  std::error_code error;
  const bool exists = std::filesystem::exists(path, error);
  if (error) return absl::UnknownError(absl::StrCat(path.string(), ": cannot stat: ", error.message()));
  return exists;
}

// A shard name from the index must stay inside the model directory.
bool IsSafeShardName(const std::string& shard) {
  const std::filesystem::path path(shard);
  if (shard.empty() || path.is_absolute()) return false;
  for (const auto& part : path) {
    if (part == "..") return false;
  }
  return true;
}

// Parses the index's weight_map: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ParseWeightMap(const std::filesystem::path& index_path) {
  const std::string name = index_path.string();
  STRATA_ASSIGN_OR_RETURN(const std::string text, ReadFile(index_path));
  Json index;
  try {
    index = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON: ", DescribeJsonError(e)));
  }
  if (!index.is_object()) return absl::InvalidArgumentError(absl::StrCat(name, ": not a JSON object"));
  const auto it = index.find("weight_map");
  if (it == index.end()) return absl::InvalidArgumentError(absl::StrCat(name, ": has no 'weight_map'"));
  if (!it->is_object()) return absl::InvalidArgumentError(absl::StrCat(name, ": 'weight_map' is not an object"));
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": weight_map entry for tensor ", Quoted(tensor), " is not a string"));
    }
    const auto& shard_name = shard.get_ref<const std::string&>();
    if (!IsSafeShardName(shard_name)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": weight_map maps tensor ", Quoted(tensor), " to ",
                                                     Quoted(shard_name),
                                                     ", which is not a file name inside the model directory"));
    }
    weight_map.emplace(tensor, shard_name);
  }
  return weight_map;
}

// Opens the shards that `model_dir`'s index lists and checks that the index and the shards agree.
// Appends the tensors (unsorted) and the shard paths (in name order).
absl::Status OpenSharded(const std::filesystem::path& model_dir, std::vector<TensorInfo>& tensors,
                         std::vector<std::filesystem::path>& files) {
  const std::filesystem::path index_path = model_dir / kShardIndexFileName;
  const std::string index_name = index_path.string();
  STRATA_ASSIGN_OR_RETURN(const auto weight_map, ParseWeightMap(index_path));

  std::set<std::string> shards;
  for (const auto& [tensor, shard] : weight_map) shards.insert(shard);
  absl::flat_hash_map<std::string, const std::string*> shard_of;  // tensor name -> shard holding it
  for (const std::string& shard : shards) {
    const std::filesystem::path shard_path = model_dir / shard;
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(shard_path);
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(
          absl::StrCat(index_name, ": lists shard ", Quoted(shard), " but ", shard_path.string(), " does not exist"));
    }
    if (!file.ok()) return file.status();
    for (const TensorInfo& tensor : file->tensors()) {
      const auto [it, inserted] = shard_of.emplace(tensor.name, &shard);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(index_name, ": tensor ", Quoted(tensor.name),
                                                       " is in two shards, ", Quoted(*it->second), " and ",
                                                       Quoted(shard)));
      }
      if (!weight_map.contains(tensor.name)) {
        return absl::InvalidArgumentError(absl::StrCat(index_name, ": shard ", Quoted(shard), " holds tensor ",
                                                       Quoted(tensor.name), ", which the weight_map does not list"));
      }
      tensors.push_back(tensor);
    }
    files.push_back(shard_path);
  }
  for (const auto& [tensor, shard] : weight_map) {
    const auto it = shard_of.find(tensor);
    if (it == shard_of.end() || *it->second != shard) {
      return absl::InvalidArgumentError(absl::StrCat(index_name, ": weight_map puts tensor ", Quoted(tensor),
                                                     " in shard ", Quoted(shard), ", which does not hold it"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Checkpoint::Checkpoint(std::vector<TensorInfo> tensors, std::vector<std::filesystem::path> files)
    : tensors_(std::move(tensors)), files_(std::move(files)) {
  for (const TensorInfo& tensor : tensors_) total_bytes_ += tensor.bytes.size();
}

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::filesystem::path& model_dir) {
  const std::filesystem::path index_path = model_dir / kShardIndexFileName;
  const std::filesystem::path single_path = model_dir / kSingleFileName;
  STRATA_ASSIGN_OR_RETURN(const bool has_index, Exists(index_path));
  std::vector<TensorInfo> tensors;
  std::vector<std::filesystem::path> files;
  if (has_index) {
    STRATA_RETURN_IF_ERROR(OpenSharded(model_dir, tensors, files));
    std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
    return Checkpoint(std::move(tensors), std::move(files));
  }
  STRATA_ASSIGN_OR_RETURN(const bool has_single, Exists(single_path));
  if (!has_single) {
    return absl::NotFoundError(
        absl::StrCat(model_dir.string(), ": has neither ", kSingleFileName, " nor ", kShardIndexFileName));
  }
  STRATA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(single_path));
  tensors.assign(file.tensors().begin(), file.tensors().end());
  files.push_back(single_path);
  return Checkpoint(std::move(tensors), std::move(files));
}

const TensorInfo* Checkpoint::Find(std::string_view name) const { return FindTensorByName(tensors_, name); }

}  // namespace strata::model
