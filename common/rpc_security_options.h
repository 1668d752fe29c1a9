// The flags of the internal plane's security (common/grpc_security.h), as a daemon's Options hold them.
// Kept apart from grpc_security.h so that Options headers do not pull in gRPC.
#ifndef STRATA_COMMON_RPC_SECURITY_OPTIONS_H_
#define STRATA_COMMON_RPC_SECURITY_OPTIONS_H_

#include <filesystem>
#include <string>

namespace strata {

struct RpcSecurityOptions {
  // PEM files. All three or none: with them the daemon's gRPC is mutual TLS.
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  std::filesystem::path tls_ca;
  // The name outgoing channels expect in the peer's certificate; empty: the host part of the address.
  std::string tls_server_name;
  // A file holding the shared token (surrounding whitespace trimmed; must not be empty); empty: no token.
  std::filesystem::path auth_token_file;

  bool tls() const { return !tls_cert.empty() || !tls_key.empty() || !tls_ca.empty(); }
};

}  // namespace strata

#endif  // STRATA_COMMON_RPC_SECURITY_OPTIONS_H_
