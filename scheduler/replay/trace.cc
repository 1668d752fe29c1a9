#include "scheduler/replay/trace.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "common/strings.h"

namespace strata::scheduler::replay {

absl::StatusOr<std::vector<TraceRequest>> ReadMooncakeTrace(const std::string& path, uint32_t block_tokens) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat(path, ": cannot open the trace"));
  std::vector<TraceRequest> out;
  std::string line;
  size_t line_number = 0;
  double previous_ms = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = StrCat(path, ":", line_number);
    nlohmann::json json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object())
      return absl::InvalidArgumentError(StrCat(where, ": not a JSON object"));
    for (const char* field : {"timestamp", "input_length", "output_length"}) {
      if (!json.contains(field) || !json[field].is_number() || json[field].get<double>() < 0) {
        return absl::InvalidArgumentError(StrCat(where, ": '", field, "' must be a number >= 0"));
      }
    }
    if (!json.contains("hash_ids") || !json["hash_ids"].is_array()) {
      return absl::InvalidArgumentError(StrCat(where, ": 'hash_ids' must be an array"));
    }
    TraceRequest request;
    const double ms = json["timestamp"].get<double>();
    if (ms < previous_ms) {
      return absl::InvalidArgumentError(
          StrCat(where, ": timestamp ", ms, " is before the previous one (", previous_ms, ")"));
    }
    previous_ms = ms;
    request.arrival_s = ms / 1000.0;
    request.input_tokens = json["input_length"].get<uint64_t>();
    request.output_tokens = json["output_length"].get<uint64_t>();
    for (const nlohmann::json& id : json["hash_ids"]) {
      if (!id.is_number_unsigned()) return absl::InvalidArgumentError(StrCat(where, ": hash_ids holds a non-id"));
      request.hash_ids.push_back(id.get<uint64_t>());
    }
    if (request.input_tokens == 0) return absl::InvalidArgumentError(StrCat(where, ": input_length is 0"));
    const uint64_t max_blocks = (request.input_tokens + block_tokens - 1) / block_tokens;
    if (request.hash_ids.size() > max_blocks) {
      return absl::InvalidArgumentError(StrCat(where, ": ", request.hash_ids.size(), " hash ids for ",
                                               request.input_tokens, " tokens (at most ", max_blocks, ")"));
    }
    out.push_back(std::move(request));
  }
  if (out.empty()) return absl::InvalidArgumentError(StrCat(path, ": the trace has no requests"));
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

BlockKey TraceBlockKey(uint64_t hash_id) {
  BlockKey key;
  const uint64_t lo = SplitMix64(hash_id);
  const uint64_t hi = SplitMix64(hash_id ^ 0x5bd1e9955bd1e995ULL);
  for (int i = 0; i < 8; ++i) {
    key.bytes[i] = static_cast<uint8_t>(lo >> (8 * i));
    key.bytes[8 + i] = static_cast<uint8_t>(hi >> (8 * i));
  }
  return key;
}

double IdealPrefixHitRate(const std::vector<TraceRequest>& trace) {
  absl::flat_hash_set<uint64_t> seen;
  uint64_t hits = 0;
  uint64_t blocks = 0;
  for (const TraceRequest& request : trace) {
    blocks += request.hash_ids.size();
    for (uint64_t id : request.hash_ids) {
      if (!seen.contains(id)) break;
      ++hits;
    }
    seen.insert(request.hash_ids.begin(), request.hash_ids.end());
  }
  return blocks == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(blocks);
}

}  // namespace strata::scheduler::replay
