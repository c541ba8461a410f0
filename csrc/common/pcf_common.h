// Shared by the host (pybind11 extension) and device (CUDA through CuPy) builds.
// Everything here is plain arithmetic on scalars and pointers, so that the same lines run in
// CI on the CPU and on the GPU: the host build is the tested twin of every CUDA kernel.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PCF_HD __host__ __device__ __forceinline__
#define PCF_UNROLL _Pragma("unroll")
#else
#define PCF_HD inline
#define PCF_UNROLL _Pragma("GCC unroll 16")
#endif

// Vectorise a loop with a floating-point sum reduction on the host (-fopenmp-simd: no OpenMP
// runtime needed); the reduction order changes, the float64 result stays within rounding.
#if defined(__CUDA_ARCH__) || defined(__CUDACC_RTC__) || !defined(_OPENMP) && !defined(PCF_OPENMP_SIMD)
#define PCF_SIMD_SUM(var)
#else
#define PCF_PRAGMA(x) _Pragma(#x)
#define PCF_SIMD_SUM(var) PCF_PRAGMA(omp simd reduction(+ : var))
#endif

#if defined(__CUDACC_RTC__)
typedef long long pcf_index;  // NVRTC has no <cstddef>
#else
#include <cstddef>
typedef std::ptrdiff_t pcf_index;
#endif
