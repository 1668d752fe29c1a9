// Safetensors files: a memory-mapped, validated view of every tensor in one `*.safetensors` file.
//
// Format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 N, N bytes of JSON
// header, then the data section. The header maps each tensor name to {"dtype", "shape",
// "data_offsets": [begin, end)} (offsets relative to the data section); the optional "__metadata__"
// entry (string -> string) is accepted and ignored.
//
// Open() checks everything the reference reader checks, so that no later access can read out of
// bounds: header length within the file and at most 100 MB, a JSON object of well-typed entries,
// a supported dtype (F32, F16, BF16), non-negative dimensions, byte size == elements × dtype size
// (overflow-checked), and tensors that tile the data section exactly: no overlaps, no gaps, no
// trailing bytes.
#ifndef STRATA_MODEL_SAFETENSORS_H_
#define STRATA_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace strata::model {

// One tensor of a checkpoint: a view into a memory-mapped file.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // row-major; every dim >= 0; empty for a scalar
  // The tensor's little-endian element bytes; exactly num_elements() * DTypeSize(dtype) of them.
  // Valid while `mapping` lives. MAY BE UNALIGNED for `dtype`: safetensors does not require offsets
  // to be multiples of the element size, so read through memcpy (or copy) rather than casting.
  absl::Span<const std::byte> bytes;
  // Keeps the file mapped; shared by all tensors of a file (and by copies of this TensorInfo).
  std::shared_ptr<const void> mapping;
  std::string file;  // file name (no directory), for error messages

  // Product of `shape` (1 for a scalar). Open() has checked that it does not overflow.
  int64_t num_elements() const;
};

// The largest header the reference reader accepts (safetensors' MAX_HEADER_SIZE).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// A validated safetensors file, mapped read-only (PROT_READ, MAP_PRIVATE) for its lifetime. The
// mapping is released when the file and every TensorInfo copied out of it are gone.
//
// Movable, copyable (copies share the mapping). Thread-safe for concurrent reads. The file must not
// be truncated while mapped (the kernel would raise SIGBUS on access); checkpoints are immutable.
class SafetensorsFile {
 public:
  // Maps and validates `path`. NotFound if it does not exist; InvalidArgument, with a one-line
  // message naming the file and the problem, for any malformed content; other codes for I/O errors.
  static absl::StatusOr<SafetensorsFile> Open(const std::filesystem::path& path);

  // Every tensor, sorted by name.
  absl::Span<const TensorInfo> tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr. The pointer is valid while this object lives unmoved.
  const TensorInfo* Find(std::string_view name) const;

  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile(std::filesystem::path path, std::vector<TensorInfo> tensors)
      : path_(std::move(path)), tensors_(std::move(tensors)) {}

  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;  // sorted by name, unique
};

// The tensor named `name` in `tensors` (sorted by name, unique), or nullptr. Shared by
// SafetensorsFile and Checkpoint.
const TensorInfo* FindTensorByName(absl::Span<const TensorInfo> tensors, std::string_view name);

}  // namespace strata::model

#endif  // STRATA_MODEL_SAFETENSORS_H_
