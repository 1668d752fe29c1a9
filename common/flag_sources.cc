#include "common/flag_sources.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "common/config_file.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata {
namespace {

// The flag's name as a config key and in messages: the long name without dashes, else the positional name.
std::string KeyOf(const CLI::Option& option) {
  if (!option.get_lnames().empty()) return option.get_lnames().front();
  return option.get_name(true, false);
}

std::string Normalized(std::string key) {
  for (char& c : key) c = c == '_' ? '-' : c;
  return key;
}

std::string Display(const CLI::Option& option) {
  return option.get_lnames().empty() ? absl::AsciiStrToUpper(KeyOf(option)) : StrCat("--", KeyOf(option));
}

}  // namespace

std::string FlagSources::EnvironmentName(const std::string& flag) {
  std::string name = "STRATA_";
  for (char c : flag.substr(flag.find_first_not_of('-'))) {
    name += c == '-' ? '_' : absl::ascii_toupper(static_cast<unsigned char>(c));
  }
  return name;
}

FlagSources::FlagSources(CLI::App& command) : command_(command) {
  for (CLI::Option* option : command_.get_options()) {
    const std::string key = KeyOf(*option);
    if (key.empty() || key == "help" || key == "help-all") continue;
    // Read by Apply() after CLI11's parse, not by CLI11 (option->envname), so that a bad value's error names
    // the variable; --help says it in the description.
    sourced_.push_back({option, EnvironmentName(key)});
    option->description(StrCat(option->get_description(), " [env ", sourced_.back().env, "]"));
    if (option->get_items_expected_max() > 1 && option->get_type_size_max() <= 1) option->delimiter(',');
    if (option->get_required()) {
      // Checked once every source has been read; --help still says so.
      option->required(false);
      option->description(StrCat(option->get_description(), " (required)"));
      required_.push_back(option);
    }
  }
  config_ = command_.add_option("--config", config_path_,
                                "YAML (.yaml) or TOML (.toml) file of flags: keys are the flag names "
                                "(`port: 8000`); the command line and STRATA_* variables override it [env "
                                "STRATA_CONFIG]");
  sourced_.insert(sourced_.begin(), {config_, "STRATA_CONFIG"});  // first: it names the file read after
}

std::vector<std::string> FlagSources::EnvironmentNames() const {
  std::vector<std::string> names;
  for (const Sourced& sourced : sourced_) names.push_back(sourced.env);
  return names;
}

std::optional<int> FlagSources::Parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  if (&app != &command_ && !command_.parsed()) return std::nullopt;
  absl::Status status = ApplyEnvironment();
  if (status.ok()) status = ApplyConfigFile();
  if (status.ok()) status = CheckRequired();
  if (!status.ok()) {
    const std::string program = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "strata";
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", program.c_str(),
                 std::string(status.message()).c_str());
    return 2;
  }
  return std::nullopt;
}

absl::Status FlagSources::Apply(CLI::Option& option, const std::vector<std::string>& values, std::string_view where) {
  try {
    if (option.get_expected_min() == 0) {
      // A flag: `true`/`false` (and yes/no, on/off, 1/0), as on the command line with `--flag=VALUE`.
      if (values.size() != 1) return absl::InvalidArgumentError(StrCat(where, ": a flag takes true or false"));
      option.add_result(option.get_flag_value(KeyOf(option), values.front()));
    } else {
      option.add_result(values);
    }
    option.run_callback();
  } catch (const CLI::Error& error) {
    return absl::InvalidArgumentError(StrCat(where, ": ", error.what()));
  }
  return absl::OkStatus();
}

absl::Status FlagSources::ApplyEnvironment() {
  for (const Sourced& sourced : sourced_) {
    const char* value = std::getenv(sourced.env.c_str());
    if (value == nullptr || *value == '\0' || sourced.option->count() > 0) continue;  // unset, or on the command line
    STRATA_RETURN_IF_ERROR(Apply(*sourced.option, {value}, StrCat(sourced.env, "='", value, "'")));
  }
  return absl::OkStatus();
}

absl::Status FlagSources::ApplyConfigFile() {
  if (config_path_.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<ConfigEntry>> entries = ReadConfigFile(config_path_);
  if (!entries.ok()) return absl::Status(entries.status().code(), StrCat("--config: ", entries.status().message()));
  for (const ConfigEntry& entry : *entries) {
    const std::string where = StrCat(config_path_, entry.line > 0 ? StrCat(":", entry.line) : "");
    const std::string key = Normalized(entry.key);
    CLI::Option* option = nullptr;
    for (const Sourced& sourced : sourced_) {
      if (sourced.option != config_ && KeyOf(*sourced.option) == key) option = sourced.option;
    }
    if (option == nullptr) {
      return absl::InvalidArgumentError(StrCat(where, ": unknown key '", entry.key, "': no flag --", key, " in ",
                                               command_.get_name().empty() ? "this command" : command_.get_name(),
                                               " (see --help)"));
    }
    if (option->count() > 0) continue;  // the command line or the environment said it
    STRATA_RETURN_IF_ERROR(Apply(*option, entry.values, StrCat(where, ": key '", entry.key, "'")));
  }
  return absl::OkStatus();
}

absl::Status FlagSources::CheckRequired() const {
  for (const CLI::Option* option : required_) {
    if (option->count() == 0) {
      return absl::InvalidArgumentError(StrCat(Display(*option), " is required (on the command line, as ",
                                               EnvironmentName(KeyOf(*option)), ", or as `", KeyOf(*option),
                                               ":` in --config)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace strata
