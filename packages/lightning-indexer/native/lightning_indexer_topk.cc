// Radix select: three histogram rounds (11, 11 and 10 bits of the score rank, most significant first)
// find the rank of the k-th best candidate; only the first round reads every element, the later ones
// read the members of one bucket. One more pass emits the winners in position order, so equal
// scores at the threshold go to the smaller positions. The k winners are then sorted with a stable
// LSD radix sort on the rank (bytes, least significant first).
#include "lightning_indexer_topk.h"

#include <algorithm>
#include <cstring>

namespace dsa {
namespace li {
namespace {

inline uint32_t rank_of(float x) {
  x += 0.0f;  // -0.0 -> +0.0: equal scores must tie
  uint32_t u;
  std::memcpy(&u, &x, 4);
  // Order-preserving map to unsigned (negatives: all bits flipped; positives: sign bit set), then
  // complemented so larger scores rank first. Branch-free: score signs are unpredictable.
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u;
  return ~(u ^ flip);
}

inline uint32_t rank_of(uint64_t c) { return static_cast<uint32_t>(c >> 32); }

// The bucket that holds the need-th element (1-based) in ascending order; need becomes its rank
// inside that bucket.
inline uint32_t pick(const uint32_t* hist, uint32_t buckets, int64_t& need) {
  for (uint32_t b = 0; b < buckets; ++b) {
    if (need <= hist[b]) return b;
    need -= hist[b];
  }
  return buckets - 1;  // unreachable when need <= total
}

struct Threshold {
  uint32_t rank;       // rank of the k-th best
  int64_t take_equal;  // how many of the elements with exactly that rank are selected
};

// 1 <= k < n. rank_at(i) is the rank of element i.
template <class RankAt>
Threshold find_threshold(const RankAt& rank_at, int64_t n, int64_t k, std::vector<uint32_t>& tmp) {
  uint32_t hist[2048];
  int64_t need = k;
  std::memset(hist, 0, sizeof(hist));
  for (int64_t i = 0; i < n; ++i) ++hist[rank_at(i) >> 21];
  const uint32_t b1 = pick(hist, 2048, need);
  // Branch-free compaction (the kept elements are unpredictable): every element is written, the
  // count advances only for the kept ones, so tmp needs one spare slot.
  tmp.resize(hist[b1] + 1);
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t r = rank_at(i);
    tmp[m] = r;
    m += (r >> 21) == b1;
  }
  std::memset(hist, 0, sizeof(hist));
  for (int64_t i = 0; i < m; ++i) ++hist[(tmp[i] >> 10) & 2047];
  const uint32_t b2 = pick(hist, 2048, need);
  int64_t m2 = 0;
  for (int64_t i = 0; i < m; ++i) {
    tmp[m2] = tmp[i];
    m2 += ((tmp[i] >> 10) & 2047) == b2;
  }
  std::memset(hist, 0, 1024 * sizeof(uint32_t));
  for (int64_t i = 0; i < m2; ++i) ++hist[tmp[i] & 1023];
  const uint32_t b3 = pick(hist, 1024, need);
  return {(b1 << 21) | (b2 << 10) | b3, need};
}

}  // namespace

uint64_t make_candidate(float score, int32_t pos) {
  return (static_cast<uint64_t>(rank_of(score)) << 32) | static_cast<uint32_t>(pos);
}

int64_t select_scores(const float* scores, int64_t n, int32_t pos0, int64_t k, uint64_t* out, SelectScratch& s) {
  if (n <= k) {
    for (int64_t i = 0; i < n; ++i) out[i] = make_candidate(scores[i], pos0 + static_cast<int32_t>(i));
    return n;
  }
  const Threshold t = find_threshold([scores](int64_t i) { return rank_of(scores[i]); }, n, k, s.ranks);
  // Branch-free emit; out[m] stays inside out[0, k) because the loop ends once k are taken.
  int64_t m = 0, equal = 0;
  for (int64_t i = 0; i < n && m < k; ++i) {
    const uint32_t r = rank_of(scores[i]);
    const bool eq = r == t.rank;
    out[m] = (static_cast<uint64_t>(r) << 32) | static_cast<uint32_t>(pos0 + static_cast<int32_t>(i));
    m += (r < t.rank) | (eq & (equal < t.take_equal));
    equal += eq;
  }
  return m;
}

int64_t select_candidates(uint64_t* c, int64_t n, int64_t k, SelectScratch& s) {
  if (n <= k) return n;
  const Threshold t = find_threshold([c](int64_t i) { return rank_of(c[i]); }, n, k, s.ranks);
  int64_t m = 0, equal = 0;
  for (int64_t i = 0; i < n && m < k; ++i) {  // in place and branch-free, as in select_scores
    const uint32_t r = rank_of(c[i]);
    const bool eq = r == t.rank;
    c[m] = c[i];
    m += (r < t.rank) | (eq & (equal < t.take_equal));
    equal += eq;
  }
  return m;
}

void sort_candidates(uint64_t* c, int64_t n, SelectScratch& s) {
  if (n < 256) {  // candidates are distinct, so a plain sort gives the same order
    std::sort(c, c + n);
    return;
  }
  // LSD over the four bytes of the rank; one read pass builds all four histograms.
  uint32_t hist[4][256];
  std::memset(hist, 0, sizeof(hist));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t r = static_cast<uint32_t>(c[i] >> 32);
    ++hist[0][r & 255];
    ++hist[1][(r >> 8) & 255];
    ++hist[2][(r >> 16) & 255];
    ++hist[3][r >> 24];
  }
  s.sorted.resize(static_cast<size_t>(n));
  uint64_t* src = c;
  uint64_t* dst = s.sorted.data();
  for (int pass = 0; pass < 4; ++pass) {
    uint32_t* h = hist[pass];
    const int sh = 32 + 8 * pass;
    if (h[(src[0] >> sh) & 255] == n) continue;  // one digit value: nothing to reorder
    uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t v = h[b];
      h[b] = sum;
      sum += v;
    }
    for (int64_t i = 0; i < n; ++i) dst[h[(src[i] >> sh) & 255]++] = src[i];
    std::swap(src, dst);
  }
  if (src != c) std::memcpy(c, src, static_cast<size_t>(n) * sizeof(uint64_t));
}

}  // namespace li
}  // namespace dsa
