// Argument plumbing shared by the pybind11 bindings: checks that name the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "linear_moments_cpu.h"

namespace pcf_bind {

namespace py = pybind11;

// A strided 2-D view of an input of dtype T (any layout: C, Fortran, sliced).
template <typename T>
pcf::View2D<T> view2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) throw py::value_error(std::string(name) + " must be 2-D");
  if (!py::isinstance<py::array_t<T>>(a))
    throw py::type_error(std::string(name) + " has the wrong dtype for this kernel");
  const auto item = static_cast<py::ssize_t>(sizeof(T));
  if (a.strides(0) % item || a.strides(1) % item)
    throw py::value_error(std::string(name) + " has strides that are not whole elements");
  return {static_cast<const T*>(a.data()), a.shape(0), a.shape(1), a.strides(0) / item,
          a.strides(1) / item};
}

// The data pointer of a writable C-contiguous output of the given shape and dtype T.
template <typename T>
T* c_contiguous_out(py::array& a, py::ssize_t rows, py::ssize_t cols, const char* name) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) || a.ndim() != 2 ||
      a.shape(0) != rows || a.shape(1) != cols || !a.writeable())
    throw py::value_error(std::string(name) +
                          " must be a writable C-contiguous array of the input's shape and dtype");
  return static_cast<T*>(a.mutable_data());
}

inline py::array_t<double> to_numpy(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace pcf_bind
