// CreateCudaBackend in a build without CUDA (STRATA_HAVE_CUDA off): says so.
#include "worker/engine/cuda_backend.h"

namespace strata::engine {

std::optional<DecodeGraphStats> DecodeGraphStatsOf(const Backend&) { return std::nullopt; }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions&) {
  return absl::FailedPreconditionError("this build of Strata has no CUDA backend (configured with STRATA_CUDA=OFF "
                                       "or without nvcc): rebuild with -DSTRATA_CUDA=ON");
}

bool CudaBackendAvailable(std::string* reason) {
  if (reason != nullptr) *reason = "built without CUDA (STRATA_HAVE_CUDA off)";
  return false;
}

int CudaDeviceCount(std::string* reason) {
  CudaBackendAvailable(reason);
  return 0;
}

}  // namespace strata::engine
