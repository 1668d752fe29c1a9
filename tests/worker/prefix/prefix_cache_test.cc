// PrefixCache over a real CPU engine (llama3-tiny): blocks stored into tier H carry the workers' MAC, and
// a tier-H block whose bytes changed after it was sealed (a peer writing the worker's UCX-registered payload
// slots, a memory fault) is never imported: the run ends before it, it is dropped from tier H and counted,
// and the prompt's logits are those of computing it.
#include "worker/prefix/prefix_cache.h"

#include <cmath>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/cpu_backend.h"
#include "model/model.h"

namespace strata::worker {
namespace {

constexpr int64_t kBlockTokens = 16;

// Logits equal up to float32 reassociation (a prefill of fewer rows may sum in another order).
::testing::AssertionResult Close(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return ::testing::AssertionFailure() << a.size() << " vs " << b.size() << " logits";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > 1e-4f * (1 + std::abs(b[i]))) {
      return ::testing::AssertionFailure() << "logit " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = model::OpenModel(std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::make_unique<model::Model>(*std::move(model));
    engine::EngineOptions options;
    options.kv_block_tokens = kBlockTokens;
    options.kv_pool_blocks = 64;
    auto engine = engine::Engine::Create(*model_, engine::CreateCpuBackend({.threads = 1}), options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    const uint64_t payload_bytes = static_cast<uint64_t>(engine_->KvPayloadBytes(kBlockTokens));
    const uint64_t region_bytes = 16 * PayloadPool::SlotBytes(payload_bytes);
    auto memory = std::shared_ptr<std::byte[]>(new std::byte[region_bytes]);
    pool_ = std::make_unique<PayloadPool>(HostRegion{memory.get(), region_bytes, memory}, payload_bytes);
    host_ = std::make_unique<HostBlockCache>(1 << 20, HostCacheListener{});
    BlockKeyContext context;
    context.model_fingerprint = model_->fingerprint.digest;
    context.block_tokens = kBlockTokens;
    context.kv_dtype = engine_->kv_dtype();
    cache_ = std::make_unique<PrefixCache>(
        *engine_, context,
        PrefixCache::Tiers{.host = host_.get(), .payloads = pool_.get(), .mac = &mac_, .host_mac_failures = &failures_});
    for (int i = 0; i < 40; ++i) prompt_.push_back(2 + (i * 37) % 500);  // 2 full blocks usable
  }

  // Runs the prompt through the cache as the engine loop does; the last token's logits.
  std::vector<float> Run(PromptPrefix& prefix) {
    prefix = cache_->Find(prompt_, Sha256Digest{});
    auto sequence = engine_->NewSequence(64);
    EXPECT_TRUE(sequence.ok()) << sequence.status();
    if (!sequence.ok()) return {};
    cache_->LoadHost(prefix, *sequence, "test");
    const auto rest = absl::MakeConstSpan(prompt_).subspan(static_cast<size_t>(sequence->length()));
    auto logits = engine_->Forward(*sequence, rest, {static_cast<int64_t>(rest.size()) - 1});
    EXPECT_TRUE(logits.ok()) << logits.status();
    cache_->StorePrompt(prefix, *sequence, static_cast<int64_t>(prompt_.size()), "test");
    return logits.ok() ? *logits : std::vector<float>{};
  }

  std::unique_ptr<model::Model> model_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<PayloadPool> pool_;
  std::unique_ptr<HostBlockCache> host_;
  BlockMac mac_ = BlockMac::Generate();
  Counter failures_;
  std::unique_ptr<PrefixCache> cache_;
  std::vector<int32_t> prompt_;
};

TEST_F(PrefixCacheTest, ATamperedTierHBlockIsDroppedCountedAndRecomputed) {
  PromptPrefix cold;
  const std::vector<float> computed = Run(cold);
  ASSERT_FALSE(computed.empty());
  ASSERT_EQ(host_->blocks(), 2u);
  PromptPrefix warm;
  EXPECT_TRUE(Close(Run(warm), computed));
  EXPECT_EQ(warm.host, 2u);  // both blocks verified and imported
  EXPECT_EQ(failures_.Value(), 0);

  // The second block's K/V changes in its slot after it was sealed.
  const std::vector<std::shared_ptr<const BlockPayload>> held = host_->LongestPrefix(warm.keys);
  ASSERT_EQ(held.size(), 2u);
  auto* slot = reinterpret_cast<float*>(const_cast<std::byte*>(held[1]->data()));  // llama3-tiny's KV is f32
  for (size_t i = 0; i < held[1]->size() / sizeof(float); ++i) slot[i] = 3.0f;
  PromptPrefix tampered;
  EXPECT_TRUE(Close(Run(tampered), computed));
  EXPECT_EQ(tampered.host, 1u);  // the run ends before the tampered block
  EXPECT_EQ(failures_.Value(), 1);
  // Dropped, and the recomputed block stored in its place: the next run imports both again.
  PromptPrefix healed;
  EXPECT_TRUE(Close(Run(healed), computed));
  EXPECT_EQ(healed.host, 2u);
  EXPECT_EQ(failures_.Value(), 1);
}

}  // namespace
}  // namespace strata::worker
