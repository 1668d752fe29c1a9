#include "common/config_file.h"

#include <yaml.h>

#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "common/file.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata {
namespace {

// libyaml's parser and event, released on every path out.
class YamlParser {
 public:
  explicit YamlParser(const std::string& text) {
    ok_ = yaml_parser_initialize(&parser_) == 1;
    if (ok_) {
      yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()), text.size());
    }
  }
  ~YamlParser() {
    if (ok_) yaml_parser_delete(&parser_);
  }
  YamlParser(const YamlParser&) = delete;
  YamlParser& operator=(const YamlParser&) = delete;
  bool ok() const { return ok_; }
  yaml_parser_t* get() { return &parser_; }

 private:
  yaml_parser_t parser_{};
  bool ok_ = false;
};

class YamlEvent {
 public:
  YamlEvent() = default;
  ~YamlEvent() { Reset(); }
  YamlEvent(const YamlEvent&) = delete;
  YamlEvent& operator=(const YamlEvent&) = delete;
  // The next event of `parser`; InvalidArgument with libyaml's problem and position on a syntax error.
  absl::Status Next(YamlParser& parser, const std::string& file) {
    Reset();
    if (yaml_parser_parse(parser.get(), &event_) != 1) {
      const yaml_parser_t& p = *parser.get();
      return absl::InvalidArgumentError(StrCat(file, ":", p.problem_mark.line + 1,
                                               ": not valid YAML: ", p.problem != nullptr ? p.problem : "syntax error",
                                               p.context != nullptr ? StrCat(" ", p.context) : ""));
    }
    held_ = true;
    return absl::OkStatus();
  }
  yaml_event_type_t type() const { return event_.type; }
  int line() const { return static_cast<int>(event_.start_mark.line) + 1; }
  // For a scalar event: its text, and whether it was written plain (unquoted).
  std::string scalar() const {
    return std::string(reinterpret_cast<const char*>(event_.data.scalar.value), event_.data.scalar.length);
  }
  bool plain() const { return event_.data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }

 private:
  void Reset() {
    if (held_) yaml_event_delete(&event_);
    held_ = false;
  }
  yaml_event_t event_{};
  bool held_ = false;
};

// A plain `~`, `null` or nothing is YAML's null: a key with no value.
bool IsNull(const YamlEvent& event) {
  if (!event.plain()) return false;
  const std::string text = event.scalar();
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

absl::StatusOr<std::vector<ConfigEntry>> ReadYaml(const std::string& text, const std::string& file) {
  YamlParser parser(text);
  if (!parser.ok()) return absl::ResourceExhaustedError(StrCat(file, ": cannot start the YAML parser"));
  std::vector<ConfigEntry> entries;
  YamlEvent event;
  STRATA_RETURN_IF_ERROR(event.Next(parser, file));  // stream start
  STRATA_RETURN_IF_ERROR(event.Next(parser, file));
  if (event.type() == YAML_STREAM_END_EVENT) return entries;  // an empty file
  // The document: a mapping of keys to scalars or lists of scalars (an empty document is a null scalar).
  STRATA_RETURN_IF_ERROR(event.Next(parser, file));
  if (event.type() == YAML_SCALAR_EVENT && IsNull(event)) {
    STRATA_RETURN_IF_ERROR(event.Next(parser, file));
  } else if (event.type() != YAML_MAPPING_START_EVENT) {
    return absl::InvalidArgumentError(
        StrCat(file, ":", event.line(), ": expected a mapping of flag names to values (`port: 8000`)"));
  } else {
    for (;;) {
      STRATA_RETURN_IF_ERROR(event.Next(parser, file));
      if (event.type() == YAML_MAPPING_END_EVENT) break;
      if (event.type() != YAML_SCALAR_EVENT) {
        return absl::InvalidArgumentError(StrCat(file, ":", event.line(), ": a key must be a flag name"));
      }
      ConfigEntry entry{.key = event.scalar(), .values = {}, .line = event.line()};
      auto bad_value = [&](std::string_view why) {
        return absl::InvalidArgumentError(StrCat(file, ":", entry.line, ": key '", entry.key, "': ", why));
      };
      STRATA_RETURN_IF_ERROR(event.Next(parser, file));
      switch (event.type()) {
        case YAML_SCALAR_EVENT:
          if (IsNull(event)) return bad_value("no value");
          entry.values.push_back(event.scalar());
          break;
        case YAML_SEQUENCE_START_EVENT:
          for (;;) {
            STRATA_RETURN_IF_ERROR(event.Next(parser, file));
            if (event.type() == YAML_SEQUENCE_END_EVENT) break;
            if (event.type() != YAML_SCALAR_EVENT || IsNull(event)) {
              return bad_value("a list's items must be plain values");
            }
            entry.values.push_back(event.scalar());
          }
          if (entry.values.empty()) return bad_value("an empty list");
          break;
        case YAML_MAPPING_START_EVENT:
          return bad_value("a nested mapping is not a flag value (keys are the flag names, at the top level)");
        default:
          return bad_value("aliases and anchors are not flag values");
      }
      entries.push_back(std::move(entry));
    }
    STRATA_RETURN_IF_ERROR(event.Next(parser, file));
  }
  if (event.type() != YAML_DOCUMENT_END_EVENT) {
    return absl::InvalidArgumentError(StrCat(file, ":", event.line(), ": expected the end of the document"));
  }
  STRATA_RETURN_IF_ERROR(event.Next(parser, file));
  if (event.type() != YAML_STREAM_END_EVENT) {
    return absl::InvalidArgumentError(StrCat(file, ":", event.line(), ": one YAML document only"));
  }
  return entries;
}

absl::StatusOr<std::vector<ConfigEntry>> ReadToml(const std::string& text, const std::string& file) {
  std::vector<CLI::ConfigItem> items;
  try {
    std::istringstream in(text);
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& error) {
    return absl::InvalidArgumentError(StrCat(file, ": not valid TOML: ", error.what()));
  }
  std::vector<ConfigEntry> entries;
  for (CLI::ConfigItem& item : items) {
    if (!item.parents.empty() || item.name == "++" || item.name == "--") {
      return absl::InvalidArgumentError(StrCat(file, ": tables ([",
                                               item.parents.empty() ? item.name : item.parents.front(),
                                               "]) are not used: write the flags as `key = value` at the top"));
    }
    for (char c : item.name) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        return absl::InvalidArgumentError(
            StrCat(file, ": '", item.name, "' is not a TOML `key = value` line (keys are flag names)"));
      }
    }
    if (item.inputs.empty()) {
      return absl::InvalidArgumentError(StrCat(file, ": key '", item.name, "': no value"));
    }
    entries.push_back({.key = item.name, .values = std::move(item.inputs), .line = 0});
  }
  return entries;
}

}  // namespace

absl::StatusOr<std::vector<ConfigEntry>> ReadConfigFile(const std::filesystem::path& path) {
  const std::string extension = absl::AsciiStrToLower(path.extension().string());
  if (extension != ".yaml" && extension != ".yml" && extension != ".toml") {
    return absl::InvalidArgumentError(
        StrCat(path.string(), ": a config file is YAML (.yaml, .yml) or TOML (.toml), by its extension"));
  }
  STRATA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  absl::StatusOr<std::vector<ConfigEntry>> entries =
      extension == ".toml" ? ReadToml(text, path.string()) : ReadYaml(text, path.string());
  if (!entries.ok()) return entries.status();
  absl::flat_hash_set<std::string> seen;
  for (const ConfigEntry& entry : *entries) {
    std::string normal = entry.key;
    for (char& c : normal) c = c == '_' ? '-' : c;
    if (!seen.insert(normal).second) {
      return absl::InvalidArgumentError(StrCat(path.string(), entry.line > 0 ? StrCat(":", entry.line) : "", ": key '",
                                               entry.key, "' is given twice"));
    }
  }
  return entries;
}

}  // namespace strata
