// agentgw credential set|list|rm: the secrets agentgwd injects into upstream requests.
// A secret never comes from argv (visible in ps): it is read from stdin or a no-echo prompt.
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/secret.hpp"
#include "cli/spec.hpp"

namespace agentgw::cli {

namespace {

// --user and --agent are exclusive: one of them, or neither for a service-wide credential.
struct CredentialOptions {
    std::string service;
    std::string user;
    std::string agent;
    std::string type = "api_key";
};

// The request fields that may hold a secret; they are wiped once the request is sent.
constexpr const char* k_secret_fields[] = {"secret", "username", "password", "access_token",
                                           "refresh_token"};

struct WipeSecretFields {
    nlohmann::json& body;
    ~WipeSecretFields() {
        for (const char* key : k_secret_fields) {
            if (const auto it = body.find(key); it != body.end() && it->is_string()) {
                wipe(it->get_ref<std::string&>());
            }
        }
    }
};

// Sets body[key] to input[pos, pos + n) without a temporary copy of the secret.
void put(nlohmann::json& body, const char* key, const std::string& input, size_t pos,
         size_t n = std::string::npos) {
    body[key] = std::string();
    body[key].get_ref<std::string&>().assign(input, pos, n);
}

Status add_oauth2(nlohmann::json& body, const std::string& input) {
    nlohmann::json doc = nlohmann::json::parse(input, nullptr, false);
    const WipeSecretFields wipe_doc{doc};
    // The parser's own message may quote the input, so it is not shown.
    if (!doc.is_object()) {
        return make_error(Code::invalid_argument,
                          "oauth2 input must be a JSON object with access_token and/or "
                          "refresh_token, and optionally expires_in and scope");
    }
    for (auto& [key, value] : doc.items()) {
        if (key == "access_token" || key == "refresh_token") {
            if (!value.is_string() || value.get_ref<const std::string&>().empty()) {
                return make_error(Code::invalid_argument,
                                  fmt::format("oauth2 input: {} must be a non-empty string", key));
            }
            body[key] = std::move(value);
        } else if (key == "scope") {
            if (!value.is_string()) {
                return make_error(Code::invalid_argument,
                                  "oauth2 input: scope must be a string (space-separated scopes)");
            }
            body["scopes"] = value;
        } else if (key == "expires_in") {
            if (!value.is_number_integer() || value.get<int64_t>() <= 0) {
                return make_error(Code::invalid_argument,
                                  "oauth2 input: expires_in must be a positive integer (seconds)");
            }
            body[key] = value;
        } else {
            return make_error(Code::invalid_argument,
                              fmt::format("oauth2 input: unknown field \"{}\"", key));
        }
    }
    if (!body.contains("access_token") && !body.contains("refresh_token")) {
        return make_error(Code::invalid_argument,
                          "oauth2 input: needs access_token or refresh_token");
    }
    return {};
}

// Adds the secret fields of `type` to `body`, from what the user typed.
Status add_secret(nlohmann::json& body, const std::string& type, const std::string& input) {
    if (type == "basic") {
        const size_t colon = input.find(':');
        if (colon == std::string::npos) {
            return make_error(Code::invalid_argument,
                              "basic credential: expected user:password (no ':' in the input)");
        }
        put(body, "username", input, 0, colon);
        put(body, "password", input, colon + 1);
        return {};
    }
    if (type == "oauth2") {
        return add_oauth2(body, input);
    }
    put(body, "secret", input, 0);  // api_key, client_secret
    return {};
}

std::string prompt_for(const CredentialOptions& o) {
    if (o.type == "basic") {
        return fmt::format("user:password for {}: ", o.service);
    }
    if (o.type == "oauth2") {
        return fmt::format("OAuth2 tokens for {} (JSON on one line): ", o.service);
    }
    return fmt::format("{} for {}: ", o.type == "client_secret" ? "Client secret" : "API key",
                       o.service);
}

// "service-wide", "user alice" or "agent ci-bot".
std::string owner(const nlohmann::json& c) {
    const std::string scope = field(c, "scope");
    return scope == "user" || scope == "agent" ? scope + " " + field(c, scope) : "service-wide";
}

Status run_set(Context& ctx, const CredentialOptions& o) {
    TRY_ASSIGN(SecretString input, read_secret(prompt_for(o)));
    // Built in place and passed as is: a json converted to the optional would be an unwiped copy.
    std::optional<nlohmann::json> request = nlohmann::json{{"type", o.type}};
    nlohmann::json& body = *request;
    const WipeSecretFields wipe_body{body};
    if (!o.user.empty()) {
        body["scope"] = "user";
        body["user"] = o.user;
    } else if (!o.agent.empty()) {
        body["scope"] = "agent";
        body["agent"] = o.agent;
    } else {
        body["scope"] = "service";
    }
    TRY(add_secret(body, o.type, input.value()));
    wipe(input.value());
    return call_and_print(ctx, "PUT", "/v1/credentials/" + segment(o.service), request,
                          [](auto& out, const auto& c) {
                              out << fmt::format("stored {} credential for {} ({})\n",
                                                 field(c, "type"), field(c, "service"), owner(c));
                          });
}

Status run_list(Context& ctx) {
    return call_and_print(
        ctx, "GET", "/v1/credentials", std::nullopt, [](auto& out, const auto& body) {
            print_list(out, {"SERVICE", "SCOPE", "OWNER", "TYPE", "STATUS", "EXPIRES", "UPDATED"},
                       body.at("credentials"),
                       [](const nlohmann::json& c) -> std::vector<std::string> {
                           const std::string scope = field(c, "scope");
                           const bool owned = scope == "user" || scope == "agent";
                           return {field(c, "service"),
                                   scope,
                                   owned ? field(c, scope) : "-",
                                   field(c, "type"),
                                   field(c, "status"),
                                   field(c, "expires_at"),
                                   field(c, "updated_at")};
                       });
        });
}

Status run_rm(Context& ctx, const CredentialOptions& o) {
    const std::string path = "/v1/credentials/" + segment(o.service) +
                             ControlClient::query({{"user", o.user}, {"agent", o.agent}});
    return call_and_print(ctx, "DELETE", path);
}

// SERVICE, --user and --agent, shared by set and rm.
CLI::App* add_scoped(CLI::App& credential, Runner& chosen, const std::string& name,
                     const std::string& description,
                     Status (*run)(Context&, const CredentialOptions&),
                     std::shared_ptr<CredentialOptions> o) {
    auto* cmd = add_leaf(credential, chosen, name, description,
                         [o, run](Context& ctx) { return run(ctx, *o); });
    cmd->add_option("SERVICE", o->service, "Service id")->required();
    auto* user = cmd->add_option("--user", o->user, "The credential of this user (name or id)")
                     ->check(non_empty());
    auto* agent = cmd->add_option("--agent", o->agent, "The credential of this agent (name or id)")
                      ->check(non_empty());
    user->excludes(agent);
    return cmd;
}

}  // namespace

void register_credential(CLI::App& parent, Context&, Runner& chosen) {
    auto* credential = add_group(parent, "credential", "Store, list and remove credentials");

    auto set = std::make_shared<CredentialOptions>();
    auto* set_cmd = add_scoped(*credential, chosen, "set",
                               "Store a credential read from stdin or a prompt", run_set, set);
    one_of(set_cmd->add_option("--type", set->type, "Credential type (default api_key)"),
           {"api_key", "basic", "oauth2", "client_secret"});

    add_leaf(*credential, chosen, "list", "List credentials (never their secrets)", run_list);
    add_scoped(*credential, chosen, "rm", "Remove a credential", run_rm,
               std::make_shared<CredentialOptions>());
}

}  // namespace agentgw::cli
