// The engine's sampling options for a request's proto::SamplingParams. A 0 top_p or repetition_penalty means
// "off" (1), as callers that predate them send. Not checked: engine::ValidateSamplingOptions says whether the
// values are in range.
#ifndef STRATA_WORKER_SERVICE_SAMPLING_PARAMS_H_
#define STRATA_WORKER_SERVICE_SAMPLING_PARAMS_H_

#include "proto/worker.pb.h"
#include "worker/engine/sampler.h"

namespace strata::worker {

inline engine::SamplingOptions SamplingOptionsOf(const proto::SamplingParams& s) {
  engine::SamplingOptions out;
  out.temperature = s.temperature();
  out.top_k = s.top_k();
  out.top_p = s.top_p() == 0.0f ? 1.0f : s.top_p();
  out.seed = s.seed();
  out.min_p = s.min_p();
  out.presence_penalty = s.presence_penalty();
  out.frequency_penalty = s.frequency_penalty();
  out.repetition_penalty = s.repetition_penalty() == 0.0f ? 1.0f : s.repetition_penalty();
  return out;
}

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_SAMPLING_PARAMS_H_
