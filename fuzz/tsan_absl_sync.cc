// LD_PRELOAD shim for `make test-tsan`: tells ThreadSanitizer about abseil's synchronization.
//
// Debian's libabsl is not built with -fsanitize=thread, so TSan cannot see absl::Mutex (a futex and
// atomics inside the library): every access guarded by one looks like a race, and a TSan run of our
// suites would report nothing but that. This library, preloaded into the sanitized test processes,
// interposes the entry points of absl::Mutex, CondVar and Notification (their calls inside libabsl go
// through the PLT too), calls the library's own, and adds the happens-before edges they imply:
// a release before unlocking, an acquire after locking, both around a wait. Condition callbacks that
// the library runs while a lock changes hands are ignored (TSan has not seen that acquire yet).
// Reader locks are treated like exclusive ones, so a race between two readers is not reported.
//
// Not linked with the TSan runtime: it finds __tsan_acquire/__tsan_release at run time, and in a process
// without TSan (a tool a test starts) it only forwards.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#define STRATA_STR2(x) #x
#define STRATA_STR(x) STRATA_STR2(x)

namespace {

struct Tsan {
  void (*acquire)(void*) = nullptr;
  void (*release)(void*) = nullptr;
  void (*ignore_begin)() = nullptr;
  void (*ignore_end)() = nullptr;
};

const Tsan& TheTsan() {
  static const Tsan tsan = [] {
    Tsan t;
    t.acquire = reinterpret_cast<void (*)(void*)>(dlsym(RTLD_DEFAULT, "__tsan_acquire"));
    t.release = reinterpret_cast<void (*)(void*)>(dlsym(RTLD_DEFAULT, "__tsan_release"));
    t.ignore_begin = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "__tsan_ignore_thread_begin"));
    t.ignore_end = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "__tsan_ignore_thread_end"));
    return t;
  }();
  return tsan;
}

void Acquire(const void* addr) {
  if (TheTsan().acquire) TheTsan().acquire(const_cast<void*>(addr));
}
void Release(const void* addr) {
  if (TheTsan().release) TheTsan().release(const_cast<void*>(addr));
}
struct IgnoreAccesses {
  IgnoreAccesses() {
    if (TheTsan().ignore_begin) TheTsan().ignore_begin();
  }
  ~IgnoreAccesses() {
    if (TheTsan().ignore_end) TheTsan().ignore_end();
  }
};

// The library's definition of `mangled_tail` in absl's inline namespace, e.g. "5Mutex4LockEv".
template <typename Fn>
Fn Next(const char* prefix, const char* mangled_tail) {
  const std::string ns = STRATA_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = std::string(prefix) + "4absl" + std::to_string(ns.size()) + ns + mangled_tail;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in libabsl: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

// The atomic that Notification::HasBeenNotified() (inline, instrumented) loads with acquire order.
const void* NotifiedFlag(const absl::Notification* n) {
  static_assert(sizeof(absl::Notification) == sizeof(absl::Mutex) + sizeof(std::atomic<bool>) + 7);
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

}  // namespace

namespace absl {
inline namespace ABSL_OPTION_INLINE_NAMESPACE_NAME {

#define STRATA_NEXT(type, tail) static const auto next = Next<type>("_ZN", tail)

void Mutex::Lock() {
  STRATA_NEXT(void (*)(Mutex*), "5Mutex4LockEv");
  next(this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  STRATA_NEXT(void (*)(Mutex*), "5Mutex10ReaderLockEv");
  next(this);
  Acquire(this);
}
bool Mutex::TryLock() {
  STRATA_NEXT(bool (*)(Mutex*), "5Mutex7TryLockEv");
  const bool locked = next(this);
  if (locked) Acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  STRATA_NEXT(bool (*)(Mutex*), "5Mutex13ReaderTryLockEv");
  const bool locked = next(this);
  if (locked) Acquire(this);
  return locked;
}
// Unlocking may run the Conditions of waiters (on their stacks) to pick whom to wake: ignored like the
// waits' own, or a waiter's next Condition in the same stack slot reads as a race with this read.
void Mutex::Unlock() {
  STRATA_NEXT(void (*)(Mutex*), "5Mutex6UnlockEv");
  Release(this);
  IgnoreAccesses ignore;
  next(this);
}
void Mutex::ReaderUnlock() {
  STRATA_NEXT(void (*)(Mutex*), "5Mutex12ReaderUnlockEv");
  Release(this);
  IgnoreAccesses ignore;
  next(this);
}
void Mutex::LockWhen(const Condition& cond) {
  STRATA_NEXT(void (*)(Mutex*, const Condition&), "5Mutex8LockWhenERKNS0_9ConditionE");
  {
    IgnoreAccesses ignore;
    next(this, cond);
  }
  Acquire(this);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  STRATA_NEXT(void (*)(Mutex*, const Condition&), "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  {
    IgnoreAccesses ignore;
    next(this, cond);
  }
  Acquire(this);
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Duration), "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, timeout);
  }
  Acquire(this);
  return result;
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Time), "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, deadline);
  }
  Acquire(this);
  return result;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Duration),
              "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, timeout);
  }
  Acquire(this);
  return result;
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Time),
              "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, deadline);
  }
  Acquire(this);
  return result;
}
void Mutex::Await(const Condition& cond) {
  STRATA_NEXT(void (*)(Mutex*, const Condition&), "5Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  {
    IgnoreAccesses ignore;
    next(this, cond);
  }
  Acquire(this);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Duration), "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, timeout);
  }
  Acquire(this);
  return result;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  STRATA_NEXT(bool (*)(Mutex*, const Condition&, Time), "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  bool result;
  {
    IgnoreAccesses ignore;
    result = next(this, cond, deadline);
  }
  Acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  STRATA_NEXT(void (*)(CondVar*, Mutex*), "7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  next(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  STRATA_NEXT(bool (*)(CondVar*, Mutex*, Duration), "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool result = next(this, mu, timeout);
  Acquire(mu);
  return result;
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  STRATA_NEXT(bool (*)(CondVar*, Mutex*, Time), "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool result = next(this, mu, deadline);
  Acquire(mu);
  return result;
}

void Notification::Notify() {
  STRATA_NEXT(void (*)(Notification*), "12Notification6NotifyEv");
  Release(NotifiedFlag(this));
  next(this);
}

#undef STRATA_NEXT
#define STRATA_NEXT(type, tail) static const auto next = Next<type>("_ZNK", tail)

void Notification::WaitForNotification() const {
  STRATA_NEXT(void (*)(const Notification*), "12Notification19WaitForNotificationEv");
  next(this);
  Acquire(NotifiedFlag(this));
}
bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  STRATA_NEXT(bool (*)(const Notification*, Duration), "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool result = next(this, timeout);
  if (result) Acquire(NotifiedFlag(this));
  return result;
}
bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  STRATA_NEXT(bool (*)(const Notification*, Time), "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool result = next(this, deadline);
  if (result) Acquire(NotifiedFlag(this));
  return result;
}

}  // inline namespace ABSL_OPTION_INLINE_NAMESPACE_NAME
}  // namespace absl
