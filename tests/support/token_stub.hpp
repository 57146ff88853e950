// TokenStub: the project's scripted OAuth 2.0 token endpoint (tests/support/token_stub.py)
// started as a child process on 127.0.0.1 with a kernel-chosen port, for the answers a real
// server will not give on cue (slow_down, expired_token, a 500). It records every device and
// token request with its arrival time. The destructor stops it. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"

namespace agentgw::test {

struct TokenStubOptions {
    // Comma-separated answers, one per request, the last repeating (see token_stub.py):
    // pending, slow_down, denied, expired, invalid_grant, http500, unavailable, busy, tokens,
    // slow_tokens, slow_denied, access_only, split_tokens, slow_pending, long_invalid_grant.
    std::string device_script = "pending";
    std::string refresh_script = "tokens";
    int64_t interval = 1;             // of the device authorization answer; 0 leaves it out
    int64_t expires_in = 600;         // of the device authorization answer
    int64_t token_expires_in = 3600;  // of the tokens answers
};

class TokenStub {
  public:
    explicit TokenStub(const TokenStubOptions& options = {});
    ~TokenStub();
    TokenStub(const TokenStub&) = delete;
    TokenStub& operator=(const TokenStub&) = delete;

    // "http://127.0.0.1:PORT"; the endpoints are base_url() + "/device", "/token", "/resource".
    const std::string& base_url() const { return base_url_; }

    // Replaces the scripts: {"device": [...]?, "refresh": [...]?}.
    void script(const nlohmann::json& scripts);

    // Makes /resource refuse every access token issued so far (as if they were revoked).
    void revoke_access_tokens();

    // The requests to /token with this grant_type ("" for all of /device and /token), oldest
    // first: {"path", "grant_type", "time" (seconds, monotonic), "form"}.
    std::vector<nlohmann::json> requests(const std::string& grant_type = "") const;

  private:
    std::unique_ptr<Child> child_;
    std::string base_url_;
};

}  // namespace agentgw::test
