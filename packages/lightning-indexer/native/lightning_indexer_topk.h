// Top-k selection of the lightning indexer: radix select over fp32 scores (a few linear passes, no
// full sort), then a radix sort of the k survivors. Internal to the package.
//
// A candidate is one uint64: the high 32 bits rank the score (smaller = larger score), the low 32
// bits hold the logical position. Ascending candidate order is therefore the output order: score
// descending, ties to the smaller position. -0.0 ranks like +0.0.
#pragma once
#include <cstdint>
#include <vector>

namespace dsa {
namespace li {

uint64_t make_candidate(float score, int32_t pos);
inline int32_t candidate_pos(uint64_t c) { return static_cast<int32_t>(static_cast<uint32_t>(c)); }

// Reusable buffers of the selection (one per thread).
struct SelectScratch {
  std::vector<uint32_t> ranks;
  std::vector<uint64_t> sorted;
};

// Append the best min(n, k) of scores[0, n) (positions pos0 + j) to out, in ascending position
// order. Returns the count.
int64_t select_scores(const float* scores, int64_t n, int32_t pos0, int64_t k, uint64_t* out, SelectScratch& s);

// Keep the best min(n, k) of c[0, n) at its front, in their original order. c must be in ascending
// position order (so equal scores keep the smaller positions). Returns the count.
int64_t select_candidates(uint64_t* c, int64_t n, int64_t k, SelectScratch& s);

// Sort c[0, n) ascending. c must be in ascending position order (the sort is stable on the score).
void sort_candidates(uint64_t* c, int64_t n, SelectScratch& s);

}  // namespace li
}  // namespace dsa
