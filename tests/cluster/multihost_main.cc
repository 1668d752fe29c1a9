// main of the multi-host suites: the process leaves the machine's network namespace before anything else
// runs (tests/testing/netns_hosts.h), so that its hosts' bridge and routes are its own. Where it cannot
// (not root, no `ip`), the suites skip, saying why.
#include <iostream>

#include "gtest/gtest.h"
#include "tests/testing/netns_hosts.h"

int main(int argc, char** argv) {
  if (const absl::Status status = strata::testing::EnterPrivateNetwork(); !status.ok()) {
    std::cerr << "multi-host tests will skip: cannot enter a private network namespace: " << status << "\n";
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
