// What the fuzz targets share: a fuzzer's input cut into calls, and a scratch directory for the
// loaders that read files. Header-only; each target is one translation unit.
#ifndef STRATA_FUZZ_FUZZ_INPUT_H_
#define STRATA_FUZZ_FUZZ_INPUT_H_

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

namespace strata::fuzz {

// Reads the input front to back. The gRPC targets take a sequence of calls from one input: a method
// byte, a length byte (or 255 followed by a 2-byte little-endian length), the request's bytes. A
// sequence reaches states one call cannot (a put, its commit, a get of what it stored).
class InputReader {
 public:
  InputReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  std::optional<uint8_t> Byte() {
    if (pos_ >= size_) return std::nullopt;
    return data_[pos_++];
  }
  // The next length-prefixed chunk (shorter when the input ends first).
  std::string_view Chunk() {
    std::optional<uint8_t> first = Byte();
    if (!first) return {};
    size_t length = *first;
    if (length == 255) {
      std::optional<uint8_t> low = Byte(), high = Byte();
      length = size_t{low.value_or(0)} | (size_t{high.value_or(0)} << 8);
    }
    length = std::min(length, size_ - pos_);
    std::string_view chunk(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return chunk;
  }
  std::string_view Rest() {
    std::string_view rest(reinterpret_cast<const char*>(data_ + pos_), size_ - pos_);
    pos_ = size_;
    return rest;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A directory of its own under $TMPDIR (or /tmp) for the process's lifetime; not removed at exit, so a
// crashing input's files stay for the post-mortem.
inline const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::path(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") /
                           "strata-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("strata fuzz: mkdtemp");
      std::abort();
    }
    return std::filesystem::path(pattern);
  }();
  return dir;
}

inline void WriteFileOrDie(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) {
    std::fprintf(stderr, "strata fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A property the code under test promised does not hold: a crash libFuzzer records like any other.
#define STRATA_FUZZ_ASSERT(cond)                                                           \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

}  // namespace strata::fuzz

#endif  // STRATA_FUZZ_FUZZ_INPUT_H_
