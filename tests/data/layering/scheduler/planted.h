// A planted violation for include_layering_detects_a_violation: scheduler/ including a worker header.
#ifndef STRATA_TESTS_DATA_LAYERING_PLANTED_H_
#define STRATA_TESTS_DATA_LAYERING_PLANTED_H_
  #  include <worker/engine/engine.h>
#endif
