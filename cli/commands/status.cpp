// agentgw status: the daemon's version, uptime, listeners and vault state.
#include <ostream>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/output.hpp"

namespace agentgw::cli {

namespace {

Status run_status(Context& ctx) {
    TRY_ASSIGN(Reply reply, ctx.daemon().request("GET", "/v1/status"));
    if (reply.status != 200) {
        return ControlClient::error_of(reply);
    }
    const auto& s = reply.body;
    if (ctx.json) {
        *ctx.out << s.dump() << '\n';
        return {};
    }
    const auto& vault = s.at("vault");
    print_table(*ctx.out, {},
                {{"version", s.at("version").get<std::string>()},
                 {"pid", std::to_string(s.at("pid").get<long>())},
                 {"uptime", format_duration(s.at("uptime_secs").get<int64_t>())},
                 {"agent API", s.at("listeners").at("agent_api").get<std::string>()},
                 {"control socket", s.at("listeners").at("control_socket").get<std::string>()},
                 {"vault", fmt::format("{} ({})", vault.at("state").get<std::string>(),
                                       vault.at("dir").get<std::string>())}});
    return {};
}

}  // namespace

void register_status(CLI::App& parent, Context&, Runner& chosen) {
    auto* cmd = parent.add_subcommand("status", "Show the daemon's version, listeners and vault");
    cmd->callback([&chosen] { chosen = run_status; });
}

}  // namespace agentgw::cli
