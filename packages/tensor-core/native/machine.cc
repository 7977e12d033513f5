// cpuid decoding for machine.h: Intel's deterministic cache leaf 4, AMD's 0x8000001D, and AMD's
// older 0x80000006 (L2/L3 sizes only) where a hypervisor hides the other two.
#include "machine.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DSA_X86 1
#endif

namespace dsa {
namespace {

#if DSA_X86
// Leaf 4 and 0x8000001D share one layout.
bool deterministic_caches(unsigned leaf, std::vector<CacheLevel>* out) {
  static const char* kTypes[] = {"", "data", "instruction", "unified"};
  for (unsigned i = 0; i < 16; ++i) {
    unsigned a, b, c, d;
    __cpuid_count(leaf, i, a, b, c, d);
    const unsigned type = a & 31;
    if (type == 0 || type > 3) break;
    CacheLevel l;
    l.level = static_cast<int>((a >> 5) & 7);
    l.type = kTypes[type];
    l.bytes = int64_t((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * (int64_t(c) + 1);
    l.shared_by = static_cast<int>(((a >> 14) & 0xfff) + 1);
    out->push_back(l);
  }
  return !out->empty();
}
#endif

}  // namespace

CpuIdentity cpu_identity() {
  CpuIdentity id;
#if DSA_X86
  unsigned a, b, c, d;
  __cpuid(0, a, b, c, d);
  const unsigned max_leaf = a;
  char vendor[13] = {0};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  id.vendor = vendor;
  __cpuid(1, a, b, c, d);
  const int base_family = (a >> 8) & 15, base_model = (a >> 4) & 15;
  id.family = base_family == 15 ? base_family + static_cast<int>((a >> 20) & 0xff) : base_family;
  id.model = base_family == 6 || base_family == 15 ? base_model + static_cast<int>(((a >> 16) & 15) << 4) : base_model;
  id.stepping = a & 15;
  const unsigned max_ext = __get_cpuid_max(0x80000000, nullptr);
  if (max_ext >= 0x80000004) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) {
      unsigned r[4];
      __cpuid(0x80000002 + i, r[0], r[1], r[2], r[3]);
      std::memcpy(brand + 16 * i, r, 16);
    }
    std::string s(brand);
    const size_t first = s.find_first_not_of(' '), last = s.find_last_not_of(' ');
    id.brand = first == std::string::npos ? "" : s.substr(first, last - first + 1);
  }
  const bool amd = id.vendor == "AuthenticAMD" || id.vendor == "HygonGenuine";
  if (!amd && max_leaf >= 4 && deterministic_caches(4, &id.caches)) {
    id.cache_source = "cpuid leaf 4";
  } else if (amd && max_ext >= 0x8000001D && deterministic_caches(0x8000001D, &id.caches)) {
    id.cache_source = "cpuid leaf 0x8000001D";
  } else if (amd && max_ext >= 0x80000006) {
    __cpuid(0x80000006, a, b, c, d);
    if (c >> 16) id.caches.push_back({2, "unified", int64_t(c >> 16) << 10, 0});
    if (d >> 18) id.caches.push_back({3, "unified", int64_t(d >> 18) << 19, 0});
    if (!id.caches.empty()) id.cache_source = "cpuid leaf 0x80000006";
  }
#endif
  return id;
}

}  // namespace dsa
