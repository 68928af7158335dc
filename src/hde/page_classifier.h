// Page patterns for the HDE dashboard (dwcp_v3_hde_pattern_pages_total{pattern}) and for the
// encoder's choice to store incompressible pages without compression.
#pragma once

#include <cstdint>

namespace dwcp::hde {

// kZero, kDuplicate and kDelta come from the encoding outcome; the others from content.
enum class Pattern : uint8_t { kZero = 0, kDuplicate, kDelta, kText, kBinary, kRandom };
inline constexpr int kPatternCount = 6;
// "zero", "duplicate", "delta", "text", "binary", "random": the `pattern` label values.
const char* PatternName(Pattern p);

// Classifies the content of one non-zero page from a 128-byte sample (16 words spread over
// the page, one per 256-byte block): kText when nearly every sampled byte is printable ASCII or
// whitespace, kRandom when the sample's byte histogram is close to uniform (its collision count,
// the sum of squared byte counts, is near the ~1.5n expected of random bytes), else kBinary. Costs
// about as much as reading the sample. Pure, thread-safe.
Pattern ClassifyContent(const uint8_t* page);

}  // namespace dwcp::hde
