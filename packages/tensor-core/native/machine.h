// What the benchmarks print about the machine: the CPU's name and family from cpuid, and its cache
// sizes as cpuid reports them (sysfs, read in TypeScript, takes precedence where it exists).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsa {

struct CacheLevel {
  int level = 0;
  std::string type;    // "data", "instruction" or "unified"
  int64_t bytes = 0;   // per instance
  int shared_by = 0;   // logical CPUs sharing one instance (0: not reported)
};

struct CpuIdentity {
  std::string vendor, brand;
  int family = 0, model = 0, stepping = 0;
  std::vector<CacheLevel> caches;
  std::string cache_source;  // which cpuid leaf the caches came from ("" if none)
};

CpuIdentity cpu_identity();

}  // namespace dsa
