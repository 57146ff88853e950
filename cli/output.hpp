// Human output helpers: aligned tables and short durations. Thread-compatible.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace agentgw::cli {

// Prints rows with columns padded to the widest cell, or to min_widths[i] when that is wider
// (so tables printed piece by piece line up); a non-empty header row comes first.
void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows,
                 const std::vector<size_t>& min_widths = {});

// 59 -> "59s", 3700 -> "1h1m", 90000 -> "1d1h".
std::string format_duration(int64_t seconds);

}  // namespace agentgw::cli
