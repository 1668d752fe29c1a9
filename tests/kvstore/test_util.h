// Shared pieces of the kvstore daemon suites: a registered buffer, raw stubs, stats polling.
#ifndef STRATA_TESTS_KVSTORE_TEST_UTIL_H_
#define STRATA_TESTS_KVSTORE_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/client/client.h"
#include "proto/kvstore.grpc.pb.h"
#include "tests/kvstore/daemon_process.h"

namespace strata::kvstore::testing {

// Page-aligned host memory registered with a client.
class RegisteredBuffer {
 public:
  RegisteredBuffer(KvStoreClient& client, uint64_t bytes)
      : data_(static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096))), bytes_(bytes) {
    EXPECT_TRUE(client.RegisterMemory(data_, bytes_).ok());
  }
  ~RegisteredBuffer() { std::free(data_); }
  uint8_t* data() const { return data_; }
  uint64_t size() const { return bytes_; }

 private:
  uint8_t* data_;
  uint64_t bytes_;
};

inline std::unique_ptr<proto::KvStore::Stub> RawStub(const DaemonProcess& daemon) {
  return proto::KvStore::NewStub(grpc::CreateChannel(daemon.address(), grpc::InsecureChannelCredentials()));
}

inline proto::StatsResponse StatsOf(KvStoreClient& client) {
  absl::StatusOr<proto::StatsResponse> stats = client.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? *stats : proto::StatsResponse();
}

inline proto::TierStats TierOf(const proto::StatsResponse& stats, proto::Tier tier) {
  for (const proto::TierStats& t : stats.tiers()) {
    if (t.tier() == tier) return t;
  }
  return proto::TierStats();
}

// Puts `keys` (content from FillForKey) in batches; every block must be stored.
void PutKeys(KvStoreClient& client, RegisteredBuffer& buffer, const std::vector<BlockKey>& keys, uint64_t min_bytes,
             uint64_t max_bytes);
// Gets `keys` and checks every byte of every block found; returns the outcomes.
std::vector<GetOutcome> GetAndCheck(KvStoreClient& client, RegisteredBuffer& buffer, const std::vector<BlockKey>& keys,
                                    uint64_t max_bytes);

}  // namespace strata::kvstore::testing

#endif  // STRATA_TESTS_KVSTORE_TEST_UTIL_H_
