// cpuid/xgetbv feature detection and the active-ISA switch.
#include "dsa/cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DSA_X86 1
#endif

namespace dsa {
namespace {

#if DSA_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if DSA_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;           // SSE + AVX state saved by the OS
  const bool zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  // opmask + upper zmm state
  const bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = ymm_ok && ((b >> 5) & 1);
  f.fma = ymm_ok && fma;
  f.f16c = ymm_ok && f16c;
  f.avx512f = zmm_ok && ((b >> 16) & 1);
  f.avx512dq = zmm_ok && ((b >> 17) & 1);
  f.avx512bw = zmm_ok && ((b >> 30) & 1);
  f.avx512vl = zmm_ok && ((b >> 31) & 1);
  f.avx512vbmi = zmm_ok && ((c >> 1) & 1);
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512bf16 = zmm_ok && ((a1 >> 5) & 1);
#endif
  return f;
}

Isa detect_best(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512bf16 && f.avx2 && f.fma) return Isa::Avx512;
  if (f.avx2 && f.fma && f.f16c) return Isa::Avx2;
  return Isa::Scalar;
}

Isa initial_isa() {
  Isa best = detect_best(cpu_features());
  const char* env = std::getenv("DSA_FORCE_ISA");
  Isa forced;
  if (env && parse_isa(env, &forced) && static_cast<int>(forced) <= static_cast<int>(best)) return forced;
  return best;
}

std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa best_isa() {
  static const Isa best = detect_best(cpu_features());
  return best;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(initial_isa());
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

bool set_active_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_isa())) return false;
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

bool parse_isa(const char* name, Isa* out) {
  if (std::strcmp(name, "scalar") == 0) { *out = Isa::Scalar; return true; }
  if (std::strcmp(name, "avx2") == 0) { *out = Isa::Avx2; return true; }
  if (std::strcmp(name, "avx512") == 0) { *out = Isa::Avx512; return true; }
  return false;
}

}  // namespace dsa
