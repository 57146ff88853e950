// oauth::seconds_of: how a token server's "expires_in" and "interval" are read (RFC 6749 §5.1,
// RFC 8628 §3.2): numbers or numeric strings, bounded so that no expiry sum can overflow.
// oauth::error_text: what a refusal says, without the secrets the request carried.
#include <cstdint>
#include <limits>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "daemon/oauth/token_endpoint.hpp"

using agentgw::oauth::EndpointReply;
using agentgw::oauth::error_text;
using agentgw::oauth::Form;
using agentgw::oauth::seconds_of;
using nlohmann::json;

TEST_CASE("seconds in a token server's answer are read as numbers or numeric strings",
          "[oauth][unit]") {
    const auto read = [](const json& value) {
        return seconds_of(json{{"expires_in", value}}, "expires_in", 7, 1000);
    };
    CHECK(read(3600) == 1000);
    CHECK(read(600) == 600);
    CHECK(read("600") == 600);
    CHECK(read(1) == 1);
    CHECK(read(600.0) == 600);  // a number with a fraction: rounded down
    CHECK(read(6.5) == 6);
    CHECK(read(1.0) == 1);

    SECTION("anything else gives the fallback") {
        CHECK(seconds_of(json::object(), "expires_in", 7, 1000) == 7);
        CHECK(read(0) == 7);
        CHECK(read(-5) == 7);
        CHECK(read("0") == 7);
        CHECK(read("-5") == 7);
        CHECK(read("") == 7);
        CHECK(read("60s") == 7);
        CHECK(read(" 60") == 7);
        CHECK(read("6.5") == 7);
        CHECK(read(0.5) == 7);
        CHECK(read(-6.5) == 7);
        CHECK(read(true) == 7);
        CHECK(read(nullptr) == 7);
        CHECK(read(json::array({60})) == 7);
    }
    SECTION("values too large for any sum are cut to the bound") {
        CHECK(read(std::numeric_limits<int64_t>::max()) == 1000);
        CHECK(read(std::numeric_limits<uint64_t>::max()) == 1000);
        CHECK(read(json::parse("123456789012345678901234567890")) == 1000);  // a double
        CHECK(read(1e300) == 1000);
        CHECK(read("9223372036854775807") == 1000);
        CHECK(read("123456789012345678901234567890") == 1000);
    }
}

TEST_CASE("an error text never quotes a secret the request carried", "[oauth][unit][secret]") {
    Form form;
    form.add("grant_type", "refresh_token");
    form.add("client_id", "the-client");
    form.add("refresh_token", "act");  // short, and inside "[redacted]" itself
    form.add("client_secret", "a b/c");
    EndpointReply reply;
    reply.body = {{"error", "invalid_grant"},
                  {"error_description", "act then a%20b%2Fc and a b/c for the-client"}};
    // As sent (form-encoded) or decoded; one pass, so no mark is redacted again; the client
    // id and the grant type are not secrets.
    CHECK(error_text(reply, form) ==
          "invalid_grant: [redacted] then [redacted] and [redacted] for the-client");
    reply.body = {{"error", "act"}};
    CHECK(error_text(reply, form) == "[redacted]");
}

TEST_CASE("an error text is cut to a bounded length", "[oauth][unit]") {
    Form form;
    form.add("grant_type", "refresh_token");
    EndpointReply reply;
    reply.body = {{"error", std::string(100000, 'e')},
                  {"error_description", std::string(100000, 'd')}};
    const std::string text = error_text(reply, form);
    CHECK(text == std::string(64, 'e') + ": " + std::string(200, 'd'));
}
