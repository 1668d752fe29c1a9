// Every flag of a command from the command line, the environment or a config file.
//
// Precedence, highest first: the command line; the environment variable STRATA_<FLAG_NAME> (the flag's
// long name, or a positional argument's name, upper case, dashes as underscores: --kvstore-dram-bytes is
// STRATA_KVSTORE_DRAM_BYTES); the file named by --config (or STRATA_CONFIG), whose keys are the flag names
// without dashes (`kvstore-dram-bytes: 40GiB`; underscores allowed); the flag's default. A key of the file
// that names no flag of the command is an error naming the key. A flag that takes several values takes a
// list in the file and comma-separated values in the environment (and on the command line).
#ifndef STRATA_COMMON_FLAG_SOURCES_H_
#define STRATA_COMMON_FLAG_SOURCES_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace strata {

// Not thread-safe; lives beside the CLI::App it serves, in main.
class FlagSources {
 public:
  // Call once every option of `command` (an app or one of its subcommands) has been added: adds --config,
  // gives each option its environment variable, and takes over the check of required options (a required
  // flag may come from the file, which is read after CLI11's own checks).
  explicit FlagSources(CLI::App& command);

  // Parses `argv` into `app` (the root of `command`) as CLI11_PARSE does; then, when `command` is the one
  // that ran, applies the config file and checks the required options. Returns nullopt to go on, or the
  // exit code to return from main (help was printed, or an error naming the flag, variable or key).
  std::optional<int> Parse(CLI::App& app, int argc, const char* const* argv);

  // The environment variable of `flag` (`--port`, or a positional name): STRATA_PORT.
  static std::string EnvironmentName(const std::string& flag);
  // Every environment variable this command reads (its flags' and STRATA_CONFIG).
  std::vector<std::string> EnvironmentNames() const;

 private:
  struct Sourced {
    CLI::Option* option;
    std::string env;  // STRATA_<FLAG_NAME>
  };
  // Adds `values` to an option that no earlier source set and runs its conversion and checks; errors
  // start with `where` (the variable, or the file, line and key).
  static absl::Status Apply(CLI::Option& option, const std::vector<std::string>& values, std::string_view where);
  absl::Status ApplyEnvironment();
  absl::Status ApplyConfigFile();
  absl::Status CheckRequired() const;

  CLI::App& command_;
  CLI::Option* config_ = nullptr;
  std::string config_path_;
  std::vector<Sourced> sourced_;  // --config first
  std::vector<CLI::Option*> required_;
};

}  // namespace strata

#endif  // STRATA_COMMON_FLAG_SOURCES_H_
