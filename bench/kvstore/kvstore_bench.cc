// strata-kvstore end to end: put and get throughput and per-block latency (p50/p99) for 2 MiB and 32 MiB
// blocks (a 16- and a 256-token block of Llama-3-8B in BF16), 1-8 clients, DRAM and SSD tiers, with
// baselines measured in the same run on the same machine:
//   - raw UCX on the same transport: ucx_perftest ucp_put_bw / ucp_get (UCX_TLS from the environment),
//   - Redis 7: SET/GET of the same blocks through hiredis, same client counts,
//   - the disk under --ssd-dir: fio sequential write/read (direct I/O) and dd.
// Each client is a thread with its own KvStoreClient (own UCX worker), one block per call; --window W
// runs W threads per client on the same KvStoreClient, so W calls are in flight and their gRPC round
// trips overlap the others' RMA (ucx_perftest ucp_get, for comparison, has one get outstanding: its
// bandwidth is its latency's inverse).
//
//   build-kv/bin/strata_kvstore_bench [--total-mib 512] [--clients 1,2,4,8] [--dir /var/tmp] [--json out.json]
#include <hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "kvstore/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kvstore/daemon_process.h"

namespace strata::kvstore::bench {
namespace {

using testing::DaemonProcess;
using testing::MakeTempDir;
using testing::ScratchDir;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1024 * 1024;

struct Row {
  std::string system;  // "kvstore", "redis", "ucx_perftest", "fio", "dd"
  std::string tier;    // "dram", "ssd", "-"
  std::string op;      // "put", "get", ...
  uint64_t block_bytes = 0;
  int clients = 0;
  double gbps = 0;  // GB/s (1e9 bytes/s) over the whole phase
  double p50_ms = -1, p99_ms = -1;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  return values[index];
}

std::string RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  pclose(pipe);
  return output;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

uint8_t* AlignedBuffer(uint64_t bytes) {
  return static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
}

// One phase over `clients` threads: each runs `op(client_index, block_index)` for its blocks after a
// common start; returns throughput and per-call latencies.
template <typename Op>
Row RunPhase(int clients, int blocks_per_client, uint64_t block_bytes, Op op) {
  std::vector<std::vector<double>> latencies(clients);
  std::barrier start(clients + 1);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      start.arrive_and_wait();
      for (int b = 0; b < blocks_per_client; ++b) {
        const auto t0 = Clock::now();
        if (!op(c, b)) ++failures;
        latencies[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
    });
  }
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (auto& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (failures > 0) std::cerr << "  " << failures << " operations failed\n";
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  Row row;
  row.block_bytes = block_bytes;
  row.clients = clients;
  row.gbps = static_cast<double>(block_bytes) * clients * blocks_per_client / seconds / 1e9;
  row.p50_ms = Percentile(all, 0.50);
  row.p99_ms = Percentile(all, 0.99);
  return row;
}

struct ClientSet {
  std::vector<std::unique_ptr<KvStoreClient>> clients;
  std::vector<uint8_t*> buffers;
  ~ClientSet() {
    clients.clear();
    for (uint8_t* b : buffers) std::free(b);
  }
};

ClientOptions g_client_options;   // set once in Main from the flags
std::string g_ssd_io = "direct";  // --ssd-io of the SSD-tier daemon
int g_blocks_per_call = 1;        // kvstore blocks per Put/Get call
int g_window = 1;                 // kvstore calls in flight per client (threads sharing one client)

std::unique_ptr<ClientSet> ConnectClients(const DaemonProcess& daemon, int clients, uint64_t buffer_bytes) {
  auto set = std::make_unique<ClientSet>();
  for (int c = 0; c < clients; ++c) {
    ClientOptions options = g_client_options;
    options.address = daemon.address();
    auto client = KvStoreClient::Connect(options);
    if (!client.ok()) {
      std::cerr << "connect: " << client.status() << "\n";
      std::exit(1);
    }
    set->buffers.push_back(AlignedBuffer(buffer_bytes));
    if (!(*client)->RegisterMemory(set->buffers.back(), buffer_bytes).ok()) std::exit(1);
    set->clients.push_back(std::move(*client));
  }
  return set;
}

BlockKey KeyOf(uint64_t run, int client, int block) {
  return testing::RandomKey(run * 1'000'000 + client * 10'000 + block);
}

// Puts then gets (`get_rounds` times) blocks_per_client blocks per client. `restart` (SSD tier): stops and
// restarts the daemon between the phases, so every get reads the SSD.
std::vector<Row> KvstorePhases(const std::vector<std::string>& args, const std::string& tier, uint64_t block_bytes,
                               int clients, int blocks_per_client, int get_rounds, uint64_t run, bool restart) {
  auto daemon = DaemonProcess::Start(args);
  if (!daemon.ok()) {
    std::cerr << daemon.status() << "\n";
    std::exit(1);
  }
  // One buffer slot per block of a call and window slot: gets land where the puts came from (content
  // checked by xxh3). With --window W, W threads share each client, each with its own calls in flight.
  const int per_call = g_blocks_per_call;
  const int window = g_window;
  const int calls = std::max(1, blocks_per_client / per_call / window);
  const uint64_t slot_bytes = block_bytes * per_call;
  auto set = ConnectClients(**daemon, clients, slot_bytes * window);
  for (int c = 0; c < clients; ++c) {
    for (int w = 0; w < window; ++w) {
      for (int j = 0; j < per_call; ++j) {
        testing::FillForKey(KeyOf(run, c, w * calls * per_call + j), set->buffers[c] + w * slot_bytes + j * block_bytes,
                            block_bytes);
      }
    }
  }
  std::string suffix = per_call > 1 ? " (" + std::to_string(per_call) + " blocks/call)" : "";
  if (window > 1) suffix += " (window " + std::to_string(window) + ")";
  // Thread t: client t / window, window slot t % window.
  auto blocks_of = [&](int t, int call) {
    const int c = t / window, w = t % window;
    std::vector<std::pair<BlockKey, uint8_t*>> out;
    for (int j = 0; j < per_call; ++j) {
      out.emplace_back(KeyOf(run, c, (w * calls + call) * per_call + j), set->buffers[c] + w * slot_bytes + j * block_bytes);
    }
    return out;
  };
  std::vector<Row> rows;
  Row put = RunPhase(clients * window, calls, block_bytes * per_call, [&](int t, int call) {
    std::vector<PutBlock> blocks;
    for (auto& [key, data] : blocks_of(t, call)) blocks.push_back({key, data, block_bytes});
    auto result = set->clients[t / window]->Put(blocks);
    return result.ok() && std::all_of(result->begin(), result->end(),
                                      [](PutOutcome outcome) { return outcome == PutOutcome::kStored; });
  });
  put.clients = clients;
  put.block_bytes = block_bytes;
  put.system = "kvstore";
  put.tier = tier;
  put.op = "put" + suffix;
  rows.push_back(put);
  if (restart) {
    // What the put phase made the daemon write to its disk, for what it was given (the WAL's second copy
    // shows here): /proc/<pid>/io write_bytes, after 2.5 s of quiet (a daemon that syncs every second has
    // then flushed everything) and before the shutdown's own flush (which a daemon with a WAL still owes).
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::ifstream io("/proc/" + std::to_string((*daemon)->pid()) + "/io");
    for (std::string line; std::getline(io, line);) {
      if (line.rfind("write_bytes: ", 0) != 0) continue;
      const double written = std::stod(line.substr(13));
      const double given = static_cast<double>(block_bytes) * per_call * calls * clients * window;
      std::cout << "# " << tier << " put" << suffix << ", " << block_bytes / kMiB << " MiB blocks: the daemon wrote "
                << written / kMiB << " MiB to disk for " << given / kMiB << " MiB of blocks ("
                << written / given << "x)\n";
    }
    set.reset();
    (*daemon)->Terminate();
    daemon = DaemonProcess::Start(args);
    if (!daemon.ok()) std::exit(1);
    set = ConnectClients(**daemon, clients, slot_bytes * window);
  }
  for (int round = 0; round < get_rounds; ++round) {
    Row get = RunPhase(clients * window, calls, block_bytes * per_call, [&](int t, int call) {
      std::vector<GetBlock> blocks;
      for (auto& [key, data] : blocks_of(t, call)) blocks.push_back({key, data, block_bytes});
      auto result = set->clients[t / window]->Get(blocks);
      return result.ok() &&
             std::all_of(result->begin(), result->end(), [](const GetOutcome& outcome) { return outcome.found; });
    });
    get.clients = clients;
    get.block_bytes = block_bytes;
    get.system = "kvstore";
    get.tier = tier;
    get.op = (restart ? "get (promote)" : "get") + suffix;
    if (round == get_rounds - 1 || restart) rows.push_back(get);
  }
  set.reset();
  (*daemon)->Terminate();
  return rows;
}

std::vector<Row> RedisPhases(uint64_t block_bytes, int clients, int blocks_per_client, uint64_t run) {
  const int port = FreePort();
  ScratchDir dir = MakeTempDir("strata-kvstore-bench");
  const std::string command = "redis-server --port " + std::to_string(port) +
                              " --bind 127.0.0.1 --save '' --appendonly no --protected-mode no --dir " +
                              dir.path().string() + " --logfile " + (dir.path() / "log").string();
  pid_t pid = -1;
  const char* argv[] = {"/bin/sh", "-c", nullptr, nullptr};
  const std::string exec = "exec " + command;
  argv[2] = exec.c_str();
  posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ);
  std::vector<redisContext*> contexts;
  testing::WaitFor(
      [&] {
        redisContext* c = redisConnect("127.0.0.1", port);
        if (c == nullptr || c->err) {
          if (c) redisFree(c);
          return false;
        }
        redisFree(c);
        return true;
      },
      std::chrono::seconds(10));
  for (int c = 0; c < clients; ++c) contexts.push_back(redisConnect("127.0.0.1", port));
  std::vector<uint8_t*> buffers;
  for (int c = 0; c < clients; ++c) {
    buffers.push_back(AlignedBuffer(block_bytes));
    testing::FillForKey(KeyOf(run, c, 0), buffers[c], block_bytes);
  }
  std::vector<Row> rows;
  Row put = RunPhase(clients, blocks_per_client, block_bytes, [&](int c, int b) {
    const std::string key = KeyOf(run, c, b).ToBytes();
    auto* reply = static_cast<redisReply*>(
        redisCommand(contexts[c], "SET %b %b", key.data(), key.size(), buffers[c], static_cast<size_t>(block_bytes)));
    const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
    if (reply) freeReplyObject(reply);
    return ok;
  });
  put.system = "redis";
  put.tier = "dram";
  put.op = "put";
  rows.push_back(put);
  Row get = RunPhase(clients, blocks_per_client, block_bytes, [&](int c, int b) {
    const std::string key = KeyOf(run, c, b).ToBytes();
    auto* reply = static_cast<redisReply*>(redisCommand(contexts[c], "GET %b", key.data(), key.size()));
    const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STRING && reply->len == block_bytes;
    if (ok) std::memcpy(buffers[c], reply->str, reply->len);  // into the caller's buffer, as kvstore does
    if (reply) freeReplyObject(reply);
    return ok;
  });
  get.system = "redis";
  get.tier = "dram";
  get.op = "get";
  rows.push_back(get);
  for (redisContext* c : contexts) redisFree(c);
  for (uint8_t* b : buffers) std::free(b);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  return rows;
}

// ucx_perftest between two processes on loopback, with this process's UCX_TLS and, when the clients
// detect peer failure, with error handling (-e) too, so that UCX picks the same transport. MB/s -> GB/s.
std::optional<Row> UcxPerftest(const std::string& test, uint64_t block_bytes, bool error_handling) {
  const std::string e = error_handling ? " -e" : "";
  const int port = FreePort();
  const uint64_t iterations = std::max<uint64_t>(20, (uint64_t{2} << 30) / block_bytes);
  pid_t pid = -1;
  const std::string server = "exec ucx_perftest -p " + std::to_string(port) + e + " >/dev/null 2>&1";
  const char* argv[] = {"/bin/sh", "-c", server.c_str(), nullptr};
  posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ);
  std::string output;
  testing::WaitFor(
      [&] {
        output = RunCommand("ucx_perftest 127.0.0.1 -p " + std::to_string(port) + e + " -t " + test + " -s " +
                            std::to_string(block_bytes) + " -n " + std::to_string(iterations));
        return output.find("Final:") != std::string::npos;
      },
      std::chrono::seconds(30));
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::smatch match;
  // Final: iterations lat50 lat_avg lat_overall bw_avg(MB/s) bw_overall(MB/s) msgrate_avg msgrate_overall
  if (!std::regex_search(output, match,
                         std::regex(R"(Final:\s+\d+\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+))"))) {
    std::cerr << "ucx_perftest " << test << ": no result\n" << output << "\n";
    return std::nullopt;
  }
  Row row;
  row.system = "ucx_perftest";
  row.tier = "-";
  row.op = test + e;
  row.block_bytes = block_bytes;
  row.clients = 1;
  row.gbps = std::stod(match[3]) * 1024 * 1024 / 1e9;  // ucx_perftest's MB is MiB
  row.p50_ms = std::stod(match[1]) / 1000;             // usec
  return row;
}

std::vector<Row> DiskBaselines(const std::filesystem::path& dir, uint64_t block_bytes, uint64_t total_bytes) {
  std::vector<Row> rows;
  const std::string bs = std::to_string(block_bytes / kMiB) + "M";
  for (const char* rw : {"write", "read"}) {
    const std::string out = RunCommand("fio --name=seq --directory=" + dir.string() + " --rw=" + rw + " --bs=" + bs +
                                       " --size=" + std::to_string(total_bytes / kMiB) +
                                       "M --direct=1 --ioengine=psync --numjobs=1 --output-format=json");
    try {
      const auto json = nlohmann::json::parse(out.substr(out.find('{')));
      const auto& job = json.at("jobs").at(0).at(rw);
      Row row{"fio",
              "ssd",
              std::string("seq ") + rw + " direct",
              block_bytes,
              1,
              job.at("bw_bytes").get<double>() / 1e9,
              job.at("clat_ns").at("percentile").at("50.000000").get<double>() / 1e6,
              job.at("clat_ns").at("percentile").at("99.000000").get<double>() / 1e6};
      rows.push_back(row);
    } catch (const std::exception& e) {
      std::cerr << "fio " << rw << ": " << e.what() << "\n" << out << "\n";
    }
  }
  const std::filesystem::path file = dir / "dd.bin";
  const std::string count = std::to_string(total_bytes / block_bytes);
  const std::string write =
      RunCommand("dd if=/dev/zero of=" + file.string() + " bs=" + bs + " count=" + count + " oflag=direct conv=fsync");
  const std::string read = RunCommand("dd if=" + file.string() + " of=/dev/null bs=" + bs + " iflag=direct");
  for (auto [op, out] : {std::pair{"seq write direct", write}, std::pair{"seq read direct", read}}) {
    std::smatch match;
    if (std::regex_search(out, match, std::regex(R"((\d+) bytes .* copied, ([\d.]+) s)"))) {
      rows.push_back(Row{"dd", "ssd", op, block_bytes, 1, std::stod(match[1]) / std::stod(match[2]) / 1e9});
    }
  }
  std::filesystem::remove(file);
  std::filesystem::remove_all(dir / "seq.0.0");
  return rows;
}

std::string Human(uint64_t bytes) { return std::to_string(bytes / kMiB) + " MiB"; }

void Print(const std::vector<Row>& rows) {
  std::printf(
      "| system | tier | op | block | clients | GB/s | p50 ms | p99 ms |\n|---|---|---|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    std::printf(
        "| %s | %s | %s | %s | %d | %.2f | %s | %s |\n", r.system.c_str(), r.tier.c_str(), r.op.c_str(),
        Human(r.block_bytes).c_str(), r.clients, r.gbps,
        r.p50_ms < 0 ? "-" : (std::ostringstream() << std::fixed << std::setprecision(2) << r.p50_ms).str().c_str(),
        r.p99_ms < 0 ? "-" : (std::ostringstream() << std::fixed << std::setprecision(2) << r.p99_ms).str().c_str());
  }
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  uint64_t total_mib = 512;
  std::vector<int> client_counts = {1, 2, 4, 8};
  std::vector<uint64_t> sizes = {2 * kMiB, 32 * kMiB};
  std::filesystem::path dir = "/var/tmp";
  std::string json_path;
  bool ssd = true, redis = true, ucx = true, dram = true, grant_rkeys = false;
  // The daemon's --rkey-scope in every phase; arena by default, as the tables in docs/BENCHMARKS.md ran
  // (one host: shared memory). --grant-rkeys adds DRAM phases with per-block rkeys beside it.
  std::string rkey_scope = "arena";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (arg == "--total-mib")
      total_mib = std::stoull(value());
    else if (arg == "--clients") {
      client_counts.clear();
      for (auto part : absl::StrSplit(value(), ',')) client_counts.push_back(std::stoi(std::string(part)));
    } else if (arg == "--dir")
      dir = value();
    else if (arg == "--sizes-mib") {
      sizes.clear();
      for (auto part : absl::StrSplit(value(), ',')) sizes.push_back(std::stoull(std::string(part)) * kMiB);
    } else if (arg == "--no-dram")
      dram = false;
    else if (arg == "--ssd-io")
      g_ssd_io = value();
    else if (arg == "--blocks-per-call")
      g_blocks_per_call = std::max(1, std::stoi(value()));
    else if (arg == "--window")
      g_window = std::max(1, std::stoi(value()));
    else if (arg == "--json")
      json_path = value();
    else if (arg == "--no-ssd")
      ssd = false;
    else if (arg == "--grant-rkeys")
      grant_rkeys = true;
    else if (arg == "--rkey-scope")
      rkey_scope = value();
    else if (arg == "--no-redis")
      redis = false;
    else if (arg == "--no-ucx-perftest")
      ucx = false;
    else if (arg == "--no-verify")
      g_client_options.verify_reads = false;
    else if (arg == "--peer-failure") {
      const std::string mode = value();
      g_client_options.peer_failure = mode == "timeout" ? PeerFailure::kTimeoutOnly : PeerFailure::kDetect;
    } else {
      std::cerr << "usage: strata_kvstore_bench [--total-mib N] [--clients 1,2,4,8] [--sizes-mib 2,32] [--dir DIR] "
                   "[--json FILE] [--no-dram] [--ssd-io direct|buffered] [--blocks-per-call N] [--window N] "
                   "[--no-ssd] [--rkey-scope arena|grant] [--grant-rkeys] [--no-redis] [--no-ucx-perftest] "
                   "[--no-verify] [--peer-failure detect|timeout]\n";
      return 2;
    }
  }
  const char* tls = std::getenv("UCX_TLS");
  std::cout << "# strata-kvstore benchmark: UCX_TLS=" << (tls ? tls : "(default)") << ", peer failure "
            << (g_client_options.peer_failure == PeerFailure::kDetect ? "detect (UCP_ERR_HANDLING_MODE_PEER)"
                                                                      : "timeout only (UCP_ERR_HANDLING_MODE_NONE)")
            << ", reads " << (g_client_options.verify_reads ? "verified (xxh3)" : "not verified")
            << ", --rkey-scope " << rkey_scope << ", " << total_mib
            << " MiB per phase, " << std::thread::hardware_concurrency() << " CPUs\n";
  const uint64_t total = total_mib * kMiB;
  const std::string arena = std::to_string(total + 256 * kMiB);
  std::vector<Row> rows;
  uint64_t run = 1;
  for (uint64_t size : sizes) {
    if (ucx) {
      for (const char* test : {"ucp_put_bw", "ucp_get"}) {
        if (auto row = UcxPerftest(test, size, g_client_options.peer_failure == PeerFailure::kDetect)) {
          rows.push_back(*row);
        }
      }
    }
    for (int clients : client_counts) {
      const int blocks = static_cast<int>(std::max<uint64_t>(2, total / size / clients));
      if (dram) {
        for (Row& r : KvstorePhases({"--dram-bytes", arena, "--rkey-scope", rkey_scope}, "dram", size, clients, blocks,
                                    2, run++, false)) {
          rows.push_back(r);
        }
      }
      if (dram && grant_rkeys) {  // the same with an rkey per granted block (no shared-memory arena rkey)
        for (Row& r : KvstorePhases({"--dram-bytes", arena, "--rkey-scope", "grant"}, "dram, rkey per grant", size,
                                    clients, blocks, 2, run++, false)) {
          rows.push_back(r);
        }
      }
      if (redis) {
        for (Row& r : RedisPhases(size, clients, blocks, run++)) rows.push_back(r);
      }
      if (ssd) {
        std::filesystem::path db = dir / ("strata-kvstore-bench-" + std::to_string(getpid()));
        std::filesystem::remove_all(db);
        for (Row& r : KvstorePhases(
                 {"--dram-bytes", arena, "--ssd-dir", db.string(), "--persist", "write-through", "--ssd-io", g_ssd_io,
                  "--rkey-scope", rkey_scope},
                 "ssd", size, clients, blocks, 1, run++, true)) {
          rows.push_back(r);
        }
        std::filesystem::remove_all(db);
        // Write-back through a 64 MiB arena: nearly every put evicts a block to SSD; SIGTERM writes the rest.
        for (Row& r : KvstorePhases({"--dram-bytes", std::to_string(64 * kMiB), "--ssd-dir", db.string(), "--persist",
                                     "write-back", "--ssd-io", g_ssd_io, "--rkey-scope", rkey_scope},
                                    "ssd, write-back", size, clients, blocks, 1, run++, true)) {
          rows.push_back(r);
        }
        std::filesystem::remove_all(db);
      }
    }
    if (ssd) {
      const std::filesystem::path disk = dir / ("strata-kvstore-bench-disk-" + std::to_string(getpid()));
      std::filesystem::create_directories(disk);
      for (Row& r : DiskBaselines(disk, size, total)) rows.push_back(r);
      std::filesystem::remove_all(disk);
    }
  }
  Print(rows);
  if (!json_path.empty()) {
    nlohmann::json json = nlohmann::json::array();
    for (const Row& r : rows) {
      json.push_back({{"system", r.system},
                      {"tier", r.tier},
                      {"op", r.op},
                      {"block_bytes", r.block_bytes},
                      {"clients", r.clients},
                      {"gbps", r.gbps},
                      {"p50_ms", r.p50_ms},
                      {"p99_ms", r.p99_ms}});
    }
    std::ofstream(json_path) << json.dump(1) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace strata::kvstore::bench

int main(int argc, char** argv) { return strata::kvstore::bench::Main(argc, argv); }
