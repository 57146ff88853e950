// The table of top-level commands: one file per command under cli/commands/.
#pragma once

#include <string_view>

#include "cli/context.hpp"

namespace agentgw::cli {

void register_status(CLI::App& parent, Context& ctx, Runner& chosen);

struct CommandEntry {
    std::string_view name;
    Registrar registrar;
};

inline constexpr CommandEntry k_commands[] = {
    {"status", &register_status},
};

}  // namespace agentgw::cli
