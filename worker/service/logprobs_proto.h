// The engine's logprobs (worker/engine/logprobs.h) as proto::PositionLogprobs, for Generate's stream.
#ifndef STRATA_WORKER_SERVICE_LOGPROBS_PROTO_H_
#define STRATA_WORKER_SERVICE_LOGPROBS_PROTO_H_

#include "proto/worker.pb.h"
#include "worker/engine/logprobs.h"

namespace strata::worker {

inline void ToProto(const engine::PositionLogprobs& from, proto::PositionLogprobs& to) {
  to.set_logprob(from.logprob);
  for (const engine::TokenLogprob& top : from.top) {
    proto::TokenLogprob* t = to.add_top();
    t->set_token_id(top.token);
    t->set_logprob(top.logprob);
  }
}

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_LOGPROBS_PROTO_H_
