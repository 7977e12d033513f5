#pragma once
#include <cstddef>
#include <cstdint>
#include "dsa/isa.h"

namespace dsa {
DSA_DECLARE_ISA_FN(uint64_t, probe_read, (const uint8_t* p, size_t bytes))
DSA_DECLARE_ISA_FN(double, probe_dot, (int64_t iters, float seed))
}  // namespace dsa
