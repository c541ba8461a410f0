#include "linear_moments_cpu.h"

#include <algorithm>

#include "../common/linear_rows.h"
#include "parallel.h"

namespace pcf {

namespace {

// One row block's partial sums; merged in block order after the parallel loop (no atomics).
struct Partial {
  std::vector<double> sx, sy, qx, rx, qy, ry;
  double s[5] = {0, 0, 0, 0, 0};
  Partial(std::int64_t p1, std::int64_t p2, bool debiased)
      : sx(p1), sy(p2), qx(debiased ? p1 : 0), rx(debiased ? p1 : 0),
        qy(debiased ? p2 : 0), ry(debiased ? p2 : 0) {}
};

void add_into(std::vector<double>& to, const std::vector<double>& from) {
  for (std::size_t j = 0; j < from.size(); ++j) to[j] += from[j];
}

}  // namespace

template <bool Debiased, typename T>
void moments_rows(View2D<T> x, View2D<T> y, const T* shift_x, const T* shift_y, T* out_x,
                  T* out_y, std::int64_t lo, std::int64_t hi, Partial& part) {
  const std::int64_t p1 = x.cols, p2 = y.cols;
  for (std::int64_t i = lo; i < hi; ++i) {
    T* ox = out_x + i * p1;
    T* oy = out_y + i * p2;
    const double q = shift_row<Debiased>(x.data + i * x.row_stride, x.col_stride, shift_x, ox,
                                         part.sx.data(), p1);
    const double r = shift_row<Debiased>(y.data + i * y.row_stride, y.col_stride, shift_y, oy,
                                         part.sy.data(), p2);
    if (Debiased) {
      weighted_row(ox, p1, q, r, part.qx.data(), part.rx.data());
      weighted_row(oy, p2, q, r, part.qy.data(), part.ry.data());
      norm_scalars(q, r, part.s);
    }
  }
}

// Rows are cut into many blocks handed out by parallel_for (why dynamically: see parallel.h); each
// block has its own partial sums, reduced in block order, so the result does not depend on the
// scheduling.
template <typename T>
LinearMoments linear_moments(View2D<T> x, View2D<T> y, const T* shift_x, const T* shift_y,
                             T* out_x, T* out_y, bool debiased) {
  const std::int64_t m = x.rows, p1 = x.cols, p2 = y.cols;
  const std::int64_t block_rows = 128;
  const std::int64_t nblocks = std::max<std::int64_t>(1, (m + block_rows - 1) / block_rows);
  std::vector<Partial> parts(nblocks, Partial(p1, p2, debiased));
  parallel_for(nblocks, max_threads(), [&](int, std::int64_t b) {
    const std::int64_t lo = b * block_rows, hi = std::min(m, lo + block_rows);
    if (debiased)
      moments_rows<true, T>(x, y, shift_x, shift_y, out_x, out_y, lo, hi, parts[b]);
    else
      moments_rows<false, T>(x, y, shift_x, shift_y, out_x, out_y, lo, hi, parts[b]);
  });

  LinearMoments result;
  result.sum_x.assign(p1, 0.0);
  result.sum_y.assign(p2, 0.0);
  result.qx.assign(debiased ? p1 : 0, 0.0);
  result.rx.assign(debiased ? p1 : 0, 0.0);
  result.qy.assign(debiased ? p2 : 0, 0.0);
  result.ry.assign(debiased ? p2 : 0, 0.0);
  for (const auto& part : parts) {
    add_into(result.sum_x, part.sx);
    add_into(result.sum_y, part.sy);
    add_into(result.qx, part.qx);
    add_into(result.rx, part.rx);
    add_into(result.qy, part.qy);
    add_into(result.ry, part.ry);
    for (int k = 0; k < 5; ++k) result.scalars[k] += part.s[k];
  }
  return result;
}

template LinearMoments linear_moments<float>(View2D<float>, View2D<float>, const float*,
                                             const float*, float*, float*, bool);
template LinearMoments linear_moments<double>(View2D<double>, View2D<double>, const double*,
                                              const double*, double*, double*, bool);

}  // namespace pcf
