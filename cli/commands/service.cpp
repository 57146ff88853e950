// agentgw service list|show|reload: the upstream APIs of the services file.
#include <ostream>
#include <set>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"

namespace agentgw::cli {

namespace {

std::string auth_type(const nlohmann::json& service) {
    const auto auth = service.find("auth");
    return auth != service.end() && auth->is_object() ? field(*auth, "type") : "-";
}

Status run_list(Context& ctx) {
    return call_and_print(
        ctx, "GET", "/v1/services", std::nullopt, [](auto& out, const auto& body) {
            print_list(
                out, {"ID", "NAME", "AUTH", "BASE URL"}, body.at("services"),
                [](const nlohmann::json& s) -> std::vector<std::string> {
                    return {field(s, "id"), field(s, "name"), auth_type(s), field(s, "base_url")};
                });
        });
}

// The well-known fields first, in words; then auth parameters and any other field as they are,
// so a field the daemon adds later still shows.
void print_service(std::ostream& out, const nlohmann::json& s) {
    Rows rows = {{"id", field(s, "id")},
                 {"name", field(s, "name")},
                 {"description", field(s, "description")},
                 {"base url", field(s, "base_url")},
                 {"auth", auth_type(s)}};
    const std::set<std::string> shown = {"id",   "name",       "description", "base_url",
                                         "auth", "rate_limit", "allow"};
    if (const auto auth = s.find("auth"); auth != s.end() && auth->is_object()) {
        for (const auto& [key, value] : auth->items()) {
            if (key != "type") {
                rows.push_back({"auth " + key, cell(value)});
            }
        }
    }
    rows.push_back({"rate limit", rate_limit_text(s.value("rate_limit", nlohmann::json()))});
    append_rows(rows, "allow", s.value("allow", nlohmann::json()), rule_text, "everything");
    for (const auto& [key, value] : s.items()) {
        if (!shown.contains(key)) {
            rows.push_back({key, cell(value)});
        }
    }
    print_table(out, {}, rows);
}

Status run_show(Context& ctx, const std::string& service) {
    return call_and_print(ctx, "GET", "/v1/services/" + segment(service), std::nullopt,
                          print_service);
}

Status run_reload(Context& ctx) {
    return call_and_print(
        ctx, "POST", "/v1/services/reload", std::nullopt, [](auto& out, const auto& body) {
            out << fmt::format("reloaded: {} services\n", field(body, "services"));
        });
}

}  // namespace

void register_service(CLI::App& parent, Context&, Runner& chosen) {
    auto* service = add_group(parent, "service", "List, show and reload services");
    add_leaf(*service, chosen, "list", "List services", run_list);
    add_leaf(*service, chosen, "show", "Show a service's definition", "SERVICE", "Service id",
             run_show);
    add_leaf(*service, chosen, "reload", "Reload the services file", run_reload);
}

}  // namespace agentgw::cli
