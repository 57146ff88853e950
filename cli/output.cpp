#include "cli/output.hpp"

#include <algorithm>
#include <ostream>

#include <fmt/format.h>

namespace agentgw::cli {

void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows,
                 const std::vector<size_t>& min_widths) {
    std::vector<size_t> widths = min_widths;
    auto measure = [&](const std::vector<std::string>& row) {
        widths.resize(std::max(widths.size(), row.size()), 0);
        for (size_t i = 0; i < row.size(); ++i) {
            widths[i] = std::max(widths[i], row[i].size());
        }
    };
    measure(header);
    for (const auto& row : rows) {
        measure(row);
    }
    auto print = [&](const std::vector<std::string>& row) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) {
            line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
        }
        out << line << '\n';
    };
    if (!header.empty()) {
        print(header);
    }
    for (const auto& row : rows) {
        print(row);
    }
}

std::string format_duration(int64_t s) {
    if (s < 60) {
        return fmt::format("{}s", s);
    }
    if (s < 3600) {
        return fmt::format("{}m{}s", s / 60, s % 60);
    }
    if (s < 86400) {
        return fmt::format("{}h{}m", s / 3600, s % 3600 / 60);
    }
    return fmt::format("{}d{}h", s / 86400, s % 86400 / 3600);
}

}  // namespace agentgw::cli
