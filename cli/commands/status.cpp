// agentgw status: the daemon's version, uptime, listeners, records and vault state.
#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"

namespace agentgw::cli {

namespace {

// How many users, agents and credentials the vault holds; "?" for a count the daemon could
// not read.
std::string record_counts(const nlohmann::json& counts) {
    const auto count = [&](const char* key) {
        const auto it = counts.find(key);
        return it != counts.end() && it->is_number_integer() ? std::to_string(it->get<int64_t>())
                                                             : std::string("?");
    };
    return fmt::format("{} user(s), {} agent(s), {} credential(s)", count("users"), count("agents"),
                       count("credentials"));
}

// Every string is shown through printable(): the services file's path and the reload error
// (which may quote the file) come from outside the daemon.
void print_status(std::ostream& out, const nlohmann::json& s) {
    const auto& vault = s.at("vault");
    const auto& counts = s.value("counts", nlohmann::json::object());
    // Credentials whose refresh the authorization server refused: someone must act.
    const int64_t reauth = counts.value("credentials_reauth_required", int64_t{0});
    const auto& services = s.value("services", nlohmann::json::object());
    std::vector<std::vector<std::string>> rows = {
        {"version", printable(s.at("version").get<std::string>())},
        {"pid", std::to_string(s.at("pid").get<long>())},
        {"uptime", format_duration(s.at("uptime_secs").get<int64_t>())},
        {"agent API", printable(s.at("listeners").at("agent_api").get<std::string>())},
        {"control socket", printable(s.at("listeners").at("control_socket").get<std::string>())},
        {"vault", printable(fmt::format("{} ({})", vault.at("state").get<std::string>(),
                                        vault.at("dir").get<std::string>()))},
        {"records", record_counts(counts)},
        {"reauth required",
         reauth == 0 ? std::string("none")
                     : fmt::format("{} credential(s): see agentgw credential list", reauth)}};
    if (services.contains("services")) {
        const auto& file = services.at("file");
        rows.push_back(
            {"services", printable(fmt::format(
                             "{} from {}, loaded {}", services.at("services").get<int64_t>(),
                             file.is_string() ? file.get<std::string>() : std::string("(no file)"),
                             services.at("loaded_at").get<std::string>()))});
    }
    if (services.contains("last_error")) {
        // The services in force are the old ones: the file on disk is not what runs.
        rows.push_back(
            {"reload failed",
             printable(fmt::format("{}: {}", services.at("last_error_at").get<std::string>(),
                                   services.at("last_error").get<std::string>()))});
    }
    print_table(out, {}, rows);
}

Status run_status(Context& ctx) {
    return call_and_print(ctx, "GET", "/v1/status", std::nullopt, print_status);
}

}  // namespace

void register_status(CLI::App& parent, Context&, Runner& chosen) {
    add_leaf(parent, chosen, "status", "Show the daemon's version, listeners and vault",
             run_status);
}

}  // namespace agentgw::cli
