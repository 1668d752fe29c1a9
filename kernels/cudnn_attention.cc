// cuDNN's fused flash attention through the backend graph API. The graph is the one cuDNN's fused
// attention engines recognize (the shape cudnn-frontend lowers its SDPA node to):
//   S = Q·Kᵀ (float) → S·scale → [causal: keep S where row + s_kv − s_q ≥ col, else −inf]
//     → M = max_row S → E = exp(S − M) → Z = Σ_row E → LSE = M + log Z → P = E / Z (BF16) → O = P·V
// where row and col index the [s_q, s_kv] score matrix, so with the queries' keys at the end of the key range
// (bottom-right alignment) query row i at position p sees keys up to p. Scalars go by value in the variant
// pack; everything else in the plan depends on shapes and strides only, so plans are cached per shape.
#include "kernels/cudnn_attention.h"

#include <cudnn_graph.h>
#include <dlfcn.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/strings.h"
#include "kernels/cuda_status.h"

namespace strata::kernels {
namespace {

// The functions of libcudnn.so.9 used here, resolved once per process.
struct CudnnApi {
  bool loaded = false;
  std::string description;  // what loaded, or why nothing did
  size_t version = 0;
  decltype(&cudnnGetVersion) GetVersion = nullptr;
  decltype(&cudnnGetErrorString) GetErrorString = nullptr;
  decltype(&cudnnGetLastErrorString) GetLastErrorString = nullptr;
  decltype(&cudnnCreate) Create = nullptr;
  decltype(&cudnnDestroy) Destroy = nullptr;
  decltype(&cudnnSetStream) SetStream = nullptr;
  decltype(&cudnnBackendCreateDescriptor) CreateDescriptor = nullptr;
  decltype(&cudnnBackendDestroyDescriptor) DestroyDescriptor = nullptr;
  decltype(&cudnnBackendSetAttribute) SetAttribute = nullptr;
  decltype(&cudnnBackendGetAttribute) GetAttribute = nullptr;
  decltype(&cudnnBackendFinalize) Finalize = nullptr;
  decltype(&cudnnBackendExecute) Execute = nullptr;
};

// The oldest cuDNN whose fused attention takes this graph with bottom-right causal masks of any length.
constexpr size_t kMinVersion = 90600;

CudnnApi LoadApi() {
  CudnnApi api;
  const char* env = std::getenv("STRATA_CUDNN_LIBRARY");
  const std::string name = env != nullptr && *env != '\0' ? env : "libcudnn.so.9";
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* error = dlerror();
    api.description = StrCat(name, " not loaded: ", error != nullptr ? error : "unknown error");
    return api;
  }
  bool resolved = true;
  auto resolve = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    if (fn == nullptr && resolved) {
      resolved = false;
      api.description = StrCat(name, " lacks ", symbol);
    }
  };
  resolve(api.GetVersion, "cudnnGetVersion");
  resolve(api.GetErrorString, "cudnnGetErrorString");
  resolve(api.GetLastErrorString, "cudnnGetLastErrorString");
  resolve(api.Create, "cudnnCreate");
  resolve(api.Destroy, "cudnnDestroy");
  resolve(api.SetStream, "cudnnSetStream");
  resolve(api.CreateDescriptor, "cudnnBackendCreateDescriptor");
  resolve(api.DestroyDescriptor, "cudnnBackendDestroyDescriptor");
  resolve(api.SetAttribute, "cudnnBackendSetAttribute");
  resolve(api.GetAttribute, "cudnnBackendGetAttribute");
  resolve(api.Finalize, "cudnnBackendFinalize");
  resolve(api.Execute, "cudnnBackendExecute");
  if (!resolved) return api;
  api.version = api.GetVersion();
  const std::string version = StrCat(api.version / 10000, ".", api.version / 100 % 100, ".", api.version % 100);
  if (api.version < kMinVersion) {
    api.description = StrCat(name, " is cuDNN ", version, ", older than 9.6.0");
    return api;
  }
  Dl_info info{};
  api.description = StrCat("cudnn ", version, " (",
                           dladdr(reinterpret_cast<void*>(api.GetVersion), &info) != 0 && info.dli_fname != nullptr
                               ? info.dli_fname
                               : name.c_str(),
                           ")");
  api.loaded = true;
  return api;
}

const CudnnApi& Api() {
  static const CudnnApi api = LoadApi();
  return api;
}

absl::Status CudnnStatus(cudnnStatus_t status, std::string_view what) {
  if (status == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  char detail[512] = "";
  Api().GetLastErrorString(detail, sizeof detail);
  std::string message = StrCat("cuDNN ", what, ": ", Api().GetErrorString(status));
  if (detail[0] != '\0') message += StrCat(" (", detail, ")");
  // Every CUDNN_STATUS_NOT_SUPPORTED_* code is in the same thousand.
  return status / 1000 == CUDNN_STATUS_NOT_SUPPORTED / 1000 ? absl::UnimplementedError(message)
                                                            : absl::InternalError(message);
}

// The unique ids of the graph's real tensors (virtual ones are numbered from kFirstVirtual).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kLse, kScale, kSeqKv, kSeqQ, kMaskValue, kFirstVirtual = 100 };

using Dims = std::array<int64_t, 4>;

Dims Contiguous(const Dims& dims) { return {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1}; }

// The descriptors of one graph and its plan, destroyed together. Building is sticky: after the first failed
// call the rest do nothing and status() says what failed.
class GraphBuilder {
 public:
  explicit GraphBuilder(cudnnHandle_t handle) : handle_(handle) {}
  ~GraphBuilder() {
    for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) Api().DestroyDescriptor(*it);
  }
  GraphBuilder(const GraphBuilder&) = delete;
  GraphBuilder& operator=(const GraphBuilder&) = delete;

  const absl::Status& status() const { return status_; }

  cudnnBackendDescriptor_t New(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = nullptr;
    if (status_.ok()) status_ = CudnnStatus(Api().CreateDescriptor(type, &d), "create descriptor");
    if (d != nullptr) owned_.push_back(d);
    return d;
  }
  void Set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
           int64_t count, const void* values) {
    if (status_.ok()) status_ = CudnnStatus(Api().SetAttribute(d, name, type, count, values), StrCat("attribute ", name));
  }
  void Finalize(cudnnBackendDescriptor_t d, std::string_view what) {
    if (status_.ok()) status_ = CudnnStatus(Api().Finalize(d), StrCat("finalize ", what));
  }

  cudnnBackendDescriptor_t Tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                                  bool is_virtual = false, bool by_value = false) {
    cudnnBackendDescriptor_t t = New(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    Set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    Set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    Set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    Set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    Set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    Set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) Set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    Finalize(t, "tensor");
    return t;
  }
  cudnnBackendDescriptor_t Virtual(cudnnDataType_t type, const Dims& dims) {
    return Tensor(next_virtual_++, type, dims, Contiguous(dims), /*is_virtual=*/true);
  }
  cudnnBackendDescriptor_t Scalar(int64_t uid, cudnnDataType_t type) {
    return Tensor(uid, type, {1, 1, 1, 1}, {1, 1, 1, 1}, false, /*by_value=*/true);
  }

  // y = mode(x, b) (t: the condition of BINARY_SELECT; axis: of GEN_INDEX).
  void Pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t t = nullptr,
                 int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = New(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    Set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    Set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (axis >= 0) Set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    Finalize(pw, "pointwise");
    Operation(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
              {{CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw},
               {CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x},
               {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b},
               {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y},
               {CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t}});
  }
  // c = a · b, float32 accumulation.
  void Matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = New(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    Set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    Finalize(mm, "matmul");
    Operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR,
              {{CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
               {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b},
               {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c},
               {CUDNN_ATTR_OPERATION_MATMUL_DESC, mm}});
  }
  // y = mode over the last dimension of x, float32.
  void Reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t red = New(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    Set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    Set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    Finalize(red, "reduction");
    Operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR,
              {{CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x},
               {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y},
               {CUDNN_ATTR_OPERATION_REDUCTION_DESC, red}});
  }

  // The operation graph of every operation added, then the first engine configuration cuDNN's heuristics
  // offer that makes a plan. Returns the plan (owned by the builder) and its workspace size.
  //
  // Plans are built for fixed shapes. cuDNN's dynamic shapes (a kernel cache shared by plans of one
  // topology) were tried on 9.19: a plan of 8192 queries over 32768 keys that reused the kernel of a
  // 32768 × 32768 plan read out of bounds (cudaErrorIllegalAddress), so they are not used.
  absl::StatusOr<std::pair<cudnnBackendDescriptor_t, int64_t>> Plan() {
    cudnnBackendDescriptor_t graph = New(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    Set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops_.size()),
        ops_.data());
    Set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_);
    Finalize(graph, "operation graph");
    cudnnBackendDescriptor_t heuristics = New(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    Set(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    Set(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    Finalize(heuristics, "heuristics");
    int64_t count = 0;
    if (status_.ok()) {
      status_ = CudnnStatus(
          Api().GetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
          "heuristics results");
    }
    if (status_.ok() && count == 0) status_ = absl::UnimplementedError("cuDNN: no engine for the attention graph");
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < count && status_.ok(); ++i) configs.push_back(New(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    if (status_.ok()) {
      status_ = CudnnStatus(Api().GetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               count, &count, configs.data()),
                            "heuristics results");
    }
    STRATA_RETURN_IF_ERROR(status_);
    absl::Status last = absl::UnimplementedError("cuDNN: no engine configuration makes a plan");
    for (int64_t i = 0; i < count; ++i) {
      cudnnBackendDescriptor_t plan = New(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      STRATA_RETURN_IF_ERROR(status_);
      last = CudnnStatus(Api().SetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_),
                         "plan handle");
      if (last.ok()) {
        last = CudnnStatus(Api().SetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &configs[i]),
                           "plan engine configuration");
      }
      if (last.ok()) last = CudnnStatus(Api().Finalize(plan), "finalize plan");
      if (!last.ok()) continue;
      int64_t workspace = 0;
      STRATA_RETURN_IF_ERROR(CudnnStatus(Api().GetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                            CUDNN_TYPE_INT64, 1, nullptr, &workspace),
                                         "plan workspace size"));
      return std::make_pair(plan, workspace);
    }
    return last;
  }

 private:
  cudnnHandle_t handle_;
  absl::Status status_;
  std::vector<cudnnBackendDescriptor_t> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_ = kFirstVirtual;

  // An operation of `type` whose attributes are the descriptors given (null ones left unset), finalized and
  // added to the graph.
  void Operation(cudnnBackendDescriptorType_t type,
                 std::initializer_list<std::pair<cudnnBackendAttributeName_t, cudnnBackendDescriptor_t>> attributes) {
    cudnnBackendDescriptor_t op = New(type);
    for (const auto& [name, descriptor] : attributes) {
      if (descriptor != nullptr) Set(op, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &descriptor);
    }
    Finalize(op, "operation");
    ops_.push_back(op);
  }
};

// What a plan depends on: everything in AttentionArgs but pointers, positions and the scale.
struct PlanKey {
  std::array<int64_t, 15> fields;
  bool operator<(const PlanKey& other) const { return fields < other.fields; }
};

bool Causal(const AttentionArgs& a) { return a.kv_end > a.first_position + 1; }

PlanKey KeyOf(const AttentionArgs& a) {
  return {{a.batch, a.num_heads, a.num_kv_heads, a.head_dim, a.rows, a.kv_end - a.kv_begin, Causal(a),
           a.lse != nullptr, a.q_row_stride, a.q_batch_stride, a.kv_head_stride, a.kv_batch_stride, a.out_row_stride,
           a.out_batch_stride, static_cast<int64_t>(a.dtype)}};
}

// Attention FLOPs of `a` (two matmuls over the visible part of the score matrix).
double Flops(const AttentionArgs& a) {
  const double keys = static_cast<double>(a.kv_end - a.kv_begin);
  const double visible = Causal(a) ? keys - (a.rows - 1) / 2.0 : keys;  // mean keys a query row sees
  return 4.0 * a.batch * a.num_heads * a.rows * visible * a.head_dim;
}

struct CachedPlan {
  std::unique_ptr<GraphBuilder> descriptors;
  cudnnBackendDescriptor_t plan = nullptr;  // null: cuDNN refused this shape
  int64_t workspace_bytes = 0;
};

// The batch stride of a tensor whose batch is 1 (any positive value serves).
int64_t BatchStride(int64_t stride, int64_t extent) { return stride > 0 ? stride : extent; }

absl::StatusOr<CachedPlan> BuildPlan(cudnnHandle_t handle, const AttentionArgs& a) {
  CachedPlan cached;
  cached.descriptors = std::make_unique<GraphBuilder>(handle);
  GraphBuilder& g = *cached.descriptors;
  const int64_t b = a.batch, hq = a.num_heads, hkv = a.num_kv_heads, d = a.head_dim, sq = a.rows,
                skv = a.kv_end - a.kv_begin;
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32;
  const int64_t kv_batch = BatchStride(a.kv_batch_stride, hkv * a.kv_head_stride * d);
  cudnnBackendDescriptor_t q =
      g.Tensor(kQ, io, {b, hq, sq, d}, {BatchStride(a.q_batch_stride, sq * a.q_row_stride), d, a.q_row_stride, 1});
  cudnnBackendDescriptor_t kt = g.Tensor(kK, io, {b, hkv, d, skv}, {kv_batch, a.kv_head_stride * d, 1, d});
  cudnnBackendDescriptor_t v = g.Tensor(kV, io, {b, hkv, skv, d}, {kv_batch, a.kv_head_stride * d, d, 1});
  cudnnBackendDescriptor_t o = g.Tensor(
      kO, io, {b, hq, sq, d}, {BatchStride(a.out_batch_stride, sq * a.out_row_stride), d, a.out_row_stride, 1});
  const Dims scores{b, hq, sq, skv}, rows{b, hq, sq, 1};

  cudnnBackendDescriptor_t s = g.Virtual(f32, scores);
  g.Matmul(q, kt, s);
  cudnnBackendDescriptor_t scaled = g.Virtual(f32, scores);
  g.Pointwise(CUDNN_POINTWISE_MUL, f32, s, g.Scalar(kScale, f32), scaled);
  cudnnBackendDescriptor_t masked = scaled;
  if (Causal(a)) {
    cudnnBackendDescriptor_t row = g.Virtual(i32, scores), col = g.Virtual(i32, scores);
    g.Pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, scaled, nullptr, row, nullptr, /*axis=*/2);
    g.Pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, scaled, nullptr, col, nullptr, /*axis=*/3);
    cudnnBackendDescriptor_t plus_kv = g.Virtual(i32, scores), shifted = g.Virtual(i32, scores);
    g.Pointwise(CUDNN_POINTWISE_ADD, i32, row, g.Scalar(kSeqKv, i32), plus_kv);
    g.Pointwise(CUDNN_POINTWISE_SUB, i32, plus_kv, g.Scalar(kSeqQ, i32), shifted);
    cudnnBackendDescriptor_t visible = g.Virtual(CUDNN_DATA_BOOLEAN, scores);
    g.Pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, shifted, col, visible);
    masked = g.Virtual(f32, scores);
    g.Pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, scaled, g.Scalar(kMaskValue, f32), masked, visible);
  }
  cudnnBackendDescriptor_t max = g.Virtual(f32, rows), centered = g.Virtual(f32, scores),
                           exp = g.Virtual(f32, scores), sum = g.Virtual(f32, rows), log = g.Virtual(f32, rows);
  g.Reduction(CUDNN_REDUCE_TENSOR_MAX, masked, max);
  g.Pointwise(CUDNN_POINTWISE_SUB, f32, masked, max, centered);
  g.Pointwise(CUDNN_POINTWISE_EXP, f32, centered, nullptr, exp);
  g.Reduction(CUDNN_REDUCE_TENSOR_ADD, exp, sum);
  g.Pointwise(CUDNN_POINTWISE_LOG, f32, sum, nullptr, log);
  cudnnBackendDescriptor_t lse = a.lse != nullptr ? g.Tensor(kLse, f32, rows, Contiguous(rows)) : g.Virtual(f32, rows);
  g.Pointwise(CUDNN_POINTWISE_ADD, f32, max, log, lse);
  cudnnBackendDescriptor_t probabilities = g.Virtual(io, scores);
  g.Pointwise(CUDNN_POINTWISE_DIV, f32, exp, sum, probabilities);
  g.Matmul(probabilities, v, o);
  STRATA_RETURN_IF_ERROR(g.status());
  STRATA_ASSIGN_OR_RETURN(auto plan, g.Plan());
  cached.plan = plan.first;
  cached.workspace_bytes = plan.second;
  return cached;
}

// A plan takes ~0.1 s to build on an H100 (cuDNN 9.19 compiles its kernel at run time): the time the own
// kernel (~250 TFLOP/s) needs for this many FLOPs.
constexpr double kBuildCostInOwnKernelFlops = 2.5e13;

std::atomic<int> prefill_kernel{-1};

PrefillKernel KernelFromEnvironment() {
  const char* env = std::getenv("STRATA_PREFILL_ATTENTION");
  const std::string_view value = env != nullptr ? env : "";
  if (value == "cudnn") return PrefillKernel::kCudnn;
  if (value == "own") return PrefillKernel::kOwn;
  if (!value.empty() && value != "auto") {
    LogWarning(StrCat("error=bad_environment STRATA_PREFILL_ATTENTION=", value, " expected=auto|cudnn|own"));
  }
  return PrefillKernel::kAuto;
}

// One cuDNN handle, its plans and workspace per thread and device: the engine runs one thread per device.
class ThreadContext {
 public:
  ~ThreadContext() {
    plans_.clear();
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (handle_ != nullptr) Api().Destroy(handle_);
  }

  static absl::StatusOr<ThreadContext*> ForCurrentDevice() {
    thread_local std::map<int, std::unique_ptr<ThreadContext>> contexts;
    int device = 0;
    STRATA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    std::unique_ptr<ThreadContext>& context = contexts[device];
    if (context == nullptr) {
      auto fresh = std::make_unique<ThreadContext>();
      STRATA_RETURN_IF_ERROR(CudnnStatus(Api().Create(&fresh->handle_), "create handle"));
      context = std::move(fresh);
    }
    return context.get();
  }

  absl::Status Run(const AttentionArgs& a, CudnnPlanBuild build, cudaStream_t stream) {
    const PlanKey key = KeyOf(a);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      if (build == CudnnPlanBuild::kWhenAmortized) {
        // Ski rental: build once the own kernel has spent about a build's time on this shape.
        double& flops = unbuilt_flops_[key];
        flops += Flops(a);
        if (flops < kBuildCostInOwnKernelFlops) return absl::FailedPreconditionError("no cuDNN plan yet");
        unbuilt_flops_.erase(key);
      }
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<CachedPlan> built = BuildPlan(handle_, a);
      stats_.build_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++stats_.plans_built;
      if (!built.ok()) {
        // Not tried again for this shape: the caller falls back to the own kernel.
        plans_.emplace(key, CachedPlan{});
        return built.status();
      }
      it = plans_.emplace(key, *std::move(built)).first;
    }
    const CachedPlan& cached = it->second;
    if (cached.plan == nullptr) return absl::UnimplementedError("cuDNN refused this attention shape before");
    STRATA_RETURN_IF_ERROR(EnsureWorkspace(cached.workspace_bytes, stream));
    STRATA_RETURN_IF_ERROR(CudnnStatus(Api().SetStream(handle_, stream), "set stream"));

    float scale = a.scale;
    int32_t seq_kv = static_cast<int32_t>(a.kv_end - a.kv_begin), seq_q = static_cast<int32_t>(a.rows);
    float mask_value = Api().version < 91000 ? std::numeric_limits<float>::lowest()
                                             : -std::numeric_limits<float>::infinity();
    std::vector<int64_t> uids{kQ, kK, kV, kO, kScale};
    std::vector<void*> pointers{const_cast<void*>(a.q), const_cast<void*>(a.k), const_cast<void*>(a.v), a.out, &scale};
    if (Causal(a)) {
      uids.insert(uids.end(), {kSeqKv, kSeqQ, kMaskValue});
      pointers.insert(pointers.end(), {&seq_kv, &seq_q, &mask_value});
    }
    if (a.lse != nullptr) {
      uids.push_back(kLse);
      pointers.push_back(a.lse);
    }
    GraphBuilder pack_owner(handle_);
    cudnnBackendDescriptor_t pack = pack_owner.New(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack_owner.Set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()),
                   uids.data());
    pack_owner.Set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                   static_cast<int64_t>(pointers.size()), pointers.data());
    pack_owner.Set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace_);
    pack_owner.Finalize(pack, "variant pack");
    STRATA_RETURN_IF_ERROR(pack_owner.status());
    STRATA_RETURN_IF_ERROR(CudnnStatus(Api().Execute(handle_, cached.plan, pack), "execute attention"));
    ++stats_.runs;
    return absl::OkStatus();
  }

  const CudnnAttentionStats& stats() const { return stats_; }

 private:
  absl::Status EnsureWorkspace(int64_t bytes, cudaStream_t stream) {
    if (bytes <= workspace_bytes_) return absl::OkStatus();
    if (workspace_ != nullptr) {
      STRATA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // a pending launch may still use it
      STRATA_CUDA_RETURN_IF_ERROR(cudaFree(workspace_));
      workspace_ = nullptr;
      workspace_bytes_ = 0;
    }
    STRATA_CUDA_RETURN_IF_ERROR(cudaMalloc(&workspace_, static_cast<size_t>(bytes)));
    workspace_bytes_ = bytes;
    return absl::OkStatus();
  }

  cudnnHandle_t handle_ = nullptr;
  std::map<PlanKey, CachedPlan> plans_;
  std::map<PlanKey, double> unbuilt_flops_;  // shapes run on the own kernel so far, and their FLOPs
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
  CudnnAttentionStats stats_;
};

}  // namespace

void SetPrefillKernel(PrefillKernel kernel) { prefill_kernel.store(static_cast<int>(kernel)); }

PrefillKernel GetPrefillKernel() {
  int kernel = prefill_kernel.load();
  if (kernel < 0) {
    int unset = -1;
    prefill_kernel.compare_exchange_strong(unset, static_cast<int>(KernelFromEnvironment()));
    kernel = prefill_kernel.load();
  }
  return static_cast<PrefillKernel>(kernel);
}

bool CudnnAttentionLoaded() { return Api().loaded; }

std::string CudnnDescription() { return Api().description; }

bool CudnnServes(const AttentionArgs& a) {
  const bool at_end = a.kv_end == a.first_position + a.rows;  // causal, bottom-right aligned
  const bool all_visible = a.kv_end <= a.first_position + 1;  // every row sees every key
  return a.dtype == DType::kBF16 && (a.head_dim == 64 || a.head_dim == 128) && a.block_table == nullptr &&
         a.batch_positions == nullptr && a.window == 0 && a.rows > 0 && a.kv_begin <= a.first_position &&
         a.kv_end > a.kv_begin && (at_end || all_visible) && a.kv_end - a.kv_begin <= std::numeric_limits<int32_t>::max();
}

absl::Status CudnnAttention(const AttentionArgs& a, cudaStream_t stream, CudnnPlanBuild build) {
  if (!Api().loaded) return absl::UnavailableError(Api().description);
  if (!CudnnServes(a)) return absl::InvalidArgumentError("CudnnAttention: a shape cuDNN does not serve");
  STRATA_ASSIGN_OR_RETURN(ThreadContext * context, ThreadContext::ForCurrentDevice());
  return context->Run(a, build, stream);
}

CudnnAttentionStats GetCudnnAttentionStats() {
  if (!Api().loaded) return {};
  absl::StatusOr<ThreadContext*> context = ThreadContext::ForCurrentDevice();
  return context.ok() ? (*context)->stats() : CudnnAttentionStats{};
}

}  // namespace strata::kernels
