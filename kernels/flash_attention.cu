// Tensor-core prefill attention for Hopper and Ampere: FlashAttention-2's schedule on mma.sync.
#include <cmath>

#include "common/strings.h"
#include "kernels/attention.h"
#include "kernels/cuda_status.h"
#include "kernels/device_types.cuh"
#include "kernels/kv_rows.cuh"

namespace strata::kernels {
namespace {

constexpr int kStages = 2;   // K/V tiles in flight: the next loads while the current computes
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy global -> shared; zero-fills when `valid` is false.
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CommitAsync() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void WaitAsync() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void LoadMatrixX4(uint32_t r[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(smem)));
}
__device__ __forceinline__ void LoadMatrixX4Trans(uint32_t r[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(smem)));
}

// c[16x8] += a[16x16] · b[16x8], bf16 operands, float32 accumulators.
__device__ __forceinline__ void Mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Element offset of (row, col) in a [rows][kHeadDim] shared tile whose 16-byte chunks are XOR-swizzled
// by the row's low 3 bits: the 8 rows that one ldmatrix reads hit 8 different bank groups.
template <int kHeadDim>
__device__ __forceinline__ int Swizzle(int row, int col) {
  return row * kHeadDim + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// One destination of LoadTiles: a swizzled shared tile filled from rows of `src`.
struct TileCopy {
  bf16* smem;
  const bf16* src;
};

// Loads kTileRows rows of kHeadDim bf16 into each tile of `tiles` (tiles whose rows sit at the same
// offsets, as K and V do): row r from src + row_offset(r), an element offset computed once per row and
// tile set, so rows need not be evenly spaced (a key tile spans several paged blocks). Rows at or past
// `valid_rows` are zero-filled and row_offset is never called for them.
template <int kHeadDim, int kTileRows, int kThreads, typename RowOffset, typename... Tiles>
__device__ __forceinline__ void LoadTiles(int valid_rows, RowOffset row_offset, Tiles... tiles) {
  constexpr int kChunks = kHeadDim / 8;
#pragma unroll
  for (int i = threadIdx.x; i < kTileRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const bool valid = r < valid_rows;
    const int64_t offset = valid ? row_offset(r) + c * 8 : 0;
    (CopyAsync16(tiles.smem + Swizzle<kHeadDim>(r, c * 8), tiles.src + offset, valid), ...);
  }
}

// Causal GQA attention, FlashAttention-2 schedule. Grid: x = query tiles of kBlockM = kWarps * 16 *
// kMTiles rows (heaviest tile first), y = query heads, z = batch. Block: kWarps warps, each owning
// kMTiles m16 tiles of query rows. K/V tiles of kBlockN keys (64, or 32 where two m-tiles would
// otherwise spill registers) stream through a 2-stage cp.async pipeline in swizzled shared memory, each
// key row addressed on its own (KeyRows: contiguous, or paged, where a tile spans several blocks);
// S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16 (bf16 in, float32 accumulate), each K/V fragment read
// from shared memory once per warp and used for all its m-tiles; Q fragments stay in registers when a
// warp has one m-tile and are re-read from shared memory per k-step when it has two (registers); the
// online softmax (exp2 of log2-scaled scores, running max and sum per row) stays in registers, P is
// re-packed from the S accumulators as the A operand. Masks apply only to tiles that cross the causal
// diagonal, the window edge or the key range end. Query positions: first_position, or per batch item
// from device_position / batch_positions (ApplyPositions).
// FLOPs: 4 * visible (query, key) pairs * head_dim; bytes: Q and O once, K/V once per query tile.
// Shared memory: (kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2 bytes (96 KiB at head_dim 128, kBlockM 128).
template <int kHeadDim, int kWarps, int kMTiles, int kBlockN>
__global__ void __launch_bounds__(kWarps * kWarpSize, 8 / kWarps) FlashAttentionKernel(AttentionArgs a) {
  constexpr int kThreads = kWarps * kWarpSize;
  constexpr int kBlockM = kWarps * 16 * kMTiles;
  constexpr bool kQInRegisters = kMTiles == 1;
  const int64_t batch = blockIdx.z;
  ApplyPositions(a, batch);
  extern __shared__ __align__(128) unsigned char shared_raw[];
  bf16* q_tile = reinterpret_cast<bf16*>(shared_raw);
  bf16* k_tiles = q_tile + kBlockM * kHeadDim;
  bf16* v_tiles = k_tiles + kStages * kBlockN * kHeadDim;

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int group = lane >> 2, quad_lane = lane & 3;
  const int64_t m_tile = gridDim.x - 1 - blockIdx.x;  // the longest (latest) query tiles start first
  const int64_t head = blockIdx.y;
  const int64_t kv_head = head / (a.num_heads / a.num_kv_heads);
  const int64_t m0 = m_tile * kBlockM;
  const int rows_here = static_cast<int>(a.rows - m0 < kBlockM ? a.rows - m0 : kBlockM);

  const bf16* q = static_cast<const bf16*>(a.q) + batch * a.q_batch_stride + m0 * a.q_row_stride + head * kHeadDim;
  // The layout branch (KvLayout::kEither) runs per key row a thread loads: a few per tile, against the
  // tile's mma work (one instantiation per layout measured no fewer registers).
  const KeyRows<bf16> key_rows = KeyRowsOf<bf16>(a, batch, kv_head, kHeadDim);

  // Keys any row of this tile sees, as absolute positions [key_lo, key_hi).
  const int64_t first_row_position = a.first_position + m0;
  const int64_t last_row_position = first_row_position + rows_here - 1;
  int64_t key_lo = a.kv_begin;
  if (a.window > 0 && first_row_position - a.window + 1 > key_lo) key_lo = first_row_position - a.window + 1;
  const int64_t key_hi = last_row_position + 1 < a.kv_end ? last_row_position + 1 : a.kv_end;
  const int tiles = key_hi > key_lo ? static_cast<int>((key_hi - key_lo + kBlockN - 1) / kBlockN) : 0;

  // Row (within the block) of this thread's first accumulator row in m-tile mt; the second is 8 below.
  auto tile_row = [&](int mt) { return (warp * kMTiles + mt) * 16 + group; };

  const float score_scale = a.scale * kLog2e;
  float acc[kMTiles][kHeadDim / 8][4];
  float row_max[kMTiles][2], row_sum[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int i = 0; i < kHeadDim / 8; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  auto load_kv = [&](int tile, int stage) {
    const int64_t first_key = key_lo + static_cast<int64_t>(tile) * kBlockN;
    const int64_t remaining = key_hi - first_key;
    const int valid = static_cast<int>(remaining < kBlockN ? remaining : kBlockN);
    LoadTiles<kHeadDim, kBlockN, kThreads>(valid, [&](int r) { return key_rows.Offset(a, first_key + r, kHeadDim); },
                                           TileCopy{k_tiles + stage * kBlockN * kHeadDim, key_rows.k},
                                           TileCopy{v_tiles + stage * kBlockN * kHeadDim, key_rows.v});
  };
  auto load_q_fragment = [&](uint32_t frag[4], int mt, int kk) {
    const int r = (warp * kMTiles + mt) * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int c = kk * 16 + (lane >> 4) * 8;
    LoadMatrixX4(frag, q_tile + Swizzle<kHeadDim>(r, c));
  };

  LoadTiles<kHeadDim, kBlockM, kThreads>(rows_here, [&](int r) { return r * a.q_row_stride; }, TileCopy{q_tile, q});
  if (tiles > 0) load_kv(0, 0);
  CommitAsync();

  uint32_t q_frag[kQInRegisters ? kHeadDim / 16 : 1][4];
  for (int tile = 0; tile < tiles; ++tile) {
    const int stage = tile % kStages;
    if (tile + 1 < tiles) {
      load_kv(tile + 1, (tile + 1) % kStages);
      CommitAsync();
      WaitAsync<1>();
    } else {
      WaitAsync<0>();
    }
    __syncthreads();
    if constexpr (kQInRegisters) {
      if (tile == 0) {
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk) load_q_fragment(q_frag[kk], 0, kk);
      }
    }
    const bf16* ks = k_tiles + stage * kBlockN * kHeadDim;
    const bf16* vs = v_tiles + stage * kBlockN * kHeadDim;

    // S = Q · Kᵀ for this warp's rows x kBlockN keys.
    float s[kMTiles][kBlockN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int i = 0; i < kBlockN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a_frag[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        if constexpr (kQInRegisters) {
#pragma unroll
          for (int i = 0; i < 4; ++i) a_frag[mt][i] = q_frag[kk][i];
        } else {
          load_q_fragment(a_frag[mt], mt, kk);
        }
      }
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t b[4];
        const int r = np * 16 + (lane & 7) + (lane >> 4) * 8;
        const int c = kk * 16 + ((lane >> 3) & 1) * 8;
        LoadMatrixX4(b, ks + Swizzle<kHeadDim>(r, c));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma(s[mt][2 * np], a_frag[mt], b[0], b[1]);
          Mma(s[mt][2 * np + 1], a_frag[mt], b[2], b[3]);
        }
      }
    }

    // Mask where the tile crosses the diagonal, the window edge or the end of the key range.
    const int64_t tile_key0 = key_lo + static_cast<int64_t>(tile) * kBlockN;
    const bool needs_mask = tile_key0 + kBlockN - 1 > first_row_position || tile_key0 + kBlockN > key_hi ||
                            (a.window > 0 && tile_key0 <= last_row_position - a.window);
    if (needs_mask) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const int64_t position0 = first_row_position + tile_row(mt);
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t key = tile_key0 + nt * 8 + quad_lane * 2 + (e & 1);
            const int64_t position = e < 2 ? position0 : position0 + 8;
            const bool visible = key < key_hi && key <= position && (a.window == 0 || key > position - a.window);
            if (!visible) s[mt][nt][e] = -INFINITY;
          }
        }
      }
    }

    // Online softmax over the tile, rows in log2 units.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
          tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(row_max[mt][half], tile_max * score_scale);
        // A row that has seen no key yet keeps max -inf; subtract 0 then so exp2 gives 0, not NaN.
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        const float correction = exp2f(row_max[mt][half] - base);
        row_max[mt][half] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
          s[mt][nt][2 * half] = exp2f(s[mt][nt][2 * half] * score_scale - base);
          s[mt][nt][2 * half + 1] = exp2f(s[mt][nt][2 * half + 1] * score_scale - base);
          sum += s[mt][nt][2 * half] + s[mt][nt][2 * half + 1];
        }
        row_sum[mt][half] = row_sum[mt][half] * correction + sum;
#pragma unroll
        for (int dt = 0; dt < kHeadDim / 8; ++dt) {
          acc[mt][dt][2 * half] *= correction;
          acc[mt][dt][2 * half + 1] *= correction;
        }
      }
    }

    // O += P · V: the S accumulators of two adjacent n8 tiles are exactly an m16k16 A fragment.
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t p[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        p[mt][0] = PackBf16(s[mt][2 * kc][0], s[mt][2 * kc][1]);
        p[mt][1] = PackBf16(s[mt][2 * kc][2], s[mt][2 * kc][3]);
        p[mt][2] = PackBf16(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
        p[mt][3] = PackBf16(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
      }
#pragma unroll
      for (int np = 0; np < kHeadDim / 16; ++np) {
        uint32_t b[4];
        const int r = kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int c = np * 16 + (lane >> 4) * 8;
        LoadMatrixX4Trans(b, vs + Swizzle<kHeadDim>(r, c));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma(acc[mt][2 * np], p[mt], b[0], b[1]);
          Mma(acc[mt][2 * np + 1], p[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage is overwritten by the load issued in the next iteration
  }

  // Epilogue: finish the row sums across the quad, normalize, write O (bf16) and the LSE.
  bf16* out = static_cast<bf16*>(a.out) + batch * a.out_batch_stride + m0 * a.out_row_stride + head * kHeadDim;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float sum = row_sum[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int r = tile_row(mt) + half * 8;
      if (r >= rows_here) continue;
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      bf16* orow = out + static_cast<int64_t>(r) * a.out_row_stride;
#pragma unroll
      for (int dt = 0; dt < kHeadDim / 8; ++dt) {
        const __nv_bfloat162 pair =
            __floats2bfloat162_rn(acc[mt][dt][2 * half] * inv, acc[mt][dt][2 * half + 1] * inv);
        *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8 + quad_lane * 2) = pair;
      }
      if (a.lse != nullptr && quad_lane == 0) {
        a.lse[(batch * a.num_heads + head) * a.rows + m0 + r] =
            sum > 0.0f ? (row_max[mt][half] + log2f(sum)) * kLn2 : -INFINITY;
      }
    }
  }
}

template <int kHeadDim, int kWarps, int kMTiles, int kBlockN>
absl::Status LaunchFlash(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int kBlockM = kWarps * 16 * kMTiles;
  constexpr size_t kSharedBytes = (kBlockM + 2 * kStages * kBlockN) * kHeadDim * sizeof(bf16);
  auto* kernel = FlashAttentionKernel<kHeadDim, kWarps, kMTiles, kBlockN>;
  // Idempotent and cheap; done per launch so no global "initialized" state is needed.
  STRATA_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSharedBytes)));
  const dim3 grid(static_cast<unsigned>((a.rows + kBlockM - 1) / kBlockM), static_cast<unsigned>(a.num_heads),
                  static_cast<unsigned>(a.batch));
  kernel<<<grid, kWarps * kWarpSize, kSharedBytes, stream>>>(a);
  STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("FlashAttentionKernel");
  return absl::OkStatus();
}

template <int kHeadDim>
absl::Status LaunchFlash(const AttentionArgs& a, FlashTiling tiling, cudaStream_t stream) {
  switch (tiling) {
    case FlashTiling::k8Warps16Rows:
      return LaunchFlash<kHeadDim, 8, 1, 64>(a, stream);
    case FlashTiling::k4Warps32Rows:
      return LaunchFlash<kHeadDim, 4, 2, 32>(a, stream);
  }
  return absl::InvalidArgumentError("FlashAttentionPrefill: unknown tiling");
}

}  // namespace

absl::Status FlashAttentionPrefill(const AttentionArgs& a, cudaStream_t stream, FlashTiling tiling) {
  STRATA_RETURN_IF_ERROR(ValidateAttention(a));
  if (a.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(StrCat("FlashAttentionPrefill: BF16 only, got ", DTypeName(a.dtype)));
  }
  if (a.q_row_stride % 8 != 0 || a.out_row_stride % 8 != 0 || a.q_batch_stride % 8 != 0 ||
      a.out_batch_stride % 8 != 0 || !Aligned16(a.q) || !KvRowsAligned16(a)) {
    return absl::InvalidArgumentError(
        "FlashAttentionPrefill: strides must be multiples of 8 elements (16 bytes) and q, k, v 16-byte aligned");
  }
  if (a.rows == 0) return absl::OkStatus();
  switch (a.head_dim) {  // the one dispatch point from head_dim to the kernel's template
    case 64:
      return LaunchFlash<64>(a, tiling, stream);
    case 128:
      return LaunchFlash<128>(a, tiling, stream);
    default:
      return absl::InvalidArgumentError(
          StrCat("FlashAttentionPrefill: head_dim 64 or 128, got ", a.head_dim));
  }
}

}  // namespace strata::kernels
