// wipe_json: every string of a tree zeroed, however deep the tree is nested.
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "daemon/crypto/secure_buffer.hpp"

using namespace agentgw;
using nlohmann::json;

TEST_CASE("wipe_json zeroes every string, also in a tree nested 200,000 deep", "[crypto]") {
    json flat = json::parse(R"({"a": "secret-one", "b": ["secret-two", {"c": "secret-three"}]})");
    wipe_json(flat);
    CHECK(flat["a"].get<std::string>() == std::string(10, '\0'));
    CHECK(flat["b"][0].get<std::string>() == std::string(10, '\0'));
    CHECK(flat["b"][1]["c"].get<std::string>() == std::string(12, '\0'));

    // What a hostile token endpoint can send within its 256 KiB: far deeper than the call
    // stack allows a recursive walk to go.
    constexpr size_t k_depth = 200'000;
    const std::string text =
        std::string(k_depth, '[') + "\"deep-secret\"" + std::string(k_depth, ']');
    json deep = json::parse(text);
    wipe_json(deep);
    const json* node = &deep;
    for (size_t i = 0; i < k_depth; ++i) {
        node = &(*node)[0];
    }
    CHECK(node->get<std::string>() == std::string(11, '\0'));
}
