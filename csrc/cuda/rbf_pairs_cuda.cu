// Fused RBF-HSIC tile kernel (FlashAttention-like): one thread block takes a BM x BM tile of
// sample pairs (i in block a, j in block b), computes the dot products x_i.x_j and y_i.y_j in
// registers from shared-memory slices of the rows (a register-tiled GEMM, TM x TM pairs per
// thread), turns them into E = expm1(-gamma_x d2x) = K - 1 and F = L - 1 with the per-pair math of
// csrc/common/rbf_pair.h (rbf_entry: the same function the host kernel csrc/cpu/rbf_pairs_cpu.cpp
// runs), and accumulates in double: the pair sums E F, E^2, F^2 and the row sums of E and F. No
// n x n (or tile-sized) matrix is ever written to memory.
//
// Symmetry: when a and b are the same block of samples (same_block = 1) only tiles on or above
// the diagonal run; an off-diagonal tile stands for itself and its mirror image (pair sums x2, its
// column sums are the row sums of the b rows). A diagonal tile sums all its ordered pairs with
// i != j (E_ii = 0 exactly, as for K - 1). When a and b are different blocks every tile runs and
// counts twice: the caller runs each unordered block pair once.
//
// Rows must be centred by one common shift (precision of |a|^2 + |b|^2 - 2 a.b); the squared
// norms nx*, ny* are of the centred rows, rounded to T. Inputs are C-contiguous.
#include "common/rbf_pair.h"
#include "cuda/reduce.cuh"

namespace pcf {
namespace rbf_cuda {

constexpr int kThreads = 256;  // 16 x 16; thread (ty, tx) owns rows ty + 16 r and columns tx + 16 c
constexpr int kSide = 16;
constexpr int kBK = 8;         // depth of one shared-memory slice
constexpr int kPad = 4;        // row padding of the transposed slices against bank conflicts
constexpr int kWarps = kThreads / 32;

// Shared memory of one block: double-buffered transposed slices of a and b, and the per-warp
// column partials of the epilogue.
template <typename T, int TM>
struct Smem {
  static constexpr int BM = kSide * TM;
  T a[2][kBK][BM + kPad];
  T b[2][kBK][BM + kPad];
  double cols[2][kWarps][BM];
  double scratch[32];
};

// Thread `tid`'s share of one slice [k0, k0 + kBK) of rows [r0, r0 + BM) of a C-contiguous
// m x d matrix: LOADS elements (zero outside the matrix), depth fastest (coalesced reads).
template <typename T, int BM, int LOADS>
__device__ __forceinline__ void fetch(const T* __restrict__ src, long long m, long long d,
                                      long long r0, long long k0, T (&out)[LOADS]) {
#pragma unroll
  for (int l = 0; l < LOADS; ++l) {
    const int e = threadIdx.x + l * kThreads;
    const long long row = r0 + e / kBK, k = k0 + e % kBK;
    out[l] = (row < m && k < d) ? src[row * d + k] : T(0);
  }
}

template <typename T, int BM, int LOADS>
__device__ __forceinline__ void store(const T (&in)[LOADS], T (*slice)[BM + kPad]) {
#pragma unroll
  for (int l = 0; l < LOADS; ++l) {
    const int e = threadIdx.x + l * kThreads;
    slice[e % kBK][e / kBK] = in[l];
  }
}

// acc[r][c] = a_i . b_j for the thread's TM x TM pairs, i = i0 + ty + 16 r, j = j0 + tx + 16 c.
// Double-buffered: the next slice is read from global memory while the current one is used, with
// one barrier per slice.
template <typename T, int TM>
__device__ __forceinline__ void dot_tile(const T* __restrict__ a, long long ma,
                                         const T* __restrict__ b, long long mb, long long d,
                                         long long i0, long long j0, Smem<T, TM>& sm,
                                         T (&acc)[TM][TM]) {
  constexpr int BM = kSide * TM;
  constexpr int LOADS = BM * kBK / kThreads;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int c = 0; c < TM; ++c) acc[r][c] = T(0);
  T pa[LOADS], pb[LOADS];
  __syncthreads();  // the previous user of the slices is done
  fetch<T, BM, LOADS>(a, ma, d, i0, 0, pa);
  fetch<T, BM, LOADS>(b, mb, d, j0, 0, pb);
  store<T, BM, LOADS>(pa, sm.a[0]);
  store<T, BM, LOADS>(pb, sm.b[0]);
  __syncthreads();
  int cur = 0;
  for (long long k0 = 0; k0 < d; k0 += kBK) {
    const bool more = k0 + kBK < d;
    if (more) {
      fetch<T, BM, LOADS>(a, ma, d, i0, k0 + kBK, pa);
      fetch<T, BM, LOADS>(b, mb, d, j0, k0 + kBK, pb);
    }
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      T ra[TM], rb[TM];
#pragma unroll
      for (int t = 0; t < TM; ++t) {
        ra[t] = sm.a[cur][k][ty + kSide * t];
        rb[t] = sm.b[cur][k][tx + kSide * t];
      }
#pragma unroll
      for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TM; ++c) acc[r][c] += ra[r] * rb[c];
    }
    if (more) {  // the other buffer was last read before the previous barrier
      store<T, BM, LOADS>(pa, sm.a[cur ^ 1]);
      store<T, BM, LOADS>(pb, sm.b[cur ^ 1]);
    }
    __syncthreads();
    cur ^= 1;
  }
}

}  // namespace rbf_cuda
}  // namespace pcf

// Grid: (ceil(mb / BM), ceil(ma / BM)) blocks of 256 threads, BM = 16 TM. Adds the row sums of E
// and F for the a rows to row_k_a / row_l_a and, for mirrored tiles, for the b rows to row_k_b /
// row_l_b (the same arrays as the a side when same_block). Pair sums go to sums[3 * slot + 0..2]
// (s_kl, s_kk, s_ll) with slot = block index % nslots; the caller adds the slots up.
template <typename T, int TM>
__global__ void __launch_bounds__(256) pcf_rbf_tiles(
    const T* __restrict__ xa, const T* __restrict__ ya, const T* __restrict__ nxa,
    const T* __restrict__ nya, long long ma, const T* __restrict__ xb, const T* __restrict__ yb,
    const T* __restrict__ nxb, const T* __restrict__ nyb, long long mb, long long dx, long long dy,
    T gamma_x, T gamma_y, int same_block, double* row_k_a, double* row_l_a, double* row_k_b,
    double* row_l_b, double* sums, int nslots) {
  using namespace pcf::rbf_cuda;
  constexpr int BM = kSide * TM;
  if (same_block && blockIdx.x < blockIdx.y) return;  // below the diagonal: the mirror covers it
  __shared__ Smem<T, TM> sm;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long i0 = static_cast<long long>(blockIdx.y) * BM;
  const long long j0 = static_cast<long long>(blockIdx.x) * BM;
  const bool diagonal_tile = same_block && blockIdx.x == blockIdx.y;

  T gx[TM][TM], gy[TM][TM];
  dot_tile<T, TM>(xa, ma, xb, mb, dx, i0, j0, sm, gx);
  dot_tile<T, TM>(ya, ma, yb, mb, dy, i0, j0, sm, gy);

  T nxj[TM], nyj[TM];
#pragma unroll
  for (int c = 0; c < TM; ++c) {
    const long long j = j0 + tx + kSide * c;
    nxj[c] = j < mb ? nxb[j] : T(0);
    nyj[c] = j < mb ? nyb[j] : T(0);
  }
  double skl = 0.0, skk = 0.0, sll = 0.0;
  double ck[TM], cl[TM];
#pragma unroll
  for (int c = 0; c < TM; ++c) ck[c] = cl[c] = 0.0;
#pragma unroll
  for (int r = 0; r < TM; ++r) {
    const long long i = i0 + ty + kSide * r;
    const bool row_ok = i < ma;
    const T nxi = row_ok ? nxa[i] : T(0), nyi = row_ok ? nya[i] : T(0);
    double rk = 0.0, rl = 0.0;
#pragma unroll
    for (int c = 0; c < TM; ++c) {
      const long long j = j0 + tx + kSide * c;
      const bool keep = row_ok && j < mb && !(diagonal_tile && i == j);
      const double e = keep ? static_cast<double>(pcf::rbf_entry<T>(gx[r][c], nxi, nxj[c], gamma_x)) : 0.0;
      const double f = keep ? static_cast<double>(pcf::rbf_entry<T>(gy[r][c], nyi, nyj[c], gamma_y)) : 0.0;
      rk += e;
      rl += f;
      ck[c] += e;
      cl[c] += f;
      skl += e * f;
      skk += e * e;
      sll += f * f;
    }
    rk = pcf::group_sum(rk, kSide);  // the 16 lanes that share row i
    rl = pcf::group_sum(rl, kSide);
    if (tx == 0 && row_ok) {
      atomicAdd(row_k_a + i, rk);
      atomicAdd(row_l_a + i, rl);
    }
  }
  if (!diagonal_tile) {  // column sums of the tile are row sums of the b rows (symmetry)
#pragma unroll
    for (int c = 0; c < TM; ++c) {
      ck[c] += __shfl_xor_sync(pcf::kFullMask, ck[c], kSide);  // the two rows of threads in a warp
      cl[c] += __shfl_xor_sync(pcf::kFullMask, cl[c], kSide);
      if (lane < kSide) {
        sm.cols[0][warp][tx + kSide * c] = ck[c];
        sm.cols[1][warp][tx + kSide * c] = cl[c];
      }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < 2 * BM; t += kThreads) {
      const int side = t / BM, col = t % BM;
      const long long j = j0 + col;
      double s = 0.0;
      for (int w = 0; w < kWarps; ++w) s += sm.cols[side][w][col];
      if (j < mb) atomicAdd((side == 0 ? row_k_b : row_l_b) + j, s);
    }
  }
  const double weight = diagonal_tile ? 1.0 : 2.0;
  const int slot = static_cast<int>((static_cast<long long>(blockIdx.y) * gridDim.x + blockIdx.x) % nslots);
  pcf::block_sum_atomic(weight * skl, sm.scratch, sums + 3 * slot + 0);
  pcf::block_sum_atomic(weight * skk, sm.scratch, sums + 3 * slot + 1);
  pcf::block_sum_atomic(weight * sll, sm.scratch, sums + 3 * slot + 2);
}

// Explicit instantiations (the offline nvcc check compiles them; CuPy finds the same ones through
// name_expressions). float: 128 x 128 tiles, 8 x 8 pairs per thread; double: 64 x 64, 4 x 4.
#define PCF_RBF_INSTANTIATE(T, TM)                                                               \
  template __global__ void pcf_rbf_tiles<T, TM>(                                                 \
      const T*, const T*, const T*, const T*, long long, const T*, const T*, const T*, const T*, \
      long long, long long, long long, T, T, int, double*, double*, double*, double*, double*, int);
PCF_RBF_INSTANTIATE(float, 8)
PCF_RBF_INSTANTIATE(double, 4)
#undef PCF_RBF_INSTANTIATE
