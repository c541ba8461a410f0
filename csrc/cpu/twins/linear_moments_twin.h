// Host twin of the CUDA moment kernels (csrc/cuda/linear_moments_cuda.cu): the same loops of
// csrc/common/linear_rows.h in the kernels' decomposition (a thread per column walking a slab of
// rows; a 32-lane split of each row's norm), run serially. CI has no GPU, so this is where the
// kernels' arithmetic and indexing are tested; the CPU backends use the row-order kernel.
#pragma once
#include <cstdint>

#include "../linear_moments_cpu.h"

namespace pcf {

// Same contract as linear_moments (shifted rows into out_x / out_y, column sums and, if
// debiased, the row-norm terms in double), computed column by column in slabs of `slab` rows.
template <typename T>
LinearMoments linear_moments_columns(View2D<T> x, View2D<T> y, const T* shift_x,
                                     const T* shift_y, T* out_x, T* out_y, bool debiased,
                                     std::int64_t slab);

}  // namespace pcf
