// A config file of flags: a flat mapping from flag names to values, in YAML or TOML.
#ifndef STRATA_COMMON_CONFIG_FILE_H_
#define STRATA_COMMON_CONFIG_FILE_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

struct ConfigEntry {
  std::string key;                  // as written (`kvstore-dram-bytes` or `kvstore_dram_bytes`)
  std::vector<std::string> values;  // one for a scalar; a list's items in order
  int line = 0;                     // 1-based; 0 where the format does not say (TOML)
};

// Reads `path` by its extension: `.yaml`/`.yml` (one document, a mapping whose values are scalars or lists
// of scalars) or `.toml` (`key = value` lines, no tables). Entries in file order. InvalidArgument naming
// the file (and line) for a malformed file, a nested mapping or table, an alias, a key given twice, a
// value left empty, or another extension; NotFound when the file is missing.
absl::StatusOr<std::vector<ConfigEntry>> ReadConfigFile(const std::filesystem::path& path);

}  // namespace strata

#endif  // STRATA_COMMON_CONFIG_FILE_H_
