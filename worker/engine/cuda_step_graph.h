// CudaStepGraph: the CUDA backend's decode steps (Backend::BeginStep / EndStep) recorded and replayed as
// one CUDA graph. Private to the engine.
//
// Between Begin and End, the backend hands each kernel launch to Run with its signature (an op code and
// every pointer, shape and scalar the launch bakes in); End replays the executable graph of the previous
// step when the step's signature equals its, and otherwise captures the step and updates the executable
// graph's parameters in place when only they differ (other buffers: cudaGraphExecUpdate, much cheaper
// than instantiating) or instantiates it anew (the first step, a batch of another shape). What changes from step to step is read
// on the device when the graph runs, from pinned memory written before End:
//  - the step's position (NotePosition / DevicePosition: one-sequence contiguous steps), and
//  - index arrays (StageIndices: paged steps' positions, slots and block tables), in an area of pinned
//    and device memory whose offsets repeat when the step's calls repeat.
// End returns after launching; the caller synchronizes before the next Begin (the pinned inputs are
// rewritten then).
//
// Not thread-safe: one per backend, on the backend's stream.
#ifndef STRATA_WORKER_ENGINE_CUDA_STEP_GRAPH_H_
#define STRATA_WORKER_ENGINE_CUDA_STEP_GRAPH_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda_owners.h"

namespace strata::engine {

class CudaStepGraph {
 public:
  using Launch = std::function<absl::Status(cudaStream_t)>;

  static absl::StatusOr<CudaStepGraph> Create(cudaStream_t stream);
  CudaStepGraph() = default;

  bool recording() const { return recording_; }
  // REQUIRES: not recording.
  absl::Status Begin();
  // Launches `launch` on the stream now, or, while recording, keeps it for End and appends `signature`.
  absl::Status Run(std::initializer_list<int64_t> signature, Launch launch);
  // While recording, every position-dependent op of the step must be at one position.
  absl::Status NotePosition(int64_t position);
  // The device copy of the step's position while recording (kernels read it there), else null.
  const int64_t* DevicePosition() const { return recording_ ? position_device_.data<int64_t>() : nullptr; }
  // While recording: `values` in device memory when the step runs (valid until the next Begin), copied
  // there by the graph from pinned memory written now.
  absl::StatusOr<const int32_t*> StageIndices(absl::Span<const int32_t> values);
  // Captures or reuses the step's graph and launches it.
  absl::Status End();
  // Abandons the step: nothing recorded runs.
  void Abort();

  int64_t replayed() const { return replayed_; }
  int64_t updated() const { return updated_; }
  int64_t instantiated() const { return instantiated_; }

 private:
  cudaStream_t stream_ = nullptr;
  bool recording_ = false;
  int64_t step_position_ = -1;
  std::vector<int64_t> signature_, graph_signature_;
  std::vector<Launch> ops_;
  kernels::PinnedBuffer position_pinned_;
  kernels::DeviceBuffer position_device_;
  // The index area; buffers outgrown during a step stay alive until the next Begin (the step's ops use them).
  kernels::PinnedBuffer indices_pinned_;
  kernels::DeviceBuffer indices_device_;
  int64_t indices_used_ = 0;  // ints
  std::vector<kernels::PinnedBuffer> retired_pinned_;
  std::vector<kernels::DeviceBuffer> retired_device_;
  kernels::GraphExec exec_;
  int64_t replayed_ = 0, updated_ = 0, instantiated_ = 0;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CUDA_STEP_GRAPH_H_
