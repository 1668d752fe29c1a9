#include "common/hf_cache.h"

#include <cstdlib>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A hub cache laid out as huggingface_hub leaves it: models--org--name/{refs/main, snapshots/<rev>/}.
fs::path MakeSnapshot(const fs::path& hub, const std::string& repo, const std::string& revision, bool with_ref) {
  const fs::path snapshot = hub / repo / "snapshots" / revision;
  fs::create_directories(snapshot);
  std::ofstream(snapshot / "config.json") << "{}";
  if (with_ref) {
    fs::create_directories(hub / repo / "refs");
    std::ofstream(hub / repo / "refs" / "main") << revision << "\n";
  }
  return snapshot;
}

TEST(HfCache, AnExistingDirectoryIsUsedAsIsAndNamedByItsBaseName) {
  testing::ScratchDir dir = testing::MakeTempDir("hf");
  fs::create_directories(dir.path() / "my-model");
  absl::StatusOr<ResolvedModel> model =
      ResolveModel((dir.path() / "my-model/").string(), HubCache{"/nonexistent", "default"});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->dir, dir.path() / "my-model/");
  EXPECT_EQ(model->name, "my-model");
}

TEST(HfCache, AnIdResolvesToTheSnapshotThatRefsMainNames) {
  testing::ScratchDir dir = testing::MakeTempDir("hf");
  MakeSnapshot(dir.path(), "models--meta-llama--Llama-3.1-8B", "0123old", false);
  const fs::path main = MakeSnapshot(dir.path(), "models--meta-llama--Llama-3.1-8B", "abc123", true);
  absl::StatusOr<ResolvedModel> model = ResolveModel("meta-llama/Llama-3.1-8B", HubCache{dir.path(), "HF_HUB_CACHE"});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->dir, main);
  EXPECT_EQ(model->name, "meta-llama/Llama-3.1-8B");
  // Without refs/main: the only snapshot; with two, an error that lists them.
  const fs::path only = MakeSnapshot(dir.path(), "models--gpt2", "fff", false);
  EXPECT_EQ(ResolveModel("gpt2", HubCache{dir.path(), "HF_HUB_CACHE"})->dir, only);
  MakeSnapshot(dir.path(), "models--gpt2", "eee", false);
  absl::StatusOr<ResolvedModel> two = ResolveModel("gpt2", HubCache{dir.path(), "HF_HUB_CACHE"});
  ASSERT_FALSE(two.ok());
  EXPECT_THAT(two.status().message(), HasSubstr("2 snapshots"));
}

TEST(HfCache, AMissingModelSaysWhereItLookedAndNeverDownloads) {
  testing::ScratchDir dir = testing::MakeTempDir("hf");
  absl::StatusOr<ResolvedModel> model = ResolveModel("org/absent", HubCache{dir.path() / "hub", "HF_HOME"});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(), HasSubstr((dir.path() / "hub" / "models--org--absent").string()));
  EXPECT_THAT(model.status().message(), HasSubstr("from $HF_HOME"));
  EXPECT_THAT(model.status().message(), HasSubstr("huggingface-cli download org/absent"));
  // refs/main naming a snapshot that is not there.
  fs::create_directories(dir.path() / "hub" / "models--org--absent" / "refs");
  std::ofstream(dir.path() / "hub" / "models--org--absent" / "refs" / "main") << "deadbeef";
  EXPECT_THAT(ResolveModel("org/absent", HubCache{dir.path() / "hub", "HF_HOME"}).status().message(),
              HasSubstr("refs/main names revision deadbeef"));
  // Not an id, not a directory.
  absl::StatusOr<ResolvedModel> path = ResolveModel("/no/such/model/dir", HubCache{dir.path(), "default"});
  EXPECT_THAT(path.status().message(), HasSubstr("/no/such/model/dir: no such directory"));
  std::ofstream(dir.path() / "file") << "x";
  EXPECT_THAT(ResolveModel((dir.path() / "file").string(), HubCache{dir.path(), "default"}).status().message(),
              HasSubstr("not a directory"));
}

TEST(HfCache, HubCacheFollowsHuggingFaceHubsVariables) {
  const char* saved[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"};
  std::vector<std::optional<std::string>> old;
  for (const char* name : saved) {
    const char* value = std::getenv(name);
    old.push_back(value == nullptr ? std::nullopt : std::optional<std::string>(value));
    ::unsetenv(name);
  }
  ::setenv("XDG_CACHE_HOME", "/x", 1);
  EXPECT_EQ(HubCacheFromEnvironment().dir, fs::path("/x/huggingface/hub"));
  ::setenv("HF_HOME", "/h", 1);
  EXPECT_EQ(HubCacheFromEnvironment().dir, fs::path("/h/hub"));
  EXPECT_EQ(HubCacheFromEnvironment().named_by, "HF_HOME");
  ::setenv("HF_HUB_CACHE", "/c", 1);
  EXPECT_EQ(HubCacheFromEnvironment().dir, fs::path("/c"));
  for (size_t i = 0; i < old.size(); ++i) {
    if (old[i]) {
      ::setenv(saved[i], old[i]->c_str(), 1);
    } else {
      ::unsetenv(saved[i]);
    }
  }
}

}  // namespace
}  // namespace strata
