#include "worker/cli/kv_command.h"

#include <cstdlib>
#include <fstream>
#include <memory>

#include "common/block_key.h"
#include "common/grpc_security_flags.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/client/client.h"
#include "nlohmann/json.hpp"

namespace strata::cli {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using HostBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

HostBuffer AllocateAligned(uint64_t bytes) {
  return HostBuffer(static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)));
}

absl::StatusOr<std::vector<BlockKey>> ParseKeys(const std::vector<std::string>& hex) {
  std::vector<BlockKey> keys;
  for (const std::string& h : hex) {
    absl::StatusOr<BlockKey> key = BlockKeyFromHex(h);
    if (!key.ok()) return absl::InvalidArgumentError(StrCat("--key ", h, ": a block key is 32 hex digits"));
    keys.push_back(*key);
  }
  return keys;
}

const char* TierName(proto::Tier tier) {
  switch (tier) {
    case proto::TIER_KVSTORE_DRAM:
      return "dram";
    case proto::TIER_KVSTORE_SSD:
      return "ssd";
    default:
      return "unknown";
  }
}

absl::Status Put(kvstore::KvStoreClient& client, const KvCommand& command, const BlockKey& key, std::ostream& out) {
  std::error_code error;
  const uint64_t size = std::filesystem::file_size(command.file, error);
  if (error) return absl::NotFoundError(StrCat(command.file.string(), ": ", error.message()));
  if (size == 0) return absl::InvalidArgumentError(StrCat(command.file.string(), ": empty file (a block has bytes)"));
  HostBuffer buffer = AllocateAligned(size);
  std::ifstream in(command.file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(buffer.get()), static_cast<std::streamsize>(size))) {
    return absl::DataLossError(StrCat(command.file.string(), ": cannot read ", size, " bytes"));
  }
  STRATA_RETURN_IF_ERROR(client.RegisterMemory(buffer.get(), size));
  kvstore::PutBlock block{key, buffer.get(), size, std::nullopt};
  if (!command.parent.empty()) {
    STRATA_ASSIGN_OR_RETURN(std::vector<BlockKey> parent, ParseKeys({command.parent}));
    block.parent = parent[0];
  }
  STRATA_ASSIGN_OR_RETURN(std::vector<kvstore::PutOutcome> outcomes, client.Put({block}));
  out << key.Hex() << " " << size << " bytes "
      << (outcomes[0] == kvstore::PutOutcome::kStored ? "stored" : "already present") << "\n";
  return absl::OkStatus();
}

absl::Status Get(kvstore::KvStoreClient& client, const KvCommand& command, const BlockKey& key, std::ostream& out) {
  STRATA_ASSIGN_OR_RETURN(proto::LookupResponse lookup, client.Lookup({key}));
  if (lookup.blocks_size() != 1 || !lookup.blocks(0).present()) {
    return absl::NotFoundError(StrCat("block ", key.Hex(), " is not in the kvstore"));
  }
  const uint64_t size = lookup.blocks(0).size_bytes();
  HostBuffer buffer = AllocateAligned(size);
  STRATA_RETURN_IF_ERROR(client.RegisterMemory(buffer.get(), size));
  STRATA_ASSIGN_OR_RETURN(std::vector<kvstore::GetOutcome> outcomes, client.Get({{key, buffer.get(), size}}));
  if (!outcomes[0].found) return absl::NotFoundError(StrCat("block ", key.Hex(), " is not in the kvstore"));
  std::ofstream file(command.file, std::ios::binary | std::ios::trunc);
  if (!file.write(reinterpret_cast<const char*>(buffer.get()), static_cast<std::streamsize>(outcomes[0].size_bytes))) {
    return absl::InternalError(StrCat(command.file.string(), ": cannot write"));
  }
  out << key.Hex() << " " << outcomes[0].size_bytes << " bytes from " << TierName(outcomes[0].tier) << " -> "
      << command.file.string() << "\n";
  return absl::OkStatus();
}

absl::Status Stat(kvstore::KvStoreClient& client, const KvCommand& command, const std::vector<BlockKey>& keys,
                  std::ostream& out) {
  if (!keys.empty()) {
    STRATA_ASSIGN_OR_RETURN(proto::LookupResponse lookup, client.Lookup(keys));
    nlohmann::json blocks = nlohmann::json::array();
    for (size_t i = 0; i < keys.size(); ++i) {
      const proto::BlockInfo& info = lookup.blocks(static_cast<int>(i));
      if (command.json) {
        blocks.push_back({{"key", keys[i].Hex()},
                          {"present", info.present()},
                          {"tier", info.present() ? TierName(info.tier()) : ""},
                          {"size_bytes", info.size_bytes()}});
      } else {
        out << keys[i].Hex() << " " << (info.present() ? TierName(info.tier()) : "absent");
        if (info.present()) out << " " << info.size_bytes() << " bytes";
        out << "\n";
      }
    }
    if (command.json) {
      out << nlohmann::json{{"blocks", blocks}, {"longest_present_prefix", lookup.longest_present_prefix()}}.dump()
          << "\n";
    }
    return absl::OkStatus();
  }
  STRATA_ASSIGN_OR_RETURN(proto::StatsResponse stats, client.Stats());
  auto hit_rate = [](const proto::TierStats& t) {
    const uint64_t total = t.hits() + t.misses();
    return total == 0 ? 0.0 : static_cast<double>(t.hits()) / static_cast<double>(total);
  };
  if (command.json) {
    nlohmann::json tiers = nlohmann::json::array();
    for (const proto::TierStats& t : stats.tiers()) {
      tiers.push_back({{"tier", TierName(t.tier())},
                       {"blocks", t.blocks()},
                       {"used_bytes", t.used_bytes()},
                       {"capacity_bytes", t.capacity_bytes()},
                       {"hits", t.hits()},
                       {"misses", t.misses()},
                       {"hit_rate", hit_rate(t)},
                       {"evictions", t.evictions()},
                       {"bytes_in", t.bytes_in()},
                       {"bytes_out", t.bytes_out()}});
    }
    out << nlohmann::json{{"tiers", tiers},
                          {"arena_allocated_bytes", stats.arena_allocated_bytes()},
                          {"reserved_bytes", stats.reserved_bytes()},
                          {"pinned_bytes", stats.pinned_bytes()},
                          {"open_leases", stats.open_leases()},
                          {"open_puts", stats.open_puts()},
                          {"checksum_failures", stats.checksum_failures()},
                          {"eviction_policy", stats.eviction_policy()}}
               .dump()
        << "\n";
    return absl::OkStatus();
  }
  char line[256];
  out << "tier   blocks        used_bytes    capacity_bytes      hits    misses  hit_rate  evictions\n";
  for (const proto::TierStats& t : stats.tiers()) {
    std::snprintf(line, sizeof(line), "%-5s %7llu %17llu %17llu %9llu %9llu %8.1f%% %10llu\n", TierName(t.tier()),
                  static_cast<unsigned long long>(t.blocks()), static_cast<unsigned long long>(t.used_bytes()),
                  static_cast<unsigned long long>(t.capacity_bytes()), static_cast<unsigned long long>(t.hits()),
                  static_cast<unsigned long long>(t.misses()), 100.0 * hit_rate(t),
                  static_cast<unsigned long long>(t.evictions()));
    out << line;
  }
  out << "arena allocated " << stats.arena_allocated_bytes() << " bytes, reserved " << stats.reserved_bytes()
      << ", pinned " << stats.pinned_bytes() << "; " << stats.open_leases() << " leases, " << stats.open_puts()
      << " puts open; " << stats.checksum_failures() << " checksum failures; eviction " << stats.eviction_policy()
      << "\n";
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddKvCommand(CLI::App& app, KvCommand& command) {
  CLI::App* kv = app.add_subcommand("kv", "Put, get, inspect and delete blocks of a strata-kvstore");
  kv->require_subcommand(1);
  kv->add_option("--kvstore", command.kvstore, "The daemon's gRPC address, HOST:PORT")->required();
  kv->add_option("--timeout-ms", command.timeout_ms, "Deadline of each call")->capture_default_str();
  AddRpcSecurityFlags(*kv, command.security);
  CLI::App* put = kv->add_subcommand("put", "Store FILE as one block");
  put->add_option("--key", command.keys, "Block key, 32 hex digits")->required()->expected(1);
  put->add_option("--parent", command.parent, "Key of the previous block of its chain (optional)");
  put->add_option("file", command.file, "The block's bytes")->required();
  put->callback([&command] { command.op = KvCommand::Op::kPut; });
  CLI::App* get = kv->add_subcommand("get", "Write one block to FILE");
  get->add_option("--key", command.keys, "Block key, 32 hex digits")->required()->expected(1);
  get->add_option("file", command.file, "Where to write the block")->required();
  get->callback([&command] { command.op = KvCommand::Op::kGet; });
  CLI::App* stat = kv->add_subcommand("stat", "Tiers, occupancy and hit rates; with --key, where each key is");
  stat->add_option("--key", command.keys, "Block keys to look up (repeatable)");
  stat->add_flag("--json", command.json, "Print one JSON object");
  stat->callback([&command] { command.op = KvCommand::Op::kStat; });
  CLI::App* del = kv->add_subcommand("del", "Delete blocks");
  del->add_option("--key", command.keys, "Block keys (repeatable)")->required();
  del->callback([&command] { command.op = KvCommand::Op::kDel; });
  return kv;
}

absl::Status RunKv(const KvCommand& command, std::ostream& out) {
  STRATA_ASSIGN_OR_RETURN(std::vector<BlockKey> keys, ParseKeys(command.keys));
  kvstore::ClientOptions options;
  options.address = command.kvstore;
  STRATA_ASSIGN_OR_RETURN(options.security, RpcSecurity::Load(command.security));
  options.rpc_timeout = std::chrono::milliseconds(command.timeout_ms);
  options.transfer_timeout = std::chrono::milliseconds(command.timeout_ms);
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<kvstore::KvStoreClient> client, kvstore::KvStoreClient::Connect(options));
  switch (command.op) {
    case KvCommand::Op::kPut:
      return Put(*client, command, keys.at(0), out);
    case KvCommand::Op::kGet:
      return Get(*client, command, keys.at(0), out);
    case KvCommand::Op::kStat:
      return Stat(*client, command, keys, out);
    case KvCommand::Op::kDel: {
      STRATA_ASSIGN_OR_RETURN(uint32_t deleted, client->Delete(keys));
      out << deleted << " of " << keys.size() << " blocks deleted\n";
      return absl::OkStatus();
    }
  }
  return absl::InternalError("kv: no subcommand");
}

}  // namespace strata::cli
