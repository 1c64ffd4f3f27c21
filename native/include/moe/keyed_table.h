// Tables indexed by an enum, written as one entry per key (never filled by position): keyed_table() places each
// entry at its key's index and, evaluated at compile time (constexpr), refuses a key given twice or left out, so a
// table and its enum cannot drift apart. The entry type names its key `key`.
#pragma once
#include <array>
#include <cstddef>
#include <stdexcept>

namespace moe {

template <class Entry, size_t N>
constexpr std::array<Entry, N> keyed_table(const Entry (&entries)[N]) {
  std::array<Entry, N> out{};
  std::array<bool, N> seen{};
  for (const Entry& e : entries) {
    const size_t i = static_cast<size_t>(e.key);
    if (i >= N) throw std::logic_error("a key past the table's size");
    if (seen[i]) throw std::logic_error("a key given twice");
    seen[i] = true;
    out[i] = e;
  }
  return out;  // (N entries, none twice: every key once)
}

}  // namespace moe
