// Allocations for buffers that kernels stream (prepared weights, paged caches, the read-ceiling
// probe): 2 MiB-aligned and marked MADV_HUGEPAGE, so transparent huge pages back them and a
// streaming read does not pay a TLB miss every 4 KiB. Small requests, and systems without the
// advice, get an ordinary 64-byte-aligned allocation (the advice is a hint: failure is quiet).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace dsa {

constexpr size_t kHugePage = size_t(2) << 20;

namespace detail {

inline void* raw_large_alloc(size_t rounded, size_t align, bool huge) noexcept {
#if defined(_WIN32)
  void* p = _aligned_malloc(rounded, align);
#else
  void* p = nullptr;
  if (posix_memalign(&p, align, rounded) != 0) p = nullptr;
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && huge) (void)madvise(p, rounded, MADV_HUGEPAGE);
#else
  (void)huge;
#endif
  return p;
}

inline void raw_large_free(void* p) noexcept {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

// Freed huge-page blocks are kept, up to a limit, and handed out again for requests of the same
// rounded size. Memory given back to the OS comes back as fresh pages that the kernel zeroes on first
// touch, and on a VM whose host reclaims freed guest memory each of those touches is also a host
// fault: a prefill's 134 MB output then cost more than its attention. DSA_BUFFER_CACHE_MB sets the
// limit (default 1024; 0 turns the cache off).
class LargeBlockCache {
 public:
  void* take(size_t rounded) noexcept {
    std::lock_guard<std::mutex> lk(m_);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if (blocks_[i].bytes != rounded) continue;
      void* p = blocks_[i].p;
      total_ -= rounded;
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i));
      return p;
    }
    return nullptr;
  }

  // False when the block does not fit (the caller frees it).
  bool keep(void* p, size_t rounded) noexcept {
    std::lock_guard<std::mutex> lk(m_);
    if (rounded > limit_) return false;
    try {
      // Oldest blocks go first to make room.
      while (total_ + rounded > limit_ && !blocks_.empty()) {
        raw_large_free(blocks_.front().p);
        total_ -= blocks_.front().bytes;
        blocks_.erase(blocks_.begin());
      }
      blocks_.push_back({p, rounded});
    } catch (...) {
      return false;
    }
    total_ += rounded;
    return true;
  }

  static LargeBlockCache& instance() noexcept {
    static LargeBlockCache* c = new LargeBlockCache();  // never destroyed: finalizers may run at exit
    return *c;
  }

 private:
  LargeBlockCache() {
    const char* env = std::getenv("DSA_BUFFER_CACHE_MB");
    double mb = 1024;
    if (env != nullptr && *env != '\0') {
      char* end = nullptr;
      const double v = std::strtod(env, &end);
      if (end != env && *end == '\0' && v >= 0 && v < 1e9) mb = v;
    }
    limit_ = static_cast<size_t>(mb * 1048576.0);
  }
  struct Block {
    void* p;
    size_t bytes;
  };
  std::mutex m_;
  std::vector<Block> blocks_;
  size_t total_ = 0, limit_ = 0;
};

inline size_t large_rounded(size_t bytes, size_t align) noexcept { return (bytes + align - 1) / align * align; }

}  // namespace detail

// nullptr when the memory is not there. Free with large_free(p, bytes), bytes as allocated. Blocks of
// 2 MiB or more may come from the block cache: their contents are then whatever was there.
inline void* large_alloc(size_t bytes) noexcept {
  if (bytes == 0) bytes = 1;
  const bool huge = bytes >= kHugePage;
  const size_t align = huge ? kHugePage : 64;
  if (bytes > std::numeric_limits<size_t>::max() - align) return nullptr;
  const size_t rounded = detail::large_rounded(bytes, align);
  if (huge) {
    if (void* p = detail::LargeBlockCache::instance().take(rounded)) return p;
  }
  return detail::raw_large_alloc(rounded, align, huge);
}

inline void large_free(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes >= kHugePage && detail::LargeBlockCache::instance().keep(p, detail::large_rounded(bytes, kHugePage))) return;
  detail::raw_large_free(p);
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
  void deallocate(T* p, size_t n) noexcept { large_free(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const LargeAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const LargeAllocator<U>&) const noexcept { return false; }
};

template <class T>
using large_vector = std::vector<T, LargeAllocator<T>>;

}  // namespace dsa
