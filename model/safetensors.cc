#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "model/json_errors.h"

namespace strata::model {
namespace {

using Json = nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;

// Owns a file descriptor; closes it on destruction.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// A whole file mapped read-only. `mapping` unmaps it when its last owner goes.
struct MappedFile {
  std::shared_ptr<const void> mapping;
  const std::byte* data = nullptr;
  size_t size = 0;
};

absl::StatusOr<MappedFile> MapFile(const std::filesystem::path& path) {
  const std::string name = path.string();
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(absl::StrCat(name, ": no such file"));
    return absl::ErrnoToStatus(error, absl::StrCat(name, ": cannot open"));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(name, ": cannot stat"));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(name, ": not a regular file"));
  const auto size = static_cast<size_t>(st.st_size);
  if (size < kHeaderLengthBytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": file has ", size, " bytes, too short for the ",
                                                   kHeaderLengthBytes, "-byte header length"));
  }
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (address == MAP_FAILED) return absl::ErrnoToStatus(errno, absl::StrCat(name, ": cannot mmap"));
  MappedFile out;
  out.mapping = std::shared_ptr<const void>(address, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  out.data = static_cast<const std::byte*>(address);
  out.size = size;
  return out;
}

// Parses one header entry into `info` (all but `bytes`, `mapping`, `file`) and its [begin, end)
// within a data section of `data_bytes`. `where` prefixes messages ("path: tensor 'x'").
absl::Status ParseEntry(const std::string& where, const Json& entry, uint64_t data_bytes, TensorInfo& info,
                        uint64_t& begin, uint64_t& end) {
  if (!entry.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " is not a JSON object"));

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return absl::InvalidArgumentError(absl::StrCat(where, " has no 'dtype'"));
  if (!dtype_it->is_string())
    return absl::InvalidArgumentError(absl::StrCat(where, " has a 'dtype' that is not a string"));
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = DTypeFromName(dtype_name);
  if (!dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has unsupported dtype ", Quoted(dtype_name), " (supported: F32, F16, BF16)"));
  }
  info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return absl::InvalidArgumentError(absl::StrCat(where, " has no 'shape'"));
  if (!shape_it->is_array())
    return absl::InvalidArgumentError(absl::StrCat(where, " has a 'shape' that is not an array"));
  int64_t num_elements = 1;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const Json& dim = (*shape_it)[i];
    if (!dim.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has shape dimension ", i, " that is not an integer"));
    }
    // nlohmann stores non-negative integers as unsigned and negative ones as signed.
    if (!dim.is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " has negative shape dimension ", i, " (", dim.get<int64_t>(), ")"));
    }
    const auto value = dim.get<uint64_t>();
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(num_elements, static_cast<int64_t>(value), &num_elements)) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has a shape whose element count overflows"));
    }
    info.shape.push_back(static_cast<int64_t>(value));
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return absl::InvalidArgumentError(absl::StrCat(where, " has no 'data_offsets'"));
  if (!offsets_it->is_array() || offsets_it->size() != 2 || !(*offsets_it)[0].is_number_unsigned() ||
      !(*offsets_it)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has 'data_offsets' that is not an array of two non-negative integers"));
  }
  begin = (*offsets_it)[0].get<uint64_t>();
  end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has data_offsets [", begin, ", ", end, "]: begin is past end"));
  }
  if (end > data_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " ends at byte ", end, " but the data section has ", data_bytes));
  }
  int64_t expected_bytes = 0;
  if (__builtin_mul_overflow(num_elements, static_cast<int64_t>(DTypeSize(info.dtype)), &expected_bytes) ||
      static_cast<uint64_t>(expected_bytes) != end - begin) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has ", end - begin, " bytes but shape [",
                                                   absl::StrJoin(info.shape, ", "), "] of ", dtype_name, " needs ",
                                                   num_elements, " x ", DTypeSize(info.dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckMetadata(const std::string& name, const Json& metadata) {
  bool ok = metadata.is_object();
  if (ok) {
    for (const auto& [key, value] : metadata.items()) ok = ok && value.is_string();
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, ": '__metadata__' is not an object of strings"));
  return absl::OkStatus();
}

// Checks that the tensors, with [begin, end) in `ranges`, tile [0, data_bytes) exactly, as the
// reference reader requires.
absl::Status CheckTiling(const std::string& name, const std::vector<TensorInfo>& tensors,
                         const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t data_bytes) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  uint64_t covered = 0;  // bytes [0, covered) belong to the tensors walked so far
  const TensorInfo* previous = nullptr;
  for (size_t i : order) {
    const auto [begin, end] = ranges[i];
    if (begin < covered) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": tensor ", Quoted(tensors[i].name), " at bytes [", begin,
                                                     ", ", end, ") overlaps tensor ", Quoted(previous->name),
                                                     " which ends at byte ", covered));
    }
    if (begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": bytes [", covered, ", ", begin, ") of the data section belong to no tensor"));
    }
    covered = end;
    previous = &tensors[i];
  }
  if (covered != data_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": bytes [", covered, ", ", data_bytes, ") of the data section belong to no tensor"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TensorInfo>> ParseTensors(const std::filesystem::path& path, const MappedFile& file) {
  const std::string name = path.string();
  uint64_t header_bytes = 0;
  for (size_t i = 0; i < kHeaderLengthBytes; ++i) {
    header_bytes |= static_cast<uint64_t>(file.data[i]) << (8 * i);
  }
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": header length ", header_bytes, " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_bytes > file.size - kHeaderLengthBytes) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": header length ", header_bytes,
                                                   " reaches past the end of the file (", file.size, " bytes)"));
  }
  const auto* header_begin = reinterpret_cast<const char*>(file.data + kHeaderLengthBytes);
  const std::byte* data = file.data + kHeaderLengthBytes + header_bytes;
  const uint64_t data_bytes = file.size - kHeaderLengthBytes - header_bytes;

  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_bytes);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": header is not valid JSON: ", DescribeJsonError(e)));
  }
  if (!header.is_object()) return absl::InvalidArgumentError(absl::StrCat(name, ": header is not a JSON object"));

  const std::string file_name = path.filename().string();
  std::vector<TensorInfo> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  tensors.reserve(header.size());
  ranges.reserve(header.size());
  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      STRATA_RETURN_IF_ERROR(CheckMetadata(name, entry));
      continue;
    }
    TensorInfo info;
    info.name = key;
    uint64_t begin = 0;
    uint64_t end = 0;
    STRATA_RETURN_IF_ERROR(
        ParseEntry(absl::StrCat(name, ": tensor ", Quoted(key)), entry, data_bytes, info, begin, end));
    info.bytes = absl::MakeConstSpan(data + begin, end - begin);
    info.mapping = file.mapping;
    info.file = file_name;
    tensors.push_back(std::move(info));
    ranges.emplace_back(begin, end);
  }
  STRATA_RETURN_IF_ERROR(CheckTiling(name, tensors, ranges, data_bytes));
  // The JSON object's keys are unique and std::map-ordered, but sort explicitly rather than rely on
  // nlohmann's container choice.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return tensors;
}

}  // namespace

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::filesystem::path& path) {
  STRATA_ASSIGN_OR_RETURN(MappedFile file, MapFile(path));
  STRATA_ASSIGN_OR_RETURN(std::vector<TensorInfo> tensors, ParseTensors(path, file));
  return SafetensorsFile(path, std::move(tensors));
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const { return FindTensorByName(tensors_, name); }

const TensorInfo* FindTensorByName(absl::Span<const TensorInfo> tensors, std::string_view name) {
  const auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                                   [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  if (it == tensors.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace strata::model
