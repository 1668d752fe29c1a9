// One-line structured logs on stderr: `2026-11-23T14:55:01.123Z W event=lease_expired client=7 blocks=3`.
//
// Log where an error is handled, not at every layer it passes; nothing per block on a hot path. Each
// line is written with one write(2), so lines from concurrent threads never interleave. Thread-safe.
#ifndef STRATA_COMMON_LOG_H_
#define STRATA_COMMON_LOG_H_

#include <string_view>

namespace strata {

enum class LogLevel : char { kInfo = 'I', kWarning = 'W', kError = 'E' };

// `line` is `key=value` fields, starting with `event=<stable token>` (or `error=<stable token>`).
void Log(LogLevel level, std::string_view line);
inline void LogInfo(std::string_view line) { Log(LogLevel::kInfo, line); }
inline void LogWarning(std::string_view line) { Log(LogLevel::kWarning, line); }
inline void LogError(std::string_view line) { Log(LogLevel::kError, line); }

}  // namespace strata

#endif  // STRATA_COMMON_LOG_H_
