// The bad-input list of issue 6 against a live daemon: each gets a precise gRPC status, the daemon keeps
// serving, and the arena is empty afterwards.
#include <grpcpp/grpcpp.h>

#include "common/rpc.h"
#include "gtest/gtest.h"
#include "kvstore/checksum.h"
#include "tests/kvstore/test_util.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = DaemonProcess::Start(
        {"--dram-bytes", std::to_string(16 * kMiB), "--max-block-bytes", std::to_string(4 * kMiB), "--max-batch", "8"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    stub_ = RawStub(*daemon_);
    auto client = daemon_->Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }
  void TearDown() override {
    if (!client_) return;
    // Still serving, nothing leaked.
    RegisteredBuffer buffer(*client_, 1 * kMiB);
    const BlockKey key = RandomKey(999);
    PutKeys(*client_, buffer, {key}, 1 * kMiB, 1 * kMiB);
    EXPECT_TRUE(GetAndCheck(*client_, buffer, {key}, 1 * kMiB)[0].found);
    ASSERT_TRUE(client_->Delete({key}).ok());
    const proto::StatsResponse stats = StatsOf(*client_);
    EXPECT_EQ(stats.arena_allocated_bytes(), 0u);
    EXPECT_EQ(stats.open_puts(), 0u);
    EXPECT_EQ(stats.open_leases(), 0u);
  }

  template <typename Request, typename Response>
  grpc::StatusCode Call(grpc::Status (proto::KvStore::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                        const Request& request, Response* response = nullptr) {
    Response local;
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    const grpc::Status status = (stub_.get()->*method)(&context, request, response ? response : &local);
    last_message_ = status.error_message();
    return status.error_code();
  }

  static proto::BeginPutRequest PutOf(std::vector<std::pair<std::string, uint64_t>> items) {
    proto::BeginPutRequest request;
    for (auto& [key, size] : items) {
      proto::PutItem* item = request.add_items();
      item->set_key(key);
      item->set_size_bytes(size);
    }
    return request;
  }

  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<proto::KvStore::Stub> stub_;
  std::unique_ptr<KvStoreClient> client_;
  std::string last_message_;
};

TEST_F(BadInput, KeysThatAreNotSixteenBytes) {
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{"short", 10}})), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(last_message_.find("16 bytes"), std::string::npos) << last_message_;
  proto::BeginGetRequest get;
  get.add_keys(std::string(17, 'x'));
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginGet, get), grpc::StatusCode::INVALID_ARGUMENT);
  proto::LookupRequest lookup;
  lookup.add_keys("");
  EXPECT_EQ(Call(&proto::KvStore::Stub::Lookup, lookup), grpc::StatusCode::INVALID_ARGUMENT);
  proto::BeginPutRequest parent = PutOf({{RandomKey(1).ToBytes(), 10}});
  parent.mutable_items(0)->set_parent_key("bad");
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, parent), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInput, WrongSizes) {
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{RandomKey(1).ToBytes(), 0}})),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{RandomKey(1).ToBytes(), 4 * kMiB + 1}})),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(last_message_.find("max-block-bytes"), std::string::npos) << last_message_;
  // Five 4 MiB blocks in a 16 MiB arena.
  std::vector<std::pair<std::string, uint64_t>> items;
  for (int i = 0; i < 5; ++i) items.push_back({RandomKey(10 + i).ToBytes(), 4 * kMiB});
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf(items)), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(BadInput, DuplicateKeysInOneRequest) {
  const std::string key = RandomKey(2).ToBytes();
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{key, 10}, {key, 10}})), grpc::StatusCode::INVALID_ARGUMENT);
  proto::BeginGetRequest get;
  get.add_keys(key);
  get.add_keys(key);
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginGet, get), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInput, EmptyAndOversizedBatches) {
  EXPECT_EQ(Call(&proto::KvStore::Stub::BeginGet, proto::BeginGetRequest()), grpc::StatusCode::INVALID_ARGUMENT);
  proto::LookupRequest lookup;
  for (int i = 0; i < 9; ++i) lookup.add_keys(RandomKey(i).ToBytes());
  EXPECT_EQ(Call(&proto::KvStore::Stub::Lookup, lookup), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(last_message_.find("max-batch"), std::string::npos) << last_message_;
  // A 5 MiB message: over the daemon's receive limit.
  proto::LookupRequest huge;
  huge.add_keys(std::string(5 * kMiB, 'k'));
  EXPECT_EQ(Call(&proto::KvStore::Stub::Lookup, huge), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(BadInput, CommitWithoutBeginAndUnknownLeases) {
  proto::CommitPutRequest commit;
  commit.set_put_id(12345);
  commit.add_checksums(1);
  EXPECT_EQ(Call(&proto::KvStore::Stub::CommitPut, commit), grpc::StatusCode::NOT_FOUND);
  proto::AbortPutRequest abort;
  abort.set_put_id(12345);
  EXPECT_EQ(Call(&proto::KvStore::Stub::AbortPut, abort), grpc::StatusCode::NOT_FOUND);
  proto::EndGetRequest end;
  end.set_lease_id(777);
  EXPECT_EQ(Call(&proto::KvStore::Stub::EndGet, end), grpc::StatusCode::NOT_FOUND);
  proto::RenewLeaseRequest renew;
  renew.set_lease_id(777);
  EXPECT_EQ(Call(&proto::KvStore::Stub::RenewLease, renew), grpc::StatusCode::NOT_FOUND);
}

TEST_F(BadInput, CommitWithWrongChecksumsStoresNothing) {
  const BlockKey a = RandomKey(3), b = RandomKey(4);
  proto::BeginPutResponse reservation;
  ASSERT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{a.ToBytes(), 4096}, {b.ToBytes(), 4096}}), &reservation),
            grpc::StatusCode::OK);
  proto::CommitPutRequest commit;
  commit.set_put_id(reservation.put_id());
  commit.add_checksums(1);  // one checksum for two blocks
  EXPECT_EQ(Call(&proto::KvStore::Stub::CommitPut, commit), grpc::StatusCode::INVALID_ARGUMENT);
  commit.add_checksums(2);  // two, both wrong (the arena holds whatever was there)
  EXPECT_EQ(Call(&proto::KvStore::Stub::CommitPut, commit), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Call(&proto::KvStore::Stub::CommitPut, commit), grpc::StatusCode::NOT_FOUND);  // gone
  auto lookup = client_->Lookup({a, b});
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->longest_present_prefix(), 0u);
  EXPECT_EQ(StatsOf(*client_).checksum_failures(), 1u);
}

TEST_F(BadInput, ClientGoneBetweenBeginAndCommitIsAbortable) {
  proto::BeginPutResponse reservation;
  ASSERT_EQ(Call(&proto::KvStore::Stub::BeginPut, PutOf({{RandomKey(5).ToBytes(), 2 * kMiB}}), &reservation),
            grpc::StatusCode::OK);
  EXPECT_EQ(StatsOf(*client_).reserved_bytes(), 2 * kMiB);
  proto::AbortPutRequest abort;
  abort.set_put_id(reservation.put_id());
  EXPECT_EQ(Call(&proto::KvStore::Stub::AbortPut, abort), grpc::StatusCode::OK);
  EXPECT_EQ(StatsOf(*client_).reserved_bytes(), 0u);
}

TEST_F(BadInput, ClientBufferErrorsAreRefusedBeforeAnythingIsSent) {
  std::vector<uint8_t> unregistered(4096);
  auto put = client_->Put({{RandomKey(6), unregistered.data(), unregistered.size()}});
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  RegisteredBuffer buffer(*client_, 1 * kMiB);
  const BlockKey key = RandomKey(7);
  PutKeys(*client_, buffer, {key}, 1 * kMiB, 1 * kMiB);
  auto get = client_->Get({{key, buffer.data(), 4096}});  // buffer smaller than the block
  EXPECT_EQ(get.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatsOf(*client_).pinned_bytes(), 0u);  // the lease was ended
  ASSERT_TRUE(client_->Delete({key}).ok());
}

}  // namespace
}  // namespace strata::kvstore::testing
