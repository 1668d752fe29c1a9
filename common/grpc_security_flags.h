// The internal plane's security flags, defined once for every binary that serves or calls Strata gRPC
// (strata-kvstore, strata-scheduler serve, strata-worker, `strata kv`). See common/grpc_security.h.
#ifndef STRATA_COMMON_GRPC_SECURITY_FLAGS_H_
#define STRATA_COMMON_GRPC_SECURITY_FLAGS_H_

#include "CLI/CLI.hpp"
#include "common/grpc_security.h"

namespace strata {

inline void AddRpcSecurityFlags(CLI::App& app, RpcSecurityOptions& options) {
  const std::string group = "Internal gRPC security";
  app.add_option("--tls-cert", options.tls_cert, "PEM certificate: serve gRPC over mutual TLS and present it to peers")
      ->group(group);
  app.add_option("--tls-key", options.tls_key, "PEM private key of --tls-cert")->group(group);
  app.add_option("--tls-ca", options.tls_ca, "PEM CA that peers' certificates (clients' and servers') must chain to")
      ->group(group);
  app.add_option("--tls-server-name", options.tls_server_name,
                 "Name expected in peers' certificates (default: the host part of the address)")
      ->group(group);
  app.add_option("--auth-token-file", options.auth_token_file,
                 "File with a shared token: incoming calls must send 'authorization: Bearer <token>', outgoing "
                 "calls send it")
      ->group(group);
}

}  // namespace strata

#endif  // STRATA_COMMON_GRPC_SECURITY_FLAGS_H_
