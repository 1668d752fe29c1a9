#include "worker/engine/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/strings.h"
#include "kernels/attention.h"
#include "kernels/cuda_owners.h"
#include "kernels/cuda_status.h"
#include "kernels/cudnn_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/sparse_kv.h"
#include "worker/engine/chunk_selection.h"
#include "worker/engine/cuda_block_copy.h"
#include "worker/engine/cuda_device_pool.h"
#include "worker/engine/cuda_step_graph.h"

namespace strata::engine {
namespace {

// Allocations are rounded up to this, so that buffers of nearly the same size share a free list.
constexpr size_t kPoolGranularityBytes = 512;
// Split-KV attention workspace: enough for 128 splits of 64 query rows x 32 heads x 128 dims.
constexpr size_t kAttentionWorkspaceBytes = size_t{64} << 20;
constexpr size_t kInitialStagingBytes = size_t{4} << 20;

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options) {
    if (options.dtype != DType::kBF16 && options.dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          StrCat("CUDA backend: activations are BF16 or F32, got ", DTypeName(options.dtype)));
    }
    STRATA_ASSIGN_OR_RETURN(const int devices, kernels::VisibleDeviceCount());
    if (options.device < 0 || options.device >= devices) {
      return absl::InvalidArgumentError(
          StrCat("CUDA backend: device ", options.device, " of ", devices, " visible devices"));
    }
    STRATA_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
    auto backend = std::unique_ptr<CudaBackend>(new CudaBackend(options));
    STRATA_ASSIGN_OR_RETURN(backend->stream_, kernels::CreateStream());
    backend->block_copier_ = CudaBlockCopier(backend->stream_.get());
    STRATA_ASSIGN_OR_RETURN(backend->upload_stream_, kernels::CreateStream());
    STRATA_ASSIGN_OR_RETURN(backend->download_stream_, kernels::CreateStream());
    STRATA_ASSIGN_OR_RETURN(backend->gemm_, kernels::Gemm::Create(backend->stream_.get()));
    STRATA_ASSIGN_OR_RETURN(backend->workspace_, kernels::DeviceBuffer::Allocate(kAttentionWorkspaceBytes));
    STRATA_ASSIGN_OR_RETURN(backend->host_staging_, kernels::PinnedBuffer::Allocate(kInitialStagingBytes));
    STRATA_ASSIGN_OR_RETURN(backend->ids_staging_, kernels::PinnedBuffer::Allocate(kInitialStagingBytes));
    STRATA_ASSIGN_OR_RETURN(backend->ids_device_, kernels::DeviceBuffer::Allocate(kInitialStagingBytes));
    STRATA_ASSIGN_OR_RETURN(backend->step_, CudaStepGraph::Create(backend->stream_.get()));
    return backend;
  }

  ~CudaBackend() override {
    AbortStep();
    for (const kernels::Stream* s : {&stream_, &upload_stream_, &download_stream_}) {
      if (*s) cudaStreamSynchronize(s->get());
    }
  }

  std::string_view name() const override { return "cuda"; }
  DType activation_dtype() const override { return dtype_; }

  absl::StatusOr<Tensor> Allocate(DType dtype, int64_t rows, int64_t cols) override {
    STRATA_ASSIGN_OR_RETURN(const size_t rounded, AllocationBytes(dtype, rows, cols, kPoolGranularityBytes));
    STRATA_ASSIGN_OR_RETURN(void* data, pool_->Take(rounded));
    std::shared_ptr<DevicePool> pool = pool_;
    std::shared_ptr<const void> owner(data, [pool, rounded](const void* p) { pool->Give(const_cast<void*>(p), rounded); });
    return Tensor(dtype, rows, cols, data, std::move(owner));
  }

  absl::StatusOr<Tensor> Upload(absl::Span<const float> values, int64_t rows, int64_t cols) override {
    if (step_.recording()) return absl::FailedPreconditionError("Upload inside a decode step");
    if (rows < 0 || cols < 0 || (cols != 0 && rows > static_cast<int64_t>(values.size()) / cols) ||
        static_cast<int64_t>(values.size()) != rows * cols) {
      return absl::InvalidArgumentError(
          StrCat("Upload: ", values.size(), " values do not fill [", rows, ", ", cols, "]"));
    }
    STRATA_ASSIGN_OR_RETURN(Tensor out, Allocate(DType::kF32, rows, cols));
    // From pageable memory: returns once the source has been staged, so `values` may go.
    STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), values.data(), values.size() * sizeof(float),
                                                cudaMemcpyHostToDevice, stream_.get()));
    return out;
  }

  absl::StatusOr<Tensor> LoadWeight(const model::TensorInfo& info, int64_t rows, int64_t cols) override {
    if (step_.recording()) return absl::FailedPreconditionError("LoadWeight inside a decode step");
    int64_t elements = 0;
    if (rows < 0 || cols < 0 || __builtin_mul_overflow(rows, cols, &elements) || info.num_elements() != elements) {
      return absl::InvalidArgumentError(StrCat(info.file, ": tensor '", info.name, "' has ", info.num_elements(),
                                               " elements, expected [", rows, ", ", cols, "]"));
    }
    STRATA_ASSIGN_OR_RETURN(Tensor out, Allocate(dtype_, rows, cols));
    if (info.dtype == dtype_) {
      STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), info.bytes.data(), out.bytes(), cudaMemcpyHostToDevice,
                                                  stream_.get()));
      return out;
    }
    // Converted on the host through float32, as PyTorch's .to(dtype) rounds (to nearest even).
    std::vector<float> values(elements);
    ConvertToF32(info.dtype, info.bytes.data(), absl::MakeSpan(values));
    if (dtype_ == DType::kF32) {
      STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), values.data(), out.bytes(), cudaMemcpyHostToDevice,
                                                  stream_.get()));
    } else {
      std::vector<uint16_t> halves(elements);
      for (int64_t i = 0; i < elements; ++i) halves[i] = F32ToBf16(values[i]);
      STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), halves.data(), out.bytes(), cudaMemcpyHostToDevice,
                                                  stream_.get()));
    }
    return out;
  }

  absl::Status CopyToHost(const Tensor& src, absl::Span<float> dst) override {
    if (src.empty() || (src.dtype() != DType::kF32 && src.dtype() != DType::kBF16)) {
      return absl::InvalidArgumentError("CopyToHost: an F32 or BF16 tensor is required");
    }
    if (static_cast<int64_t>(dst.size()) != src.elements()) {
      return absl::InvalidArgumentError(
          StrCat("CopyToHost: destination holds ", dst.size(), " floats, source ", src.elements()));
    }
    Tensor floats = src;
    if (src.dtype() != DType::kF32 || step_.recording()) {
      // A float32 copy on the device; in a recorded step it is also what stays alive until EndStep.
      STRATA_ASSIGN_OR_RETURN(floats, Allocate(DType::kF32, src.rows(), src.cols()));
      STRATA_RETURN_IF_ERROR(Run({10, Bits(src.data()), src.elements(), Bits(floats.data())},
                                 [=](cudaStream_t s) {
                                   return kernels::Convert(src.dtype(), src.data(), DType::kF32, floats.data(),
                                                           src.elements(), s);
                                 }));
    }
    if (step_.recording()) {
      pending_copies_.push_back(PendingCopy{std::move(floats), dst});
      return absl::OkStatus();
    }
    return CopyFloatsToHost(floats, dst);
  }

  // Page-aligned (direct I/O into it needs that; cudaHostAlloc does not promise it for small sizes).
  absl::StatusOr<Tensor> AllocateHost(DType dtype, int64_t rows, int64_t cols) override {
    constexpr size_t kPageBytes = 4096;
    STRATA_ASSIGN_OR_RETURN(const size_t rounded, AllocationBytes(dtype, rows, cols, kPageBytes));
    STRATA_ASSIGN_OR_RETURN(kernels::PinnedBuffer buffer, kernels::PinnedBuffer::Allocate(rounded + kPageBytes));
    auto owner = std::make_shared<kernels::PinnedBuffer>(std::move(buffer));
    const uintptr_t base = reinterpret_cast<uintptr_t>(owner->data());
    void* data = reinterpret_cast<void*>((base + kPageBytes - 1) / kPageBytes * kPageBytes);
    return Tensor(dtype, rows, cols, data, std::move(owner));
  }

  absl::Status CopyRows(const Tensor& src, int64_t src_row, Tensor& dst, int64_t dst_row, int64_t rows,
                        Queue queue) override {
    if (step_.recording()) return absl::FailedPreconditionError("CopyRows inside a decode step");
    STRATA_RETURN_IF_ERROR(CheckCopyRows(src, src_row, dst, dst_row, rows));
    const size_t row_bytes = src.cols() * DTypeSize(src.dtype());
    // cudaMemcpyDefault: the direction follows from the pointers (unified addressing).
    STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<std::byte*>(dst.data()) + dst_row * row_bytes,
                                                static_cast<const std::byte*>(src.data()) + src_row * row_bytes,
                                                rows * row_bytes, cudaMemcpyDefault, StreamOf(queue)));
    return absl::OkStatus();
  }

  absl::StatusOr<Fence> Record(Queue queue) override {
    if (step_.recording()) return absl::FailedPreconditionError("Record inside a decode step");
    STRATA_ASSIGN_OR_RETURN(kernels::Event event, kernels::CreateEvent(/*timing=*/true));
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event.get(), StreamOf(queue)));
    return Fence{std::make_shared<kernels::Event>(std::move(event))};
  }

  absl::Status Wait(Queue queue, const Fence& fence) override {
    if (fence.handle == nullptr) return absl::OkStatus();
    if (step_.recording()) return absl::FailedPreconditionError("Wait inside a decode step");
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaStreamWaitEvent(StreamOf(queue), static_cast<kernels::Event*>(fence.handle.get())->get(), 0));
    return absl::OkStatus();
  }

  absl::Status Synchronize(const Fence& fence) override {
    if (fence.handle == nullptr) return absl::OkStatus();
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(static_cast<kernels::Event*>(fence.handle.get())->get()));
    return absl::OkStatus();
  }

  absl::StatusOr<double> ElapsedSeconds(const Fence& from, const Fence& to) override {
    if (from.handle == nullptr || to.handle == nullptr) return 0.0;
    float ms = 0;
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, static_cast<kernels::Event*>(from.handle.get())->get(),
                                                     static_cast<kernels::Event*>(to.handle.get())->get()));
    return ms * 1e-3;
  }

  std::optional<int64_t> FreeDeviceBytes() override {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return std::nullopt;
    }
    return static_cast<int64_t>(free_bytes + pool_->CachedBytes());
  }

  absl::Status Embed(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(table, "Embed table"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, static_cast<int64_t>(ids.size()), table.cols(), "Embed out"));
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows()) {
        return absl::InvalidArgumentError(
            StrCat("token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ", table.rows(), ")"));
      }
    }
    const size_t bytes = ids.size() * sizeof(int32_t);
    if (bytes > ids_staging_.bytes()) {
      if (step_.recording()) return absl::InternalError("Embed: a recorded step grew the id buffers");
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
      STRATA_ASSIGN_OR_RETURN(ids_staging_, kernels::PinnedBuffer::Allocate(bytes));
      STRATA_ASSIGN_OR_RETURN(ids_device_, kernels::DeviceBuffer::Allocate(bytes));
    } else if (ids_copy_pending_) {
      // The previous copy out of the staging buffer must finish before it is overwritten.
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    }
    std::memcpy(ids_staging_.data(), ids.data(), bytes);
    ids_copy_pending_ = !step_.recording();  // a recorded copy runs in EndStep, which waits for it
    void* staging = ids_staging_.data();
    int32_t* device_ids = ids_device_.data<int32_t>();
    const int64_t n = static_cast<int64_t>(ids.size());
    return Run({1, Bits(table.data()), table.rows(), table.cols(), Bits(staging), Bits(device_ids), n, Bits(out.data())},
               [=, this](cudaStream_t s) -> absl::Status {
                 STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_ids, staging, bytes, cudaMemcpyHostToDevice, s));
                 return kernels::EmbedRows(dtype_, table.data(), table.rows(), table.cols(), device_ids, n, out.data(),
                                           s);
               });
  }

  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "RmsNorm x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, 1, x.cols(), "RmsNorm weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), x.cols(), "RmsNorm out"));
    return Run({2, Bits(x.data()), Bits(weight.data()), Bits(eps), x.rows(), x.cols(), Bits(out.data())},
               [=, this](cudaStream_t s) {
                 return kernels::AddRmsNorm(dtype_, x.data(), nullptr, weight.data(), eps, x.rows(), x.cols(),
                                            out.data(), s);
               });
  }

  absl::Status AddRmsNorm(const Tensor& delta, Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "AddRmsNorm x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(delta, dtype_, x.rows(), x.cols(), "AddRmsNorm delta"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, 1, x.cols(), "AddRmsNorm weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), x.cols(), "AddRmsNorm out"));
    return Run({3, Bits(x.data()), Bits(delta.data()), Bits(weight.data()), Bits(eps), x.rows(), x.cols(),
                Bits(out.data())},
               [=, this](cudaStream_t s) {
                 return kernels::AddRmsNorm(dtype_, x.data(), delta.data(), weight.data(), eps, x.rows(), x.cols(),
                                            out.data(), s);
               });
  }

  absl::Status Linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "Linear x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, weight.rows(), x.cols(), "Linear weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), weight.rows(), "Linear out"));
    if (!bias.empty()) STRATA_RETURN_IF_ERROR(ExpectShape(bias, dtype_, 1, weight.rows(), "Linear bias"));
    return Run({4, Bits(x.data()), x.rows(), x.cols(), Bits(weight.data()), weight.rows(), Bits(bias.data()),
                Bits(out.data())},
               [=, this](cudaStream_t s) -> absl::Status {
                 STRATA_RETURN_IF_ERROR(
                     gemm_.Linear(dtype_, x.data(), x.rows(), x.cols(), weight.data(), weight.rows(), out.data()));
                 if (bias.empty()) return absl::OkStatus();
                 return kernels::AddBias(dtype_, bias.data(), out.rows(), out.cols(), out.data(), s);
               });
  }

  absl::Status Rope(const Tensor& inv_freq, int64_t first_position, Tensor& q, Tensor& k) override {
    STRATA_RETURN_IF_ERROR(ExpectShape(inv_freq, DType::kF32, 1, inv_freq.cols(), "Rope inv_freq"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(q, "Rope q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, q.rows(), k.cols(), "Rope k"));
    STRATA_RETURN_IF_ERROR(NotePosition(first_position));
    const int64_t* device_position = DevicePosition();
    return Run({5, Bits(inv_freq.data()), inv_freq.cols(), Bits(q.data()), q.rows(), q.cols(), Bits(k.data()), k.cols()},
               [=, this](cudaStream_t s) {
                 return kernels::Rope(dtype_, inv_freq.data<float>(), 2 * inv_freq.cols(), first_position, q.rows(),
                                      q.data(), q.cols(), k.data(), k.cols(), s, device_position);
               });
  }

  absl::Status RopeAt(const Tensor& inv_freq, const Indices& positions, Tensor& q, Tensor& k) override {
    STRATA_RETURN_IF_ERROR(ExpectShape(inv_freq, DType::kF32, 1, inv_freq.cols(), "RopeAt inv_freq"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(q, "RopeAt q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, q.rows(), k.cols(), "RopeAt k"));
    if (positions.size != q.rows()) {
      return absl::InvalidArgumentError(StrCat("RopeAt: ", positions.size, " positions for ", q.rows(), " rows"));
    }
    const int32_t* device_positions = positions.device_data();
    return Run({11, Bits(inv_freq.data()), inv_freq.cols(), Bits(device_positions), q.rows(), Bits(q.data()), q.cols(),
                Bits(k.data()), k.cols()},
               [=, this](cudaStream_t s) {
                 return kernels::RopeAt(dtype_, inv_freq.data<float>(), 2 * inv_freq.cols(), device_positions, q.rows(),
                                        q.data(), q.cols(), k.data(), k.cols(), s);
               });
  }

  absl::Status WriteKvAt(const Tensor& k, const Tensor& v, const Indices& slots, KvLayer& layer) override {
    if (!layer.paged()) return absl::InvalidArgumentError("WriteKvAt: the layer is not paged");
    const int64_t head_dim = layer.k.cols(), width = layer.num_kv_heads * head_dim, n = k.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, n, width, "WriteKvAt k"));
    STRATA_RETURN_IF_ERROR(ExpectShape(v, dtype_, n, width, "WriteKvAt v"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(layer.k, "WriteKvAt cache"));
    if (slots.size != n) {
      return absl::InvalidArgumentError(StrCat("WriteKvAt: ", slots.size, " slots for ", n, " rows"));
    }
    const int32_t* device_slots = slots.device_data();
    const KvLayer pool = layer;
    return Run({12, Bits(k.data()), Bits(v.data()), n, pool.num_kv_heads, head_dim, Bits(device_slots), pool.block_tokens,
                pool.block_rows, Bits(pool.k.data()), Bits(pool.v.data())},
               [=, this](cudaStream_t s) {
                 return kernels::WriteKvPaged(dtype_, k.data(), v.data(), n, pool.num_kv_heads, head_dim, device_slots,
                                              pool.block_tokens, pool.block_rows, pool.k.data(), pool.v.data(), s);
               });
  }

  absl::StatusOr<Indices> UploadIndices(std::vector<int32_t> values) override {
    auto host = std::make_shared<const std::vector<int32_t>>(std::move(values));
    const int64_t n = static_cast<int64_t>(host->size());
    if (step_.recording()) {
      // Staged for the step's graph, which copies them in when it runs: the same area every step.
      STRATA_ASSIGN_OR_RETURN(const int32_t* device, step_.StageIndices(*host));
      return Indices{.host = host, .device = device, .owner = nullptr, .size = n};
    }
    STRATA_ASSIGN_OR_RETURN(Tensor device, Allocate(DType::kF32, 1, std::max<int64_t>(n, 1)));  // 4-byte elements
    // From pageable memory: staged before the call returns; ordered before the compute that reads it.
    STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device.data(), host->data(), n * sizeof(int32_t),
                                                cudaMemcpyHostToDevice, stream_.get()));
    return Indices{.host = host, .device = device.data<int32_t>(), .owner = std::make_shared<Tensor>(device), .size = n};
  }

  // Bulk block movement: cuda_block_copy.h.
  absl::Status CopyBlocksToHost(const Tensor& pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                absl::Span<std::byte* const> host) override {
    if (step_.recording()) return absl::FailedPreconditionError("CopyBlocksToHost inside a decode step");
    STRATA_RETURN_IF_ERROR(CheckBlockCopy(pool, blocks, block_bytes, host.size()));
    if (blocks.empty()) return absl::OkStatus();
    return block_copier_.ToHost(pool.data(), blocks, block_bytes, host);
  }

  absl::Status CopyBlocksFromHost(absl::Span<const std::byte* const> host, Tensor& pool,
                                  absl::Span<const int32_t> blocks, int64_t block_bytes) override {
    if (step_.recording()) return absl::FailedPreconditionError("CopyBlocksFromHost inside a decode step");
    STRATA_RETURN_IF_ERROR(CheckBlockCopy(pool, blocks, block_bytes, host.size()));
    if (blocks.empty()) return absl::OkStatus();
    return block_copier_.FromHost(host, pool.data(), blocks, block_bytes);
  }

  absl::Status WriteKv(const Tensor& k, const Tensor& v, int64_t first_position, KvLayer& layer) override {
    if (layer.paged()) return absl::InvalidArgumentError("WriteKv: a paged layer takes WriteKvAt");
    const int64_t head_dim = layer.k.cols(), width = layer.num_kv_heads * head_dim, n = k.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, n, width, "WriteKv k"));
    STRATA_RETURN_IF_ERROR(ExpectShape(v, dtype_, n, width, "WriteKv v"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(layer.k, "WriteKv cache"));
    if (first_position < 0 || first_position + n > layer.capacity_tokens) {
      return absl::OutOfRangeError(StrCat("WriteKv: positions [", first_position, ", ", first_position + n,
                                          ") exceed the KV capacity of ", layer.capacity_tokens, " tokens"));
    }
    STRATA_RETURN_IF_ERROR(NotePosition(first_position));
    const int64_t* device_position = DevicePosition();
    const KvLayer cache = layer;  // shares the cache's memory
    return Run({6, Bits(k.data()), Bits(v.data()), n, cache.num_kv_heads, head_dim, cache.capacity_tokens,
                Bits(cache.k.data()), Bits(cache.v.data())},
               [=, this](cudaStream_t s) {
                 return kernels::WriteKvCache(dtype_, k.data(), v.data(), n, cache.num_kv_heads, head_dim,
                                              first_position, cache.capacity_tokens, cache.k.data(), cache.v.data(),
                                              s, device_position);
               });
  }

  absl::Status Attention(const Tensor& q, const KvLayer& layer, const AttentionParams& p, Tensor& out) override {
    const int64_t n = q.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(q, dtype_, n, p.num_heads * p.head_dim, "Attention q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, n, p.num_heads * p.head_dim, "Attention out"));
    if (p.num_kv_heads != layer.num_kv_heads || p.head_dim != layer.k.cols()) {
      return absl::InvalidArgumentError(StrCat("Attention: ", p.num_kv_heads, " KV heads of width ", p.head_dim,
                                               " do not fit a KV layer of ", layer.num_kv_heads, " heads of width ",
                                               layer.k.cols()));
    }
    if (p.first_position < 0 || p.first_position + n > layer.capacity_tokens) {
      return absl::OutOfRangeError(StrCat("Attention: positions up to ", p.first_position + n,
                                          " exceed the KV capacity of ", layer.capacity_tokens, " tokens"));
    }
    kernels::AttentionArgs args = AttentionArgsFor(q, layer, p, out);
    args.kv_end = p.first_position + n;
    args.rows = n;
    args.first_position = p.first_position;
    STRATA_RETURN_IF_ERROR(kernels::ValidateAttention(args));
    STRATA_RETURN_IF_ERROR(NotePosition(p.first_position));
    args.device_position = DevicePosition();
    if (layer.paged() && GathersForCudnn(args)) return GatheredAttention(args, layer);
    const int splits = kernels::AttentionSplits(args, workspace_.bytes());
    void* workspace = workspace_.data();
    const size_t workspace_bytes = workspace_.bytes();
    const KvLayer cache = layer;
    return Run({7, Bits(q.data()), n, Bits(cache.k.data()), Bits(cache.v.data()), cache.capacity_tokens, p.num_heads,
                p.num_kv_heads, p.head_dim, p.window, Bits(p.scale), Bits(out.data()), splits,
                Bits(args.block_table)},
               [=](cudaStream_t s) -> absl::Status {
                 (void)cache;  // keeps the KV memory alive while the step is pending
                 return kernels::Attention(args, workspace, workspace_bytes, s);
               });
  }

  // One launch for the whole batch: batch item b is row b of q and out, with its own block table row and
  // position (kernels::AttentionArgs::batch_positions); the launch is sized by the longest sequence.
  absl::Status DecodeAttention(const Tensor& q, const KvLayer& layer, const Indices& tables, int64_t table_stride,
                               const Indices& positions, const AttentionParams& p, Tensor& out) override {
    const int64_t batch = q.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(q, dtype_, batch, p.num_heads * p.head_dim, "DecodeAttention q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, batch, p.num_heads * p.head_dim, "DecodeAttention out"));
    if (!layer.paged() || positions.size != batch || tables.size != batch * table_stride || table_stride <= 0 ||
        p.num_kv_heads != layer.num_kv_heads || p.head_dim != layer.k.cols()) {
      return absl::InvalidArgumentError(StrCat("DecodeAttention: ", batch, " rows, ", positions.size, " positions, ",
                                               tables.size, " table entries of stride ", table_stride));
    }
    int64_t longest = 0;
    for (int64_t b = 0; b < batch; ++b) {
      if (positions[b] < 0 || positions[b] >= table_stride * layer.block_tokens) {
        return absl::OutOfRangeError(StrCat("DecodeAttention: position ", positions[b], " of row ", b,
                                            " is past its table of ", table_stride, " blocks"));
      }
      longest = std::max<int64_t>(longest, positions[b]);
    }
    kernels::AttentionArgs args = AttentionArgsFor(q, layer, p, out);
    args.q_batch_stride = q.cols();
    args.out_batch_stride = out.cols();
    args.kv_head_stride = table_stride * layer.block_tokens;
    args.block_table = tables.device_data();
    args.block_table_stride = table_stride;
    args.batch_positions = positions.device_data();
    // The launch is sized by an upper bound of the positions (the kernels read each row's own): in a
    // recorded step, the table's end, so that the next steps replay the same launch.
    const int64_t bound = step_.recording() ? table_stride * layer.block_tokens - 1 : longest;
    args.kv_end = bound + 1;
    args.first_position = bound;
    args.rows = 1;
    args.batch = batch;
    const int splits = kernels::AttentionSplits(args, workspace_.bytes());
    void* workspace = workspace_.data();
    const size_t workspace_bytes = workspace_.bytes();
    const KvLayer pool = layer;
    return Run({13, Bits(q.data()), batch, Bits(pool.k.data()), Bits(pool.v.data()), Bits(args.block_table),
                table_stride, Bits(args.batch_positions), bound, p.num_heads, p.num_kv_heads, p.head_dim, p.window,
                Bits(p.scale), Bits(out.data()), splits},
               [=](cudaStream_t s) -> absl::Status {
                 (void)pool;  // keeps the KV memory alive while the step is pending
                 return kernels::Attention(args, workspace, workspace_bytes, s);
               });
  }

  absl::Status UpdateKeyBounds(const KvLayer& layer, int64_t first, int64_t rows, int64_t chunk_tokens,
                               Tensor& bounds) override {
    if (step_.recording()) return absl::FailedPreconditionError("UpdateKeyBounds inside a decode step");
    STRATA_RETURN_IF_ERROR(ExpectActivation(layer.k, "UpdateKeyBounds keys"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(bounds, "UpdateKeyBounds bounds"));
    const int64_t head_dim = layer.k.cols();
    if (layer.paged() || bounds.cols() != 2 * head_dim || bounds.rows() % layer.num_kv_heads != 0) {
      return absl::InvalidArgumentError(StrCat("UpdateKeyBounds: bounds of [", bounds.rows(), ", ", bounds.cols(),
                                               "] for a ", layer.paged() ? "paged" : "contiguous", " layer of ",
                                               layer.num_kv_heads, " heads of ", head_dim));
    }
    return kernels::UpdateKeyBounds(dtype_, layer.k.data(), layer.num_kv_heads, layer.capacity_tokens, head_dim, first,
                                    rows, chunk_tokens, bounds.rows() / layer.num_kv_heads, bounds.data(),
                                    stream_.get());
  }

  absl::Status GatherImportantKv(const Tensor& q, const Tensor& bounds, const SparseGather& g,
                                 const AttentionParams& p, KvLayer& out) override {
    if (step_.recording()) return absl::FailedPreconditionError("GatherImportantKv inside a decode step");
    STRATA_RETURN_IF_ERROR(ExpectActivation(q, "GatherImportantKv q"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(bounds, "GatherImportantKv bounds"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(out.k, "GatherImportantKv out"));
    STRATA_RETURN_IF_ERROR(CheckSparseGather(q, bounds, g, p, out));
    if (p.num_kv_heads > kernels::ChunkSources::kMaxKvHeads) {
      return absl::InvalidArgumentError(StrCat("GatherImportantKv: ", p.num_kv_heads, " KV heads, at most ",
                                               kernels::ChunkSources::kMaxKvHeads));
    }
    kernels::ChunkSources sources;
    for (int64_t h = 0; h < p.num_kv_heads; ++h) {
      sources.k[h] = g.k_homes[h].data();
      sources.v[h] = g.v_homes[h].data();
      sources.k_tail[h] = g.k_tail[h].data();
      sources.v_tail[h] = g.v_tail[h].data();
    }
    // Scratch: the scores, then the chosen ids (int32 in a float-sized allocation).
    STRATA_ASSIGN_OR_RETURN(Tensor scores, Allocate(DType::kF32, p.num_kv_heads, std::max<int64_t>(1, g.candidates)));
    STRATA_ASSIGN_OR_RETURN(Tensor ids, Allocate(DType::kF32, p.num_kv_heads, std::max<int64_t>(1, g.select)));
    const kernels::ChunkSelection selection{.num_heads = p.num_heads,
                                            .num_kv_heads = p.num_kv_heads,
                                            .head_dim = p.head_dim,
                                            .num_chunks = g.num_chunks,
                                            .candidates = g.candidates,
                                            .select = g.select,
                                            .sink_chunks = g.sink_chunks};
    int32_t* chunk_ids = static_cast<int32_t*>(ids.data());
    STRATA_RETURN_IF_ERROR(kernels::SelectChunks(dtype_, q.data(), bounds.data(), selection, scores.data<float>(),
                                                 chunk_ids, stream_.get()));
    return kernels::GatherChunks(dtype_, sources, p.num_kv_heads, p.head_dim, chunk_ids, g.select, g.chunk_tokens,
                                 g.tail_rows, out.k.data(), out.v.data(), out.capacity_tokens, stream_.get());
  }

  absl::Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(gate, "SwiGlu gate"));
    STRATA_RETURN_IF_ERROR(ExpectShape(up, dtype_, gate.rows(), gate.cols(), "SwiGlu up"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, gate.rows(), gate.cols(), "SwiGlu out"));
    return Run({8, Bits(gate.data()), Bits(up.data()), gate.elements(), Bits(out.data())},
               [=, this](cudaStream_t s) {
                 return kernels::SwiGlu(dtype_, gate.data(), up.data(), gate.elements(), out.data(), s);
               });
  }

  absl::Status Add(const Tensor& delta, Tensor& x) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "Add x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(delta, dtype_, x.rows(), x.cols(), "Add delta"));
    return Run({9, Bits(delta.data()), x.elements(), Bits(x.data())}, [=, this](cudaStream_t s) {
      return kernels::Add(dtype_, delta.data(), x.elements(), x.data(), s);
    });
  }

  // Decode steps (kCapture): the step's ops are recorded and run as one graph (cuda_step_graph.h); the
  // logits they copy to the host arrive after the graph has run.
  absl::Status BeginStep() override {
    if (graphs_ == DecodeGraphs::kOff) return absl::OkStatus();
    pending_copies_.clear();
    return step_.Begin();
  }

  absl::Status EndStep() override {
    if (!step_.recording()) return absl::OkStatus();
    std::vector<PendingCopy> copies = std::move(pending_copies_);
    pending_copies_.clear();
    STRATA_RETURN_IF_ERROR(step_.End());
    for (PendingCopy& copy : copies) STRATA_RETURN_IF_ERROR(CopyFloatsToHost(copy.device, copy.host));
    if (copies.empty()) {
      // The graph reads the pinned position, ids and indices when it runs: the next step rewrites them.
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    }
    return absl::OkStatus();
  }

  DecodeGraphStats graph_stats() const {
    return {.replayed = step_.replayed(), .updated = step_.updated(), .instantiated = step_.instantiated()};
  }

  void AbortStep() override {
    step_.Abort();
    pending_copies_.clear();
  }

 private:
  // Whether paged prefill attention goes to cuDNN (kernels/cudnn_attention.h), whose graph reads contiguous
  // K/V: a prefill chunk that cuDNN would serve if the keys were contiguous, outside recorded decode steps.
  bool GathersForCudnn(const kernels::AttentionArgs& paged) const {
    if (step_.recording() || !kernels::CudnnAttentionLoaded() ||
        kernels::GetPrefillKernel() == kernels::PrefillKernel::kOwn || paged.rows < kernels::kFlashMinRows) {
      return false;
    }
    kernels::AttentionArgs contiguous = paged;
    contiguous.block_table = nullptr;
    return kernels::CudnnServes(contiguous);
  }

  // Prefill attention over a paged layer through a contiguous copy of its keys [0, kv_end): one gather
  // (4 bytes moved per byte of K/V, ~1% of the attention's time at 8k keys), then the contiguous path.
  absl::Status GatheredAttention(kernels::AttentionArgs args, const KvLayer& layer) {
    const int64_t keys = args.kv_end, heads = layer.num_kv_heads, head_dim = args.head_dim;
    STRATA_ASSIGN_OR_RETURN(Tensor gathered, Allocate(dtype_, 2 * heads * keys, head_dim));
    const kernels::AttentionArgs paged = args;
    args.k = gathered.data();
    args.v = gathered.Rows(heads * keys, heads * keys).data();
    args.kv_head_stride = keys;
    args.block_table = nullptr;
    args.block_table_stride = args.block_tokens = args.block_stride = 0;
    void* workspace = workspace_.data();
    const size_t workspace_bytes = workspace_.bytes();
    const KvLayer cache = layer;
    return Run({14, Bits(args.q), args.rows, Bits(cache.k.data()), Bits(cache.v.data()), Bits(paged.block_table),
                keys, args.num_heads, heads, head_dim, Bits(args.scale), Bits(args.out), Bits(gathered.data())},
               [=, this](cudaStream_t s) -> absl::Status {
                 (void)cache;  // the pool and the copy stay alive while the step is pending
                 (void)gathered;
                 STRATA_RETURN_IF_ERROR(kernels::GatherKvPaged(dtype_, paged.k, paged.v, paged.block_table,
                                                               paged.block_tokens, paged.block_stride, heads,
                                                               head_dim, keys, const_cast<void*>(args.k),
                                                               const_cast<void*>(args.v), s));
                 return kernels::Attention(args, workspace, workspace_bytes, s);
               });
  }

  // The launch arguments of attention over `layer` shared by Attention and DecodeAttention: q, out, K/V
  // (and the layer's block table when paged), heads, window and scale. Rows and positions are the
  // caller's.
  kernels::AttentionArgs AttentionArgsFor(const Tensor& q, const KvLayer& layer, const AttentionParams& p,
                                          Tensor& out) const {
    kernels::AttentionArgs args;
    args.dtype = dtype_;
    args.q = q.data();
    args.q_row_stride = q.cols();
    args.k = layer.k.data();
    args.v = layer.v.data();
    args.kv_head_stride = layer.capacity_tokens;
    if (layer.paged()) {
      args.block_table = layer.block_table.device_data();
      args.block_table_stride = layer.block_table.size;
      args.block_tokens = layer.block_tokens;
      args.block_stride = layer.block_rows;
    }
    args.kv_begin = 0;
    args.out = out.data();
    args.out_row_stride = out.cols();
    args.num_heads = p.num_heads;
    args.num_kv_heads = p.num_kv_heads;
    args.head_dim = p.head_dim;
    args.window = p.window;
    args.scale = p.scale;
    return args;
  }

  struct PendingCopy {
    Tensor device;  // float32
    absl::Span<float> host;
  };
  using Launch = std::function<absl::Status(cudaStream_t)>;

  // Runs `launch` on the stream now, or, inside a recorded decode step, records it with `signature`: an op
  // code and every pointer, shape and scalar the launch bakes in, positions and staged indices aside.
  absl::Status Run(std::initializer_list<int64_t> signature, Launch launch) {
    return step_.Run(signature, std::move(launch));
  }
  static int64_t Bits(const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p)); }
  static int64_t Bits(float f) {
    int32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    return bits;
  }
  absl::Status NotePosition(int64_t position) { return step_.NotePosition(position); }
  cudaStream_t StreamOf(Queue queue) const {
    switch (queue) {
      case Queue::kUpload:
        return upload_stream_.get();
      case Queue::kDownload:
        return download_stream_.get();
      case Queue::kCompute:
        break;
    }
    return stream_.get();
  }
  const int64_t* DevicePosition() const { return step_.DevicePosition(); }

  explicit CudaBackend(const CudaBackendOptions& options)
      : dtype_(options.dtype), graphs_(options.decode_graphs), pool_(std::make_shared<DevicePool>()) {}

  absl::Status ExpectActivation(const Tensor& t, std::string_view what) const {
    if (t.empty()) return absl::InvalidArgumentError(StrCat(what, ": no tensor"));
    if (t.dtype() != dtype_) {
      return absl::InvalidArgumentError(
          StrCat(what, ": this CUDA backend computes in ", DTypeName(dtype_), ", got ", DTypeName(t.dtype())));
    }
    return absl::OkStatus();
  }

  // Float32 device tensor -> host, through the pinned staging buffer; waits for the stream.
  absl::Status CopyFloatsToHost(const Tensor& floats, absl::Span<float> dst) {
    const size_t bytes = floats.bytes();
    if (bytes > host_staging_.bytes()) {
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
      STRATA_ASSIGN_OR_RETURN(host_staging_, kernels::PinnedBuffer::Allocate(bytes));
    }
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host_staging_.data(), floats.data(), bytes, cudaMemcpyDeviceToHost, stream_.get()));
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    ids_copy_pending_ = false;
    std::memcpy(dst.data(), host_staging_.data(), bytes);
    return absl::OkStatus();
  }

  DType dtype_;
  DecodeGraphs graphs_;
  std::shared_ptr<DevicePool> pool_;
  kernels::Stream stream_;
  kernels::Stream upload_stream_, download_stream_;  // transfers (Queue::kUpload, kDownload)
  kernels::Gemm gemm_ = kernels::Gemm();
  kernels::DeviceBuffer workspace_;
  kernels::PinnedBuffer host_staging_;
  kernels::PinnedBuffer ids_staging_;
  kernels::DeviceBuffer ids_device_;
  bool ids_copy_pending_ = false;
  // Decode-step recording and replay.
  CudaStepGraph step_;
  std::vector<PendingCopy> pending_copies_;
  CudaBlockCopier block_copier_{nullptr};  // on stream_ (set in Create)
};

}  // namespace

std::optional<DecodeGraphStats> DecodeGraphStatsOf(const Backend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  if (cuda == nullptr) return std::nullopt;
  return cuda->graph_stats();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(backend));
}

bool CudaBackendAvailable(std::string* reason) { return CudaDeviceCount(reason) > 0; }

int CudaDeviceCount(std::string* reason) {
  auto count = kernels::VisibleDeviceCount();
  if (!count.ok()) {
    if (reason != nullptr) *reason = std::string(count.status().message());
    return 0;
  }
  return *count;
}

}  // namespace strata::engine
