#include "worker/engine/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/strings.h"
#include "kernels/attention.h"
#include "kernels/cuda_owners.h"
#include "kernels/cuda_status.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace strata::engine {
namespace {

// Allocations are rounded up to this, so that buffers of nearly the same size share a free list.
constexpr size_t kPoolGranularityBytes = 512;
// Split-KV attention workspace: enough for 128 splits of 64 query rows x 32 heads x 128 dims.
constexpr size_t kAttentionWorkspaceBytes = size_t{64} << 20;
constexpr size_t kInitialStagingBytes = size_t{4} << 20;

// A caching allocator for one device, used from the backend's single stream: a freed block goes back to
// a free list of its size and is handed out again without cudaMalloc (which synchronizes the device).
// Reuse is safe because every user of a block is ordered on the same stream. Blocks are released to the
// driver when an allocation fails (then retried) and when the pool dies. Thread-safe: tensors may be
// released from any thread.
class DevicePool {
 public:
  ~DevicePool() { ReleaseCached(); }

  absl::StatusOr<void*> Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      ReleaseCached();
      STRATA_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    }
    return p;
  }

  void Give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[bytes].push_back(p);
  }

 private:
  void ReleaseCached() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, blocks] : free_) {
      for (void* p : blocks) cudaFree(p);
    }
    free_.clear();
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

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
    STRATA_ASSIGN_OR_RETURN(backend->gemm_, kernels::Gemm::Create(backend->stream_.get()));
    STRATA_ASSIGN_OR_RETURN(backend->workspace_, kernels::DeviceBuffer::Allocate(kAttentionWorkspaceBytes));
    STRATA_ASSIGN_OR_RETURN(backend->host_staging_, kernels::PinnedBuffer::Allocate(kInitialStagingBytes));
    STRATA_ASSIGN_OR_RETURN(backend->ids_staging_, kernels::PinnedBuffer::Allocate(kInitialStagingBytes));
    STRATA_ASSIGN_OR_RETURN(backend->ids_device_, kernels::DeviceBuffer::Allocate(kInitialStagingBytes));
    return backend;
  }

  ~CudaBackend() override {
    if (capturing_) AbortStep();
    if (stream_) cudaStreamSynchronize(stream_.get());
  }

  std::string_view name() const override { return "cuda"; }
  DType activation_dtype() const override { return dtype_; }

  absl::StatusOr<Tensor> Allocate(DType dtype, int64_t rows, int64_t cols) override {
    int64_t elements = 0, bytes = 0;
    if (rows < 0 || cols < 0 || __builtin_mul_overflow(rows, cols, &elements) ||
        __builtin_mul_overflow(elements, static_cast<int64_t>(DTypeSize(dtype)), &bytes)) {
      return absl::InvalidArgumentError(StrCat("Allocate: no tensor has shape [", rows, ", ", cols, "]"));
    }
    const size_t rounded =
        (std::max<size_t>(static_cast<size_t>(bytes), 1) + kPoolGranularityBytes - 1) / kPoolGranularityBytes *
        kPoolGranularityBytes;
    STRATA_ASSIGN_OR_RETURN(void* data, pool_->Take(rounded));
    std::shared_ptr<DevicePool> pool = pool_;
    std::shared_ptr<const void> owner(data, [pool, rounded](const void* p) { pool->Give(const_cast<void*>(p), rounded); });
    return Tensor(dtype, rows, cols, data, std::move(owner));
  }

  absl::StatusOr<Tensor> Upload(absl::Span<const float> values, int64_t rows, int64_t cols) override {
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
    if (src.dtype() != DType::kF32 || capturing_) {
      // A float32 copy on the device; while capturing it is also what stays alive until EndStep.
      STRATA_ASSIGN_OR_RETURN(floats, Allocate(DType::kF32, src.rows(), src.cols()));
      STRATA_RETURN_IF_ERROR(
          kernels::Convert(src.dtype(), src.data(), DType::kF32, floats.data(), src.elements(), stream_.get()));
    }
    if (capturing_) {
      pending_copies_.push_back(PendingCopy{std::move(floats), dst});
      return absl::OkStatus();
    }
    return CopyFloatsToHost(floats, dst);
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
      if (capturing_) return absl::InternalError("Embed: a captured step grew the id buffers");
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
      STRATA_ASSIGN_OR_RETURN(ids_staging_, kernels::PinnedBuffer::Allocate(bytes));
      STRATA_ASSIGN_OR_RETURN(ids_device_, kernels::DeviceBuffer::Allocate(bytes));
    } else if (ids_copy_pending_) {
      // The previous copy out of the staging buffer must finish before it is overwritten.
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    }
    std::memcpy(ids_staging_.data(), ids.data(), bytes);
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ids_device_.data(), ids_staging_.data(), bytes, cudaMemcpyHostToDevice, stream_.get()));
    ids_copy_pending_ = !capturing_;  // a captured copy runs in EndStep, which waits for it
    return kernels::EmbedRows(dtype_, table.data(), table.rows(), table.cols(), ids_device_.data<int32_t>(),
                              static_cast<int64_t>(ids.size()), out.data(), stream_.get());
  }

  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "RmsNorm x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, 1, x.cols(), "RmsNorm weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), x.cols(), "RmsNorm out"));
    return kernels::AddRmsNorm(dtype_, x.data(), nullptr, weight.data(), eps, x.rows(), x.cols(), out.data(),
                               stream_.get());
  }

  absl::Status AddRmsNorm(const Tensor& delta, Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "AddRmsNorm x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(delta, dtype_, x.rows(), x.cols(), "AddRmsNorm delta"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, 1, x.cols(), "AddRmsNorm weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), x.cols(), "AddRmsNorm out"));
    return kernels::AddRmsNorm(dtype_, x.data(), delta.data(), weight.data(), eps, x.rows(), x.cols(), out.data(),
                               stream_.get());
  }

  absl::Status Linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "Linear x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, dtype_, weight.rows(), x.cols(), "Linear weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, x.rows(), weight.rows(), "Linear out"));
    if (!bias.empty()) STRATA_RETURN_IF_ERROR(ExpectShape(bias, dtype_, 1, weight.rows(), "Linear bias"));
    STRATA_RETURN_IF_ERROR(gemm_.Linear(dtype_, x.data(), x.rows(), x.cols(), weight.data(), weight.rows(), out.data()));
    if (bias.empty()) return absl::OkStatus();
    return kernels::AddBias(dtype_, bias.data(), out.rows(), out.cols(), out.data(), stream_.get());
  }

  absl::Status Rope(const Tensor& inv_freq, int64_t first_position, Tensor& q, Tensor& k) override {
    STRATA_RETURN_IF_ERROR(ExpectShape(inv_freq, DType::kF32, 1, inv_freq.cols(), "Rope inv_freq"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(q, "Rope q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, q.rows(), k.cols(), "Rope k"));
    return kernels::Rope(dtype_, inv_freq.data<float>(), 2 * inv_freq.cols(), first_position, q.rows(), q.data(),
                         q.cols(), k.data(), k.cols(), stream_.get());
  }

  absl::Status WriteKv(const Tensor& k, const Tensor& v, int64_t first_position, KvLayer& layer) override {
    const int64_t head_dim = layer.k.cols(), width = layer.num_kv_heads * head_dim, n = k.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(k, dtype_, n, width, "WriteKv k"));
    STRATA_RETURN_IF_ERROR(ExpectShape(v, dtype_, n, width, "WriteKv v"));
    STRATA_RETURN_IF_ERROR(ExpectActivation(layer.k, "WriteKv cache"));
    return kernels::WriteKvCache(dtype_, k.data(), v.data(), n, layer.num_kv_heads, head_dim, first_position,
                                 layer.capacity_tokens, layer.k.data(), layer.v.data(), stream_.get());
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
    kernels::AttentionArgs args;
    args.dtype = dtype_;
    args.q = q.data();
    args.q_row_stride = q.cols();
    args.k = layer.k.data();
    args.v = layer.v.data();
    args.kv_head_stride = layer.capacity_tokens;
    args.kv_begin = 0;
    args.kv_end = p.first_position + n;
    args.out = out.data();
    args.out_row_stride = out.cols();
    args.rows = n;
    args.num_heads = p.num_heads;
    args.num_kv_heads = p.num_kv_heads;
    args.head_dim = p.head_dim;
    args.first_position = p.first_position;
    args.window = p.window;
    args.scale = p.scale;
    return kernels::Attention(args, workspace_.data(), workspace_.bytes(), stream_.get());
  }

  absl::Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(gate, "SwiGlu gate"));
    STRATA_RETURN_IF_ERROR(ExpectShape(up, dtype_, gate.rows(), gate.cols(), "SwiGlu up"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, dtype_, gate.rows(), gate.cols(), "SwiGlu out"));
    return kernels::SwiGlu(dtype_, gate.data(), up.data(), gate.elements(), out.data(), stream_.get());
  }

  absl::Status Add(const Tensor& delta, Tensor& x) override {
    STRATA_RETURN_IF_ERROR(ExpectActivation(x, "Add x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(delta, dtype_, x.rows(), x.cols(), "Add delta"));
    return kernels::Add(dtype_, delta.data(), x.elements(), x.data(), stream_.get());
  }

  absl::Status BeginStep() override {
    if (graphs_ == DecodeGraphs::kOff) return absl::OkStatus();
    if (capturing_) return absl::FailedPreconditionError("BeginStep: a step is already being captured");
    // Relaxed: the pool may cudaMalloc while a step is recorded (only the first steps do).
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeRelaxed));
    capturing_ = true;
    pending_copies_.clear();
    return absl::OkStatus();
  }

  absl::Status EndStep() override {
    if (!capturing_) return absl::OkStatus();
    capturing_ = false;
    cudaGraph_t raw_graph = nullptr;
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(stream_.get(), &raw_graph));
    kernels::Graph graph(raw_graph);
    // Steps differ in their positions (kernel arguments) but not in their shape: update the executable
    // graph in place, and instantiate anew only when the topology changed.
    bool updated = false;
    if (exec_) {
      cudaGraphExecUpdateResultInfo info;
      updated = cudaGraphExecUpdate(exec_.get(), graph.get(), &info) == cudaSuccess;
      if (!updated) (void)cudaGetLastError();
    }
    if (!updated) {
      cudaGraphExec_t raw_exec = nullptr;
      STRATA_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&raw_exec, graph.get(), 0));
      exec_ = kernels::GraphExec(raw_exec);
    }
    STRATA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_.get(), stream_.get()));
    std::vector<PendingCopy> copies = std::move(pending_copies_);
    pending_copies_.clear();
    for (PendingCopy& copy : copies) STRATA_RETURN_IF_ERROR(CopyFloatsToHost(copy.device, copy.host));
    return absl::OkStatus();
  }

  void AbortStep() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t raw_graph = nullptr;
    if (cudaStreamEndCapture(stream_.get(), &raw_graph) == cudaSuccess && raw_graph != nullptr) {
      cudaGraphDestroy(raw_graph);
    }
    (void)cudaGetLastError();
    pending_copies_.clear();
  }

 private:
  struct PendingCopy {
    Tensor device;  // float32
    absl::Span<float> host;
  };

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
  kernels::Gemm gemm_ = kernels::Gemm();
  kernels::DeviceBuffer workspace_;
  kernels::PinnedBuffer host_staging_;
  kernels::PinnedBuffer ids_staging_;
  kernels::DeviceBuffer ids_device_;
  bool ids_copy_pending_ = false;
  bool capturing_ = false;
  std::vector<PendingCopy> pending_copies_;
  kernels::GraphExec exec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(backend));
}

bool CudaBackendAvailable(std::string* reason) {
  auto count = kernels::VisibleDeviceCount();
  if (!count.ok()) {
    if (reason != nullptr) *reason = std::string(count.status().message());
    return false;
  }
  return true;
}

}  // namespace strata::engine
