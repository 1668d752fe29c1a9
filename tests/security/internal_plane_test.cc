// The internal plane's guarantees with real daemons on loopback: a cluster whose every daemon runs mutual
// TLS and a shared token works end to end (kvstore -> scheduler, worker -> scheduler and kvstore, front
// door -> worker), while a caller without the token is refused before any state changes; the health port;
// start-up errors naming the bad file; rkeys only in grant replies; writes to a kvstore from workers'
// certificates only.
#include <httplib.h>

#include <fstream>

#include "common/grpc_security.h"
#include "common/status.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/kvstore.grpc.pb.h"
#include "proto/scheduler.grpc.pb.h"
#include "proto/worker.grpc.pb.h"
#include "scheduler/service.h"
#include "tests/cluster/local_cluster.h"
#include "tests/security/health_check.h"
#include "tests/testing/child_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/scratch_dir.h"

namespace strata {
namespace {

using cluster_testing::ClusterOptions;
using cluster_testing::LocalCluster;
using testing::ChildOutput;
using testing::ChildProcess;
using ::testing::HasSubstr;
using testing::MetricValue;
using testing::WaitFor;

const std::string kTls = std::string(STRATA_TEST_DATA_DIR) + "/tls/";

struct Credentials {
  testing::ScratchDir dir = testing::MakeTempDir("strata-security-test");
  std::string token_file() const {
    const std::filesystem::path path = dir.path() / "token";
    if (!std::filesystem::exists(path)) std::ofstream(path) << "cluster-token-0123456789\n";
    return path.string();
  }
  // What every daemon of the cluster gets (the chart passes the same).
  std::vector<std::string> Flags() const {
    return {"--tls-cert",    kTls + "node.pem",   "--tls-key",       kTls + "node-key.pem", "--tls-ca",
            kTls + "ca.pem", "--tls-server-name", "strata.internal", "--auth-token-file",   token_file()};
  }
  RpcSecurityOptions Mtls() const {
    return {.tls_cert = kTls + "node.pem",
            .tls_key = kTls + "node-key.pem",
            .tls_ca = kTls + "ca.pem",
            .tls_server_name = "strata.internal"};
  }
  RpcSecurityOptions MtlsAndToken() const {
    RpcSecurityOptions options = Mtls();
    options.auth_token_file = token_file();
    return options;
  }
};

std::shared_ptr<grpc::Channel> ChannelAs(const RpcSecurityOptions& options, const std::string& address) {
  absl::StatusOr<std::shared_ptr<const RpcSecurity>> security = RpcSecurity::Load(options);
  STRATA_CHECK(security.ok());
  return (*security)->CreateChannel(address, grpc::ChannelArguments());
}

template <typename Stub>
std::unique_ptr<Stub> StubAs(const RpcSecurityOptions& options, const std::string& address) {
  return std::make_unique<Stub>(ChannelAs(options, address));
}

struct Deadline : grpc::ClientContext {
  Deadline() { set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10)); }
};

double WorkerRequests(int metrics_port) {
  double total = 0;
  for (const char* outcome : {"ok", "cancelled", "error", "rejected"}) {
    total += MetricValue(metrics_port,
                         StrCat("strata_worker_requests_total{outcome=\"", outcome, "\",model_name=\"llama3-tiny\"}"))
                 .value_or(0);
  }
  return total;
}

TEST(InternalPlane, AClusterOnMutualTlsAndATokenServesAndRefusesCallersWithoutTheToken) {
  if (const std::string missing = LocalCluster::MissingBinaries(); !missing.empty()) GTEST_SKIP() << missing;
  Credentials credentials;
  ClusterOptions options;
  options.workers = 1;
  options.scheduler_args = credentials.Flags();
  options.kvstore_args = credentials.Flags();
  options.worker_args = credentials.Flags();
  // Start waits until the scheduler lists the kvstore and the worker: both registered, and stream their
  // KV events, over mutual TLS with the token.
  absl::StatusOr<std::unique_ptr<LocalCluster>> started = LocalCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  LocalCluster& cluster = **started;

  // The front door reaches the worker over mutual TLS; the worker writes the prompt's blocks to the kvstore.
  httplib::Client http("127.0.0.1", cluster.http_port());
  http.set_read_timeout(60, 0);
  const std::string prompt(400, 'a');
  auto response =
      http.Post("/v1/completions", StrCat(R"({"model":"llama3-tiny","max_tokens":2,"prompt":")", prompt, R"("})"),
                "application/json");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_TRUE(WaitFor(
      [&] { return MetricValue(cluster.worker_metrics_port(0), "strata_worker_kvstore_written_blocks_total") >= 1; },
      std::chrono::seconds(30)));

  // Callers with the certificate but without the token change nothing.
  const RpcSecurityOptions no_token = credentials.Mtls();
  {
    Deadline context;
    proto::BeginPutRequest request;
    proto::PutItem* item = request.add_items();
    item->set_key(std::string(16, '\x7f'));
    item->set_size_bytes(4096);
    proto::BeginPutResponse reply;
    const grpc::Status status =
        StubAs<proto::KvStore::Stub>(no_token, cluster.kvstore_address())->BeginPut(&context, request, &reply);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    EXPECT_TRUE(reply.rkey().empty());
    Deadline stats_context;
    proto::StatsResponse stats;
    ASSERT_TRUE(StubAs<proto::KvStore::Stub>(credentials.MtlsAndToken(), cluster.kvstore_address())
                    ->Stats(&stats_context, proto::StatsRequest(), &stats)
                    .ok());
    EXPECT_EQ(stats.open_puts(), 0u);
    EXPECT_EQ(stats.reserved_bytes(), 0u);
  }
  {
    Deadline context;
    proto::RegisterRequest request;
    request.set_holder_id("intruder");
    request.set_kind(proto::HOLDER_KIND_KVSTORE);
    request.set_address("127.0.0.1:1");
    proto::RegisterResponse reply;
    const grpc::Status status =
        StubAs<proto::Scheduler::Stub>(no_token, cluster.scheduler_address())->Register(&context, request, &reply);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    Deadline list_context;
    proto::ListHoldersResponse holders;
    ASSERT_TRUE(StubAs<proto::Scheduler::Stub>(credentials.MtlsAndToken(), cluster.scheduler_address())
                    ->ListHolders(&list_context, proto::ListHoldersRequest(), &holders)
                    .ok());
    EXPECT_EQ(holders.holders_size(), 2);
    for (const proto::HolderStatus& holder : holders.holders()) EXPECT_NE(holder.holder_id(), "intruder");
  }
  {
    const double before = WorkerRequests(cluster.worker_metrics_port(0));
    EXPECT_GT(before, 0);  // the series are found: the cluster served requests above
    Deadline context;
    proto::GenerateRequest request;
    request.add_prompt_ids(1);
    request.set_max_new_tokens(1);
    auto stream = StubAs<proto::Worker::Stub>(no_token, cluster.worker_address(0))->Generate(&context, request);
    proto::GenerateResponse message;
    EXPECT_FALSE(stream->Read(&message));
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    EXPECT_EQ(WorkerRequests(cluster.worker_metrics_port(0)), before);
  }
  // Without a certificate there is no connection at all, token or not.
  {
    RpcSecurityOptions plaintext{.auth_token_file = credentials.token_file()};
    Deadline context;
    proto::StatsResponse stats;
    EXPECT_EQ(StubAs<proto::KvStore::Stub>(plaintext, cluster.kvstore_address())
                  ->Stats(&context, proto::StatsRequest(), &stats)
                  .error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
}

// A daemon process started with `--port-file`: its grpc and health ports once serving (0 if it exited).
struct Daemon {
  testing::ScratchDir dir = testing::MakeTempDir("strata-security-daemon");
  std::unique_ptr<ChildProcess> process;
  int grpc_port = 0, health_port = 0;

  explicit Daemon(std::vector<std::string> argv) {
    const std::filesystem::path port_file = dir.path() / "ports";
    argv.insert(argv.end(), {"--port-file", port_file.string()});
    process = std::make_unique<ChildProcess>(argv, ChildOutput::kInherit);
    WaitFor(
        [&] {
          if (process->Wait(std::chrono::milliseconds(0)).has_value()) return true;  // exited: fail below
          std::ifstream in(port_file);
          std::string grpc, metrics, health;
          if (!(in >> grpc >> metrics >> health)) return false;
          grpc_port = std::stoi(grpc.substr(grpc.find('=') + 1));
          health_port = std::stoi(health.substr(health.find('=') + 1));
          return true;
        },
        std::chrono::seconds(30));
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port); }
};

Daemon Kvstore(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {STRATA_KVSTORE_PATH,     "--port", "0", "--metrics-port", "-1", "--dram-bytes",
                                   std::to_string(16 << 20)};
  argv.insert(argv.end(), args.begin(), args.end());
  return Daemon(argv);
}

TEST(HealthPort, AnswersPlaintextHealthChecksBesideAMutualTlsAndTokenPortAndNothingElse) {
  Credentials credentials;
  std::vector<std::string> args = credentials.Flags();
  args.insert(args.end(), {"--health-port", "0"});
  Daemon kvstore = Kvstore(args);
  ASSERT_GT(kvstore.health_port, 0);
  const auto plaintext =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(kvstore.health_port), grpc::InsecureChannelCredentials());
  EXPECT_EQ(testing::CheckHealth(plaintext), testing::Health::kServing);
  Deadline context;
  proto::StatsResponse stats;
  EXPECT_EQ(proto::KvStore::NewStub(plaintext)->Stats(&context, proto::StatsRequest(), &stats).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST(HealthPort, TheWorkersHealthPortServesBesideItsMutualTlsPort) {
  Credentials credentials;
  std::vector<std::string> argv = {STRATA_WORKER_PATH,
                                   "--model",
                                   LocalCluster::ModelDir(),
                                   "--grpc-address",
                                   "127.0.0.1:0",
                                   "--metrics-port",
                                   "-1",
                                   "--threads",
                                   "1",
                                   "--health-port",
                                   "0"};
  for (const std::string& flag : credentials.Flags()) argv.push_back(flag);
  Daemon worker(argv);
  ASSERT_GT(worker.health_port, 0);
  EXPECT_EQ(testing::CheckHealth(grpc::CreateChannel("127.0.0.1:" + std::to_string(worker.health_port),
                                                     grpc::InsecureChannelCredentials())),
            testing::Health::kServing);
  // The main port takes no plaintext, not even for health.
  EXPECT_EQ(testing::CheckHealth(grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials())),
            testing::Health::kRefused);
}

TEST(HealthPort, TurnsNotServingWhenTheSchedulerDrains) {
  Credentials credentials;
  scheduler::Options options;
  options.grpc_address = "127.0.0.1:0";
  options.metrics_port = 0;
  options.health_port = 0;
  options.security = credentials.MtlsAndToken();
  absl::StatusOr<std::unique_ptr<scheduler::SchedulerServer>> server = scheduler::SchedulerServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const auto health =
      grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->health_port()), grpc::InsecureChannelCredentials());
  EXPECT_EQ(testing::CheckHealth(health), testing::Health::kServing);
  (*server)->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(testing::CheckHealth(health), testing::Health::kNotServing);
}

TEST(StartUp, EachDaemonRefusesToStartWithABadSecurityFileNamingTheFlagAndTheFile) {
  Credentials credentials;
  const std::vector<std::vector<std::string>> daemons = {
      {STRATA_KVSTORE_PATH, "--port", "0", "--metrics-port", "-1"},
      {STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-port", "0"},
      {STRATA_WORKER_PATH, "--model", LocalCluster::ModelDir(), "--grpc-address", "127.0.0.1:0", "--metrics-port",
       "-1"}};
  for (std::vector<std::string> argv : daemons) {
    argv.insert(argv.end(), {"--tls-cert", "/nonexistent/node.pem", "--tls-key", kTls + "node-key.pem", "--tls-ca",
                             kTls + "ca.pem"});
    ChildProcess process(argv);
    const std::optional<int> exit_code = process.Wait(std::chrono::seconds(30));
    ASSERT_TRUE(exit_code.has_value()) << argv[0];
    EXPECT_NE(*exit_code, 0) << argv[0];
    EXPECT_THAT(process.err(), HasSubstr("--tls-cert /nonexistent/node.pem")) << argv[0];
  }
  std::ofstream(credentials.dir.path() / "empty-token") << "\n";
  ChildProcess empty_token({STRATA_KVSTORE_PATH, "--port", "0", "--metrics-port", "-1", "--auth-token-file",
                            (credentials.dir.path() / "empty-token").string()});
  ASSERT_TRUE(empty_token.Wait(std::chrono::seconds(30)).has_value());
  EXPECT_THAT(empty_token.err(), HasSubstr("--auth-token-file"));
}

TEST(KvstoreGrants, AnRkeyTravelsOnlyInTheReplyOfAGrant) {
  Daemon kvstore = Kvstore({});
  ASSERT_GT(kvstore.grpc_port, 0);
  auto stub = proto::KvStore::NewStub(grpc::CreateChannel(kvstore.address(), grpc::InsecureChannelCredentials()));
  const std::string key(16, '\x11');
  {
    Deadline context;
    proto::BeginGetRequest request;
    request.add_keys(key);
    proto::BeginGetResponse reply;
    ASSERT_TRUE(stub->BeginGet(&context, request, &reply).ok());
    EXPECT_EQ(reply.lease_id(), 0u);
    EXPECT_TRUE(reply.rkey().empty()) << "a get that found nothing handed out an rkey";
  }
  Deadline context;
  proto::BeginPutRequest request;
  proto::PutItem* item = request.add_items();
  item->set_key(key);
  item->set_size_bytes(4096);
  proto::BeginPutResponse reply;
  ASSERT_TRUE(stub->BeginPut(&context, request, &reply).ok());
  ASSERT_NE(reply.put_id(), 0u);
  ASSERT_EQ(reply.slots_size(), 1);
  EXPECT_TRUE(reply.slots(0).reserved());
  // By default the rkey is the block's own (--rkey-scope=grant; tests/kvstore/rkey_scope_test.cc), never the arena's.
  EXPECT_FALSE(reply.slots(0).rkey().empty());
  EXPECT_TRUE(reply.rkey().empty());
  // The same key again while the first put holds it: nothing granted, no rkey.
  Deadline again_context;
  proto::BeginPutResponse again;
  ASSERT_TRUE(stub->BeginPut(&again_context, request, &again).ok());
  EXPECT_EQ(again.put_id(), 0u);
  EXPECT_TRUE(again.rkey().empty());
  EXPECT_TRUE(again.slots(0).rkey().empty());
  EXPECT_EQ(again.slots(0).remote_address(), 0u);
}

// --writer-identity strata-worker: a worker's certificate (CN strata-worker) reserves, aborts and deletes;
// another certificate of the same CA (the kvstore's, the scheduler's: CN strata.internal here) still
// reads, but every write is PERMISSION_DENIED naming its certificate, before anything is reserved.
TEST(KvstoreWrites, OnlyAWorkerCertificateMayPutOrDelete) {
  Credentials credentials;
  std::vector<std::string> args = credentials.Flags();
  args.insert(args.end(), {"--writer-identity", "strata-worker"});
  Daemon kvstore = Kvstore(args);
  ASSERT_GT(kvstore.grpc_port, 0);
  RpcSecurityOptions worker = credentials.MtlsAndToken();
  worker.tls_cert = kTls + "worker.pem";
  worker.tls_key = kTls + "worker-key.pem";
  auto as_worker = StubAs<proto::KvStore::Stub>(worker, kvstore.address());
  auto as_other = StubAs<proto::KvStore::Stub>(credentials.MtlsAndToken(), kvstore.address());
  proto::BeginPutRequest put;
  proto::PutItem* item = put.add_items();
  item->set_key(std::string(16, '\x22'));
  item->set_size_bytes(4096);

  {
    Deadline context;
    proto::BeginPutResponse reply;
    const grpc::Status refused = as_other->BeginPut(&context, put, &reply);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("CN \"strata.internal\""));
    EXPECT_THAT(refused.error_message(), HasSubstr("writers: strata-worker"));
  }
  Deadline begin;
  proto::BeginPutResponse granted;
  ASSERT_TRUE(as_worker->BeginPut(&begin, put, &granted).ok());
  ASSERT_NE(granted.put_id(), 0u);  // nothing was reserved by the refused call: the key was free
  {
    Deadline context;
    proto::CommitPutRequest commit;
    commit.set_put_id(granted.put_id());
    commit.add_checksums(0);
    proto::CommitPutResponse reply;
    EXPECT_EQ(as_other->CommitPut(&context, commit, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    Deadline context;
    proto::AbortPutRequest abort;
    abort.set_put_id(granted.put_id());
    proto::AbortPutResponse reply;
    EXPECT_EQ(as_other->AbortPut(&context, abort, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    Deadline context;
    proto::DeleteRequest request;
    request.add_keys(std::string(16, '\x22'));
    proto::DeleteResponse reply;
    EXPECT_EQ(as_other->Delete(&context, request, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // Reads stay open to the other certificate; the worker's own abort goes through.
  Deadline lookup_context;
  proto::LookupRequest lookup;
  lookup.add_keys(std::string(16, '\x22'));
  proto::LookupResponse found;
  EXPECT_TRUE(as_other->Lookup(&lookup_context, lookup, &found).ok());
  Deadline abort_context;
  proto::AbortPutRequest abort;
  abort.set_put_id(granted.put_id());
  proto::AbortPutResponse aborted;
  EXPECT_TRUE(as_worker->AbortPut(&abort_context, abort, &aborted).ok());
  Deadline delete_context;
  proto::DeleteRequest remove;
  remove.add_keys(std::string(16, '\x22'));
  proto::DeleteResponse removed;
  EXPECT_TRUE(as_worker->Delete(&delete_context, remove, &removed).ok());

  // Without mutual TLS there is no certificate to name: the daemon refuses to start, saying so.
  ChildProcess plaintext({STRATA_KVSTORE_PATH, "--port", "0", "--metrics-port", "-1", "--writer-identity", "strata-worker"});
  const std::optional<int> exit_code = plaintext.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_NE(*exit_code, 0);
  EXPECT_THAT(plaintext.err(), HasSubstr("--writer-identity needs mutual TLS"));
}

TEST(StrataKvCli, ReachesAKvstoreOnMutualTlsAndATokenWithTheSameFlags) {
  Credentials credentials;
  Daemon kvstore = Kvstore(credentials.Flags());
  ASSERT_GT(kvstore.grpc_port, 0);
  std::vector<std::string> with = {STRATA_CLI_PATH, "kv", "--kvstore", kvstore.address()};
  for (const std::string& flag : credentials.Flags()) with.push_back(flag);
  with.push_back("stat");
  ChildProcess secured(with);
  ASSERT_EQ(secured.Wait(std::chrono::seconds(30)), 0) << secured.err();
  ChildProcess plain({STRATA_CLI_PATH, "kv", "--kvstore", kvstore.address(), "--timeout-ms", "2000", "stat"});
  const std::optional<int> exit_code = plain.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_NE(*exit_code, 0);
}

}  // namespace
}  // namespace strata
