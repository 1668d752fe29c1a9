// A model argument resolved as vLLM users expect, without the network: a directory that exists is used as
// is; otherwise `org/name` (or `name`) is looked up in the local Hugging Face hub cache.
#ifndef STRATA_COMMON_HF_CACHE_H_
#define STRATA_COMMON_HF_CACHE_H_

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

// The hub cache directory and the variable that named it: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE
// (the older name), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub, as huggingface_hub resolves it.
struct HubCache {
  std::filesystem::path dir;
  std::string named_by;  // "HF_HUB_CACHE", "HF_HOME", ..., or "default"
};
HubCache HubCacheFromEnvironment();

struct ResolvedModel {
  std::filesystem::path dir;  // the directory with config.json, the weights and the tokenizer
  // The name clients ask for by default: the Hugging Face id as given (`meta-llama/Llama-3.1-8B`), or the
  // base name of a directory given as a path.
  std::string name;
};

// `model` as a path when it exists (a directory; anything else is an error); else, when it looks like a
// hub id (`name` or `org/name`, letters, digits, `-`, `_`, `.`), the snapshot
// `<hub>/models--org--name/snapshots/<revision>/` with the revision named by `refs/main` (or the only
// snapshot when there is no `refs/main`). Never downloads. NotFound saying where it looked and how to
// fetch the model when neither holds; InvalidArgument for an empty argument.
absl::StatusOr<ResolvedModel> ResolveModel(std::string_view model, const HubCache& hub);
absl::StatusOr<ResolvedModel> ResolveModel(std::string_view model);  // with HubCacheFromEnvironment()

}  // namespace strata

#endif  // STRATA_COMMON_HF_CACHE_H_
