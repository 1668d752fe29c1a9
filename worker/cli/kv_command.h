// `strata kv put|get|stat|del --kvstore HOST:PORT`: the operator's view of a strata-kvstore, the way
// redis-cli serves Redis users. Keys are 32 hex digits (a 16-byte block key, common/block_key.h).
#ifndef STRATA_WORKER_CLI_KV_COMMAND_H_
#define STRATA_WORKER_CLI_KV_COMMAND_H_

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/rpc_security_options.h"

namespace strata::cli {

struct KvCommand {
  enum class Op { kPut, kGet, kStat, kDel };
  Op op = Op::kStat;
  std::string kvstore;            // host:port
  std::vector<std::string> keys;  // hex; put/get take one, stat/del any number
  std::filesystem::path file;     // put: read from; get: written to
  std::string parent;             // put: optional parent key (hex)
  bool json = false;              // stat: one JSON object
  int timeout_ms = 10'000;
  RpcSecurityOptions security;    // --tls-* and --auth-token-file, as the daemon's peers use them
};

// Adds `kv` and its subcommands to `app`; `command` receives the flags. Returns the `kv` subcommand.
CLI::App* AddKvCommand(CLI::App& app, KvCommand& command);
// Runs the parsed command. put prints "stored" or "already present"; get prints the size and tier;
// stat prints per-tier blocks, occupancy, hits, misses and hit rate (or, with keys, each key's tier);
// del prints how many blocks were deleted. A missing key on get is an error (NotFound).
absl::Status RunKv(const KvCommand& command, std::ostream& out);

}  // namespace strata::cli

#endif  // STRATA_WORKER_CLI_KV_COMMAND_H_
