// RoPE inverse frequencies, as transformers computes them (`default` and `llama3` rope types).
#ifndef STRATA_WORKER_ENGINE_ROPE_H_
#define STRATA_WORKER_ENGINE_ROPE_H_

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace strata::engine {

// head_dim / 2 inverse frequencies in float32: theta^(-2i/head_dim), with the llama3 rope type's
// wavelength-dependent scaling applied on top. The backend's Rope op turns position · inv_freq into
// the rotation angle.
std::vector<float> RopeInverseFrequencies(const model::RopeConfig& rope, int64_t head_dim);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_ROPE_H_
