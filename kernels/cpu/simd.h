// Thin wrapper over Eigen's packet math for the cpu backend's hand-written loops.
//
// Why not plain Eigen array expressions: Eigen peels unaligned heads and tails into scalar code
// (std::exp instead of its packet exp), so an element's result would depend on where it sits in
// memory. Here every element, tails included, goes through the same packet arithmetic, which makes
// results bitwise independent of batch composition, slot index and chunking.
#pragma once

#include <immintrin.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

namespace ssm::cpu::simd {

namespace ei = Eigen::internal;
using Packet = ei::packet_traits<float>::type;
constexpr int kLanes = ei::unpacket_traits<Packet>::size;

inline Packet Load(const float* p) { return ei::ploadu<Packet>(p); }
inline void Store(float* p, Packet v) { ei::pstoreu(p, v); }
inline Packet Set1(float v) { return ei::pset1<Packet>(v); }
inline Packet Zero() { return ei::pset1<Packet>(0.0f); }
inline Packet Add(Packet a, Packet b) { return ei::padd(a, b); }
inline Packet Sub(Packet a, Packet b) { return ei::psub(a, b); }
inline Packet Mul(Packet a, Packet b) { return ei::pmul(a, b); }
inline Packet Div(Packet a, Packet b) { return ei::pdiv(a, b); }
inline Packet Fma(Packet a, Packet b, Packet c) { return ei::pmadd(a, b, c); }  // a*b + c
inline Packet Max(Packet a, Packet b) { return ei::pmax(a, b); }
inline Packet Exp(Packet x) { return ei::pexp(x); }
inline Packet Log(Packet x) { return ei::plog(x); }
inline float ReduceSum(Packet v) { return ei::predux(v); }
inline float ReduceMax(Packet v) { return ei::predux_max(v); }

// exp(x) for x <= 0, as the scan's decay exp(delta * A) needs. Inputs below -87.3 give
// exp(-87.3) (~1e-38, never a subnormal). Degree-7 Taylor polynomial on |r| <= ln2/2 after
// x = m ln2 + r: relative error ~2e-7. With AVX-512 the 2^m scaling is one vscalefps, about half
// the instructions of the general exp.
inline Packet ExpNonPositive(Packet x) {
#if defined(__AVX512F__)
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 m = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(m, _mm512_set1_ps(-0.693359375f), x);  // ln2 split in two parts
  r = _mm512_fmadd_ps(m, _mm512_set1_ps(2.12194440e-4f), r);        // for an exact reduction
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, m);
#else
  return Exp(x);
#endif
}

// silu(x) = x * sigmoid(x) = x / (1 + exp(-x))
inline Packet Silu(Packet x) { return Div(x, Add(Set1(1.0f), Exp(Sub(Zero(), x)))); }

// softplus(x) = log(1 + exp(x)), and x itself above 20 (as the reference Mamba kernels do).
inline Packet Softplus(Packet x) {
  const Packet sp = ei::plog1p(Exp(ei::pmin(x, Set1(20.0f))));
  return ei::pselect(ei::pcmp_lt(Set1(20.0f), x), x, sp);
}

// Up to kLanes floats moved through a packet: the tail of a row is processed with the same
// arithmetic as full packets. Lanes beyond n read zeros and are not written back.
inline Packet LoadPartial(const float* p, int n) {
  alignas(64) float tmp[kLanes] = {};
  std::memcpy(tmp, p, sizeof(float) * n);
  return ei::pload<Packet>(tmp);
}
inline void StorePartial(float* p, Packet v, int n) {
  alignas(64) float tmp[kLanes];
  ei::pstore(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * n);
}
inline Packet LoadN(const float* p, int n) { return n == kLanes ? Load(p) : LoadPartial(p, n); }
inline void StoreN(float* p, Packet v, int n) {
  if (n == kLanes)
    Store(p, v);
  else
    StorePartial(p, v, n);
}

}  // namespace ssm::cpu::simd
