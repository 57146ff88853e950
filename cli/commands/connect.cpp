// agentgw connect: an OAuth2 device flow (RFC 8628). The daemon asks the service for a code
// and polls for the tokens itself; this command shows the user where to go and waits for the
// outcome. Interrupting it does not stop the flow: the daemon finishes it regardless.
#include <chrono>
#include <iostream>
#include <memory>
#include <ostream>
#include <thread>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"

namespace agentgw::cli {

namespace {

struct ConnectOptions {
    std::string service;
    std::string user;
    std::string agent;
};

Status run_connect(Context& ctx, const ConnectOptions& o) {
    std::optional<nlohmann::json> request = nlohmann::json{{"service", o.service}};
    if (!o.user.empty()) {
        (*request)["user"] = o.user;
    }
    if (!o.agent.empty()) {
        (*request)["agent"] = o.agent;
    }
    TRY_ASSIGN(Reply started, call(ctx, "POST", "/v1/oauth/device", request));
    const nlohmann::json& flow = started.body;
    // With --json stdout carries only the final document, so the instructions go to stderr.
    std::ostream& say = ctx.json ? std::cerr : *ctx.out;
    say << fmt::format(
        "To authorise agentgw for {}, open\n\n    {}\n\nand enter the code "
        "{}\n",
        o.service, field(flow, "verification_uri"), field(flow, "user_code"));
    if (const std::string complete = flow.value("verification_uri_complete", "");
        !complete.empty()) {
        say << fmt::format("(or open {})\n", printable(complete));
    }
    say << fmt::format("\nWaiting for approval until {}...\n", field(flow, "expires_at"));
    say.flush();

    const std::string path = "/v1/oauth/device/" + segment(flow.at("flow_id").get<std::string>());
    int unreachable = 0;  // consecutive failed looks: the daemon may be restarting
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        auto looked = call(ctx, "GET", path);
        if (!looked && looked.error().code == Code::unavailable && ++unreachable < 30) {
            continue;  // the flow is in the vault and resumes with the daemon
        }
        unreachable = 0;
        TRY_ASSIGN(Reply now, std::move(looked));
        const std::string status = now.body.value("status", "");
        if (status == "pending") {
            continue;
        }
        if (status == "complete") {
            print_reply(ctx, now, [&](std::ostream& out, const nlohmann::json&) {
                out << fmt::format("connected: the tokens for {} are stored\n", o.service);
            });
            return {};
        }
        const std::string message = now.body.value("message", status);
        if (status == "denied") {
            return make_error(Code::permission_denied, message);
        }
        return make_error(Code::conflict,
                          status == "expired" ? message + "; run agentgw connect again" : message);
    }
}

}  // namespace

void register_connect(CLI::App& parent, Context&, Runner& chosen) {
    auto o = std::make_shared<ConnectOptions>();
    auto* cmd = add_leaf(parent, chosen, "connect",
                         "Authorise a service with the OAuth2 device flow and store its tokens",
                         [o](Context& ctx) { return run_connect(ctx, *o); });
    cmd->add_option("SERVICE", o->service, "Service id (an oauth2 service with a device flow)")
        ->required();
    auto* user = cmd->add_option("--user", o->user, "Store the tokens for this user (name or id)")
                     ->check(non_empty());
    auto* agent =
        cmd->add_option("--agent", o->agent, "Store the tokens for this agent (name or id)")
            ->check(non_empty());
    user->excludes(agent);
}

}  // namespace agentgw::cli
