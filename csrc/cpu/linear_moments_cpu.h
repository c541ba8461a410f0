// Host kernel of the linear-CKA moment pass (the CPU twin of csrc/cuda/linear_moments_cuda.cu).
#pragma once
#include <cstdint>
#include <vector>

#include "parallel.h"  // View2D

namespace pcf {

struct LinearMoments {
  std::vector<double> sum_x, sum_y, qx, rx, qy, ry;
  double scalars[5] = {0, 0, 0, 0, 0};  // sum q, sum r, sum q^2, sum r^2, sum q r
};

// Shifts every row of x and y into out_x / out_y (C-contiguous, input dtype) and accumulates
// the column sums (and, if debiased, the row-norm terms) in double. Parallel over rows.
template <typename T>
LinearMoments linear_moments(View2D<T> x, View2D<T> y, const T* shift_x, const T* shift_y,
                             T* out_x, T* out_y, bool debiased);

}  // namespace pcf
