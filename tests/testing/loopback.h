// Loopback ports for tests that start daemons on ports known in advance (restarted on the same port,
// or behind a proxy), and the HTTP health check they wait on.
#ifndef STRATA_TESTS_TESTING_LOOPBACK_H_
#define STRATA_TESTS_TESTING_LOOPBACK_H_

#include <string>

namespace strata::testing {

// A port nothing listens on now on 127.0.0.1; 0 if none could be bound. Another process may take it before
// the caller binds it: good enough for tests, not for daemons. Chosen below Linux's ephemeral range
// (32768+), so no outgoing connection is ever given it: a daemon killed and restarted on it gets it back
// (a client reconnecting to an ephemeral-range port can be handed that very port, a TCP self-connect).
int FreePort();

// GET `host`:`port`/healthz answers 200 (within a 1 s connect and 2 s read timeout).
bool Healthy(const std::string& host, int port);
inline bool Healthy(int port) { return Healthy("127.0.0.1", port); }

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_LOOPBACK_H_
