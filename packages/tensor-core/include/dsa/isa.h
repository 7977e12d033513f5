// Per-ISA compilation. A kernel source that has fast paths is compiled three times by the CMake
// helper, with -DDSA_ISA_NS=scalar|avx2|avx512 and that ISA's flags; everything it defines goes in
// namespace dsa::DSA_ISA_NS. Portable code picks one copy at run time with dsa::dispatch().
#pragma once
#include "dsa/cpu.h"

// Declare `ret name args` in all three ISA namespaces.
#define DSA_DECLARE_ISA_FN(ret, name, args) \
  namespace scalar { ret name args; }       \
  namespace avx2 { ret name args; }         \
  namespace avx512 { ret name args; }

namespace dsa {

// Pick the copy of a function compiled for the active ISA.
template <class F>
inline F dispatch(F scalar_fn, F avx2_fn, F avx512_fn) {
  switch (active_isa()) {
    case Isa::Avx512: return avx512_fn;
    case Isa::Avx2: return avx2_fn;
    default: return scalar_fn;
  }
}

}  // namespace dsa

#define DSA_DISPATCH(name) ::dsa::dispatch(&::dsa::scalar::name, &::dsa::avx2::name, &::dsa::avx512::name)
