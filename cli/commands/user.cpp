// agentgw user add|list|show|rm: the people who own agents and credentials.
#include <memory>
#include <ostream>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"

namespace agentgw::cli {

namespace {

struct AddOptions {
    std::string name;
    std::string email;
};

void print_user(std::ostream& out, const nlohmann::json& user) {
    Rows rows = {{"username", field(user, "username")},
                 {"user id", field(user, "user_id")},
                 {"email", field(user, "email")}};
    if (user.contains("agents")) {
        rows.push_back({"agents", field(user, "agents")});
    }
    if (user.contains("created_at")) {
        rows.push_back({"created", field(user, "created_at")});
    }
    print_table(out, {}, rows);
}

Status run_add(Context& ctx, const AddOptions& o) {
    const nlohmann::json body = {{"username", o.name}, {"email", o.email}};
    return call_and_print(ctx, "POST", "/auth/register", body, print_user);
}

Status run_list(Context& ctx) {
    return call_and_print(ctx, "GET", "/v1/users", std::nullopt, [](auto& out, const auto& body) {
        print_list(out, {"USERNAME", "ID", "EMAIL", "AGENTS", "CREATED"}, body.at("users"),
                   [](const nlohmann::json& u) -> std::vector<std::string> {
                       return {field(u, "username"), field(u, "user_id"), field(u, "email"),
                               field(u, "agents"), field(u, "created_at")};
                   });
    });
}

Status run_show(Context& ctx, const std::string& user) {
    return call_and_print(ctx, "GET", "/v1/users/" + segment(user), std::nullopt, print_user);
}

Status run_rm(Context& ctx, const std::string& user) {
    return call_and_print(ctx, "DELETE", "/v1/users/" + segment(user));
}

}  // namespace

void register_user(CLI::App& parent, Context&, Runner& chosen) {
    auto* user = add_group(parent, "user", "Add, list, show and remove users");

    auto add = std::make_shared<AddOptions>();
    auto* cmd = add_leaf(*user, chosen, "add", "Register a user",
                         [add](Context& ctx) { return run_add(ctx, *add); });
    cmd->add_option("NAME", add->name, "User name (1-64 bytes)")->required();
    cmd->add_option("--email", add->email, "The user's email address")->required();

    add_leaf(*user, chosen, "list", "List users", run_list);
    add_leaf(*user, chosen, "show", "Show a user", "USER", "User name or id", run_show);
    add_leaf(*user, chosen, "rm", "Remove a user who owns no agents", "USER", "User name or id",
             run_rm);
}

}  // namespace agentgw::cli
