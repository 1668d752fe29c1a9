// CPU backend ops against naive references on fresh random inputs, outputs poisoned first.
#include "worker/engine/cpu_backend.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"
#include "model/safetensors.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

class CpuBackendTest : public ::testing::Test {
 protected:
  Tensor Random(int64_t rows, int64_t cols) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(rows * cols);
    for (float& v : values) v = normal(random_);
    auto t = backend_->Upload(values, rows, cols);
    STRATA_CHECK(t.ok());
    return *t;
  }
  Tensor Poisoned(int64_t rows, int64_t cols) {
    auto t = backend_->Allocate(DType::kF32, rows, cols);
    STRATA_CHECK(t.ok());
    std::fill(t->data<float>(), t->data<float>() + t->elements(), std::numeric_limits<float>::quiet_NaN());
    return *t;
  }

  std::unique_ptr<Backend> backend_ = CreateCpuBackend();
  std::mt19937 random_{1234};
};

TEST_F(CpuBackendTest, LinearWithBiasMatchesNaiveProduct) {
  const Tensor x = Random(5, 7), w = Random(3, 7), b = Random(1, 3);
  Tensor out = Poisoned(5, 3);
  ASSERT_TRUE(backend_->Linear(x, w, b, out).ok());
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 3; ++j) {
      double expected = b.data<float>()[j];
      for (int k = 0; k < 7; ++k) expected += double{x.data<float>()[i * 7 + k]} * w.data<float>()[j * 7 + k];
      EXPECT_NEAR(out.data<float>()[i * 3 + j], expected, 1e-4);
    }
  }
}

TEST_F(CpuBackendTest, RmsNormMatchesDefinition) {
  const Tensor x = Random(4, 10), w = Random(1, 10);
  Tensor out = Poisoned(4, 10);
  ASSERT_TRUE(backend_->RmsNorm(x, w, 1e-5f, out).ok());
  for (int i = 0; i < 4; ++i) {
    double mean_square = 0;
    for (int k = 0; k < 10; ++k) mean_square += std::pow(x.data<float>()[i * 10 + k], 2) / 10;
    for (int k = 0; k < 10; ++k) {
      EXPECT_NEAR(out.data<float>()[i * 10 + k],
                  w.data<float>()[k] * x.data<float>()[i * 10 + k] / std::sqrt(mean_square + 1e-5), 1e-5);
    }
  }
}

TEST_F(CpuBackendTest, RopeRotatesPairsHalfAHeadApartInQAndK) {
  const int64_t head_dim = 8, rows = 3;
  Tensor q = Random(rows, 4 * head_dim), k = Random(rows, 2 * head_dim);  // GQA: k has fewer heads
  const std::vector<float> q_before(q.data<float>(), q.data<float>() + q.elements());
  const std::vector<float> k_before(k.data<float>(), k.data<float>() + k.elements());
  const std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  auto freq = backend_->Upload(inv_freq, 1, 4);
  ASSERT_TRUE(freq.ok());
  ASSERT_TRUE(backend_->Rope(*freq, 5, q, k).ok());
  for (auto [rotated, before] : {std::pair{&q, &q_before}, std::pair{&k, &k_before}}) {
    const int64_t width = rotated->cols();
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t h = 0; h < width / head_dim; ++h) {
        for (int64_t i = 0; i < 4; ++i) {
          const double angle = (5 + row) * double{inv_freq[i]};
          const int64_t at = row * width + h * head_dim + i;
          const float a = (*before)[at], b = (*before)[at + 4];
          EXPECT_NEAR(rotated->data<float>()[at], a * std::cos(angle) - b * std::sin(angle), 1e-5);
          EXPECT_NEAR(rotated->data<float>()[at + 4], b * std::cos(angle) + a * std::sin(angle), 1e-5);
        }
      }
    }
  }
  Tensor short_k = Random(rows - 1, 2 * head_dim);
  EXPECT_THAT(backend_->Rope(*freq, 0, q, short_k).message(), HasSubstr("are not rows of heads of width 8"));
}

// Naive grouped-query attention over explicit K/V rows [tokens, kv_heads * head_dim].
std::vector<float> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                  int64_t n, int64_t first, const AttentionParams& p) {
  std::vector<float> out(n * p.num_heads * p.head_dim, 0.0f);
  const int64_t kv_width = p.num_kv_heads * p.head_dim;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = first + i;
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const int64_t g = h / (p.num_heads / p.num_kv_heads);
      std::vector<double> s;
      const int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
      for (int64_t j = lo; j <= pos; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < p.head_dim; ++d) {
          dot += double{q[(i * p.num_heads + h) * p.head_dim + d]} * k[j * kv_width + g * p.head_dim + d];
        }
        s.push_back(dot * p.scale);
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double total = 0;
      for (double& x : s) total += (x = std::exp(x - mx));
      for (int64_t j = lo; j <= pos; ++j) {
        for (int64_t d = 0; d < p.head_dim; ++d) {
          out[(i * p.num_heads + h) * p.head_dim + d] +=
              static_cast<float>(s[j - lo] / total * v[j * kv_width + g * p.head_dim + d]);
        }
      }
    }
  }
  return out;
}

struct AttentionCase {
  int64_t heads, kv_heads, head_dim, cached, n, window;
};

class AttentionTest : public CpuBackendTest, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(AttentionTest, MatchesNaiveAttention) {
  const AttentionCase c = GetParam();
  const int64_t total = c.cached + c.n, kv_width = c.kv_heads * c.head_dim;
  const Tensor k = Random(total, kv_width), v = Random(total, kv_width), q = Random(c.n, c.heads * c.head_dim);
  KvLayer layer{.k = Poisoned(c.kv_heads * (total + 3), c.head_dim),
                .v = Poisoned(c.kv_heads * (total + 3), c.head_dim),
                .num_kv_heads = c.kv_heads,
                .capacity_tokens = total + 3};
  ASSERT_TRUE(backend_->WriteKv(k.Rows(0, c.cached), v.Rows(0, c.cached), 0, layer).ok());
  ASSERT_TRUE(backend_->WriteKv(k.Rows(c.cached, c.n), v.Rows(c.cached, c.n), c.cached, layer).ok());
  const AttentionParams params{.num_heads = c.heads,
                               .num_kv_heads = c.kv_heads,
                               .head_dim = c.head_dim,
                               .scale = 1.0f / std::sqrt(float(c.head_dim)),
                               .first_position = c.cached,
                               .window = c.window};
  Tensor out = Poisoned(c.n, c.heads * c.head_dim);
  ASSERT_TRUE(backend_->Attention(q, layer, params, out).ok());
  const std::vector<float> expected =
      NaiveAttention(std::vector<float>(q.data<float>(), q.data<float>() + q.elements()),
                     std::vector<float>(k.data<float>(), k.data<float>() + k.elements()),
                     std::vector<float>(v.data<float>(), v.data<float>() + v.elements()), c.n, c.cached, params);
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_NEAR(out.data<float>()[i], expected[i], 1e-4) << "at " << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttentionCase{4, 4, 16, 0, 9, 0},    // MHA, prefill from 0
                                           AttentionCase{8, 2, 16, 5, 13, 0},   // GQA 4, after a cached prefix
                                           AttentionCase{8, 1, 64, 0, 1, 0},    // GQA 8, one token
                                           AttentionCase{4, 2, 8, 20, 7, 6},    // sliding window
                                           AttentionCase{4, 2, 8, 0, 30, 1}));  // window of one: itself only

TEST_F(CpuBackendTest, AlignedF32WeightsAreUsedInPlaceAndHalfWeightsConverted) {
  auto file = model::SafetensorsFile::Open(testing::TestDataDir() / "models/llama3-tiny/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const model::TensorInfo* info = file->Find("model.layers.0.mlp.up_proj.weight");
  ASSERT_NE(info, nullptr);
  ASSERT_EQ(reinterpret_cast<uintptr_t>(info->bytes.data()) % alignof(float), 0u);
  auto weight = backend_->LoadWeight(*info, 160, 64);
  ASSERT_TRUE(weight.ok()) << weight.status();
  EXPECT_EQ(weight->data(), static_cast<const void*>(info->bytes.data()));  // no copy

  // The same values as BF16, at an odd address: converted into memory of the backend's own.
  std::vector<float> values(info->num_elements());
  ConvertToF32(DType::kF32, info->bytes.data(), absl::MakeSpan(values));
  std::string bf16(1, ' ');  // one byte of padding puts the data at an odd address
  bf16 += testing::EncodeTensorBytes(DType::kBF16, values);
  model::TensorInfo half = *info;
  half.dtype = DType::kBF16;
  half.bytes = absl::MakeConstSpan(reinterpret_cast<const std::byte*>(bf16.data()) + 1, bf16.size() - 1);
  auto converted = backend_->LoadWeight(half, 160, 64);
  ASSERT_TRUE(converted.ok()) << converted.status();
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(converted->data<float>()[i], Bf16ToF32(F32ToBf16(values[i]))) << i;
  }
  EXPECT_THAT(backend_->LoadWeight(*info, 64, 64).status().message(), HasSubstr("has 10240 elements"));
}

TEST_F(CpuBackendTest, EmbedRejectsIdsOutsideTheVocabulary) {
  const Tensor table = Random(10, 4);
  Tensor out = Poisoned(2, 4);
  const std::vector<int32_t> ids = {3, 10};
  EXPECT_THAT(backend_->Embed(table, ids, out).message(),
              HasSubstr("token id 10 at index 1 is outside the vocabulary"));
}

TEST_F(CpuBackendTest, WriteKvRejectsPositionsPastCapacity) {
  KvLayer layer{.k = Poisoned(2 * 4, 8), .v = Poisoned(2 * 4, 8), .num_kv_heads = 2, .capacity_tokens = 4};
  const Tensor k = Random(3, 16), v = Random(3, 16);
  EXPECT_EQ(backend_->WriteKv(k, v, 2, layer).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(CpuBackendTest, LinearRejectsMismatchedShapes) {
  const Tensor x = Random(2, 5), w = Random(3, 4);
  Tensor out = Poisoned(2, 3);
  EXPECT_THAT(backend_->Linear(x, w, Tensor(), out).message(), HasSubstr("Linear weight"));
}

}  // namespace
}  // namespace strata::engine
