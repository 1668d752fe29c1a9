#include "common/hf_cache.h"

#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/strings.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// `name` or `org/name`, as the hub spells repository ids.
bool LooksLikeHubId(std::string_view model) {
  size_t slashes = 0;
  for (char c : model) {
    if (c == '/') {
      ++slashes;
    } else if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return slashes <= 1 && model.front() != '/' && model.back() != '/' && model.front() != '.' &&
         model.find("..") == std::string_view::npos;
}

std::string BaseName(const fs::path& dir) {
  fs::path normal = dir.lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  std::string name = normal.filename().string();
  if (name.empty() || name == ".") name = fs::absolute(dir).lexically_normal().filename().string();
  return name;
}

}  // namespace

HubCache HubCacheFromEnvironment() {
  if (std::string dir = Env("HF_HUB_CACHE"); !dir.empty()) return {dir, "HF_HUB_CACHE"};
  if (std::string dir = Env("HUGGINGFACE_HUB_CACHE"); !dir.empty()) return {dir, "HUGGINGFACE_HUB_CACHE"};
  if (std::string dir = Env("HF_HOME"); !dir.empty()) return {fs::path(dir) / "hub", "HF_HOME"};
  if (std::string dir = Env("XDG_CACHE_HOME"); !dir.empty()) {
    return {fs::path(dir) / "huggingface" / "hub", "XDG_CACHE_HOME"};
  }
  return {fs::path(Env("HOME")) / ".cache" / "huggingface" / "hub", "default"};
}

absl::StatusOr<ResolvedModel> ResolveModel(std::string_view model, const HubCache& hub) {
  if (model.empty()) return absl::InvalidArgumentError("model: empty (a directory or a Hugging Face id)");
  std::error_code error;
  const fs::path as_path(model);
  if (fs::exists(as_path, error)) {
    if (!fs::is_directory(as_path, error)) {
      return absl::InvalidArgumentError(StrCat(model, ": not a directory (a model is a directory with config.json)"));
    }
    return ResolvedModel{as_path, BaseName(as_path)};
  }
  if (!LooksLikeHubId(model)) {
    return absl::NotFoundError(StrCat(model, ": no such directory (and not a Hugging Face id such as org/name)"));
  }
  std::string repo = "models--";
  for (char c : model) {
    if (c == '/') {
      repo += "--";
    } else {
      repo += c;
    }
  }
  const fs::path repo_dir = hub.dir / repo;
  auto not_found = [&](std::string_view why) {
    return absl::NotFoundError(
        StrCat(model, ": no such directory, and not in the local Hugging Face cache (", why, "; the cache is ",
               hub.dir.string(), hub.named_by == "default" ? ", the default" : StrCat(", from $", hub.named_by),
               "; HF_HUB_CACHE or HF_HOME name another). Strata never downloads: fetch it first, e.g. "
               "`huggingface-cli download ",
               model, "`"));
  };
  if (!fs::is_directory(repo_dir, error)) return not_found(StrCat("no directory ", repo_dir.string()));
  const fs::path snapshots = repo_dir / "snapshots";
  std::string revision;
  if (absl::StatusOr<std::string> ref = ReadFile(repo_dir / "refs" / "main"); ref.ok()) {
    revision = std::string(absl::StripAsciiWhitespace(*ref));
    if (revision.empty() || revision.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          StrCat((repo_dir / "refs" / "main").string(), ": not a revision ('", revision, "')"));
    }
  } else {
    // No refs/main (a snapshot fetched by revision): the only snapshot, if there is one.
    std::vector<std::string> found;
    for (const fs::directory_entry& entry : fs::directory_iterator(snapshots, error)) {
      if (entry.is_directory(error)) found.push_back(entry.path().filename().string());
    }
    if (found.empty()) return not_found(StrCat("no refs/main and no snapshot in ", snapshots.string()));
    if (found.size() > 1) {
      return absl::FailedPreconditionError(StrCat(model, ": ", repo_dir.string(), " has no refs/main and ",
                                                  found.size(), " snapshots (", absl::StrJoin(found, ", "),
                                                  "); pass the snapshot directory itself"));
    }
    revision = found.front();
  }
  const fs::path snapshot = snapshots / revision;
  if (!fs::is_directory(snapshot, error)) {
    return not_found(StrCat("refs/main names revision ", revision, " but ", snapshot.string(), " does not exist"));
  }
  return ResolvedModel{snapshot, std::string(model)};
}

absl::StatusOr<ResolvedModel> ResolveModel(std::string_view model) {
  return ResolveModel(model, HubCacheFromEnvironment());
}

}  // namespace strata
