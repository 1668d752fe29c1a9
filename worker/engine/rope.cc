#include "worker/engine/rope.h"

#include <cmath>
#include <numbers>

namespace strata::engine {

std::vector<float> RopeInverseFrequencies(const model::RopeConfig& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type != model::RopeType::kLlama3) return inv_freq;

  // Llama 3.1's scaling: long wavelengths are slowed by `factor`, short ones kept, and the band in
  // between interpolated (transformers' `_compute_llama3_parameters`).
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  for (float& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f = static_cast<float>(f / rope.factor);
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth =
          (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / rope.factor + smooth * f);
    }
  }
  return inv_freq;
}

}  // namespace strata::engine
