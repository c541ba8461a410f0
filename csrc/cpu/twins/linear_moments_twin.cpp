#include "linear_moments_twin.h"

#include <algorithm>
#include <vector>

#include "../../common/linear_rows.h"

namespace pcf {
namespace {

constexpr int kWarpLanes = 32;  // lanes sharing one row in pcf_row_norms

// pcf_shift_columns: every (column, slab) pair is one thread of the kernel.
template <typename T>
void shift_side(View2D<T> v, const T* shift, T* out, std::int64_t slab, std::vector<double>& sum) {
  for (std::int64_t lo = 0; lo < v.rows; lo += slab) {
    const std::int64_t hi = std::min(v.rows, lo + slab);
    for (std::int64_t j = 0; j < v.cols; ++j)
      sum[j] += shift_column<T>(v.data + j * v.col_stride, v.row_stride, shift[j], out + j, v.cols,
                                lo, hi);
  }
}

// pcf_row_norms: 32 lanes each sum a strided share of the row, then the lanes are added.
template <typename T>
std::vector<double> row_norms(const T* buf, std::int64_t rows, std::int64_t cols) {
  std::vector<double> q(rows, 0.0);
  for (std::int64_t i = 0; i < rows; ++i) {
    double total = 0.0;
    for (int lane = 0; lane < kWarpLanes; ++lane)
      total += row_sq_norm<T>(buf + i * cols, lane, cols, kWarpLanes);
    q[i] = total;
  }
  return q;
}

// pcf_weighted_columns: every (column, slab) pair is one thread of the kernel.
template <typename T>
void weighted_side(const T* buf, std::int64_t rows, std::int64_t cols, const std::vector<double>& q,
                   const std::vector<double>& r, std::int64_t slab, std::vector<double>& qsum,
                   std::vector<double>& rsum) {
  for (std::int64_t lo = 0; lo < rows; lo += slab) {
    const std::int64_t hi = std::min(rows, lo + slab);
    for (std::int64_t j = 0; j < cols; ++j)
      weighted_column<T>(buf + j, cols, q.data(), r.data(), lo, hi, &qsum[j], &rsum[j]);
  }
}

}  // namespace

template <typename T>
LinearMoments linear_moments_columns(View2D<T> x, View2D<T> y, const T* shift_x,
                                     const T* shift_y, T* out_x, T* out_y, bool debiased,
                                     std::int64_t slab) {
  const std::int64_t m = x.rows, p1 = x.cols, p2 = y.cols;
  slab = std::max<std::int64_t>(1, slab);
  LinearMoments result;
  result.sum_x.assign(p1, 0.0);
  result.sum_y.assign(p2, 0.0);
  shift_side(x, shift_x, out_x, slab, result.sum_x);
  shift_side(y, shift_y, out_y, slab, result.sum_y);
  if (!debiased) return result;
  const std::vector<double> q = row_norms(out_x, m, p1), r = row_norms(out_y, m, p2);
  result.qx.assign(p1, 0.0);
  result.rx.assign(p1, 0.0);
  result.qy.assign(p2, 0.0);
  result.ry.assign(p2, 0.0);
  weighted_side(out_x, m, p1, q, r, slab, result.qx, result.rx);
  weighted_side(out_y, m, p2, q, r, slab, result.qy, result.ry);
  for (std::int64_t i = 0; i < m; ++i) norm_scalars(q[i], r[i], result.scalars);  // pcf_norm_scalars
  return result;
}

template LinearMoments linear_moments_columns<float>(View2D<float>, View2D<float>, const float*,
                                                     const float*, float*, float*, bool,
                                                     std::int64_t);
template LinearMoments linear_moments_columns<double>(View2D<double>, View2D<double>,
                                                      const double*, const double*, double*,
                                                      double*, bool, std::int64_t);

}  // namespace pcf
