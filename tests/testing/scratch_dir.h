// A scratch directory for tests: fresh, empty, removed with its contents when its owner goes away.
#ifndef STRATA_TESTS_TESTING_SCRATCH_DIR_H_
#define STRATA_TESTS_TESTING_SCRATCH_DIR_H_

#include <filesystem>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata::testing {

// A fresh, empty directory that is removed (recursively) when this object is destroyed. Move-only.
class ScratchDir {
 public:
  // Creates a unique directory under `parent` (e.g. ::testing::TempDir()), named after `prefix`.
  static absl::StatusOr<ScratchDir> Create(const std::filesystem::path& parent, std::string_view prefix);

  ScratchDir(ScratchDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ScratchDir& operator=(ScratchDir&& other) noexcept;
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit ScratchDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

// A ScratchDir under the system's temporary directory; crashes (STRATA_CHECK) when none can be made,
// which is a broken test machine, not a test result.
ScratchDir MakeTempDir(std::string_view prefix);

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_SCRATCH_DIR_H_
