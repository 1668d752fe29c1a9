// Reading whole files, with errors that name the file and the reason.
#ifndef STRATA_COMMON_FILE_H_
#define STRATA_COMMON_FILE_H_

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace strata {

// The bytes of `path`. NotFound when it does not exist, the errno's code otherwise (permission,
// a directory, an I/O error); every message starts with the path.
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path);

}  // namespace strata

#endif  // STRATA_COMMON_FILE_H_
