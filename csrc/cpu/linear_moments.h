// Host kernel of the linear-CKA moment pass (the CPU twin of csrc/cuda/linear_moments.cu).
#pragma once
#include <cstdint>
#include <vector>

namespace pcf {

// A strided 2-D view: element (i, j) is data[i * row_stride + j * col_stride] (in elements).
template <typename T>
struct View2D {
  const T* data;
  std::int64_t rows, cols, row_stride, col_stride;
};

struct LinearMoments {
  std::vector<double> sum_x, sum_y, qx, rx, qy, ry;
  double scalars[5] = {0, 0, 0, 0, 0};  // sum q, sum r, sum q^2, sum r^2, sum q r
};

// Shifts every row of x and y into out_x / out_y (C-contiguous, input dtype) and accumulates
// the column sums (and, if debiased, the row-norm terms) in double. Parallel over rows.
template <typename T>
LinearMoments linear_moments(View2D<T> x, View2D<T> y, const T* shift_x, const T* shift_y,
                             T* out_x, T* out_y, bool debiased);

int max_threads();

}  // namespace pcf
