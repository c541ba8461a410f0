// Device-side reductions shared by the CUDA kernels (warp shuffles, then one shared-memory pass).
#pragma once

namespace pcf {

constexpr unsigned kFullMask = 0xffffffffu;

// Sum of v over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum of v over the lanes whose index differs only in the bits of `span - 1` (span = 2, 4, 8 or
// 16): the lanes of one aligned group of `span` lanes. Every lane gets its group's total.
__device__ __forceinline__ double group_sum(double v, int span) {
  for (int offset = span >> 1; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Adds the block-wide sum of v (blockDim.x a multiple of 32, at most 1024 threads) to *out with
// one atomic per block. `scratch` holds 32 doubles of shared memory. Every thread must call it.
__device__ __forceinline__ void block_sum_atomic(double v, double* scratch, double* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x * blockDim.y * blockDim.z + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double t = lane < nwarps ? scratch[lane] : 0.0;
    t = warp_sum(t);
    if (lane == 0) atomicAdd(out, t);
  }
}

}  // namespace pcf
