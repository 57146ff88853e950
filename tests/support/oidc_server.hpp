// OidcServer: a real OAuth 2.0 authorization server for the OAuth2 tests — oidc-provider
// (tests/node/oidc_server.mjs, installed in tests/node by `npm ci`) started as a child process on
// 127.0.0.1 with a kernel-chosen port. It runs the device flow and client_credentials, rotates
// refresh tokens (reusing one revokes the grant), and has test-only endpoints to approve or deny
// a device code, mint a token set, revoke access tokens and count token requests. The destructor
// stops it. Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"

namespace agentgw::test {

class OidcServer {
  public:
    // The clients the server knows (see oidc_server.mjs).
    static constexpr const char* k_device_client = "agentgw-device";
    static constexpr const char* k_service_client = "agentgw-service";
    static constexpr const char* k_service_secret = "agentgw-test-client-secret";
    static constexpr const char* k_account = "test-user";  // whoever approves a device code

    // Fails the test (FAIL) when node or the oidc-provider package is missing or it does not
    // start.
    explicit OidcServer(int access_token_ttl_secs = 3600);
    ~OidcServer();
    OidcServer(const OidcServer&) = delete;
    OidcServer& operator=(const OidcServer&) = delete;

    // "http://127.0.0.1:PORT"; the endpoints are issuer() + "/token", "/device/auth", "/me".
    const std::string& issuer() const { return issuer_; }

    // Approves (or denies) the pending device code with this user code, as its user would on
    // the verification page. False when no valid device code has that user code.
    bool approve(const std::string& user_code);
    bool deny(const std::string& user_code);

    // A fresh token set for the device client: {"access_token", "refresh_token",
    // "expires_in", ...}, as the token endpoint answered it (REQUIREs success).
    nlohmann::json tokens(const std::string& scope = "openid offline_access");

    // Destroys every access token issued so far; their next use gets 401. Returns how many.
    int revoke_access_tokens();

    // The counters of GET /__test/stats (see oidc_server.mjs).
    nlohmann::json stats() const;
    // Token-endpoint requests with this grant_type that succeeded / failed with `error`.
    int token_ok(const std::string& grant_type) const;
    int token_errors(const std::string& grant_type, const std::string& error) const;

  private:
    nlohmann::json post(const std::string& path) const;

    std::unique_ptr<Child> child_;
    std::string issuer_;
};

inline constexpr const char* k_device_code_grant = "urn:ietf:params:oauth:grant-type:device_code";

}  // namespace agentgw::test
