#include "tests/support/token_stub.hpp"

#include <csignal>

#include <catch2/catch.hpp>

#include "tests/support/http_client.hpp"

namespace agentgw::test {

TokenStub::TokenStub(const TokenStubOptions& options) {
    // Child execs without a PATH search; env finds python3.
    child_ = std::make_unique<Child>(std::vector<std::string>{
        "/usr/bin/env", "python3", AGENTGW_TOKEN_STUB, "--device-script", options.device_script,
        "--refresh-script", options.refresh_script, "--interval", std::to_string(options.interval),
        "--expires-in", std::to_string(options.expires_in), "--token-expires-in",
        std::to_string(options.token_expires_in)});
    const auto line = child_->read_stdout_line(15s);
    if (!line || !line->starts_with("listening ")) {
        child_->wait(1s);
        FAIL("the token stub did not start: " << child_->stderr_text());
    }
    base_url_ = "http://127.0.0.1:" + line->substr(10);
}

TokenStub::~TokenStub() {
    child_->signal(SIGTERM);
    child_->wait(5s);
}

void TokenStub::script(const nlohmann::json& scripts) {
    const HttpReply r = http_request("POST", base_url_ + "/__script", scripts.dump(),
                                     {"Content-Type: application/json"});
    INFO("POST /__script -> " << r.status << " " << r.body);
    REQUIRE(r.status == 200);
}

void TokenStub::revoke_access_tokens() {
    REQUIRE(http_request("POST", base_url_ + "/__revoke").status == 200);
}

std::vector<nlohmann::json> TokenStub::requests(const std::string& grant_type) const {
    const HttpReply r = http_request("GET", base_url_ + "/__requests");
    REQUIRE(r.status == 200);
    std::vector<nlohmann::json> out;
    const nlohmann::json answer = nlohmann::json::parse(r.body);
    for (const auto& entry : answer.at("requests")) {
        if (grant_type.empty() || entry.value("grant_type", "") == grant_type) {
            out.push_back(entry);
        }
    }
    return out;
}

}  // namespace agentgw::test
