// The register-tiled micro-kernel of the fused CPU passes (rbf_pairs_cpu.cpp: RBF sums;
// d2_pass_cpu.cpp: distance histograms for the exact median): row packing, the MR x 2W
// dot-product tile in registers, and the work-item scheduling they share.
#pragma once
#include <algorithm>
#include <cstdint>

#include "parallel.h"  // View2D, max_threads, parallel_for
#include "simd.h"

namespace pcf {

// Work item geometry: rows [lo, hi) of set a against rows [lo, hi) of set b.
struct Item {
  std::int64_t a_lo, a_hi, b_lo, b_hi;
  bool same_block;  // a paired with itself: pairs i < j only (rbf_pair.h's diagonal convention)
};

// The micro-kernel for one vector width: W lanes of T per vector, MR rows x NR = 2W columns per
// micro-tile (MR x 2 accumulators: 16 of the 32 AVX-512 registers, 12 of 16 for AVX2).
template <typename T, int Bytes, int MR>
struct MicroTile {
  typedef simd::Vec<T, Bytes> VT;
  typedef typename VT::type V;
  typedef simd::Vec<double, Bytes> VD;
  typedef typename VD::type D;
  typedef typename Lanes<V>::Bits Bits;
  static constexpr int W = VT::lanes;
  static constexpr int NR = 2 * W;
  static constexpr int DW = VD::lanes;                                       // doubles per vector
  static constexpr int WIDE = static_cast<int>(sizeof(double) / sizeof(T));  // D per V

  static std::int64_t round_up(std::int64_t m, std::int64_t to) { return (m + to - 1) / to * to; }

  // Rows [lo, hi) of v minus shift, interleaved by groups of G rows: group g holds, for each
  // depth k, the G values of rows lo + g G + r contiguously (zero rows past hi), so the
  // micro-kernel reads one stream per operand; and their squared norms (double sums of the
  // centred T values, rounded to T). G = MR: the row slabs; G = NR: the column panels.
  template <int G>
  static void pack(const View2D<T>& v, const T* shift, std::int64_t lo, std::int64_t hi, T* out,
                   T* norms) {
    const std::int64_t d = v.cols, m = hi - lo, padded = round_up(m, G);
    for (std::int64_t i = 0; i < padded; ++i) {
      T* group = out + (i / G) * d * G + i % G;
      double q = 0.0;
      for (std::int64_t k = 0; k < d; ++k) {
        const T c = i < m ? T(v.data[(lo + i) * v.row_stride + k * v.col_stride] - shift[k]) : T(0);
        group[k * G] = c;
        q += double(c) * double(c);
      }
      norms[i] = T(q);
    }
  }
  static void centre_rows(const View2D<T>& v, const T* shift, std::int64_t lo, std::int64_t hi,
                          T* out, T* norms) {
    pack<MR>(v, shift, lo, hi, out, norms);
  }
  static void pack_panels(const View2D<T>& v, const T* shift, std::int64_t lo, std::int64_t hi,
                          T* out, T* norms) {
    pack<NR>(v, shift, lo, hi, out, norms);
  }

  // acc[r][h] = lanes of (row r of the slab) . (columns of the panel), h: first or second vector.
  static inline void dots(const T* slab, std::int64_t d, const T* panel, V (&acc)[MR][2]) {
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = V{};
    for (std::int64_t k = 0; k < d; ++k) {
      const V b0 = VT::load(panel + k * NR), b1 = VT::load(panel + k * NR + W);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const T s = slab[k * MR + r];
        acc[r][0] += s * b0;
        acc[r][1] += s * b1;
      }
    }
  }

};

}  // namespace pcf
