// Squared distances of all pairs i < j of one set of rows, for the exact median bandwidth:
// histogram and candidate passes of the selection in pyckafast/_core/bandwidth.py, with the distances
// computed by the register-tiled micro-kernel (micro_tile.h) and never stored.
#pragma once
#include <cstdint>
#include <vector>

#include "parallel.h"  // View2D
#include "simd.h"

namespace pcf {

// The window of one pass: values below lo are counted, values in [lo, hi] are binned into
// `bins` equal bins (index floor((v - lo) * bins / (hi - lo)), the last bin closed) or collected;
// values above hi are ignored. v = max(0, |a|^2 + |b|^2 - 2 a.b) in double from the T dot
// products of the rows centred by `shift` (the same value in every pass).
struct D2Window {
  double lo, hi;
  std::int64_t bins;  // 0: collect the values instead
};

struct D2Pass {
  std::int64_t below = 0;
  std::vector<std::int64_t> counts;  // bins > 0
  std::vector<double> values;        // bins == 0
};

template <typename T>
D2Pass pair_distance_pass(const View2D<T>& rows, const T* shift, const D2Window& window,
                          std::int64_t block, simd::Isa isa);

}  // namespace pcf
