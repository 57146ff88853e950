// agentgw agent ...: create, inspect, rotate, enable/disable, limit, grant and remove agents.
#include <cctype>
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"
#include "cli/spec.hpp"
#include "common/decimal_check.hpp"

namespace agentgw::cli {

namespace {

struct CreateOptions {
    std::string user;
    std::string name;
    std::optional<std::string> description;
    std::vector<std::string> services;
    std::optional<int> lifespan_days;
};

struct RotateOptions {
    std::string agent;
    std::optional<int> grace_secs;
};

struct LimitOptions {
    std::string agent;
    int requests = 0;
    int window_secs = 0;
};

struct GrantOptions {
    std::string agent;
    std::string service;
    std::vector<std::string> methods;
    std::vector<std::string> paths;
};

std::string agent_path(const std::string& agent, std::string_view rest = "") {
    return fmt::format("/v1/agents/{}{}", segment(agent), rest);
}

std::string seed_agent_path(const std::string& agent, std::string_view rest) {
    return fmt::format("/auth/agent/{}{}", segment(agent), rest);
}

// The API key is shown once, on its own line, so it can be copied and stored.
void print_api_key(std::ostream& out, const nlohmann::json& body) {
    out << "\nAPI key: " << body.at("api_key").get<std::string>() << '\n'
        << "Store this key now: it will not be shown again.\n";
}

std::string expiry(const nlohmann::json& agent) {
    const std::string at = field(agent, "key_expires_at");
    return agent.value("is_expired", false) ? at + " (expired)" : at;
}

std::string services_text(const nlohmann::json& services) {
    return services.empty() ? "none" : cell(services);
}

Status run_create(Context& ctx, const CreateOptions& o) {
    nlohmann::json body = {{"user_id", o.user}, {"agent_name", o.name}};
    if (o.description) {
        body["agent_description"] = *o.description;
    }
    if (!o.services.empty()) {
        body["services"] = o.services;
    }
    if (o.lifespan_days) {
        body["lifespan_days"] = *o.lifespan_days;
    }
    return call_and_print(ctx, "POST", "/auth/agent", body, [](auto& out, const auto& agent) {
        print_table(out, {},
                    {{"name", field(agent, "agent_name")},
                     {"agent id", field(agent, "agent_id")},
                     {"services", services_text(agent.at("allowed_services"))},
                     {"key expires", field(agent, "key_expires_at")},
                     {"lifespan", field(agent, "lifespan_days") + " days"}});
        print_api_key(out, agent);
    });
}

Status run_list(Context& ctx, const std::string& user) {
    const std::string path = "/v1/agents" + ControlClient::query({{"user", user}});
    return call_and_print(ctx, "GET", path, std::nullopt, [](auto& out, const auto& body) {
        print_list(out, {"NAME", "ID", "USER", "ENABLED", "SERVICES", "KEY EXPIRES"},
                   body.at("agents"), [](const nlohmann::json& a) -> std::vector<std::string> {
                       return {
                           field(a, "name"),    field(a, "agent_id"),         field(a, "username"),
                           field(a, "enabled"), field(a, "allowed_services"), expiry(a)};
                   });
    });
}

void print_agent(std::ostream& out, const nlohmann::json& a) {
    Rows rows = {
        {"name", field(a, "name")},
        {"agent id", field(a, "agent_id")},
        {"user", fmt::format("{} ({})", field(a, "username"), field(a, "user_id"))},
        {"description", field(a, "description")},
        {"enabled", field(a, "enabled")},
        {"rate limit", rate_limit_text(a.at("rate_limit"))},
        {"lifespan", field(a, "lifespan_days") + " days"},
        {"key expires", expiry(a)},
        {"generation", field(a, "generation")},
        {"created", field(a, "created_at")},
    };
    append_rows(
        rows, "grants", a.at("grants"),
        [](const auto& grant) { return field(grant, "service_id") + ": " + rule_text(grant); },
        "none");
    print_table(out, {}, rows);
}

Status run_show(Context& ctx, const std::string& agent) {
    return call_and_print(ctx, "GET", agent_path(agent), std::nullopt, print_agent);
}

Status run_rotate(Context& ctx, const RotateOptions& o) {
    std::optional<nlohmann::json> body;
    if (o.grace_secs) {
        body = nlohmann::json{{"grace_secs", *o.grace_secs}};
    }
    const int grace = o.grace_secs.value_or(0);
    return call_and_print(
        ctx, "POST", seed_agent_path(o.agent, "/rotate"), body, [grace](auto& out, const auto& r) {
            print_table(out, {},
                        {{"agent id", field(r, "agent_id")},
                         {"key expires", field(r, "expires_at")},
                         {"old key", grace > 0 ? "works for another " + format_duration(grace)
                                               : "stopped working"}});
            print_api_key(out, r);
        });
}

// enable and disable answer the agent; one line says what changed.
ArgRunner switch_to(bool enabled) {
    return [enabled](Context& ctx, const std::string& agent) {
        return call_and_print(ctx, "POST", agent_path(agent, enabled ? "/enable" : "/disable"),
                              std::nullopt, [enabled](auto& out, const auto& a) {
                                  out << fmt::format("agent {} {}\n", field(a, "name"),
                                                     enabled ? "enabled" : "disabled");
                              });
    };
}

Status run_rm(Context& ctx, const std::string& agent) {
    return call_and_print(ctx, "DELETE", agent_path(agent));
}

Status run_limit(Context& ctx, const LimitOptions& o) {
    const nlohmann::json body = {{"requests", o.requests}, {"window_secs", o.window_secs}};
    return call_and_print(ctx, "PUT", agent_path(o.agent, "/rate-limit"), body,
                          [](auto& out, const auto& a) {
                              out << fmt::format("agent {}: at most {}\n", field(a, "name"),
                                                 rate_limit_text(a.at("rate_limit")));
                          });
}

// grant and revoke answer the agent's services; one line says what changed.
Printer print_services_change(const std::string& agent, std::string_view verb) {
    return [agent, verb](std::ostream& out, const nlohmann::json& r) {
        out << fmt::format("agent {}: {} {} (services: {})\n", agent, verb, field(r, "service_id"),
                           services_text(r.at("allowed_services")));
    };
}

Status run_grant(Context& ctx, const GrantOptions& o) {
    nlohmann::json body = {{"service_id", o.service}};
    if (!o.methods.empty()) {
        body["methods"] = o.methods;
    }
    if (!o.paths.empty()) {
        body["paths"] = o.paths;
    }
    return call_and_print(ctx, "POST", seed_agent_path(o.agent, "/services"), body,
                          print_services_change(o.agent, "granted"));
}

Status run_revoke(Context& ctx, const GrantOptions& o) {
    return call_and_print(ctx, "DELETE",
                          seed_agent_path(o.agent, "/services/" + segment(o.service)), std::nullopt,
                          print_services_change(o.agent, "revoked"));
}

// An HTTP method token, upper-cased, or "*" for any method.
std::string method_token(std::string method) {
    if (method == "*") {
        return method;
    }
    if (method.empty()) {
        throw CLI::ValidationError("empty method");
    }
    for (char& c : method) {
        if (std::isalpha(static_cast<unsigned char>(c)) == 0) {
            throw CLI::ValidationError("not a method: " + method);
        }
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return method;
}

// A repeatable option: one value per occurrence, all occurrences kept.
CLI::Option* repeatable(CLI::Option* opt) {
    return opt->expected(1)->allow_extra_args(false)->multi_option_policy(
        CLI::MultiOptionPolicy::TakeAll);
}

void add_create(CLI::App& agent, Runner& chosen) {
    auto o = std::make_shared<CreateOptions>();
    auto* cmd = add_leaf(agent, chosen, "create", "Create an agent and print its API key",
                         [o](Context& ctx) { return run_create(ctx, *o); });
    cmd->add_option("--user", o->user, "Owner: user name or id")->required();
    cmd->add_option("--name", o->name, "Agent name (1-64 bytes)")->required();
    cmd->add_option("--description", o->description, "What the agent is for");
    repeatable(cmd->add_option("--service", o->services, "Grant this service (repeatable)"));
    cmd->add_option("--lifespan-days", o->lifespan_days, "Key lifetime in days (default 90)")
        ->check(decimal())
        ->check(CLI::Range(1, 3650));
}

void add_rotate(CLI::App& agent, Runner& chosen) {
    auto o = std::make_shared<RotateOptions>();
    auto* cmd = add_leaf(agent, chosen, "rotate", "Replace an agent's API key",
                         [o](Context& ctx) { return run_rotate(ctx, *o); });
    cmd->add_option("AGENT", o->agent, "Agent name or id")->required();
    cmd->add_option("--grace", o->grace_secs, "Keep the old key working this many seconds")
        ->check(decimal())
        ->check(CLI::Range(0, 604800));
}

void add_limit(CLI::App& agent, Runner& chosen) {
    auto o = std::make_shared<LimitOptions>();
    auto* cmd = add_leaf(agent, chosen, "limit", "Set an agent's rate limit",
                         [o](Context& ctx) { return run_limit(ctx, *o); });
    cmd->add_option("AGENT", o->agent, "Agent name or id")->required();
    cmd->add_option("--requests", o->requests, "Requests allowed per window")
        ->required()
        ->check(decimal())
        ->check(CLI::Range(1, 1000000));
    cmd->add_option("--window", o->window_secs, "Window length in seconds")
        ->required()
        ->check(decimal())
        ->check(CLI::Range(1, 86400));
}

void add_grant_revoke(CLI::App& agent, Runner& chosen) {
    auto g = std::make_shared<GrantOptions>();
    auto* grant = add_leaf(agent, chosen, "grant", "Let an agent use a service",
                           [g](Context& ctx) { return run_grant(ctx, *g); });
    grant->add_option("AGENT", g->agent, "Agent name or id")->required();
    grant->add_option("SERVICE", g->service, "Service id")->required();
    suggest(
        repeatable(grant->add_option("--method", g->methods, "Allow only this method (repeatable)"))
            ->transform(method_token),
        {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"});
    repeatable(grant->add_option("--path", g->paths, "Allow only matching paths (repeatable)"));

    auto r = std::make_shared<GrantOptions>();
    auto* revoke = add_leaf(agent, chosen, "revoke", "Stop an agent using a service",
                            [r](Context& ctx) { return run_revoke(ctx, *r); });
    revoke->add_option("AGENT", r->agent, "Agent name or id")->required();
    revoke->add_option("SERVICE", r->service, "Service id")->required();
}

}  // namespace

void register_agent(CLI::App& parent, Context&, Runner& chosen) {
    auto* agent = add_group(parent, "agent", "Create and manage agents and their grants");
    add_create(*agent, chosen);

    auto user = std::make_shared<std::string>();
    add_leaf(*agent, chosen, "list", "List agents",
             [user](Context& ctx) { return run_list(ctx, *user); })
        ->add_option("--user", *user, "Only this user's agents (name or id)")
        ->check(non_empty());

    add_leaf(*agent, chosen, "show", "Show an agent", "AGENT", "Agent name or id", run_show);
    add_rotate(*agent, chosen);
    add_leaf(*agent, chosen, "enable", "Let a disabled agent work again", "AGENT",
             "Agent name or id", switch_to(true));
    add_leaf(*agent, chosen, "disable", "Stop an agent without removing it", "AGENT",
             "Agent name or id", switch_to(false));
    add_leaf(*agent, chosen, "rm", "Remove an agent; its key stops working", "AGENT",
             "Agent name or id", run_rm);
    add_limit(*agent, chosen);
    add_grant_revoke(*agent, chosen);
}

}  // namespace agentgw::cli
