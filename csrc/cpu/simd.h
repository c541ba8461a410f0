// Host SIMD lanes for the fused kernels: GCC/Clang vector types of 16, 32 or 64 bytes, the
// Lanes<V> traits that let the shared per-pair math (csrc/common/rbf_pair.h) run on them, and
// the few operations that are not plain arithmetic (loads, float -> double widening).
//
// One source, three instruction sets: the kernels are templates on the vector width, compiled
// inside functions with a target attribute (AVX-512, AVX2) and picked at run time, so the
// extension itself stays built for baseline x86-64 (or any other architecture: the generic
// fallbacks below need no intrinsics).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PCF_X86 1
#endif

// Vectors wider than the baseline ISA are only ever used inside functions compiled for them;
// GCC's note about their calling convention does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include "../common/rbf_pair.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(PCF_X86)
#define PCF_SIMD_DISPATCH 1
// Feature lists, not "arch=" targets (arch= tuning kept loops scalar). flatten inlines the
// template bodies so that they are really compiled for the target.
#define PCF_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"), flatten))
#define PCF_TARGET_AVX2 __attribute__((target("avx2,fma"), flatten))
#endif

namespace pcf {
namespace simd {

// Instruction sets the fused kernels are compiled for; "generic" is the build's baseline.
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

// The best instruction set this CPU runs, capped by PYCKAFAST_SIMD (generic|avx2|avx512) if set.
Isa detected_isa();
const char* isa_name(Isa isa);

template <typename T, int Bytes>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int lanes = Bytes / static_cast<int>(sizeof(T));
  static inline type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof v);  // an unaligned vector load
    return v;
  }
  static inline void store(T* p, type v) { std::memcpy(p, &v, sizeof v); }
  static inline type splat(T s) { return type{} + s; }
};

// Lanes<V> for vectors (see rbf_pair.h): the integer lanes are the same width as the float ones.
template <typename T, typename B, int Bytes>
struct VectorLanes {
  typedef typename Vec<T, Bytes>::type V;
  typedef T Scalar;
  typedef B Bits __attribute__((vector_size(Bytes)));
  typedef Bits Index;  // lane c holds its pair's column index (keep_pair)
  typedef B IndexScalar;
  static inline Bits to_bits(V v) { return reinterpret_cast<Bits>(v); }
  static inline V from_bits(Bits b) { return reinterpret_cast<V>(b); }
  static inline V max(V a, T b) {
    const V s = Vec<T, Bytes>::splat(b);
    return a > s ? a : s;
  }
  static inline V select(Bits keep, V v) { return keep ? v : V{}; }
};

}  // namespace simd

#define PCF_VECTOR_LANES(T, B, BYTES) \
  template <>                         \
  struct Lanes<simd::Vec<T, BYTES>::type> : simd::VectorLanes<T, B, BYTES> {};
PCF_VECTOR_LANES(float, std::int32_t, 16)
PCF_VECTOR_LANES(float, std::int32_t, 32)
PCF_VECTOR_LANES(float, std::int32_t, 64)
PCF_VECTOR_LANES(double, long long, 16)
PCF_VECTOR_LANES(double, long long, 32)
PCF_VECTOR_LANES(double, long long, 64)
#undef PCF_VECTOR_LANES

namespace simd {

// The lanes of v in double: `out` holds sizeof(double) / sizeof(T) vectors of the same width
// (one for double, two for float: low half first).
template <typename VD>
inline void widen(VD v, VD (&out)[1]) {
  out[0] = v;
}

template <typename VF, typename VD>
inline void widen(VF v, VD (&out)[2]) {
  constexpr int half = static_cast<int>(sizeof(VD) / sizeof(double));
  for (int q = 0; q < half; ++q) {
    out[0][q] = static_cast<double>(v[q]);
    out[1][q] = static_cast<double>(v[half + q]);
  }
}

#if defined(PCF_SIMD_DISPATCH)
// GCC lowers the generic loop for 512-bit vectors to 128-bit pieces; the intrinsics are direct.
// (A non-template overload: preferred for this exact type. Not always_inline: the generic
// templates that call it have no target; the flatten of the AVX-512 entry point inlines it.)
__attribute__((target("avx512f,avx512dq"))) inline void widen(
    Vec<float, 64>::type v, Vec<double, 64>::type (&out)[2]) {
  const __m512 f = reinterpret_cast<__m512>(v);
  out[0] = reinterpret_cast<Vec<double, 64>::type>(_mm512_cvtps_pd(_mm512_castps512_ps256(f)));
  out[1] = reinterpret_cast<Vec<double, 64>::type>(_mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)));
}
#endif

}  // namespace simd
}  // namespace pcf
