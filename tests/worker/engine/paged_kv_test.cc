// Paged KV is exact: a sequence whose KV lives in blocks of the engine's pool gives the logits and
// greedy ids of one with a contiguous cache, in prefill (one pass, chunks, mini-sequences) and decode,
// batched with other sequences; a prefix attached from another sequence's blocks or imported from block
// payloads gives what recomputing it gives; blocks are reference counted and come back to the pool. On
// the CPU backend (CI) and, where a GPU is present, on the CUDA backend in float32.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/tiny_model_suite.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/cuda_backend.h"
#include "worker/engine/engine.h"

namespace strata::engine {
namespace {

constexpr double kSameResult = 1e-5;  // the pool moves bytes; layouts differ, arithmetic does not

using testing::BackendKind;

class PagedKvTest : public testing::TinyModelSuite {
 protected:
  std::unique_ptr<Engine> MakeEngine(int64_t pool_blocks, int64_t block_tokens = 4,
                                     int64_t mini_sequence_tokens = 1024,
                                     DecodeGraphs graphs = DecodeGraphs::kCapture) {
    auto engine = Engine::Create(*model_, MakeBackend(graphs),
                                 {.mini_sequence_tokens = mini_sequence_tokens,
                                  .kv_pool_blocks = pool_blocks,
                                  .kv_block_tokens = block_tokens});
    STRATA_CHECK(engine.ok());
    return *std::move(engine);
  }

  int64_t vocab() const { return model_->config.vocab_size; }
  int64_t n() const { return static_cast<int64_t>(prompt_.size()); }

  // Logits of every prompt row (fed in pieces of `chunk` tokens), then of `steps` greedy decode steps.
  std::vector<float> Run(Engine& engine, Sequence& sequence, int64_t chunk, int steps,
                         std::vector<int32_t>* ids = nullptr) {
    std::vector<float> all;
    for (int64_t begin = sequence.length(); begin < n(); begin += chunk) {
      const int64_t rows = std::min(chunk, n() - begin);
      std::vector<int64_t> logit_rows(rows);
      for (int64_t i = 0; i < rows; ++i) logit_rows[i] = i;
      auto logits = engine.Forward(sequence, absl::MakeConstSpan(prompt_).subspan(begin, rows), logit_rows);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return {};
      all.insert(all.end(), logits->begin(), logits->end());
    }
    const int64_t zero = 0;
    for (int step = 0; step < steps; ++step) {
      const auto last = all.end() - vocab();
      const int32_t token = static_cast<int32_t>(std::max_element(last, all.end()) - last);
      if (ids != nullptr) ids->push_back(token);
      auto next = engine.Forward(sequence, {&token, 1}, {&zero, 1});
      EXPECT_TRUE(next.ok()) << next.status();
      if (!next.ok()) return {};
      all.insert(all.end(), next->begin(), next->end());
    }
    return all;
  }

  // The reference: a contiguous cache (an engine without a pool), the prompt in one pass.
  std::vector<float> Reference(int steps, std::vector<int32_t>* ids = nullptr) {
    auto engine = MakeEngine(0);
    auto sequence = engine->NewSequence(n() + steps);
    EXPECT_TRUE(sequence.ok()) << sequence.status();
    EXPECT_FALSE(sequence->paged());
    return Run(*engine, *sequence, n(), steps, ids);
  }

  // The greedy token of the last row of `logits`.
  int32_t Greedy(const std::vector<float>& logits) const {
    return static_cast<int32_t>(std::max_element(logits.end() - vocab(), logits.end()) - (logits.end() - vocab()));
  }

  // One sequence per length, prefilled with that many prompt tokens (room for `steps` more), and the
  // greedy token each predicts next.
  void StartSequences(Engine& engine, const std::vector<int64_t>& lengths, int steps, std::vector<Sequence>& sequences,
                      std::vector<int32_t>& tokens) {
    for (int64_t length : lengths) {
      auto sequence = engine.NewSequence(length + steps);
      ASSERT_TRUE(sequence.ok());
      const int64_t last = length - 1;
      auto logits = engine.Forward(*sequence, absl::MakeConstSpan(prompt_).subspan(0, length), {&last, 1});
      ASSERT_TRUE(logits.ok()) << logits.status();
      tokens.push_back(Greedy(*logits));
      sequences.push_back(*std::move(sequence));
    }
  }

};

TEST_P(PagedKvTest, PagedSequencesGiveTheContiguousLogitsAndIds) {
  constexpr int kSteps = 6;
  std::vector<int32_t> reference_ids;
  const std::vector<float> reference = Reference(kSteps, &reference_ids);
  ASSERT_FALSE(reference.empty());
  // Blocks of 1, 4 and 16 tokens; the prompt in one pass, in chunks of 5 (crossing blocks), and with
  // mini-sequences of 3 rows.
  for (const auto& [block_tokens, chunk, mini] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {4, n(), 1024}, {1, n(), 1024}, {16, 5, 1024}, {4, 5, 3}}) {
    auto engine = MakeEngine(64 + n(), block_tokens, mini);
    // A sequence first takes and returns blocks, so the next one's blocks are not in order.
    { auto scratch = engine->NewSequence(3 * block_tokens); }
    auto sequence = engine->NewSequence(n() + kSteps);
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    ASSERT_TRUE(sequence->paged());
    std::vector<int32_t> ids;
    const std::vector<float> logits = Run(*engine, *sequence, chunk, kSteps, &ids);
    ASSERT_EQ(logits.size(), reference.size());
    EXPECT_LE(testing::RelativeL2(logits, reference), kSameResult)
        << "blocks of " << block_tokens << ", chunks of " << chunk << ", mini-sequences of " << mini;
    EXPECT_EQ(ids, reference_ids);
  }
}

TEST_P(PagedKvTest, ABatchOfPagedAndContiguousSequencesGivesEachOnesLogits) {
  const std::vector<float> reference = Reference(0);
  auto engine = MakeEngine(64 + 4 * n());
  auto paged_a = engine->NewSequence(n());
  auto paged_b = engine->NewSequence(n());
  auto contiguous = engine->NewSequence(n(), KvPlacement{.budgets = {.device_bytes = int64_t{1} << 40}});
  ASSERT_TRUE(paged_a.ok() && paged_b.ok() && contiguous.ok());
  ASSERT_FALSE(contiguous->paged());
  // b starts three tokens later: the batch mixes positions.
  std::vector<int64_t> rows(n());
  for (int64_t i = 0; i < n(); ++i) rows[i] = i;
  auto head = engine->Forward(*paged_b, absl::MakeConstSpan(prompt_).subspan(0, 3), absl::MakeConstSpan(rows).subspan(0, 3));
  ASSERT_TRUE(head.ok()) << head.status();
  const std::vector<Engine::BatchItem> items = {
      {.sequence = &*paged_a, .ids = prompt_, .logit_rows = rows},
      {.sequence = &*contiguous, .ids = prompt_, .logit_rows = rows},
      {.sequence = &*paged_b, .ids = absl::MakeConstSpan(prompt_).subspan(3), .logit_rows = absl::MakeConstSpan(rows).subspan(0, n() - 3)}};
  auto logits = engine->ForwardBatch(items);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LE(testing::RelativeL2((*logits)[0], reference), kSameResult);
  EXPECT_LE(testing::RelativeL2((*logits)[1], reference), kSameResult);
  std::vector<float> b = *head;
  b.insert(b.end(), (*logits)[2].begin(), (*logits)[2].end());
  EXPECT_LE(testing::RelativeL2(b, reference), kSameResult);
}

TEST_P(PagedKvTest, BatchedDecodeOfPagedSequencesGivesEachOnesLogits) {
  constexpr int kSteps = 4;
  auto engine = MakeEngine(64 + 4 * n(), /*block_tokens=*/2);
  // Three sequences of different lengths (so the batch mixes positions and table widths) and one more
  // that prefills in the same steps (after the decodes, as the worker orders them).
  const std::vector<int64_t> lengths = {n(), n() - 3, n() - 6};
  // Alone: each sequence's decode logits.
  std::vector<std::vector<float>> alone(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    auto sequence = engine->NewSequence(lengths[i] + kSteps);
    ASSERT_TRUE(sequence.ok());
    const int64_t last = lengths[i] - 1;
    auto logits = engine->Forward(*sequence, absl::MakeConstSpan(prompt_).subspan(0, lengths[i]), {&last, 1});
    ASSERT_TRUE(logits.ok()) << logits.status();
    const int64_t zero = 0;
    for (int step = 0; step < kSteps; ++step) {
      const int32_t token = Greedy(*logits);
      logits = engine->Forward(*sequence, {&token, 1}, {&zero, 1});
      ASSERT_TRUE(logits.ok()) << logits.status();
      alone[i].insert(alone[i].end(), logits->begin(), logits->end());
    }
  }
  // Together.
  std::vector<Sequence> sequences;
  std::vector<int32_t> tokens;
  ASSERT_NO_FATAL_FAILURE(StartSequences(*engine, lengths, kSteps, sequences, tokens));
  auto prefilling = engine->NewSequence(n());
  ASSERT_TRUE(prefilling.ok());
  std::vector<std::vector<float>> together(lengths.size());
  const int64_t zero = 0;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<Engine::BatchItem> items;
    for (size_t i = 0; i < sequences.size(); ++i) {
      items.push_back({.sequence = &sequences[i], .ids = {&tokens[i], 1}, .logit_rows = {&zero, 1}});
    }
    items.push_back({.sequence = &*prefilling, .ids = absl::MakeConstSpan(prompt_).subspan(step * 2, 2)});
    auto logits = engine->ForwardBatch(items);
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (size_t i = 0; i < sequences.size(); ++i) {
      together[i].insert(together[i].end(), (*logits)[i].begin(), (*logits)[i].end());
      tokens[i] = Greedy((*logits)[i]);
    }
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    EXPECT_LE(testing::RelativeL2(together[i], alone[i]), kSameResult) << "sequence " << i;
  }
}

// Steps where every sequence decodes are recorded and replayed as CUDA graphs (their positions, slots and
// block tables staged for the graph): the same logits as running each kernel as it comes, including when
// the batch changes (a new graph) and across steps that replay one.
TEST_P(PagedKvTest, AllDecodeBatchesReplayedAsGraphsGiveTheEagerLogits) {
  constexpr int kSteps = 6;
  const std::vector<int64_t> lengths = {n(), n() - 3, n() - 6};
  std::vector<std::vector<float>> logits_of[2];
  for (DecodeGraphs graphs : {DecodeGraphs::kCapture, DecodeGraphs::kOff}) {
    auto engine = MakeEngine(64 + 4 * n(), /*block_tokens=*/2, 1024, graphs);
    std::vector<Sequence> sequences;
    std::vector<int32_t> tokens;
    ASSERT_NO_FATAL_FAILURE(StartSequences(*engine, lengths, kSteps, sequences, tokens));
    std::vector<std::vector<float>>& out = logits_of[graphs == DecodeGraphs::kCapture ? 0 : 1];
    out.resize(lengths.size());
    const int64_t zero = 0;
    for (int step = 0; step < kSteps; ++step) {
      // The last sequence leaves after three steps: the batch, and so the graph, changes.
      const size_t batch = step < 3 ? sequences.size() : sequences.size() - 1;
      std::vector<Engine::BatchItem> items;
      for (size_t i = 0; i < batch; ++i) {
        items.push_back({.sequence = &sequences[i], .ids = {&tokens[i], 1}, .logit_rows = {&zero, 1}});
      }
      auto logits = engine->ForwardBatch(items);
      ASSERT_TRUE(logits.ok()) << logits.status();
      for (size_t i = 0; i < batch; ++i) {
        out[i].insert(out[i].end(), (*logits)[i].begin(), (*logits)[i].end());
        tokens[i] = Greedy((*logits)[i]);
      }
    }
    // On CUDA every one of those steps ran as a graph (with kCapture), none without; an executable graph
    // is made at most once per batch shape, then replayed or updated in place.
    if (const std::optional<DecodeGraphStats> stats = DecodeGraphStatsOf(engine->backend())) {
      const int64_t graphed = stats->replayed + stats->updated + stats->instantiated;
      EXPECT_EQ(graphed, graphs == DecodeGraphs::kCapture ? kSteps : 0);
      EXPECT_LE(stats->instantiated, 2);
      std::printf("[graphs] replayed %lld, updated %lld, instantiated %lld\n", static_cast<long long>(stats->replayed),
                  static_cast<long long>(stats->updated), static_cast<long long>(stats->instantiated));
    }
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    ASSERT_EQ(logits_of[0][i].size(), logits_of[1][i].size());
    ASSERT_EQ(logits_of[0][i].size(), static_cast<size_t>((i + 1 < lengths.size() ? kSteps : 3) * vocab()));
    EXPECT_LE(testing::RelativeL2(logits_of[0][i], logits_of[1][i]), kSameResult) << "sequence " << i;
  }
}

TEST_P(PagedKvTest, AnAttachedPrefixIsSharedNotCopiedAndGivesTheRecomputedLogits) {
  constexpr int64_t kBlockTokens = 4;
  const std::vector<float> reference = Reference(0);
  auto engine = MakeEngine(64 + 2 * n(), kBlockTokens);
  KvPool& pool = *engine->pool();
  auto first = engine->NewSequence(n());
  ASSERT_TRUE(first.ok());
  ASSERT_FALSE(Run(*engine, *first, n(), 0).empty());
  const int64_t shared_blocks = (n() - 1) / kBlockTokens;
  const std::vector<int32_t> prefix(first->blocks().begin(), first->blocks().begin() + shared_blocks);
  const int64_t free_before = pool.free_blocks();
  auto second = engine->NewSequence(n(), prefix);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->length(), shared_blocks * kBlockTokens);
  // Only the blocks past the prefix are new; the prefix's are the first sequence's, referenced twice.
  EXPECT_EQ(free_before - pool.free_blocks(), (n() + kBlockTokens - 1) / kBlockTokens - shared_blocks);
  for (int32_t block : prefix) EXPECT_EQ(pool.refs(block), 2);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), second->blocks().begin()));
  const std::vector<float> rest = Run(*engine, *second, n(), 0);  // the rows past the prefix
  ASSERT_EQ(static_cast<int64_t>(rest.size()), (n() - shared_blocks * kBlockTokens) * vocab());
  const std::vector<float> tail(reference.end() - static_cast<ptrdiff_t>(rest.size()), reference.end());
  EXPECT_LE(testing::RelativeL2(rest, tail), kSameResult);
  // The first sequence goes: the shared blocks stay with the second; then everything comes back.
  first = absl::InternalError("released");
  for (int32_t block : prefix) EXPECT_EQ(pool.refs(block), 1);
  second = absl::InternalError("released");
  EXPECT_EQ(pool.free_blocks(), pool.num_blocks());
}

TEST_P(PagedKvTest, ExportedBlocksImportIntoAnotherEngineAndGiveTheRecomputedLogits) {
  constexpr int64_t kBlockTokens = 4;
  const std::vector<float> reference = Reference(0);
  auto source = MakeEngine(64 + n(), kBlockTokens);
  auto sequence = source->NewSequence(n());
  ASSERT_TRUE(sequence.ok());
  ASSERT_FALSE(Run(*source, *sequence, n(), 0).empty());
  const int64_t blocks = (n() - 1) / kBlockTokens;
  const int64_t payload_bytes = source->KvPayloadBytes(kBlockTokens);
  std::vector<std::vector<std::byte>> payloads(blocks, std::vector<std::byte>(payload_bytes, std::byte{0xff}));
  std::vector<std::byte*> out;
  for (auto& p : payloads) out.push_back(p.data());
  ASSERT_TRUE(source->ExportBlocks(*sequence, 0, out).ok());

  // Into a paged sequence and into a contiguous one (the payload layout is the same), and recompute the rest.
  for (bool paged : {true, false}) {
    auto target = paged ? MakeEngine(64 + n(), kBlockTokens) : MakeEngine(0, kBlockTokens);
    auto imported = target->NewSequence(n());
    ASSERT_TRUE(imported.ok());
    ASSERT_EQ(imported->paged(), paged);
    std::vector<const std::byte*> in;
    for (const auto& p : payloads) in.push_back(p.data());
    ASSERT_TRUE(target->ImportBlocks(*imported, in).ok());
    EXPECT_EQ(imported->length(), blocks * kBlockTokens);
    const std::vector<float> rest = Run(*target, *imported, n(), 0);
    const std::vector<float> tail(reference.end() - static_cast<ptrdiff_t>(rest.size()), reference.end());
    EXPECT_LE(testing::RelativeL2(rest, tail), kSameResult) << (paged ? "paged" : "contiguous");
    // And back out: the same bytes.
    std::vector<std::byte> again(payload_bytes);
    std::byte* again_ptr = again.data();
    ASSERT_TRUE(target->ExportBlocks(*imported, blocks - 1, {&again_ptr, 1}).ok());
    EXPECT_EQ(again, payloads.back());
  }
}

// Payloads in page-locked memory (Engine::AllocateHostBytes: DMA straight to and from the pool, one copy
// per run of adjacent blocks whose slots are evenly spaced: adjacent, or a pitch apart as the worker's payload
// slots with their MAC trailers) and in pageable memory (staged) carry the same bytes, mixed in one call.
TEST_P(PagedKvTest, PageLockedAndPageablePayloadsCarryTheSameBytes) {
  constexpr int64_t kBlockTokens = 4;
  auto source = MakeEngine(64 + n(), kBlockTokens);
  auto sequence = source->NewSequence(n());
  ASSERT_TRUE(sequence.ok());
  ASSERT_FALSE(Run(*source, *sequence, n(), 0).empty());
  const int64_t blocks = (n() - 1) / kBlockTokens;
  ASSERT_GE(blocks, 4);
  const int64_t payload_bytes = source->KvPayloadBytes(kBlockTokens);
  std::vector<std::vector<std::byte>> pageable(blocks, std::vector<std::byte>(payload_bytes, std::byte{0xff}));
  std::vector<std::byte*> pageable_out;
  for (auto& p : pageable) pageable_out.push_back(p.data());
  ASSERT_TRUE(source->ExportBlocks(*sequence, 0, pageable_out).ok());
  const std::vector<std::byte> block3(pageable[3]);

  for (const int64_t pitch : {payload_bytes, payload_bytes + 64}) {
    SCOPED_TRACE("slots " + std::to_string(pitch) + " bytes apart");
    auto region = source->AllocateHostBytes(blocks * pitch);
    ASSERT_TRUE(region.ok()) << region.status();
    std::fill(region->get(), region->get() + blocks * pitch, std::byte{0xee});
    // Blocks 0..2 in consecutive slots (one run), then the others in reverse order (a run each); block 3
    // pageable.
    std::vector<std::byte> pageable3(payload_bytes, std::byte{0});
    std::vector<std::byte*> mixed(blocks);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t slot = b < 3 ? b : blocks - 1 - (b - 3);
      mixed[b] = b == 3 ? pageable3.data() : region->get() + slot * pitch;
    }
    ASSERT_TRUE(source->ExportBlocks(*sequence, 0, mixed).ok());
    for (int64_t b = 0; b < blocks; ++b) {
      const std::vector<std::byte> got(mixed[b], mixed[b] + payload_bytes);
      EXPECT_EQ(got, b == 3 ? block3 : pageable[b]) << "block " << b;
    }
    // What lies between slots is untouched.
    if (pitch > payload_bytes) {
      EXPECT_EQ(region->get()[payload_bytes], std::byte{0xee});
    }

    // Back in from the same mix, into another engine's pool, and out again as pageable bytes.
    auto target = MakeEngine(64 + n(), kBlockTokens);
    auto imported = target->NewSequence(n());
    ASSERT_TRUE(imported.ok());
    std::vector<const std::byte*> in(mixed.begin(), mixed.end());
    ASSERT_TRUE(target->ImportBlocks(*imported, in).ok());
    std::vector<std::vector<std::byte>> again(blocks, std::vector<std::byte>(payload_bytes, std::byte{0}));
    std::vector<std::byte*> again_out;
    for (auto& p : again) again_out.push_back(p.data());
    ASSERT_TRUE(target->ExportBlocks(*imported, 0, again_out).ok());
    for (int64_t b = 0; b < blocks; ++b) EXPECT_EQ(again[b], b == 3 ? block3 : pageable[b]) << "block " << b;
  }
}

TEST_P(PagedKvTest, AFullPoolAsksItsReclaimerThenSaysResourceExhausted) {
  constexpr int64_t kBlockTokens = 4;
  auto engine = MakeEngine(8, kBlockTokens);
  KvPool& pool = *engine->pool();
  auto held = engine->NewSequence(6 * kBlockTokens);
  ASSERT_TRUE(held.ok());
  // Two blocks held by someone else (a cache), given back when the reclaimer is asked.
  auto cached = pool.Allocate(2);
  ASSERT_TRUE(cached.ok());
  int64_t asked = 0;
  pool.SetReclaimer([&](int64_t needed) {
    asked = needed;
    pool.Unref(*cached);
  });
  auto fits = engine->NewSequence(2 * kBlockTokens);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(asked, 2);
  pool.SetReclaimer(nullptr);
  auto refused = engine->NewSequence(kBlockTokens);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(std::string(refused.status().message()).find("blocks"), std::string::npos);
  EXPECT_EQ(pool.free_blocks(), 0);
}

TEST_P(PagedKvTest, TheReclaimerCannotDropThePrefixBeingAttached) {
  constexpr int64_t kBlockTokens = 4;
  auto engine = MakeEngine(8, kBlockTokens);
  KvPool& pool = *engine->pool();
  // A cache holds six blocks: a four-block prefix and two others; two are free.
  auto cached = pool.Allocate(6);
  ASSERT_TRUE(cached.ok());
  const std::vector<int32_t> prefix(cached->begin(), cached->begin() + 4);
  pool.SetReclaimer([&](int64_t) { pool.Unref(*cached); });  // drops everything it holds
  // Seven blocks with the prefix: three new ones, one more than is free.
  auto sequence = engine->NewSequence(7 * kBlockTokens, prefix);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  pool.SetReclaimer(nullptr);
  for (int32_t block : prefix) EXPECT_EQ(pool.refs(block), 1) << "the sequence's own reference";
  std::vector<int32_t> blocks(sequence->blocks().begin(), sequence->blocks().end());
  std::sort(blocks.begin(), blocks.end());
  EXPECT_EQ(std::unique(blocks.begin(), blocks.end()), blocks.end()) << "a block handed out twice";
}

INSTANTIATE_TEST_SUITE_P(TinyModels, PagedKvTest, testing::BackendsAndTinyModels(), testing::SuiteParamName);

}  // namespace
}  // namespace strata::engine
