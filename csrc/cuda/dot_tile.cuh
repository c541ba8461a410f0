// The register-tiled dot products of one BM x BM tile of row pairs (thread (tx, ty) gets its
// TM x TM dots), from double-buffered shared-memory slices: the loop of the RBF tile kernel
// (csrc/cuda/rbf_pairs_cuda.cu), on the tile decomposition of csrc/common/rbf_pairs_grid.h, for the
// kernels that reuse it (csrc/cuda/d2_hist_cuda.cu).
#pragma once
#include "common/rbf_pairs_grid.h"

namespace pcf {
namespace tiles {

using namespace pcf::rbf_grid;

// acc[r][c] = a_i . b_j for the thread's TM x TM pairs, i = i0 + ty + 16 r, j = j0 + tx + 16 c.
// One barrier per slice: the next slice is read from global memory while the current one is used.
template <typename T, int TM>
__device__ __forceinline__ void dot_tile(const T* __restrict__ a, long long ma,
                                         const T* __restrict__ b, long long mb, long long d,
                                         long long i0, long long j0, Smem<T, TM>& sm,
                                         T (&acc)[TM][TM]) {
  constexpr int BM = kSide * TM;
  constexpr int LOADS = BM * kBK / kThreads;
  const int tid = threadIdx.x, tx = thread_x(tid), ty = thread_y(tid);
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int c = 0; c < TM; ++c) acc[r][c] = T(0);
  T pa[LOADS], pb[LOADS];
  __syncthreads();  // the previous user of the slices is done
  fetch<T, BM, LOADS>(a, ma, d, i0, 0, tid, pa);
  fetch<T, BM, LOADS>(b, mb, d, j0, 0, tid, pb);
  store<T, BM, LOADS>(pa, sm.a[0], tid);
  store<T, BM, LOADS>(pb, sm.b[0], tid);
  __syncthreads();
  int cur = 0;
  for (long long k0 = 0; k0 < d; k0 += kBK) {
    const bool more = k0 + kBK < d;
    if (more) {
      fetch<T, BM, LOADS>(a, ma, d, i0, k0 + kBK, tid, pa);
      fetch<T, BM, LOADS>(b, mb, d, j0, k0 + kBK, tid, pb);
    }
    dot_slice<T, TM>(sm.a[cur], sm.b[cur], tx, ty, acc);
    if (more) {  // the other buffer was last read before the previous barrier
      store<T, BM, LOADS>(pa, sm.a[cur ^ 1], tid);
      store<T, BM, LOADS>(pb, sm.b[cur ^ 1], tid);
    }
    __syncthreads();
    cur ^= 1;
  }
}

}  // namespace tiles
}  // namespace pcf
