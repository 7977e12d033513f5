// Allocations for buffers that kernels stream (prepared weights, paged caches, the read-ceiling
// probe): 2 MiB-aligned and marked MADV_HUGEPAGE, so transparent huge pages back them and a
// streaming read does not pay a TLB miss every 4 KiB. Small requests, and systems without the
// advice, get an ordinary 64-byte-aligned allocation (the advice is a hint: failure is quiet).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace dsa {

constexpr size_t kHugePage = size_t(2) << 20;

// nullptr when the memory is not there. Free with large_free.
inline void* large_alloc(size_t bytes) noexcept {
  if (bytes == 0) bytes = 1;
  const bool huge = bytes >= kHugePage;
  const size_t align = huge ? kHugePage : 64;
  if (bytes > std::numeric_limits<size_t>::max() - align) return nullptr;
  const size_t rounded = (bytes + align - 1) / align * align;
#if defined(_WIN32)
  void* p = _aligned_malloc(rounded, align);
#else
  void* p = nullptr;
  if (posix_memalign(&p, align, rounded) != 0) p = nullptr;
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && huge) (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return p;
}

inline void large_free(void* p) noexcept {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

// std::vector storage from large_alloc (for weights a prepared layer owns).
template <class T>
struct LargeAllocator {
  using value_type = T;
  LargeAllocator() noexcept = default;
  template <class U>
  LargeAllocator(const LargeAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_alloc();
    void* p = large_alloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { large_free(p); }
  template <class U>
  bool operator==(const LargeAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const LargeAllocator<U>&) const noexcept { return false; }
};

template <class T>
using large_vector = std::vector<T, LargeAllocator<T>>;

}  // namespace dsa
