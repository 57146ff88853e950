// agentgw publish|retrieve: hub data handed between agents, on an agent's behalf.
// The data comes from stdin (never argv); a token may come from stdin too, since argv is
// visible to every local user in ps.
#include <cstdio>
#include <iostream>
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"
#include "cli/secret.hpp"
#include "common/decimal_check.hpp"

namespace agentgw::cli {

namespace {

// More than any daemon accepts (--hub-max-data tops out at 64 MiB): the daemon gives the
// precise answer, this only keeps a runaway pipe from filling memory.
constexpr size_t k_max_input = size_t{64} * 1024 * 1024 + 1;

struct PublishOptions {
    std::string agent;
    std::string name;
    std::optional<int64_t> ttl;
    bool once = false;
    std::vector<std::string> recipients;
};

struct RetrieveOptions {
    std::string token;
    std::string agent;
    bool raw = false;
};

// All of stdin, byte for byte.
Result<std::string> read_all_stdin() {
    std::string data;
    char buf[65536];
    for (;;) {
        const size_t n = std::fread(buf, 1, sizeof buf, stdin);
        data.append(buf, n);
        if (data.size() > k_max_input) {
            return make_error(Code::exhausted, "the data on standard input is too large");
        }
        if (n < sizeof buf) {
            if (std::ferror(stdin)) {
                return make_error(Code::io_error, "cannot read standard input");
            }
            return data;
        }
    }
}

Status run_publish(Context& ctx, const PublishOptions& o) {
    TRY_ASSIGN(std::string data, read_all_stdin());
    std::optional<nlohmann::json> request =
        nlohmann::json{{"agent", o.agent}, {"name", o.name}, {"once", o.once}};
    nlohmann::json& body = *request;
    if (o.ttl) {
        body["ttl"] = *o.ttl;
    }
    if (!o.recipients.empty()) {
        body["recipients"] = o.recipients;
    }
    body["data"] = std::move(data);
    try {
        (void)body.dump();  // the daemon takes JSON text: the data must be UTF-8
    } catch (const nlohmann::json::type_error&) {
        return make_error(Code::invalid_argument,
                          "the data is not UTF-8 text (encode binary data, e.g. with base64)");
    }
    return call_and_print(ctx, "POST", "/v1/hub/publish", request,
                          [](std::ostream& out, const nlohmann::json& receipt) {
                              // The token alone, so that TOKEN=$(agentgw publish ...) works.
                              out << receipt.at("token").get<std::string>() << '\n';
                          });
}

Status run_retrieve(Context& ctx, const RetrieveOptions& o) {
    std::string token = o.token;
    if (token.empty() || token == "-") {
        TRY_ASSIGN(SecretString typed, read_secret("Data token: "));
        token = typed.value();
    }
    std::optional<nlohmann::json> request = nlohmann::json{{"token", token}};
    wipe(token);
    if (!o.agent.empty()) {
        (*request)["agent"] = o.agent;
    }
    TRY_ASSIGN(Reply reply, call(ctx, "POST", "/v1/hub/retrieve", request));
    wipe((*request)["token"].get_ref<std::string&>());
    if (o.raw && !ctx.json) {
        *ctx.out << reply.body.at("data").get<std::string>();
        ctx.out->flush();
        return {};
    }
    print_reply(ctx, reply, [](std::ostream& out, const nlohmann::json& b) {
        print_table(out, {},
                    {{"name", field(b, "name")},
                     {"publisher", field(b, "publisher")},
                     {"created", field(b, "created_at")},
                     {"expires", field(b, "expires_at")},
                     {"once", field(b, "once")}});
        out << "data:\n" << printable(b.at("data").get_ref<const std::string&>(), true) << '\n';
    });
    return {};
}

}  // namespace

void register_publish(CLI::App& parent, Context&, Runner& chosen) {
    auto o = std::make_shared<PublishOptions>();
    auto* cmd = add_leaf(parent, chosen, "publish",
                         "Publish data from stdin for other agents; prints its data token",
                         [o](Context& ctx) { return run_publish(ctx, *o); });
    cmd->add_option("--as", o->agent, "The publishing agent (name or id)")->required();
    cmd->add_option("--name", o->name, "A label for the data")->required();
    cmd->add_option("--ttl", o->ttl, "Lifetime in seconds (default 86400)")
        ->check(decimal())
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--once", o->once, "Let the data be retrieved only once");
    cmd->add_option("--to", o->recipients,
                    "Only this agent may retrieve it (repeatable; default: any agent)");
}

void register_retrieve(CLI::App& parent, Context&, Runner& chosen) {
    auto o = std::make_shared<RetrieveOptions>();
    auto* cmd = add_leaf(parent, chosen, "retrieve",
                         "Retrieve published data by its token (from stdin when not given)",
                         [o](Context& ctx) { return run_retrieve(ctx, *o); });
    // An empty TOKEN (an unset variable) is a mistake, not a request to read stdin.
    cmd->add_option("TOKEN", o->token,
                    "The data token; '-' or none reads it from stdin (argv shows in ps)")
        ->check(non_empty());
    cmd->add_option("--as", o->agent,
                    "Retrieve as this agent (name or id), which the recipients must include");
    cmd->add_flag("--raw", o->raw, "Print only the data, exactly as published");
}

}  // namespace agentgw::cli
