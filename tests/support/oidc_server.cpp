#include "tests/support/oidc_server.hpp"

#include <csignal>
#include <filesystem>

#include <catch2/catch.hpp>

#include "tests/support/http_client.hpp"

namespace agentgw::test {

namespace fs = std::filesystem;

OidcServer::OidcServer(int access_token_ttl_secs) {
    const fs::path script = AGENTGW_OIDC_SERVER;
    const fs::path modules = script.parent_path() / "node_modules";
    if (!fs::exists(modules / "oidc-provider" / "package.json")) {
        FAIL("oidc-provider is not installed in "
             << modules.string() << ": run `npm ci --no-audit --no-fund` in "
             << script.parent_path().string() << " (scripts/test does this)");
    }
    // Child execs without a PATH search; env finds node. NODE_OPTIONS could change the runtime.
    child_ = std::make_unique<Child>(
        std::vector<std::string>{"/usr/bin/env", "node", script.string(), "--access-token-ttl",
                                 std::to_string(access_token_ttl_secs)},
        std::map<std::string, std::optional<std::string>>{{"NODE_OPTIONS", std::nullopt}});
    const auto line = child_->read_stdout_line(30s);
    if (!line || !line->starts_with("listening ")) {
        child_->wait(1s);
        FAIL("the OIDC test server did not start: " << child_->stderr_text());
    }
    issuer_ = line->substr(line->rfind(' ') + 1);
}

OidcServer::~OidcServer() {
    child_->signal(SIGTERM);
    child_->wait(5s);
}

nlohmann::json OidcServer::post(const std::string& path) const {
    const HttpReply r = http_request("POST", issuer_ + path);
    INFO("POST " << path << " -> " << r.status << " " << r.body << " " << r.error);
    REQUIRE(r.status != 0);
    nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
    REQUIRE(body.is_object());
    body["http_status"] = r.status;
    return body;
}

bool OidcServer::approve(const std::string& user_code) {
    return post("/__test/approve?user_code=" + user_code)["http_status"] == 200;
}

bool OidcServer::deny(const std::string& user_code) {
    return post("/__test/deny?user_code=" + user_code)["http_status"] == 200;
}

nlohmann::json OidcServer::tokens(const std::string& scope) {
    std::string encoded;
    for (const char c : scope) {
        encoded += c == ' ' ? std::string("%20") : std::string(1, c);
    }
    nlohmann::json set = post("/__test/tokens?scope=" + encoded);
    INFO("token set: " << set.dump());
    REQUIRE(set["http_status"] == 200);
    REQUIRE(set.contains("access_token"));
    set.erase("http_status");
    return set;
}

int OidcServer::revoke_access_tokens() {
    return post("/__test/revoke-access-tokens").value("revoked", 0);
}

nlohmann::json OidcServer::stats() const {
    const HttpReply r = http_request("GET", issuer_ + "/__test/stats");
    REQUIRE(r.status == 200);
    return nlohmann::json::parse(r.body);
}

int OidcServer::token_ok(const std::string& grant_type) const {
    const nlohmann::json s = stats();
    const auto& by_grant = s.at("token_requests");
    return by_grant.contains(grant_type) ? by_grant.at(grant_type).value("ok", 0) : 0;
}

int OidcServer::token_errors(const std::string& grant_type, const std::string& error) const {
    const nlohmann::json s = stats();
    const auto& by_grant = s.at("token_requests");
    if (!by_grant.contains(grant_type)) {
        return 0;
    }
    return by_grant.at(grant_type).at("errors").value(error, 0);
}

}  // namespace agentgw::test
