// CUDA backend: the engine's ops on one GPU, through strata_kernels (cuBLAS GEMMs, fused RMSNorm,
// RoPE, SwiGLU, flash attention). Activations, weights and the KV cache are BF16 by default (float32
// accumulation everywhere); F32 mode computes in float32 end to end, for exact comparisons with
// reference outputs. All work of a backend runs in order on one non-blocking stream; the host waits
// only in CopyToHost (and in EndStep of a captured decode step).
#ifndef STRATA_WORKER_ENGINE_CUDA_BACKEND_H_
#define STRATA_WORKER_ENGINE_CUDA_BACKEND_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "worker/engine/backend.h"

namespace strata::engine {

enum class DecodeGraphs {
  kOff,  // decode steps launch their kernels one by one
  // A decode step (one token, between BeginStep and EndStep) is recorded; EndStep replays the CUDA graph
  // of the previous step when the step's buffers, shapes and scalars are the same (its position is read
  // on the device), and captures a new graph otherwise. No host sync inside a step.
  kCapture,
};

struct CudaBackendOptions {
  // Element type of activations, weights and the KV cache: kBF16 (default) or kF32.
  DType dtype = DType::kBF16;
  // CUDA device ordinal. Default 0.
  int device = 0;
  // Default kCapture.
  DecodeGraphs decode_graphs = DecodeGraphs::kCapture;
};

// How the decode steps of a backend ran as graphs so far: each step replayed the previous graph as it was,
// updated its parameters in place (the same kernels on other buffers: cudaGraphExecUpdate), or
// instantiated a new one (the first step, a different batch).
struct DecodeGraphStats {
  int64_t replayed = 0;
  int64_t updated = 0;
  int64_t instantiated = 0;
};
// The stats of a backend made by CreateCudaBackend; nothing for any other backend.
std::optional<DecodeGraphStats> DecodeGraphStatsOf(const Backend& backend);

// FailedPrecondition when there is no usable GPU (or Strata was built without CUDA), InvalidArgument
// for a dtype other than BF16/F32.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options = {});

// Whether this build has the CUDA backend (STRATA_HAVE_CUDA), and a usable GPU is visible. On false,
// `reason` says why.
bool CudaBackendAvailable(std::string* reason);
// The GPUs this process sees (CUDA_VISIBLE_DEVICES applied); 0, with `reason` saying why, where none is
// usable or the build has no CUDA backend.
int CudaDeviceCount(std::string* reason);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CUDA_BACKEND_H_
