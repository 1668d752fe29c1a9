// CPU backend: float32 math, OpenBLAS GEMMs, OpenMP across cores. The reference every other backend
// is tested against.
#ifndef STRATA_WORKER_ENGINE_CPU_BACKEND_H_
#define STRATA_WORKER_ENGINE_CPU_BACKEND_H_

#include <memory>

#include "worker/engine/backend.h"

namespace strata::engine {

struct CpuBackendOptions {
  // Threads for GEMMs (OpenBLAS) and the other ops (OpenMP). 0: one per core. OpenBLAS's count is
  // process-wide: the last backend created sets it for every backend in the process.
  int threads = 0;
};

// F32 weights are used in place from the memory-mapped checkpoint when aligned; F16/BF16 weights are
// converted to float32 once at load (2x their size in RAM), because OpenBLAS has no half-precision GEMM
// in Debian 12's build.
std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CPU_BACKEND_H_
