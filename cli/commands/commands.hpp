// The table of top-level commands: one file per command under cli/commands/.
#pragma once

#include <string_view>

#include "cli/context.hpp"

namespace agentgw::cli {

void register_status(CLI::App& parent, Context& ctx, Runner& chosen);
void register_user(CLI::App& parent, Context& ctx, Runner& chosen);
void register_agent(CLI::App& parent, Context& ctx, Runner& chosen);
void register_service(CLI::App& parent, Context& ctx, Runner& chosen);
void register_credential(CLI::App& parent, Context& ctx, Runner& chosen);
void register_audit(CLI::App& parent, Context& ctx, Runner& chosen);
void register_connect(CLI::App& parent, Context& ctx, Runner& chosen);
void register_publish(CLI::App& parent, Context& ctx, Runner& chosen);
void register_retrieve(CLI::App& parent, Context& ctx, Runner& chosen);

struct CommandEntry {
    std::string_view name;
    Registrar registrar;
};

// clang-format off
inline constexpr CommandEntry k_commands[] = {
    {"status", &register_status},
    {"user", &register_user},
    {"agent", &register_agent},
    {"service", &register_service},
    {"credential", &register_credential},
    {"connect", &register_connect},
    {"publish", &register_publish},
    {"retrieve", &register_retrieve},
    {"audit", &register_audit},
};
// clang-format on

}  // namespace agentgw::cli
