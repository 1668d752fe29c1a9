#include "common/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace strata {

void Log(LogLevel level, std::string_view line) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int millis =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[96];
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %c ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis, static_cast<char>(level));
  std::string out(stamp);
  out.append(line);
  out.push_back('\n');
  // One write: lines from concurrent threads stay whole. A failed log write has nowhere to be reported.
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, out.data(), out.size());
}

bool LogThrottle::Allow(uint64_t* held_back) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  if (now < next_) {
    ++held_back_;
    return false;
  }
  next_ = now + std::chrono::seconds(1);
  *held_back = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace strata
