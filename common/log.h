// One-line structured logs on stderr: `2026-11-23T14:55:01.123Z W event=lease_expired client=7 blocks=3`.
//
// Log where an error is handled, not at every layer it passes; nothing per block on a hot path. Each
// line is written with one write(2), so lines from concurrent threads never interleave. Thread-safe.
#ifndef STRATA_COMMON_LOG_H_
#define STRATA_COMMON_LOG_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string_view>

namespace strata {

enum class LogLevel : char { kInfo = 'I', kWarning = 'W', kError = 'E' };

// `line` is `key=value` fields, starting with `event=<stable token>` (or `error=<stable token>`).
void Log(LogLevel level, std::string_view line);
inline void LogInfo(std::string_view line) { Log(LogLevel::kInfo, line); }
inline void LogWarning(std::string_view line) { Log(LogLevel::kWarning, line); }
inline void LogError(std::string_view line) { Log(LogLevel::kError, line); }

// For an event that can repeat per block (a failing disk, a full arena): at most one line a second.
//   if (uint64_t held_back; throttle.Allow(&held_back)) LogError(StrCat("error=x held_back=", held_back, ...));
class LogThrottle {
 public:
  // Whether to log now; when true, `*held_back` is how many calls were refused since the last line.
  bool Allow(uint64_t* held_back);

 private:
  std::mutex mutex_;
  std::chrono::steady_clock::time_point next_;
  uint64_t held_back_ = 0;
};

}  // namespace strata

#endif  // STRATA_COMMON_LOG_H_
