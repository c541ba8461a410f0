// Exact-median selection pass on the GPU: the squared distances of the row pairs of two blocks,
// computed tile by tile with the RBF kernel's register-tiled dot products (dot_tile.cuh on
// csrc/common/rbf_pairs_grid.h) and never stored, counted into the pass's window at once
// (csrc/common/d2_hist.h): below the window (one atomic per block), per bin (global atomics;
// few once the window is narrow), or collected (candidate pass, bins == 0). Both sides of an RBF
// CKA (x and y, each with its own rows, depth and window) go through one launch: blockIdx.z picks
// the side. Grid (ceil(mb / BM), ceil(ma / BM), sides) of 256 threads, BM = 16 TM; with
// same_block only tiles on or above the diagonal run and only pairs j > i count.
#include "common/d2_hist.h"
#include "cuda/dot_tile.cuh"

namespace pcf {
namespace d2_cuda {

__device__ __forceinline__ unsigned long long warp_sum_u64(unsigned long long v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One side's pass over the tile (i0, j0).
template <typename T, int TM>
__device__ __forceinline__ void side_pass(const T* a, const T* b, const T* na, const T* nb,
                                          long long ma, long long mb, long long d, bool same_block,
                                          double lo, double hi, long long bins,
                                          unsigned long long* below, unsigned long long* counts,
                                          double* values, long long capacity,
                                          unsigned long long* nvalues,
                                          pcf::rbf_grid::Smem<T, TM>& sm) {
  using namespace pcf::rbf_grid;
  const int tid = threadIdx.x, tx = thread_x(tid), ty = thread_y(tid);
  const long long i0 = tile_origin<TM>(blockIdx.y), j0 = tile_origin<TM>(blockIdx.x);
  T g[TM][TM];
  pcf::tiles::dot_tile<T, TM>(a, ma, b, mb, d, i0, j0, sm, g);
  T nbj[TM];
  column_norms<T, TM>(nb, mb, j0, tx, nbj);
  const double scale = bins > 0 && hi > lo ? static_cast<double>(bins) / (hi - lo) : 0.0;
  unsigned long long n_below = 0;
#pragma unroll
  for (int r = 0; r < TM; ++r) {
    const long long i = i0 + ty + kSide * r;
    const T nai = i < ma ? na[i] : T(0);
#pragma unroll
    for (int c = 0; c < TM; ++c) {
      const long long j = j0 + tx + kSide * c;
      if (!pcf::d2::counts_pair(i, j, ma, mb, same_block)) continue;
      const double v = pcf::d2::pair_sq_distance<T>(g[r][c], nai, nbj[c]);
      const long long k = pcf::d2::place(v, lo, hi, scale, bins);
      if (k == pcf::d2::kBelow) {
        ++n_below;
      } else if (k >= 0) {
        if (bins > 0) {
          atomicAdd(counts + k, 1ULL);
        } else {
          const unsigned long long slot = atomicAdd(nvalues, 1ULL);
          if (slot < static_cast<unsigned long long>(capacity)) values[slot] = v;
        }
      }
    }
  }
  n_below = warp_sum_u64(n_below);
  if (tid % kWarpLanes == 0 && n_below) atomicAdd(below, n_below);
}

}  // namespace d2_cuda
}  // namespace pcf

// Side s (blockIdx.z) reads the s-th argument set. Rows are C-contiguous and centred by one shift;
// norms are their squared norms in T. below, counts (bins entries), nvalues are uint64 counters;
// values holds up to `capacity` collected distances (nvalues may exceed it: the caller checks).
template <typename T, int TM>
__global__ void __launch_bounds__(256) pcf_d2_hist(
    long long ma, long long mb, int same_block,
    const T* a0, const T* b0, const T* na0, const T* nb0, long long d0, double lo0, double hi0,
    long long bins0, unsigned long long* below0, unsigned long long* counts0, double* values0,
    long long capacity0, unsigned long long* nvalues0,
    const T* a1, const T* b1, const T* na1, const T* nb1, long long d1, double lo1, double hi1,
    long long bins1, unsigned long long* below1, unsigned long long* counts1, double* values1,
    long long capacity1, unsigned long long* nvalues1) {
  if (!pcf::rbf_grid::tile_runs(blockIdx.x, blockIdx.y, same_block)) return;  // block-uniform
  __shared__ pcf::rbf_grid::Smem<T, TM> sm;
  if (blockIdx.z == 0)
    pcf::d2_cuda::side_pass<T, TM>(a0, b0, na0, nb0, ma, mb, d0, same_block, lo0, hi0, bins0,
                                   below0, counts0, values0, capacity0, nvalues0, sm);
  else
    pcf::d2_cuda::side_pass<T, TM>(a1, b1, na1, nb1, ma, mb, d1, same_block, lo1, hi1, bins1,
                                   below1, counts1, values1, capacity1, nvalues1, sm);
}

#define PCF_D2_INSTANTIATE(T, TM)                                                               \
  template __global__ void pcf_d2_hist<T, TM>(                                                  \
      long long, long long, int, const T*, const T*, const T*, const T*, long long, double,     \
      double, long long, unsigned long long*, unsigned long long*, double*, long long,          \
      unsigned long long*, const T*, const T*, const T*, const T*, long long, double, double,   \
      long long, unsigned long long*, unsigned long long*, double*, long long,                  \
      unsigned long long*);
PCF_D2_INSTANTIATE(float, 8)
PCF_D2_INSTANTIATE(double, 4)
#undef PCF_D2_INSTANTIATE
