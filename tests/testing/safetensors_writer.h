// Test support: writes safetensors files (valid or deliberately malformed) and sharded checkpoint
// directories, so tests can build the inputs they read. Not for production use: errors are Status
// but nothing here is tuned or hardened.
#ifndef STRATA_TESTS_TESTING_SAFETENSORS_WRITER_H_
#define STRATA_TESTS_TESTING_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "tests/testing/scratch_dir.h"  // ScratchDir, for the writers' callers

namespace strata::testing {

// One tensor to write. `bytes` holds the little-endian element bytes, row-major, and must be exactly
// product(shape) * DTypeSize(dtype) long.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// `values` encoded as `dtype` (rounded to nearest even for F16/BF16): the `bytes` of a TensorToWrite.
std::string EncodeTensorBytes(DType dtype, absl::Span<const float> values);

// Writes a valid safetensors file: the tensors' data laid out back to back in the given order, the
// JSON header padded with spaces to a multiple of 8 bytes (as the reference writer does), and
// `metadata` as "__metadata__" when not empty. InvalidArgument if a tensor's byte count does not
// match its shape and dtype, or if two tensors share a name.
absl::Status WriteSafetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Splits src_dir/model.safetensors into `num_shards` files dst_dir/model-0000i-of-0000N.safetensors
// (tensors in name order, consecutive runs of about equal count), writes
// dst_dir/model.safetensors.index.json ({"metadata": {"total_size": ...}, "weight_map": {...}}) as
// Hugging Face does, and copies config.json and tokenizer.json where src_dir has them. Creates dst_dir.
// REQUIRES: 1 <= num_shards <= the number of tensors (InvalidArgument otherwise).
absl::Status ShardCheckpoint(const std::filesystem::path& src_dir, const std::filesystem::path& dst_dir,
                             int num_shards);

// The bytes of a safetensors file with a given header, unchecked: 8-byte little-endian
// header_json.size(), header_json (unpadded), data. For malformed-input tests.
std::string BuildRawSafetensors(std::string_view header_json, std::string_view data);

// Writes `bytes` to `path`, replacing any existing file.
absl::Status WriteRawFile(const std::filesystem::path& path, std::string_view bytes);


}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_SAFETENSORS_WRITER_H_
