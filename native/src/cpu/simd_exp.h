// Vector e^x shared by the SIMD types (Cephes expf: range reduction by ln 2 in two parts, degree-5 polynomial,
// about 1 ulp). Inputs are clamped to [-87.3, 88.37] so 2^n stays a normal float; e^x below that is ~0.
#pragma once

template <class V, class IntOps>
inline typename V::reg simd_exp(typename V::reg x) {
  using reg = typename V::reg;
  x = V::min(V::max(x, V::set1(-87.3365447505531f)), V::set1(88.3762626647949f));
  const reg n = IntOps::round(V::mul(x, V::set1(1.44269504088896341f)));
  reg r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  reg p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::fma(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::mul(p, IntOps::pow2(n));  // p * 2^n
}
