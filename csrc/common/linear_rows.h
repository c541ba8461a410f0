// Per-row math of the linear-CKA moment pass, shared by the C++ and CUDA kernels.
// A row is shifted in the input dtype T (exact for values near the shift, by Sterbenz's lemma,
// and it keeps the following GEMMs in T) and every accumulation is done in double.
#pragma once
#include "pcf_common.h"

namespace pcf {

// dst[j] = src[j * stride] - shift[j]; colsum[j] += dst[j]; returns |dst|^2 in double when
// WithNorm (debiased CKA needs it), else 0.
template <bool WithNorm, typename T>
PCF_HD double shift_row(const T* src, pcf_index stride, const T* shift, T* dst, double* colsum,
                        pcf_index p) {
  double q = 0.0;
  PCF_SIMD_SUM(q)
  for (pcf_index j = 0; j < p; ++j) {
    const T v = src[j * stride] - shift[j];
    dst[j] = v;
    const double w = static_cast<double>(v);
    colsum[j] += w;
    if (WithNorm) q += w * w;
  }
  return q;
}

// qsum += q * row, rsum += r * row: the q- and r-weighted column sums of debiased CKA.
template <typename T>
PCF_HD void weighted_row(const T* row, pcf_index p, double q, double r, double* qsum,
                         double* rsum) {
  for (pcf_index j = 0; j < p; ++j) {
    const double w = static_cast<double>(row[j]);
    qsum[j] += q * w;
    rsum[j] += r * w;
  }
}

// The five scalar row-norm sums: sum q, sum r, sum q^2, sum r^2, sum q r.
PCF_HD void norm_scalars(double q, double r, double* s) {
  s[0] += q;
  s[1] += r;
  s[2] += q * q;
  s[3] += r * r;
  s[4] += q * r;
}

}  // namespace pcf
