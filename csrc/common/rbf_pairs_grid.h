// The tile decomposition of the CUDA RBF kernel (csrc/cuda/rbf_pairs_cuda.cu), shared with its
// host twin (csrc/cpu/twins/rbf_pairs_twin.cpp), which runs the kernel's grid, block and thread loops
// serially. Every index, tile size, mask, slot and shared-memory position is computed here, by the
// same lines on both sides, so that CI (no GPU) executes the kernel's indexing; only what has no
// host meaning (barriers, shuffles, atomics) stays in the .cu file, and the twin emulates it.
// NVRTC-clean: no headers, no std:: calls.
//
// Grid (ceil(mb / BM), ceil(ma / BM)) of blocks of kThreads threads; block (bx, by) takes the
// BM x BM tile of pairs i in [by BM, by BM + BM) of a, j in [bx BM, bx BM + BM) of b, BM = 16 TM;
// thread (tx, ty) = (tid % 16, tid / 16) owns the TM x TM pairs i = i0 + ty + 16 r,
// j = j0 + tx + 16 c. The dot products are built from shared-memory slices of kBK depths.
#pragma once
#include "rbf_pair.h"

namespace pcf {
namespace rbf_grid {

constexpr int kThreads = 256;  // threads per block: 16 x 16
constexpr int kSide = 16;      // threads per tile side
constexpr int kBK = 8;         // depth of one shared-memory slice
constexpr int kPad = 4;        // row padding of the transposed slices against bank conflicts
constexpr int kWarpLanes = 32;
constexpr int kWarps = kThreads / kWarpLanes;

// Shared memory of one block: double-buffered transposed slices of a and b (slice[k][row]), the
// per-warp column partials of the epilogue and the scratch of the block-wide pair sums.
template <typename T, int TM>
struct Smem {
  static constexpr int BM = kSide * TM;
  T a[2][kBK][BM + kPad];
  T b[2][kBK][BM + kPad];
  double cols[2][kWarps][BM];
  double scratch[kWarpLanes];
};

PCF_HD int thread_x(int tid) { return tid % kSide; }
PCF_HD int thread_y(int tid) { return tid / kSide; }

// First row (a) or column (b) of the tiles of block index `block` along that axis.
template <int TM>
PCF_HD long long tile_origin(unsigned block) {
  return static_cast<long long>(block) * (kSide * TM);
}

// With same_block (a is b) only the tiles on or above the diagonal run: a tile below it is the
// mirror of one above, whose column sums already go to its rows (rbf_pair.h's convention).
PCF_HD bool tile_runs(unsigned bx, unsigned by, bool same_block) {
  return !(same_block && bx < by);
}
PCF_HD bool diagonal_tile(unsigned bx, unsigned by, bool same_block) {
  return same_block && bx == by;
}

// The slot (of nslots) whose three pair sums tile (bx, by) adds to: spreads the atomics.
PCF_HD int pair_slot(unsigned bx, unsigned by, unsigned grid_x, int nslots) {
  return static_cast<int>((static_cast<long long>(by) * grid_x + bx) % nslots);
}

// Thread tid's share of one slice [k0, k0 + kBK) of rows [r0, r0 + BM) of a C-contiguous m x d
// matrix: LOADS elements (zero outside the matrix), depth fastest (coalesced reads).
template <typename T, int BM, int LOADS>
PCF_HD void fetch(const T* __restrict__ src, long long m, long long d, long long r0, long long k0,
                  int tid, T (&out)[LOADS]) {
  PCF_UNROLL
  for (int l = 0; l < LOADS; ++l) {
    const int e = tid + l * kThreads;
    const long long row = r0 + e / kBK, k = k0 + e % kBK;
    out[l] = (row < m && k < d) ? src[row * d + k] : T(0);
  }
}

// The same elements stored transposed into a slice (slice[k][row]).
template <typename T, int BM, int LOADS>
PCF_HD void store(const T (&in)[LOADS], T (*slice)[BM + kPad], int tid) {
  PCF_UNROLL
  for (int l = 0; l < LOADS; ++l) {
    const int e = tid + l * kThreads;
    slice[e % kBK][e / kBK] = in[l];
  }
}

// One slice of kBK depths into thread (tx, ty)'s dot products acc[r][c] (rows ty + 16 r of a,
// rows tx + 16 c of b).
template <typename T, int TM>
PCF_HD void dot_slice(const T (*a)[kSide * TM + kPad], const T (*b)[kSide * TM + kPad], int tx,
                      int ty, T (&acc)[TM][TM]) {
  PCF_UNROLL
  for (int k = 0; k < kBK; ++k) {
    T ra[TM], rb[TM];
    PCF_UNROLL
    for (int t = 0; t < TM; ++t) {
      ra[t] = a[k][ty + kSide * t];
      rb[t] = b[k][tx + kSide * t];
    }
    PCF_UNROLL
    for (int r = 0; r < TM; ++r)
      PCF_UNROLL
      for (int c = 0; c < TM; ++c) acc[r][c] += ra[r] * rb[c];
  }
}

// Squared norms of thread tx's TM columns j = j0 + tx + 16 c (0 past mb).
template <typename T, int TM>
PCF_HD void column_norms(const T* __restrict__ nb, long long mb, long long j0, int tx,
                         T (&out)[TM]) {
  PCF_UNROLL
  for (int c = 0; c < TM; ++c) {
    const long long j = j0 + tx + kSide * c;
    out[c] = j < mb ? nb[j] : T(0);
  }
}

// One side (x or y) of a thread's epilogue: its dot products and the norms and bandwidth they
// become entries with.
template <typename T, int TM>
struct ThreadSide {
  const T (&dots)[TM][TM];
  const T (&norm_j)[TM];
  const T* norm_a;  // all ma row norms of block a
  RbfKernel<T> kernel;
};

// Row r of thread (tx, ty)'s pairs: E and F of the TM pairs (i, j) the tile owns (keep_pair), in
// double, added (accumulate_pair) to the thread's column sums ck, cl and pair sums s; the row's
// sums go to rk, rl (the caller reduces them over the 16 threads of the row). On a diagonal tile
// the column groups c < r lie entirely on or below the diagonal: skipped, for every thread alike.
template <typename T, int TM>
PCF_HD void epilogue_row(int r, const ThreadSide<T, TM>& x, const ThreadSide<T, TM>& y, long long i0,
                         long long j0, int tx, int ty, long long ma, long long mb, bool diagonal,
                         double& rk, double& rl, double (&ck)[TM], double (&cl)[TM],
                         PairSums<double>& s) {
  const long long i = i0 + ty + kSide * r;
  const T nxi = i < ma ? x.norm_a[i] : T(0), nyi = i < ma ? y.norm_a[i] : T(0);
  rk = rl = 0.0;
  PCF_UNROLL
  for (int c = 0; c < TM; ++c) {
    if (diagonal && c < r) continue;
    const long long j = j0 + tx + kSide * c;
    const T e = keep_pair<T>(rbf_entry<T>(x.dots[r][c], nxi, x.norm_j[c], x.kernel), i, j, ma, mb,
                             diagonal);
    const T f = keep_pair<T>(rbf_entry<T>(y.dots[r][c], nyi, y.norm_j[c], y.kernel), i, j, ma, mb,
                             diagonal);
    accumulate_pair<double>(static_cast<double>(e), static_cast<double>(f), rk, rl, ck[c], cl[c], s);
  }
}

// Column col of side (0: E, 1: F) of the tile: the sum of the per-warp partials.
template <typename T, int TM>
PCF_HD double column_total(const Smem<T, TM>& sm, int side, int col) {
  double s = 0.0;
  for (int w = 0; w < kWarps; ++w) s += sm.cols[side][w][col];
  return s;
}

}  // namespace rbf_grid
}  // namespace pcf
