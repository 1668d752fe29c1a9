// common/grpc_security: mutual TLS and the shared token on a real gRPC server on loopback, with real
// generated services whose handlers count the calls that reached them.
#include "common/grpc_security.h"

#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <fstream>

#include "common/file.h"
#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/kvstore.grpc.pb.h"
#include "proto/scheduler.grpc.pb.h"
#include "tests/security/health_check.h"
#include "tests/testing/scratch_dir.h"

namespace strata {
namespace {

const std::string kTls = std::string(STRATA_TEST_DATA_DIR) + "/tls/";

RpcSecurityOptions Mtls(const std::string& node = "node") {
  return {.tls_cert = kTls + node + ".pem",
          .tls_key = kTls + node + "-key.pem",
          .tls_ca = kTls + (node == "node" ? "ca.pem" : "other-ca.pem")};
}

// Handlers that only count: a refused call must never reach them.
class CountingKvStore final : public proto::KvStore::Service {
 public:
  grpc::Status Stats(grpc::ServerContext*, const proto::StatsRequest*, proto::StatsResponse*) override {
    ++calls;
    return grpc::Status::OK;
  }
  std::atomic<int> calls = 0;
};

class CountingScheduler final : public proto::Scheduler::Service {
 public:
  grpc::Status KvEvents(grpc::ServerContext*,
                        grpc::ServerReaderWriter<proto::KvEventReply, proto::KvEventMessage>* stream) override {
    ++calls;
    proto::KvEventMessage message;
    while (stream->Read(&message)) {
    }
    return grpc::Status::OK;
  }
  std::atomic<int> calls = 0;
};

class SecuredServer {
 public:
  explicit SecuredServer(const RpcSecurityOptions& options) {
    absl::StatusOr<std::shared_ptr<const RpcSecurity>> security = RpcSecurity::Load(options);
    STRATA_CHECK(security.ok());
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", (*security)->ServerCredentials(), &port_);
    builder.RegisterService(&kvstore_);
    builder.RegisterService(&scheduler_);
    server_ = builder.BuildAndStart();
    STRATA_CHECK(server_ != nullptr && port_ > 0);
  }
  ~SecuredServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int kvstore_calls() const { return kvstore_.calls; }
  int scheduler_calls() const { return scheduler_.calls; }

 private:
  CountingKvStore kvstore_;
  CountingScheduler scheduler_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

std::shared_ptr<grpc::Channel> ChannelAs(const RpcSecurityOptions& options, const std::string& address) {
  absl::StatusOr<std::shared_ptr<const RpcSecurity>> security = RpcSecurity::Load(options);
  STRATA_CHECK(security.ok());
  return (*security)->CreateChannel(address, grpc::ChannelArguments());
}

grpc::Status CallStats(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  proto::StatsResponse response;
  return proto::KvStore::NewStub(channel)->Stats(&context, proto::StatsRequest(), &response);
}

struct TokenFile {
  testing::ScratchDir dir = testing::MakeTempDir("strata-token");
  std::filesystem::path Write(const std::string& name, const std::string& contents) const {
    std::ofstream(dir.path() / name) << contents;
    return dir.path() / name;
  }
};

TEST(BearerToken, MatchesOnlyTheExactTokenAfterBearer) {
  EXPECT_TRUE(BearerTokenMatches("Bearer s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cret ", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("bearer s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer ", ""));  // no token configured never matches
}

TEST(RpcSecurityToken, RefusesACallWithoutOrWithAWrongTokenBeforeItsHandler) {
  TokenFile files;
  // Whitespace around the token in the file is not part of it.
  const RpcSecurityOptions server{.auth_token_file = files.Write("token", "  s3cret\n")};
  SecuredServer secured(server);

  const grpc::Status none = CallStats(grpc::CreateChannel(secured.address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
  const grpc::Status wrong =
      CallStats(ChannelAs({.auth_token_file = files.Write("wrong", "s3cret2")}, secured.address()));
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong.error_message();
  EXPECT_EQ(secured.kvstore_calls(), 0);

  const grpc::Status right =
      CallStats(ChannelAs({.auth_token_file = files.Write("right", "s3cret")}, secured.address()));
  EXPECT_TRUE(right.ok()) << right.error_message();
  EXPECT_EQ(secured.kvstore_calls(), 1);
}

TEST(RpcSecurityToken, RefusesABidiStreamBeforeItsHandler) {
  TokenFile files;
  SecuredServer secured({.auth_token_file = files.Write("token", "s3cret")});
  auto stub = proto::Scheduler::NewStub(grpc::CreateChannel(secured.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto stream = stub->KvEvents(&context);
  stream->Write(proto::KvEventMessage());
  stream->WritesDone();
  proto::KvEventReply reply;
  EXPECT_FALSE(stream->Read(&reply));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(secured.scheduler_calls(), 0);
}

TEST(RpcSecurityToken, HealthChecksNeedNoToken) {
  TokenFile files;
  SecuredServer secured({.auth_token_file = files.Write("token", "s3cret")});
  grpc::Status status;
  EXPECT_EQ(testing::CheckHealth(grpc::CreateChannel(secured.address(), grpc::InsecureChannelCredentials()), &status),
            testing::Health::kServing)
      << status.error_message();
}

TEST(RpcSecurityTls, RefusesPlaintextNoCertificateAndAnotherCasCertificateAtTheHandshake) {
  SecuredServer secured(Mtls());
  // Plaintext.
  EXPECT_EQ(CallStats(grpc::CreateChannel(secured.address(), grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // TLS that trusts the server but presents no certificate.
  absl::StatusOr<std::string> ca = ReadFile(kTls + "ca.pem");
  ASSERT_TRUE(ca.ok());
  const grpc::Status no_certificate =
      CallStats(grpc::CreateChannel(secured.address(), grpc::SslCredentials({.pem_root_certs = *ca})));
  EXPECT_EQ(no_certificate.error_code(), grpc::StatusCode::UNAVAILABLE) << no_certificate.error_message();
  // A certificate from another CA (the client trusts the server's CA, so only the server can refuse).
  absl::StatusOr<std::string> other_cert = ReadFile(kTls + "other-node.pem");
  absl::StatusOr<std::string> other_key = ReadFile(kTls + "other-node-key.pem");
  ASSERT_TRUE(other_cert.ok() && other_key.ok());
  const grpc::Status other_ca = CallStats(grpc::CreateChannel(
      secured.address(),
      grpc::SslCredentials({.pem_root_certs = *ca, .pem_private_key = *other_key, .pem_cert_chain = *other_cert})));
  EXPECT_EQ(other_ca.error_code(), grpc::StatusCode::UNAVAILABLE) << other_ca.error_message();
  EXPECT_EQ(secured.kvstore_calls(), 0);

  const grpc::Status peer = CallStats(ChannelAs(Mtls(), secured.address()));
  EXPECT_TRUE(peer.ok()) << peer.error_message();
  EXPECT_EQ(secured.kvstore_calls(), 1);
}

TEST(RpcSecurityTls, AClientChecksTheServersNameAndCa) {
  SecuredServer secured(Mtls());
  RpcSecurityOptions named = Mtls();
  named.tls_server_name = "strata.internal";  // in the certificate's SANs, reached at 127.0.0.1
  EXPECT_TRUE(CallStats(ChannelAs(named, secured.address())).ok());
  named.tls_server_name = "kvstore.elsewhere";
  EXPECT_EQ(CallStats(ChannelAs(named, secured.address())).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client of another CA does not trust this server.
  EXPECT_EQ(CallStats(ChannelAs(Mtls("other-node"), secured.address())).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(secured.kvstore_calls(), 1);
}

TEST(RpcSecurityTls, TokenAndTlsTogetherNeedBoth) {
  TokenFile files;
  RpcSecurityOptions both = Mtls();
  both.auth_token_file = files.Write("token", "s3cret");
  SecuredServer secured(both);
  EXPECT_EQ(CallStats(ChannelAs(Mtls(), secured.address())).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(CallStats(ChannelAs(both, secured.address())).ok());
  EXPECT_EQ(secured.kvstore_calls(), 1);
}

TEST(RpcSecurityLoad, NamesTheFileAndTheFlagOfABadInput) {
  TokenFile files;
  auto message = [](const RpcSecurityOptions& options) {
    absl::StatusOr<std::shared_ptr<const RpcSecurity>> security = RpcSecurity::Load(options);
    EXPECT_FALSE(security.ok());
    return security.ok() ? std::string() : std::string(security.status().message());
  };
  RpcSecurityOptions missing = Mtls();
  missing.tls_cert = "/nonexistent/node.pem";
  EXPECT_THAT(message(missing),
              ::testing::AllOf(::testing::HasSubstr("--tls-cert"), ::testing::HasSubstr("/nonexistent/node.pem")));
  RpcSecurityOptions not_pem = Mtls();
  not_pem.tls_ca = files.Write("ca.pem", "not a certificate");
  EXPECT_THAT(message(not_pem), ::testing::HasSubstr("--tls-ca"));
  RpcSecurityOptions mismatched = Mtls();
  mismatched.tls_key = kTls + "other-node-key.pem";
  EXPECT_THAT(message(mismatched), ::testing::HasSubstr("is not the key of --tls-cert"));
  EXPECT_THAT(message({.tls_cert = kTls + "node.pem"}), ::testing::HasSubstr("--tls-key is missing"));
  EXPECT_THAT(message({.tls_server_name = "strata.internal"}), ::testing::HasSubstr("--tls-server-name needs"));
  EXPECT_THAT(message({.auth_token_file = files.Write("empty", " \n")}),
              ::testing::AllOf(::testing::HasSubstr("--auth-token-file"), ::testing::HasSubstr("empty")));
  EXPECT_THAT(message({.auth_token_file = "/nonexistent/token"}),
              ::testing::AllOf(::testing::HasSubstr("--auth-token-file"), ::testing::HasSubstr("/nonexistent/token")));
}

}  // namespace
}  // namespace strata
