// Fused RBF-HSIC tile kernel (FlashAttention-like): one thread block takes a BM x BM tile of
// sample pairs (i in block a, j in block b), computes the dot products x_i.x_j and y_i.y_j in
// registers from shared-memory slices of the rows (a register-tiled GEMM, TM x TM pairs per
// thread), turns them into E = 2^m_x exp(-gamma_x d2x) - c_x and F likewise (rbf_pair.h) and
// accumulates them in double: the pair sums E F, E^2, F^2 and the row sums of E and F. No n x n
// (or tile-sized) matrix is ever written to memory.
//
// The per-pair body (entry, mask, accumulator) is csrc/common/rbf_pair.h, the one the host kernel
// csrc/cpu/rbf_pairs_cpu.cpp runs on vector lanes. The tile decomposition (tile sizes, thread
// ownership, slices, slots, epilogue rows) is csrc/common/rbf_pairs_grid.h, shared with this
// kernel's host twin csrc/cpu/twins/rbf_pairs_twin.cpp: this file keeps only the barriers, shuffles and
// atomics, which the twin emulates; the register-tiled dot products are csrc/cuda/dot_tile.cuh,
// shared with the distance-histogram kernel.
//
// Symmetry (rbf_pair.h's diagonal convention): every evaluated pair stands for itself and its
// mirror image, so the pair sums count twice and the column sums of a tile are the row sums of its
// b rows. When a and b are the same block (same_block = 1) only tiles on or above the diagonal run
// and a diagonal tile evaluates only its pairs j > i. When a and b are different blocks every tile
// runs: the caller runs each unordered block pair once.
//
// Rows must be centred by one common shift (precision of |a|^2 + |b|^2 - 2 a.b); the squared
// norms nx*, ny* are of the centred rows, rounded to T. Inputs are C-contiguous.
#include "common/rbf_pairs_grid.h"
#include "cuda/dot_tile.cuh"
#include "cuda/reduce.cuh"

// Grid: (ceil(mb / BM), ceil(ma / BM)) blocks of 256 threads, BM = 16 TM. Adds the row sums of E
// and F for the a rows to row_k_a / row_l_a and the column sums to row_k_b / row_l_b (the same
// arrays as the a side when same_block). Pair sums, counted for both orders of every pair, go to
// sums[3 * slot + 0..2] (s_kl, s_kk, s_ll) with slot = pair_slot(...); the caller adds the slots.
template <typename T, int TM>
__global__ void __launch_bounds__(256) pcf_rbf_tiles(
    const T* __restrict__ xa, const T* __restrict__ ya, const T* __restrict__ nxa,
    const T* __restrict__ nya, long long ma, const T* __restrict__ xb, const T* __restrict__ yb,
    const T* __restrict__ nxb, const T* __restrict__ nyb, long long mb, long long dx, long long dy,
    T gamma_x, T c_x, int m_x, T gamma_y, T c_y, int m_y, int same_block, double* row_k_a,
    double* row_l_a, double* row_k_b, double* row_l_b, double* sums, int nslots) {
  using namespace pcf::rbf_grid;
  constexpr int BM = kSide * TM;
  if (!tile_runs(blockIdx.x, blockIdx.y, same_block)) return;  // block-uniform, before any barrier
  __shared__ Smem<T, TM> sm;
  const int tid = threadIdx.x, tx = thread_x(tid), ty = thread_y(tid);
  const int lane = tid % kWarpLanes, warp = tid / kWarpLanes;
  const long long i0 = tile_origin<TM>(blockIdx.y), j0 = tile_origin<TM>(blockIdx.x);
  const bool diagonal = diagonal_tile(blockIdx.x, blockIdx.y, same_block);

  T gx[TM][TM], gy[TM][TM];
  pcf::tiles::dot_tile<T, TM>(xa, ma, xb, mb, dx, i0, j0, sm, gx);
  pcf::tiles::dot_tile<T, TM>(ya, ma, yb, mb, dy, i0, j0, sm, gy);

  T nxj[TM], nyj[TM];
  column_norms<T, TM>(nxb, mb, j0, tx, nxj);
  column_norms<T, TM>(nyb, mb, j0, tx, nyj);
  const ThreadSide<T, TM> x{gx, nxj, nxa, {gamma_x, c_x, m_x}}, y{gy, nyj, nya, {gamma_y, c_y, m_y}};
  pcf::PairSums<double> s{0.0, 0.0, 0.0};
  double ck[TM], cl[TM];
#pragma unroll
  for (int c = 0; c < TM; ++c) ck[c] = cl[c] = 0.0;
#pragma unroll
  for (int r = 0; r < TM; ++r) {
    double rk, rl;
    epilogue_row<T, TM>(r, x, y, i0, j0, tx, ty, ma, mb, diagonal, rk, rl, ck, cl, s);
    rk = pcf::group_sum(rk, kSide);  // the 16 lanes that share row i
    rl = pcf::group_sum(rl, kSide);
    const long long i = i0 + ty + kSide * r;
    if (tx == 0 && i < ma) {
      atomicAdd(row_k_a + i, rk);
      atomicAdd(row_l_a + i, rl);
    }
  }
#pragma unroll
  for (int c = 0; c < TM; ++c) {  // column sums are row sums of the b rows (the mirror)
    ck[c] += __shfl_xor_sync(pcf::kFullMask, ck[c], kSide);  // the two rows of threads in a warp
    cl[c] += __shfl_xor_sync(pcf::kFullMask, cl[c], kSide);
    if (lane < kSide) {
      sm.cols[0][warp][tx + kSide * c] = ck[c];
      sm.cols[1][warp][tx + kSide * c] = cl[c];
    }
  }
  __syncthreads();
  for (int t = tid; t < 2 * BM; t += kThreads) {
    const int side = t / BM, col = t % BM;
    const long long j = j0 + col;
    if (j < mb) atomicAdd((side == 0 ? row_k_b : row_l_b) + j, column_total(sm, side, col));
  }
  const int slot = pair_slot(blockIdx.x, blockIdx.y, gridDim.x, nslots);
  pcf::block_sum_atomic(pcf::kMirrored * s.kl, sm.scratch, sums + 3 * slot + 0);
  pcf::block_sum_atomic(pcf::kMirrored * s.kk, sm.scratch, sums + 3 * slot + 1);
  pcf::block_sum_atomic(pcf::kMirrored * s.ll, sm.scratch, sums + 3 * slot + 2);
}

// Explicit instantiations (the offline nvcc check compiles them; CuPy finds the same ones through
// name_expressions). float: 128 x 128 tiles, 8 x 8 pairs per thread; double: 64 x 64, 4 x 4.
#define PCF_RBF_INSTANTIATE(T, TM)                                                               \
  template __global__ void pcf_rbf_tiles<T, TM>(                                                 \
      const T*, const T*, const T*, const T*, long long, const T*, const T*, const T*, const T*, \
      long long, long long, long long, T, T, int, T, T, int, int, double*, double*, double*,     \
      double*, double*, int);
PCF_RBF_INSTANTIATE(float, 8)
PCF_RBF_INSTANTIATE(double, 4)
#undef PCF_RBF_INSTANTIATE
