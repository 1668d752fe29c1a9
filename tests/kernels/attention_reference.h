// The attention tests' problems and their float64 CPU reference: random q/k/v rounded to the kernel's
// dtype (so the reference sees the exact inputs) and causal, windowed GQA attention with its LSE.
#ifndef STRATA_TESTS_KERNELS_ATTENTION_REFERENCE_H_
#define STRATA_TESTS_KERNELS_ATTENTION_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "tests/kernels/device_test_util.h"

namespace strata::kernels::testing {

struct Shape {
  int64_t rows, num_heads, num_kv_heads, head_dim, first_position, capacity, window;
};

// Host data of one problem: q [rows][heads*hd], k/v [kv_heads][capacity][hd].
struct Problem {
  Shape s;
  std::vector<float> q, k, v;
};

inline Problem MakeProblem(const Shape& s, DType dtype, std::mt19937& rng) {
  Problem p{s, RandomFloats(s.rows * s.num_heads * s.head_dim, rng),
            RandomFloats(s.num_kv_heads * s.capacity * s.head_dim, rng),
            RandomFloats(s.num_kv_heads * s.capacity * s.head_dim, rng)};
  RoundTo(dtype, p.q);
  RoundTo(dtype, p.k);
  RoundTo(dtype, p.v);
  return p;
}

// out [rows][heads*hd] and lse [heads][rows] over keys [kv_begin, kv_end), float64.
inline void Reference(const Problem& p, int64_t kv_begin, int64_t kv_end, float scale, std::vector<float>& out,
                      std::vector<float>& lse) {
  const Shape& s = p.s;
  out.assign(s.rows * s.num_heads * s.head_dim, 0.0f);
  lse.assign(s.num_heads * s.rows, -INFINITY);
  const int64_t group = s.num_heads / s.num_kv_heads;
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t position = s.first_position + r;
    for (int64_t h = 0; h < s.num_heads; ++h) {
      const float* q = &p.q[(r * s.num_heads + h) * s.head_dim];
      const int64_t kvh = h / group;
      std::vector<double> scores;
      std::vector<int64_t> keys;
      for (int64_t j = kv_begin; j < kv_end && j <= position; ++j) {
        if (s.window > 0 && j <= position - s.window) continue;
        const float* k = &p.k[(kvh * s.capacity + j) * s.head_dim];
        double dot = 0;
        for (int64_t d = 0; d < s.head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
        scores.push_back(dot * scale);
        keys.push_back(j);
      }
      if (keys.empty()) continue;
      double m = -INFINITY;
      for (double x : scores) m = std::max(m, x);
      double sum = 0;
      for (double& x : scores) sum += (x = std::exp(x - m));
      for (int64_t d = 0; d < s.head_dim; ++d) {
        double acc = 0;
        for (size_t i = 0; i < keys.size(); ++i) acc += scores[i] * p.v[(kvh * s.capacity + keys[i]) * s.head_dim + d];
        out[(r * s.num_heads + h) * s.head_dim + d] = static_cast<float>(acc / sum);
      }
      lse[h * s.rows + r] = static_cast<float>(m + std::log(sum));
    }
  }
}

}  // namespace strata::kernels::testing

#endif  // STRATA_TESTS_KERNELS_ATTENTION_REFERENCE_H_
