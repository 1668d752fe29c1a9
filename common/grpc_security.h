// Who may talk to whom on the internal gRPC plane (scheduler, workers, kvstores and their clients).
//
// Two independent locks, each off unless configured:
//  - mutual TLS (--tls-cert/--tls-key/--tls-ca): a server serves only TLS and refuses, at the handshake, a
//    peer without a certificate or with one not signed by the CA; every channel presents the same
//    certificate and verifies the server against the CA (expecting --tls-server-name, default: the host
//    part of the address).
//  - a shared token (--auth-token-file): every incoming call except grpc.health.v1.Health/* must carry
//    `authorization: Bearer <token>` or is refused with UNAUTHENTICATED by gRPC's auth filter, before any
//    handler runs (so before any state changes); every outgoing call sends it. Works with or without TLS.
//
//   STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const RpcSecurity> security, RpcSecurity::Load(options));
//   builder.AddListeningPort(address, security->ServerCredentials(), &port);
//   auto channel = security->CreateChannel("10.0.0.5:7480", grpc::ChannelArguments());
//
// Files are read once, at Load (a rotated certificate takes a restart). RpcSecurity is immutable and
// thread-safe; share it (shared_ptr) between a daemon's server and all its channels.
#ifndef STRATA_COMMON_GRPC_SECURITY_H_
#define STRATA_COMMON_GRPC_SECURITY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/rpc_security_options.h"

namespace strata {

class RpcSecurity {
 public:
  // Reads and checks the files. A missing, unreadable or malformed file is INVALID_ARGUMENT naming the
  // file and its flag.
  static absl::StatusOr<std::shared_ptr<const RpcSecurity>> Load(const RpcSecurityOptions& options);
  // Plaintext, no token: what local runs and tests use.
  static std::shared_ptr<const RpcSecurity> Insecure();

  bool tls() const { return !cert_pem_.empty(); }
  bool token_required() const { return !token_.empty(); }

  // Credentials for a server's listening port: TLS with required client certificates when configured,
  // and the token check when configured. A fresh object per call (one per port).
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;

  // A channel to `address` (host:port) with this side's certificate and token.
  std::shared_ptr<grpc::Channel> CreateChannel(const std::string& address, grpc::ChannelArguments arguments) const;

  // "mtls+token", "mtls", "token" or "none": for the serving log line.
  std::string_view Describe() const;

 private:
  RpcSecurity() = default;
  std::string cert_pem_, key_pem_, ca_pem_;
  std::string server_name_;
  std::string token_;
};

// The common name (CN) of the certificate the caller of `context` presented, verified against --tls-ca at
// the handshake; empty without mutual TLS. Roles are told apart by it: every certificate names the same
// serverName in its SAN (what channels verify), and each role's its own CN (the chart's strata-worker,
// strata-kvstore, strata-scheduler).
std::string PeerCommonName(const grpc::ServerContext& context);

// True when `authorization` is "Bearer <token>". Constant time in the header's contents (both sides are
// hashed before comparing), so a timing probe learns nothing about the token.
bool BearerTokenMatches(std::string_view authorization, std::string_view token);

}  // namespace strata

#endif  // STRATA_COMMON_GRPC_SECURITY_H_
