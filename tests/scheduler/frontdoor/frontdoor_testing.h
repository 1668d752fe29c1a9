// What the front door's loopback tests share: a scheduler's options for loopback, and the `data:` payloads
// of a server-sent-event body.
#ifndef STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_
#define STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_

#include <string>
#include <vector>

#include "scheduler/options.h"

namespace strata::frontdoor::testing {

// gRPC and metrics on free loopback ports; a lease (120 s) and heartbeat (30 s) that never lapse in a test.
scheduler::Options LoopbackSchedulerOptions();

// The `data:` payloads of a server-sent-event body, in order.
std::vector<std::string> SseData(const std::string& body);

}  // namespace strata::frontdoor::testing

#endif  // STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_
