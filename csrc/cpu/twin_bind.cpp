// Python bindings of the host twins of the CUDA kernels (linear_moments_twin.cpp:
// linear_moments_columns_f32/f64). Kept out of module.cpp: these exist to test the CUDA kernels'
// loops in CI and to emulate the GPU driver on the CPU, not as backends.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "bind_util.h"
#include "linear_moments_twin.h"

namespace py = pybind11;

namespace {

using pcf_bind::c_contiguous_out;
using pcf_bind::to_numpy;
using pcf_bind::view2d;

template <typename T>
py::tuple columns(const py::array& x, const py::array& y,
                  const py::array_t<T, py::array::forcecast>& shift_x,
                  const py::array_t<T, py::array::forcecast>& shift_y, py::array out_x,
                  py::array out_y, bool debiased, std::int64_t slab) {
  auto vx = view2d<T>(x, "x");
  auto vy = view2d<T>(y, "y");
  if (vx.rows != vy.rows) throw py::value_error("x and y must have the same number of rows");
  if (shift_x.size() != vx.cols) throw py::value_error("shift_x must have one entry per column of x");
  if (shift_y.size() != vy.cols) throw py::value_error("shift_y must have one entry per column of y");
  if (slab < 1) throw py::value_error("slab must be >= 1");
  T* ox = c_contiguous_out<T>(out_x, vx.rows, vx.cols, "out_x");
  T* oy = c_contiguous_out<T>(out_y, vy.rows, vy.cols, "out_y");
  pcf::LinearMoments r;
  {
    py::gil_scoped_release release;
    r = pcf::linear_moments_columns<T>(vx, vy, shift_x.data(), shift_y.data(), ox, oy, debiased,
                                       slab);
  }
  py::array_t<double> scalars(5);
  std::copy(r.scalars, r.scalars + 5, scalars.mutable_data());
  return py::make_tuple(to_numpy(r.sum_x), to_numpy(r.sum_y), to_numpy(r.qx), to_numpy(r.rx),
                        to_numpy(r.qy), to_numpy(r.ry), scalars);
}

}  // namespace

void bind_twins(py::module_& m) {
  m.def("linear_moments_columns_f32", &columns<float>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
  m.def("linear_moments_columns_f64", &columns<double>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
}
