// CPU feature detection and the process-wide (per-addon) choice of ISA path.
#pragma once

namespace dsa {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512bf16 = false;
  bool avx512vbmi = false;  // byte permutes: the FP8 weight kernels' e4m3 tables (else they take the AVX2 path)
};

const CpuFeatures& cpu_features();
Isa best_isa();              // the fastest path this CPU (and OS) can run
Isa active_isa();            // what kernels dispatch to now
bool set_active_isa(Isa);    // false (and unchanged) if the CPU cannot run it
const char* isa_name(Isa);
bool parse_isa(const char* name, Isa* out);  // "scalar" | "avx2" | "avx512"

}  // namespace dsa
