#include "common/grpc_security.h"

#include <grpc/grpc_security.h>
#include <grpcpp/support/client_interceptor.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "common/file.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata {
namespace {

constexpr std::string_view kBearer = "Bearer ";
// kubelet's gRPC probes and load balancers cannot send a token.
constexpr std::string_view kHealthMethodPrefix = "/grpc.health.v1.Health/";

struct PemFile {
  const std::filesystem::path& path;
  std::string_view flag;
};

absl::StatusOr<std::string> ReadPem(const PemFile& file) {
  auto text = ReadFile(file.path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        StrCat(file.flag, " ", file.path.string(), ": cannot read (", text.status().message(), ")"));
  }
  return std::move(*text);
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
Bio BioOf(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free); }

// Parses here so that a wrong file is named at start; gRPC itself would only fail at the first handshake.
absl::Status CheckTlsFiles(const RpcSecurityOptions& options, const std::string& cert, const std::string& key,
                           const std::string& ca) {
  std::unique_ptr<X509, decltype(&X509_free)> x509(PEM_read_bio_X509(BioOf(cert).get(), nullptr, nullptr, nullptr),
                                                   &X509_free);
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("--tls-cert ", options.tls_cert.string(), ": not a PEM certificate (want -----BEGIN CERTIFICATE-----)"));
  }
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey(
      PEM_read_bio_PrivateKey(BioOf(key).get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("--tls-key ", options.tls_key.string(),
               ": not an unencrypted PEM private key (want -----BEGIN PRIVATE KEY-----)"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    return absl::InvalidArgumentError(
        StrCat("--tls-key ", options.tls_key.string(), " is not the key of --tls-cert ", options.tls_cert.string()));
  }
  std::unique_ptr<X509, decltype(&X509_free)> ca_x509(PEM_read_bio_X509(BioOf(ca).get(), nullptr, nullptr, nullptr),
                                                      &X509_free);
  if (ca_x509 == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("--tls-ca ", options.tls_ca.string(), ": not a PEM certificate (want -----BEGIN CERTIFICATE-----)"));
  }
  return absl::OkStatus();
}

// The token check, run by gRPC core's server auth filter on every call before the call reaches a handler.
// `state` is the expected token (owned).
void ProcessAuthMetadata(void* state, grpc_auth_context*, const grpc_metadata* md, size_t num_md,
                         grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto& token = *static_cast<const std::string*>(state);
  std::string_view path, authorization;
  bool has_authorization = false;
  for (size_t i = 0; i < num_md; ++i) {
    const std::string_view key(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].key)),
                               GRPC_SLICE_LENGTH(md[i].key));
    const std::string_view value(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].value)),
                                 GRPC_SLICE_LENGTH(md[i].value));
    if (key == ":path") path = value;
    if (key == "authorization") {
      authorization = value;
      has_authorization = true;
    }
  }
  if (path.starts_with(kHealthMethodPrefix) || (has_authorization && BearerTokenMatches(authorization, token))) {
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED,
       has_authorization ? "authorization: wrong token (see --auth-token-file)"
                         : "authorization: missing 'Bearer <token>' metadata (this server has --auth-token-file)");
}

// grpc::ServerCredentials over a core credentials object, so that a token check can sit on a plaintext port
// too (grpc::InsecureServerCredentials() refuses an auth metadata processor).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  CoreServerCredentials(grpc_server_credentials* credentials, const std::string& token) : credentials_(credentials) {
    if (!token.empty()) {
      grpc_server_credentials_set_auth_metadata_processor(
          credentials_,
          {&ProcessAuthMetadata, [](void* state) { delete static_cast<std::string*>(state); }, new std::string(token)});
    }
  }
  ~CoreServerCredentials() override { grpc_server_credentials_release(credentials_); }
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    STRATA_CHECK(false && "CoreServerCredentials: the token check is set at construction");
  }

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override {
    return grpc_server_add_http2_port(server, address.c_str(), credentials_);
  }
  grpc_server_credentials* const credentials_;
};

class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string& header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  const std::string& header_;
};

// Adds the token to every call of a channel (call credentials would need TLS; the token must also work
// without it).
class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string header) : header_(std::move(header)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

}  // namespace

std::string PeerCommonName(const grpc::ServerContext& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return "";
  const std::vector<grpc::string_ref> names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  return names.empty() ? "" : std::string(names.front().data(), names.front().size());
}

bool BearerTokenMatches(std::string_view authorization, std::string_view token) {
  if (token.empty() || !authorization.starts_with(kBearer)) return false;
  const Sha256Digest given = Sha256Of(authorization.substr(kBearer.size()));
  const Sha256Digest expected = Sha256Of(token);
  return CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

absl::StatusOr<std::shared_ptr<const RpcSecurity>> RpcSecurity::Load(const RpcSecurityOptions& options) {
  std::shared_ptr<RpcSecurity> security(new RpcSecurity());
  if (options.tls()) {
    for (const PemFile& file : {PemFile{options.tls_cert, "--tls-cert"}, PemFile{options.tls_key, "--tls-key"},
                                PemFile{options.tls_ca, "--tls-ca"}}) {
      if (file.path.empty()) {
        return absl::InvalidArgumentError(
            StrCat(file.flag, " is missing: mutual TLS needs all of --tls-cert, --tls-key and --tls-ca"));
      }
    }
    STRATA_ASSIGN_OR_RETURN(security->cert_pem_, ReadPem({options.tls_cert, "--tls-cert"}));
    STRATA_ASSIGN_OR_RETURN(security->key_pem_, ReadPem({options.tls_key, "--tls-key"}));
    STRATA_ASSIGN_OR_RETURN(security->ca_pem_, ReadPem({options.tls_ca, "--tls-ca"}));
    STRATA_RETURN_IF_ERROR(CheckTlsFiles(options, security->cert_pem_, security->key_pem_, security->ca_pem_));
    security->server_name_ = options.tls_server_name;
  } else if (!options.tls_server_name.empty()) {
    return absl::InvalidArgumentError("--tls-server-name needs --tls-cert, --tls-key and --tls-ca");
  }
  if (!options.auth_token_file.empty()) {
    auto token = ReadFile(options.auth_token_file);
    if (!token.ok()) {
      return absl::InvalidArgumentError(StrCat("--auth-token-file ", options.auth_token_file.string(),
                                               ": cannot read (", token.status().message(), ")"));
    }
    security->token_ = std::string(absl::StripAsciiWhitespace(*token));
    if (security->token_.empty()) {
      return absl::InvalidArgumentError(
          StrCat("--auth-token-file ", options.auth_token_file.string(), ": empty (put the shared token in it)"));
    }
  }
  return security;
}

std::shared_ptr<const RpcSecurity> RpcSecurity::Insecure() {
  return std::shared_ptr<const RpcSecurity>(new RpcSecurity());
}

std::shared_ptr<grpc::ServerCredentials> RpcSecurity::ServerCredentials() const {
  if (!tls() && !token_required()) return grpc::InsecureServerCredentials();
  grpc_server_credentials* credentials = nullptr;
  if (tls()) {
    grpc_ssl_pem_key_cert_pair pair{key_pem_.c_str(), cert_pem_.c_str()};
    credentials = grpc_ssl_server_credentials_create_ex(
        ca_pem_.c_str(), &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, nullptr);
  } else {
    credentials = grpc_insecure_server_credentials_create();
  }
  STRATA_CHECK(credentials != nullptr);
  return std::make_shared<CoreServerCredentials>(credentials, token_);
}

std::shared_ptr<grpc::Channel> RpcSecurity::CreateChannel(const std::string& address,
                                                          grpc::ChannelArguments arguments) const {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (tls()) {
    credentials =
        grpc::SslCredentials({.pem_root_certs = ca_pem_, .pem_private_key = key_pem_, .pem_cert_chain = cert_pem_});
    if (!server_name_.empty()) arguments.SetSslTargetNameOverride(server_name_);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (!token_required()) return grpc::CreateCustomChannel(address, credentials, arguments);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(StrCat(kBearer, token_)));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, arguments,
                                                                 std::move(interceptors));
}

std::string_view RpcSecurity::Describe() const {
  if (tls()) return token_required() ? "mtls+token" : "mtls";
  return token_required() ? "token" : "none";
}

}  // namespace strata
