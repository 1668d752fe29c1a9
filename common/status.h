// Error-handling macros shared by every Strata library.
//
// Debian's abseil (20220623) has neither ABSL_RETURN_IF_ERROR nor absl/log, so they are defined here,
// once. Fallible calls return absl::Status / absl::StatusOr<T>; broken invariants (bugs) crash through
// STRATA_CHECK.
#ifndef STRATA_COMMON_STATUS_H_
#define STRATA_COMMON_STATUS_H_

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define STRATA_INTERNAL_CONCAT_(a, b) a##b
#define STRATA_INTERNAL_CONCAT(a, b) STRATA_INTERNAL_CONCAT_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define STRATA_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status strata_status_ = (expr);          \
    if (!strata_status_.ok()) return strata_status_; \
  } while (false)

// `lhs` = value of `expr` (an absl::StatusOr<T>), or returns its error from the enclosing function.
// `lhs` may declare a variable: STRATA_ASSIGN_OR_RETURN(auto file, Open(path));
#define STRATA_ASSIGN_OR_RETURN(lhs, expr) \
  STRATA_INTERNAL_ASSIGN_OR_RETURN(STRATA_INTERNAL_CONCAT(strata_statusor_, __LINE__), lhs, expr)
#define STRATA_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp.ok()) return std::move(tmp).status();         \
  lhs = std::move(tmp).value()

// Crashes with the failed condition and its location when `cond` is false. For invariants whose
// violation is a bug in Strata; never for bad input or a failing environment (those return Status).
#define STRATA_CHECK(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: STRATA_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (false)

#endif  // STRATA_COMMON_STATUS_H_
