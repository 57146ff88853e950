// A CLI11 check for integer options, shared by agentgw and agentgwd: decimal digits only.
// CLI11 reads "010" as octal and "0x10" as hexadecimal, so a number of seconds written with a
// leading zero (or a config file's "0x3c") would silently mean something else.
#pragma once

#include <algorithm>
#include <string>

#include <CLI/CLI.hpp>

namespace agentgw {

inline const CLI::Validator& decimal() {
    static const CLI::Validator check(
        [](const std::string& value) -> std::string {
            const bool digits =
                !value.empty() && std::all_of(value.begin(), value.end(),
                                              [](char c) { return c >= '0' && c <= '9'; });
            if (!digits || (value.size() > 1 && value.front() == '0')) {
                return "not a decimal number: " + value;
            }
            return {};
        },
        "");
    return check;
}

}  // namespace agentgw
