// Keeps the addons loadable on glibc >= 2.28 when they are built on a newer glibc (Debian 12: 2.36).
// libstdc++ is linked statically (no GLIBCXX/CXXABI needs), but it and our code still reference
// symbols whose default version is newer than 2.28. The CMake helper links with --wrap=<symbol> for
// each symbol below, so every reference (ours and libstdc++.a's) lands on a __wrap_ function here
// that calls the oldest version of the same function (same behaviour, older version tag).
// scripts/check-glibc.mjs fails the build of a prebuild if a newer version slips through.
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <pthread.h>
#include <sys/random.h>

#if defined(__x86_64__)
#define DSA_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define DSA_GLIBC_BASE "GLIBC_2.17"
#else
#error "glibc_compat.cc: add this architecture's base glibc symbol version"
#endif

// __wrap_<name> forwards to <name>@<version>.
#define DSA_COMPAT_FN(version, ret, name, params, args)          \
  ret dsa_old_##name params;                                     \
  __asm__(".symver dsa_old_" #name "," #name "@" version);      \
  ret __wrap_##name params { return dsa_old_##name args; }

extern "C" {

// glibc 2.34 moved libpthread into libc and gave these functions a new default version.
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_create,
              (pthread_t * t, const pthread_attr_t* a, void* (*f)(void*), void* arg), (t, a, f, arg))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_detach, (pthread_t t), (t))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_join, (pthread_t t, void** r), (t, r))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_once, (pthread_once_t * o, void (*f)(void)), (o, f))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_key_create, (pthread_key_t * k, void (*d)(void*)), (k, d))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, __pthread_key_create, (pthread_key_t * k, void (*d)(void*)), (k, d))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_key_delete, (pthread_key_t k), (k))
DSA_COMPAT_FN(DSA_GLIBC_BASE, void*, pthread_getspecific, (pthread_key_t k), (k))
DSA_COMPAT_FN(DSA_GLIBC_BASE, int, pthread_setspecific, (pthread_key_t k, const void* v), (k, v))

// glibc 2.29 gave these libm functions new versions (errno handling); results are the same.
DSA_COMPAT_FN(DSA_GLIBC_BASE, double, exp, (double x), (x))
DSA_COMPAT_FN(DSA_GLIBC_BASE, double, log, (double x), (x))
DSA_COMPAT_FN(DSA_GLIBC_BASE, double, pow, (double x, double y), (x, y))
DSA_COMPAT_FN(DSA_GLIBC_BASE, double, exp2, (double x), (x))
DSA_COMPAT_FN(DSA_GLIBC_BASE, double, log2, (double x), (x))

// glibc 2.32: libstdc++ skips atomic reference counting when the process is single-threaded.
// Zero ("maybe multi-threaded") always takes the atomic path, which is correct everywhere.
char __wrap___libc_single_threaded = 0;

// glibc 2.36: only std::random_device("arc4random") calls it (libstdc++'s random.o comes in with
// std::string); the addons never do. getrandom (2.25) gives the same bytes.
uint32_t __wrap_arc4random(void) {
  uint32_t v;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    if (errno != EINTR) std::abort();
  }
  return v;
}

}  // extern "C"
