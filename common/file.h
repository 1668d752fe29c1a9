// Reading whole files, with errors that name the file and the reason.
#ifndef STRATA_COMMON_FILE_H_
#define STRATA_COMMON_FILE_H_

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

// The bytes of `path`. NotFound when it does not exist, the errno's code otherwise (permission,
// a directory, an I/O error); every message starts with the path.
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path);

// Writes `contents` to `path` through a temporary file beside it and a rename, so that a reader sees the
// whole file or none of it (a port file that another process polls). The error names the file.
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents);

// Makes `dir` and its missing parents (mode 0755 less the umask) unless it is a directory already. The
// error names `what` (the flag, e.g. "--ssd-dir"), the directory and the reason: a file in the way,
// permission, a read-only file system.
absl::Status CreateDirectories(const std::filesystem::path& dir, std::string_view what);

}  // namespace strata

#endif  // STRATA_COMMON_FILE_H_
