// Per-ISA compilation. A kernel source that has fast paths is compiled three times by the CMake
// helper, with -DDSA_ISA_NS=scalar|avx2|avx512 and that ISA's flags; everything it defines goes in
// namespace dsa::DSA_ISA_NS. Portable code picks one copy at run time with dsa::dispatch().
// On other CPUs (arm64) only the scalar copy is compiled: avx2 and avx512 are aliases of scalar
// there, so DSA_DISPATCH and explicit dispatch(&scalar::f, &avx2::f, &avx512::f) still link, and
// best_isa() is always Scalar.
#pragma once
#include "dsa/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#define DSA_HAVE_X86_ISA 1
// Declare `ret name args` in all three ISA namespaces.
#define DSA_DECLARE_ISA_FN(ret, name, args) \
  namespace scalar { ret name args; }       \
  namespace avx2 { ret name args; }         \
  namespace avx512 { ret name args; }
#else
#define DSA_HAVE_X86_ISA 0
#define DSA_DECLARE_ISA_FN(ret, name, args) \
  namespace scalar { ret name args; }       \
  namespace avx2 = scalar;                  \
  namespace avx512 = scalar;
#endif

namespace dsa {

// Pick the copy of a function compiled for the active ISA.
template <class F>
inline F dispatch(F scalar_fn, F avx2_fn, F avx512_fn) {
  if (!DSA_HAVE_X86_ISA) return scalar_fn;
  switch (active_isa()) {
    case Isa::Avx512: return avx512_fn;
    case Isa::Avx2: return avx2_fn;
    default: return scalar_fn;
  }
}

}  // namespace dsa

#define DSA_DISPATCH(name) ::dsa::dispatch(&::dsa::scalar::name, &::dsa::avx2::name, &::dsa::avx512::name)
