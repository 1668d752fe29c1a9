#include "tests/testing/scratch_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace strata::testing {

absl::StatusOr<ScratchDir> ScratchDir::Create(const std::filesystem::path& parent, std::string_view prefix) {
  std::string pattern = (parent / absl::StrCat(std::string(prefix), "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat(pattern, ": mkdtemp failed"));
  }
  return ScratchDir(std::filesystem::path(pattern));
}

ScratchDir& ScratchDir::operator=(ScratchDir&& other) noexcept {
  if (this != &other) {
    ScratchDir discarded(std::move(*this));
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ignored;  // best effort: a leftover temp dir is not worth failing a test over
  std::filesystem::remove_all(path_, ignored);
}

ScratchDir MakeTempDir(std::string_view prefix) {
  absl::StatusOr<ScratchDir> dir = ScratchDir::Create(std::filesystem::temp_directory_path(), prefix);
  STRATA_CHECK(dir.ok());
  return std::move(*dir);
}

}  // namespace strata::testing
