// Argument plumbing shared by the pybind11 bindings: checks that name the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "parallel.h"  // View2D

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

// The data pointer of a C-contiguous input of dtype T and shape (rows, cols), or (rows,) when
// cols < 0, without conversion.
template <typename T>
const T* c_contiguous_in(const py::array& a, py::ssize_t rows, py::ssize_t cols, const char* name) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) || a.ndim() != (cols < 0 ? 1 : 2) ||
      a.shape(0) != rows || (cols >= 0 && a.shape(1) != cols))
    throw py::value_error(std::string(name) +
                          " must be a C-contiguous array of the tile's shape and dtype");
  return static_cast<const T*>(a.data());
}

// The data pointer of a writable C-contiguous float64 array of `size` elements that a kernel adds
// to in place (a conversion would silently drop the result, so none is made).
inline double* accumulator(py::array& a, py::ssize_t size, const char* name) {
  if (!py::isinstance<py::array_t<double, py::array::c_style>>(a) || a.size() != size ||
      !a.writeable())
    throw py::value_error(std::string(name) + " must be a writable C-contiguous float64 array of " +
                          std::to_string(size) + " elements");
  return static_cast<double*>(a.mutable_data());
}

inline py::array_t<double> to_numpy(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace pcf_bind
