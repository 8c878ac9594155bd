// Counter-based randomness: splitmix64 maps any 64-bit counter to a
// well-mixed value, so noise and hashes are reproducible from (seed, index),
// thread-safe, and recomputable in backward without storing them.
#pragma once

#include <cstdint>

namespace sy {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 53 bits of splitmix64(x).
inline double uniform01(uint64_t x) { return double(splitmix64(x) >> 11) * 0x1.0p-53; }

}  // namespace sy
