// CUDA kernels of the linear-CKA moment pass (host twin: csrc/cpu/twins/linear_moments_twin.cpp, which runs
// the same loops of csrc/common/linear_rows.h in the same decomposition). Compiled at run time by
// CuPy (NVRTC); T = float or double. Launched on one row chunk at a time; every sum goes to a
// double array with atomicAdd (one atomic per thread per slab of rows, not per element).
//
//   pcf_shift_columns     dst = src - shift (in T) into a C-contiguous buffer, column sums
//   pcf_row_norms         q_i = |dst_i|^2 in double, one warp per row
//   pcf_weighted_columns  sum_i q_i dst_i and sum_i r_i dst_i, one thread per column
//   pcf_norm_scalars      sum q, sum r, sum q^2, sum r^2, sum q r
#include "common/linear_rows.h"
#include "cuda/reduce.cuh"

// One thread per column (adjacent threads read adjacent addresses of a C-ordered row), a slab of
// `slab` rows per blockIdx.y. src is a strided view (strides in elements, may be negative).
template <typename T>
__global__ void pcf_shift_columns(const T* __restrict__ src, long long rows, long long cols,
                                  long long row_stride, long long col_stride,
                                  const T* __restrict__ shift, T* __restrict__ dst,
                                  double* __restrict__ colsum, long long slab) {
  const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const long long lo = static_cast<long long>(blockIdx.y) * slab;
  const long long hi = lo + slab < rows ? lo + slab : rows;
  if (lo >= hi) return;
  const double s = pcf::shift_column<T>(src + j * col_stride, row_stride, shift[j], dst + j, cols,
                                        lo, hi);
  atomicAdd(colsum + j, s);
}

// One warp per row of the C-contiguous shifted buffer; q[i] = |buf_i|^2 in double.
template <typename T>
__global__ void pcf_row_norms(const T* __restrict__ buf, long long rows, long long cols,
                              double* __restrict__ q) {
  const int lane = threadIdx.x & 31;
  const long long warps_per_block = blockDim.x >> 5;
  const long long first = static_cast<long long>(blockIdx.x) * warps_per_block + (threadIdx.x >> 5);
  const long long step = static_cast<long long>(gridDim.x) * warps_per_block;
  for (long long i = first; i < rows; i += step) {  // uniform per warp: shuffles stay converged
    const double part = pcf::row_sq_norm<T>(buf + i * cols, lane, cols, 32);
    const double total = pcf::warp_sum(part);
    if (lane == 0) q[i] = total;
  }
}

// One thread per column, a slab of rows per blockIdx.y: qsum[j] += sum_i q_i buf[i, j], and rsum.
template <typename T>
__global__ void pcf_weighted_columns(const T* __restrict__ buf, long long rows, long long cols,
                                     const double* __restrict__ q, const double* __restrict__ r,
                                     double* __restrict__ qsum, double* __restrict__ rsum,
                                     long long slab) {
  const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const long long lo = static_cast<long long>(blockIdx.y) * slab;
  const long long hi = lo + slab < rows ? lo + slab : rows;
  if (lo >= hi) return;
  double a = 0.0, b = 0.0;
  pcf::weighted_column<T>(buf + j, cols, q, r, lo, hi, &a, &b);
  atomicAdd(qsum + j, a);
  atomicAdd(rsum + j, b);
}

// s[0..4] += sum q, sum r, sum q^2, sum r^2, sum q r over the chunk's rows (grid-stride).
__global__ void pcf_norm_scalars(const double* __restrict__ q, const double* __restrict__ r,
                                 long long rows, double* __restrict__ s) {
  __shared__ double scratch[32];
  double acc[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows;
       i += step)
    pcf::norm_scalars(q[i], r[i], acc);
  for (int k = 0; k < 5; ++k) pcf::block_sum_atomic(acc[k], scratch, s + k);
}

// Explicit instantiations, so that an offline nvcc build (the CI check) compiles every kernel
// body; CuPy finds the same instantiations through name_expressions.
#define PCF_LINEAR_INSTANTIATE(T)                                                                \
  template __global__ void pcf_shift_columns<T>(const T*, long long, long long, long long,        \
                                                long long, const T*, T*, double*, long long);     \
  template __global__ void pcf_row_norms<T>(const T*, long long, long long, double*);             \
  template __global__ void pcf_weighted_columns<T>(const T*, long long, long long, const double*, \
                                                   const double*, double*, double*, long long);
PCF_LINEAR_INSTANTIATE(float)
PCF_LINEAR_INSTANTIATE(double)
#undef PCF_LINEAR_INSTANTIATE
