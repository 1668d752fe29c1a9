// What the front door's loopback tests share: a scheduler's options for loopback, the `data:` payloads of a
// server-sent-event body, a number out of a daemon's log line, and waiting for workers to register.
#ifndef STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_
#define STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_

#include <chrono>
#include <string>
#include <vector>

#include "scheduler/options.h"

namespace strata::frontdoor::testing {

// gRPC and metrics on free loopback ports; a lease (120 s) and heartbeat (30 s) that never lapse in a test.
scheduler::Options LoopbackSchedulerOptions();

// The `data:` payloads of a server-sent-event body, in order.
std::vector<std::string> SseData(const std::string& body);

// The integer after the first `key` in `text` (a log line's `grpc_port=` field); -1 when `key` is absent.
int FieldAfter(const std::string& text, const std::string& key);

// Polls the front door on 127.0.0.1:http_port until /v1/models lists `workers` workers for its model, up to
// `timeout`; returns whether it did.
bool WaitForWorkers(int http_port, int workers, std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace strata::frontdoor::testing

#endif  // STRATA_TESTS_SCHEDULER_FRONTDOOR_FRONTDOOR_TESTING_H_
