#include "worker/engine/cuda_step_graph.h"

#include <algorithm>
#include <cstring>

#include "common/status.h"
#include "common/strings.h"
#include "kernels/cuda_status.h"

namespace strata::engine {
namespace {

constexpr int64_t kInitialIndexInts = int64_t{1} << 16;
// Signature op codes of the area's copies (the backend's ops use small positive codes).
constexpr int64_t kStageIndicesOp = -1;

int64_t Bits(const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p)); }

}  // namespace

absl::StatusOr<CudaStepGraph> CudaStepGraph::Create(cudaStream_t stream) {
  CudaStepGraph graph;
  graph.stream_ = stream;
  STRATA_ASSIGN_OR_RETURN(graph.position_pinned_, kernels::PinnedBuffer::Allocate(sizeof(int64_t)));
  STRATA_ASSIGN_OR_RETURN(graph.position_device_, kernels::DeviceBuffer::Allocate(sizeof(int64_t)));
  STRATA_ASSIGN_OR_RETURN(graph.indices_pinned_, kernels::PinnedBuffer::Allocate(kInitialIndexInts * sizeof(int32_t)));
  STRATA_ASSIGN_OR_RETURN(graph.indices_device_, kernels::DeviceBuffer::Allocate(kInitialIndexInts * sizeof(int32_t)));
  return graph;
}

absl::Status CudaStepGraph::Begin() {
  if (recording_) return absl::FailedPreconditionError("BeginStep: a step is already being recorded");
  recording_ = true;
  step_position_ = -1;
  signature_.clear();
  ops_.clear();
  indices_used_ = 0;
  retired_pinned_.clear();
  retired_device_.clear();
  return absl::OkStatus();
}

absl::Status CudaStepGraph::Run(std::initializer_list<int64_t> signature, Launch launch) {
  if (!recording_) return launch(stream_);
  signature_.insert(signature_.end(), signature.begin(), signature.end());
  ops_.push_back(std::move(launch));
  return absl::OkStatus();
}

absl::Status CudaStepGraph::NotePosition(int64_t position) {
  if (!recording_) return absl::OkStatus();
  if (step_position_ >= 0 && step_position_ != position) {
    return absl::InternalError(StrCat("decode step at position ", step_position_, " also used position ", position));
  }
  step_position_ = position;
  return absl::OkStatus();
}

absl::StatusOr<const int32_t*> CudaStepGraph::StageIndices(absl::Span<const int32_t> values) {
  if (!recording_) return absl::FailedPreconditionError("StageIndices outside a decode step");
  const int64_t count = std::max<int64_t>(static_cast<int64_t>(values.size()), 1);
  const int64_t capacity = static_cast<int64_t>(indices_pinned_.bytes() / sizeof(int32_t));
  if (indices_used_ + count > capacity) {
    // Outgrown: new buffers from here on (a new signature, so a new graph); the step's earlier copies
    // still read and write the old ones, kept until the next Begin.
    const int64_t grown = std::max(2 * capacity, indices_used_ + count);
    retired_pinned_.push_back(std::move(indices_pinned_));
    retired_device_.push_back(std::move(indices_device_));
    STRATA_ASSIGN_OR_RETURN(indices_pinned_, kernels::PinnedBuffer::Allocate(grown * sizeof(int32_t)));
    STRATA_ASSIGN_OR_RETURN(indices_device_, kernels::DeviceBuffer::Allocate(grown * sizeof(int32_t)));
    indices_used_ = 0;
  }
  int32_t* pinned = indices_pinned_.data<int32_t>() + indices_used_;
  int32_t* device = indices_device_.data<int32_t>() + indices_used_;
  indices_used_ += count;
  std::memcpy(pinned, values.data(), values.size() * sizeof(int32_t));
  const size_t bytes = values.size() * sizeof(int32_t);
  STRATA_RETURN_IF_ERROR(Run({kStageIndicesOp, Bits(pinned), Bits(device), static_cast<int64_t>(bytes)},
                             [=](cudaStream_t s) -> absl::Status {
                               if (bytes == 0) return absl::OkStatus();
                               STRATA_CUDA_RETURN_IF_ERROR(
                                   cudaMemcpyAsync(device, pinned, bytes, cudaMemcpyHostToDevice, s));
                               return absl::OkStatus();
                             }));
  return device;
}

absl::Status CudaStepGraph::End() {
  if (!recording_) return absl::OkStatus();
  recording_ = false;
  std::vector<Launch> ops = std::move(ops_);
  ops_.clear();
  *position_pinned_.data<int64_t>() = step_position_ < 0 ? 0 : step_position_;
  if (exec_ && signature_ == graph_signature_) {
    ++replayed_;
  } else {
    STRATA_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    absl::Status recorded = kernels::CudaCallStatus(
        cudaMemcpyAsync(position_device_.data(), position_pinned_.data(), sizeof(int64_t), cudaMemcpyHostToDevice,
                        stream_),
        "cudaMemcpyAsync(position)", __FILE__, __LINE__);
    for (size_t i = 0; i < ops.size() && recorded.ok(); ++i) recorded = ops[i](stream_);
    cudaGraph_t raw_graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &raw_graph);
    kernels::Graph graph(raw_graph);
    STRATA_RETURN_IF_ERROR(recorded);
    STRATA_CUDA_RETURN_IF_ERROR(ended);
    graph_signature_.clear();
    cudaGraphExecUpdateResultInfo update{};
    if (exec_ && cudaGraphExecUpdate(exec_.get(), graph.get(), &update) == cudaSuccess) {
      ++updated_;
    } else {
      (void)cudaGetLastError();  // a refused update (another topology) is not an error
      exec_.Reset();
      cudaGraphExec_t raw_exec = nullptr;
      STRATA_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&raw_exec, graph.get(), 0));
      exec_ = kernels::GraphExec(raw_exec);
      ++instantiated_;
    }
    graph_signature_ = signature_;
  }
  STRATA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_.get(), stream_));
  return absl::OkStatus();
}

void CudaStepGraph::Abort() {
  recording_ = false;
  ops_.clear();
  signature_.clear();
}

}  // namespace strata::engine
