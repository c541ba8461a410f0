// One pair's squared distance and its place in an exact-median selection pass, shared by the
// CUDA distance-histogram kernel (csrc/cuda/d2_hist_cuda.cu) and its host twin
// (csrc/cpu/d2_hist_twin.cpp). The distance is formed in double from the T dot product and T
// norms of rows centred by one shift, exactly as the CPU pass (csrc/cpu/d2_pass_cpu.cpp) and
// pyckafast/_core/bandwidth.py's tile histograms form it. NVRTC-clean: no headers, no std::.
#pragma once
#include "pcf_common.h"

namespace pcf {
namespace d2 {

// max(0, |a|^2 + |b|^2 - 2 a.b) in double.
template <typename T>
PCF_HD double pair_sq_distance(T dot, T norm_a, T norm_b) {
  const double v = static_cast<double>(norm_a) + static_cast<double>(norm_b) -
                   2.0 * static_cast<double>(dot);
  return v > 0.0 ? v : 0.0;
}

constexpr long long kBelow = -1;  // v < lo: counted
constexpr long long kAbove = -2;  // v > hi: ignored

// Where v goes in the window [lo, hi] of `bins` equal bins (bin floor((v - lo) * scale), the last
// closed; scale = bins / (hi - lo), 0 when hi == lo): kBelow, kAbove, or the bin (0 when bins == 0:
// the pass collects v instead).
PCF_HD long long place(double v, double lo, double hi, double scale, long long bins) {
  if (v < lo) return kBelow;
  if (v > hi) return kAbove;
  if (bins <= 0) return 0;
  const long long k = static_cast<long long>((v - lo) * scale);
  return k < bins - 1 ? k : bins - 1;
}

// Whether pair (i, j) of a tile is one of the pass's pairs: inside both blocks and, when a and b
// are the same block, j > i (each unordered pair once).
PCF_HD bool counts_pair(long long i, long long j, long long ma, long long mb, bool same_block) {
  return i < ma && j < mb && (!same_block || j > i);
}

}  // namespace d2
}  // namespace pcf
