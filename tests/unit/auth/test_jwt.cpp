#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/auth/jwt.hpp"
#include "daemon/crypto/encoding.hpp"
#include "daemon/util/strict_json.hpp"

using namespace agentgw;
using Catch::Contains;

namespace {

constexpr int64_t k_now = 1'700'000'000;
constexpr std::string_view k_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const std::string k_header = R"({"alg":"HS256","typ":"JWT","kid":"k1"})";

std::span<const uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string b64(std::string_view s) {
    return base64url_encode(s);
}

std::string unb64(std::string_view s) {
    auto decoded = base64url_decode(s);
    REQUIRE(decoded);
    return *decoded;
}

std::string hex(std::span<const uint8_t> b) {
    std::string out(b.size() * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), b.data(), b.size());
    out.pop_back();
    return out;
}

// A token whose segments are the given (already encoded) strings.
std::string join(std::string_view h, std::string_view p, std::string_view s) {
    return std::string(h) + "." + std::string(p) + "." + std::string(s);
}

std::string flip_bit(std::string s, size_t bit) {
    s[bit / 8] = static_cast<char>(s[bit / 8] ^ (1 << (bit % 8)));
    return s;
}

SessionKeyring make_keyring(std::string kid = "k1") {
    auto keyring = SessionKeyring::create(std::move(kid), SecureBuffer::random(32));
    REQUIRE(keyring);
    return std::move(keyring).value();
}

nlohmann::ordered_json good_claims() {
    return {{"iss", "agentgw"},    {"aud", "agentgw-agent-api"},
            {"sub", "agent-1"},    {"gen", 3},
            {"iat", k_now},        {"nbf", k_now},
            {"exp", k_now + 3600}, {"jti", "j-1"}};
}

// Signs arbitrary header and payload text with the keyring's real key, as an attacker who
// somehow controls the JSON (but not the key) cannot, so that only the check under test fails.
std::string forge(const SessionKeyring& keyring, std::string_view header,
                  std::string_view payload) {
    return hs256_sign(header, payload, keyring.current_key().span());
}
std::string forge(const SessionKeyring& keyring, const nlohmann::ordered_json& claims) {
    return forge(keyring, k_header, claims.dump());
}

// The error of a call that must fail (a REQUIRE, so a success fails the test, not an assert).
template <typename T>
Error failure(const Result<T>& result) {
    REQUIRE_FALSE(result);
    return result.error();
}

// verify_session's message for a token it must reject.
std::string rejection(std::string_view token, const SessionKeyring& keyring, int64_t now = k_now) {
    auto verified = verify_session(token, keyring, now);
    REQUIRE_FALSE(verified);
    CHECK(verified.error().code == Code::unauthenticated);
    return verified.error().message;
}

// RFC 7515 Appendix A.1 (also RFC 7519 §3.1).
const std::string k_a1_key =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const std::string k_a1_header = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
const std::string k_a1_payload =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl"
    "fQ";
const std::string k_a1_signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

}  // namespace

// ---- JWS layer ----

TEST_CASE("RFC 7515 A.1: the HS256 example verifies", "[auth][jws]") {
    const std::string key = unb64(k_a1_key);
    REQUIRE(key.size() == 64);
    const std::string token = join(k_a1_header, k_a1_payload, k_a1_signature);

    auto parts = jws_decode(token);
    REQUIRE(parts);
    CHECK(parts->header == "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}");
    CHECK(parts->payload ==
          "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}");
    CHECK(parts->signing_input == k_a1_header + "." + k_a1_payload);
    CHECK(parts->signature.size() == 32);
    CHECK(hs256_verify(*parts, bytes(key)));

    SECTION("every flipped signature bit fails") {
        for (size_t bit = 0; bit < parts->signature.size() * 8; ++bit) {
            JwsParts tampered = *parts;
            tampered.signature = flip_bit(tampered.signature, bit);
            CHECK_FALSE(hs256_verify(tampered, bytes(key)));
        }
    }
    SECTION("every flipped payload or header bit fails") {
        for (size_t bit = 0; bit < parts->payload.size() * 8; ++bit) {
            const std::string t =
                join(k_a1_header, b64(flip_bit(parts->payload, bit)), k_a1_signature);
            auto tampered = jws_decode(t);
            REQUIRE(tampered);
            CHECK_FALSE(hs256_verify(*tampered, bytes(key)));
        }
        for (size_t bit = 0; bit < parts->header.size() * 8; ++bit) {
            const std::string t =
                join(b64(flip_bit(parts->header, bit)), k_a1_payload, k_a1_signature);
            auto tampered = jws_decode(t);
            REQUIRE(tampered);
            CHECK_FALSE(hs256_verify(*tampered, bytes(key)));
        }
    }
    SECTION("another key, a truncated or an empty signature fail") {
        CHECK_FALSE(hs256_verify(*parts, bytes(flip_bit(key, 0))));
        CHECK_FALSE(hs256_verify(*parts, bytes(key.substr(0, 32))));
        JwsParts truncated = *parts;
        truncated.signature.pop_back();
        CHECK_FALSE(hs256_verify(truncated, bytes(key)));
        truncated.signature.clear();
        CHECK_FALSE(hs256_verify(truncated, bytes(key)));
        JwsParts extended = *parts;
        extended.signature.push_back('\0');
        CHECK_FALSE(hs256_verify(extended, bytes(key)));
    }
    SECTION("signing the same input reproduces the signature") {
        CHECK(hs256_sign(parts->header, parts->payload, bytes(key)) == token);
    }
}

TEST_CASE("RFC 7520 4.4: HS256 with a kid signs and verifies as published", "[auth][jws]") {
    const std::string key = unb64("hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg");
    REQUIRE(key.size() == 32);
    const std::string header = R"({"alg":"HS256","kid":"018c0ae5-4d9b-471b-bfd6-eef314bc7037"})";
    // The two apostrophes in "It’s" and "there’s" are U+2019 (E2 80 99).
    const std::string payload =
        "It\xE2\x80\x99"
        "s a dangerous business, Frodo, going out your door. You step onto the road, and if you "
        "don't keep your feet, there\xE2\x80\x99"
        "s no knowing where you might be swept off to.";
    const std::string encoded_header =
        "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9";
    const std::string encoded_payload =
        "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb2"
        "50byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcg"
        "d2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4";
    const std::string signature = "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";
    CHECK(b64(header) == encoded_header);
    CHECK(b64(payload) == encoded_payload);

    const std::string token = join(encoded_header, encoded_payload, signature);
    CHECK(hs256_sign(header, payload, bytes(key)) == token);
    auto parts = jws_decode(token);
    REQUIRE(parts);
    CHECK(parts->payload == payload);
    CHECK(hs256_verify(*parts, bytes(key)));
    CHECK_FALSE(hs256_verify(*parts, bytes(flip_bit(key, 255))));
}

TEST_CASE("HMAC-SHA256 takes keys of any length (RFC 4231)", "[auth][jws]") {
    // Test case 2: a 4-byte key.
    CHECK(hex(hmac_sha256(bytes("Jefe"), "what do ya want for nothing?")) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    // Test case 6: a 131-byte key, longer than the block, is hashed first.
    CHECK(hex(hmac_sha256(bytes(std::string(131, '\xaa')),
                          "Test Using Larger Than Block-Size Key - Hash Key First")) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    CHECK(hex(hmac_sha256({}, "")) ==
          "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST_CASE("jws_decode is strict about shape and encoding", "[auth][jws]") {
    const std::string token = join(k_a1_header, k_a1_payload, k_a1_signature);
    REQUIRE(jws_decode(token));

    SECTION("exactly three segments") {
        for (const std::string& bad :
             {std::string(), std::string("."), std::string("abc"), k_a1_header + "." + k_a1_payload,
              token + ".", token + "." + k_a1_signature, "." + token, std::string("a.b.c.d")}) {
            auto decoded = jws_decode(bad);
            REQUIRE_FALSE(decoded);
            CHECK(decoded.error().code == Code::unauthenticated);
        }
    }
    SECTION("no padding, in any segment") {
        CHECK_FALSE(jws_decode(token + "="));
        CHECK_FALSE(jws_decode(join(k_a1_header + "=", k_a1_payload, k_a1_signature)));
        CHECK_FALSE(jws_decode(join(k_a1_header, k_a1_payload + "==", k_a1_signature)));
        // The padded forms of a correctly padded base64 string are refused too.
        CHECK_FALSE(jws_decode(join("e30=", "e30=", k_a1_signature)));
    }
    SECTION("no character outside the base64url alphabet") {
        for (const char c : {'+', '/', ' ', '\n', '\r', '%', '\0', '*', '\x80'}) {
            for (const size_t at :
                 {size_t{0}, size_t{10}, k_a1_header.size() + 5, token.size() - 1}) {
                std::string bad = token;
                bad[at] = c;
                INFO("char " << static_cast<int>(c) << " at " << at);
                CHECK_FALSE(jws_decode(bad));
            }
            INFO("char " << static_cast<int>(c) << " appended");
            CHECK_FALSE(jws_decode(token + std::string(1, c)));
        }
    }
    SECTION("no byte above 0x7f, which libsodium 1.0.18 reads as '_'") {
        // The signature holds a '_' (…1r_wW1…); spelled with a high byte instead, libsodium
        // alone decodes it to the same signature, so the token would still verify.
        const size_t underscore = token.rfind('_');
        REQUIRE(underscore > token.rfind('.'));
        for (const int high : {0x80, 0xc3, 0xff}) {
            std::string bad = token;
            bad[underscore] = static_cast<char>(high);
            INFO(high);
            CHECK_FALSE(jws_decode(bad));
        }
    }
    SECTION("leftover bits must be zero, so every token has one encoding") {
        // The signature's last character carries 2 bits of padding: 'k' = 100100, 'l' = 100101.
        REQUIRE(k_a1_signature.back() == 'k');
        std::string bad = token;
        bad.back() = 'l';
        CHECK_FALSE(jws_decode(bad));
        // A segment of length 1 (mod 4) cannot be valid base64 (43 + 2 = 45 characters).
        CHECK_FALSE(jws_decode(join(k_a1_header, k_a1_payload, k_a1_signature + "AA")));
    }
    SECTION("at most 8 KiB") {
        // Token lengths depend on how the payload encodes, so search for both sides of the limit.
        bool at_limit = false;
        bool over_limit = false;
        for (size_t spaces = 0; spaces < 4; ++spaces) {
            const std::string header = "{" + std::string(spaces, ' ') + "}";
            for (size_t n = 6000; n < 6200; ++n) {
                const std::string t = hs256_sign(header, std::string(n, 'x'), bytes("key"));
                if (t.size() == k_jws_max_token_size) {
                    at_limit = true;
                    CHECK(jws_decode(t));
                } else if (t.size() == k_jws_max_token_size + 1) {
                    over_limit = true;
                    auto decoded = jws_decode(t);
                    REQUIRE_FALSE(decoded);
                    CHECK_THAT(decoded.error().message, Contains("too long"));
                }
            }
        }
        CHECK(at_limit);
        CHECK(over_limit);
    }
}

// ---- Strict JSON ----

TEST_CASE("strict JSON parsing rejects duplicate keys at any depth", "[auth][json]") {
    auto ok = parse_json_object_strict(R"({"a":{"a":1,"b":[{"a":1},{"a":2}]},"b":[1,"x",null]})");
    REQUIRE(ok);
    CHECK((*ok)["a"]["a"] == 1);
    CHECK((*ok)["a"]["b"][1]["a"] == 2);
    CHECK((*ok)["b"] == nlohmann::json::parse(R"([1,"x",null])"));

    for (const char* dup : {
             R"({"alg":"none","alg":"HS256"})", R"({"a":1,"b":2,"a":1})", R"({"x":{"a":1,"a":2}})",
             R"({"x":[{"a":true},{"b":1,"b":1}]})", R"({"x":[[[{"k":{"y":0,"y":0}}]]]})",
             R"({"a":1,"\u0061":2})",  // the same key after unescaping
         }) {
        INFO(dup);
        // nlohmann alone would accept these, keeping the last value.
        CHECK_FALSE(nlohmann::json::parse(dup, nullptr, false).is_discarded());
        auto parsed = parse_json_object_strict(dup);
        REQUIRE_FALSE(parsed);
        CHECK_THAT(parsed.error().message, Contains("duplicate"));
    }
}

TEST_CASE("strict JSON parsing accepts only a well-formed object", "[auth][json]") {
    for (const char* bad :
         {"", " ", "[]", "1", "\"s\"", "null", "true", "{", "{} {}", "{} x", "{\"a\":}", "{'a':1}",
          "{\"a\":1,}", "{\"a\":\"\xff\"}", "{\"a\":1e999}"}) {
        INFO(bad);
        CHECK_FALSE(parse_json_object_strict(bad));
    }
    CHECK(parse_json_object_strict(" {} \n"));
    // Deep nesting is handled without recursion limits turning into crashes.
    const std::string deep = "{\"a\":" + std::string(3000, '[') + std::string(3000, ']') + "}";
    CHECK(parse_json_object_strict(deep));
}

// ---- Sessions ----

TEST_CASE("a session round-trips through issue and verify", "[auth][session]") {
    const auto keyring = make_keyring();
    const SessionClaims claims{"agent-42", 7, k_now, k_now, k_now + 3600, "jti-1"};
    const std::string token = issue_session(claims, keyring);

    auto parts = jws_decode(token);
    REQUIRE(parts);
    CHECK(parts->header == k_header);
    auto payload = parse_json_object_strict(parts->payload);
    REQUIRE(payload);
    CHECK((*payload)["iss"] == "agentgw");
    CHECK((*payload)["aud"] == "agentgw-agent-api");

    auto verified = verify_session(token, keyring, k_now);
    REQUIRE(verified);
    CHECK(verified->sub == "agent-42");
    CHECK(verified->gen == 7);
    CHECK(verified->iat == k_now);
    CHECK(verified->nbf == k_now);
    CHECK(verified->exp == k_now + 3600);
    CHECK(verified->jti == "jti-1");

    SECTION("without a jti") {
        const SessionClaims bare{"agent-42", 0, k_now, k_now, k_now + 60, ""};
        const std::string t = issue_session(bare, keyring);
        CHECK(unb64(t.substr(t.find('.') + 1, t.rfind('.') - t.find('.') - 1)).find("jti") ==
              std::string::npos);
        auto v = verify_session(t, keyring, k_now);
        REQUIRE(v);
        CHECK(v->jti.empty());
    }
    SECTION("another keyring with the same kid does not accept it") {
        const auto other = make_keyring();
        CHECK_THAT(rejection(token, other), Contains("signature"));
    }
}

TEST_CASE("the session keyring validates keys and supports rotation", "[auth][session]") {
    CHECK(failure(SessionKeyring::create("k1", SecureBuffer::random(31))).code ==
          Code::invalid_argument);
    CHECK(failure(SessionKeyring::create("k1", SecureBuffer::random(64))).code ==
          Code::invalid_argument);
    for (const char* kid : {"", "a b", "k\"1", "k/1", "\xc3\xa9"}) {
        CHECK_FALSE(SessionKeyring::create(kid, SecureBuffer::random(32)));
    }
    CHECK_FALSE(SessionKeyring::create(std::string(65, 'k'), SecureBuffer::random(32)));
    CHECK(SessionKeyring::create(std::string(64, 'k'), SecureBuffer::random(32)));

    auto keyring = make_keyring("old");
    const SessionClaims claims{"agent-1", 1, k_now, k_now, k_now + 3600, ""};
    const std::string old_token = issue_session(claims, keyring);

    CHECK(failure(keyring.add("old", SecureBuffer::random(32))).code == Code::conflict);
    CHECK(failure(keyring.set_current("new")).code == Code::not_found);
    REQUIRE(keyring.add("new", SecureBuffer::random(32)));
    CHECK(keyring.current_kid() == "old");
    REQUIRE(keyring.set_current("new"));
    CHECK(keyring.current_kid() == "new");

    const std::string new_token = issue_session(claims, keyring);
    CHECK(jws_decode(new_token)->header == R"({"alg":"HS256","typ":"JWT","kid":"new"})");
    CHECK(verify_session(new_token, keyring, k_now));
    CHECK(verify_session(old_token, keyring, k_now));  // still in the keyring

    CHECK(failure(keyring.remove("new")).code == Code::conflict);
    REQUIRE(keyring.remove("old"));
    CHECK(failure(keyring.remove("old")).code == Code::not_found);
    CHECK_THAT(rejection(old_token, keyring), Contains("kid"));
    CHECK(verify_session(new_token, keyring, k_now));
}

TEST_CASE("session headers other than HS256/JWT/known kid are rejected", "[auth][session]") {
    const auto keyring = make_keyring();
    const std::string payload = good_claims().dump();
    REQUIRE(verify_session(forge(keyring, k_header, payload), keyring, k_now));

    SECTION("alg none, with an empty or a valid signature") {
        const std::string none = R"({"alg":"none","typ":"JWT","kid":"k1"})";
        CHECK_THAT(rejection(join(b64(none), b64(payload), ""), keyring), Contains("alg"));
        CHECK_THAT(rejection(forge(keyring, none, payload), keyring), Contains("alg"));
    }
    SECTION("any alg but HS256, even when the MAC is a valid HS256 one") {
        for (const char* alg : {R"("HS512")", R"("HS384")", R"("RS256")", R"("hs256")",
                                R"("HS256 ")", R"("")", R"(["HS256"])", "null", "256"}) {
            INFO(alg);
            const std::string h = std::string(R"({"alg":)") + alg + R"(,"typ":"JWT","kid":"k1"})";
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("alg"));
        }
        CHECK_THAT(rejection(forge(keyring, R"({"typ":"JWT","kid":"k1"})", payload), keyring),
                   Contains("alg"));
    }
    SECTION("typ missing or other") {
        for (const char* h : {
                 R"({"alg":"HS256","kid":"k1"})",
                 R"({"alg":"HS256","typ":"jwt","kid":"k1"})",
                 R"({"alg":"HS256","typ":"at+jwt","kid":"k1"})",
                 R"({"alg":"HS256","typ":null,"kid":"k1"})",
             }) {
            INFO(h);
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("typ"));
        }
    }
    SECTION("kid missing, not a string, or unknown") {
        for (const char* h : {
                 R"({"alg":"HS256","typ":"JWT"})",
                 R"({"alg":"HS256","typ":"JWT","kid":1})",
                 R"({"alg":"HS256","typ":"JWT","kid":"k2"})",
                 R"({"alg":"HS256","typ":"JWT","kid":""})",
                 R"({"alg":"HS256","typ":"JWT","kid":"../k1"})",
             }) {
            INFO(h);
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("kid"));
        }
    }
    SECTION("crit, jku, jwk, x5u and x5c") {
        for (const char* extra :
             {R"("crit":["exp"])", R"("crit":[])", R"("jku":"https://x/")",
              R"("jwk":{"kty":"oct"})", R"("x5u":"https://x/")", R"("x5c":[])"}) {
            INFO(extra);
            const std::string h =
                std::string(R"({"alg":"HS256","typ":"JWT","kid":"k1",)") + extra + "}";
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("unsupported"));
        }
    }
    SECTION("duplicate header keys, re-signed with the real key") {
        for (const char* h : {
                 R"({"alg":"none","alg":"HS256","typ":"JWT","kid":"k1"})",
                 R"({"alg":"HS256","alg":"HS256","typ":"JWT","kid":"k1"})",
                 R"({"alg":"HS256","typ":"JWT","kid":"zz","kid":"k1"})",
             }) {
            INFO(h);
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("header"));
        }
    }
    SECTION("a header that is not a JSON object") {
        for (const char* h : {"", "[]", "\"HS256\"", "{\"alg\":\"HS256\""}) {
            CHECK_THAT(rejection(forge(keyring, h, payload), keyring), Contains("header"));
        }
    }
}

TEST_CASE("any change to a session token is rejected", "[auth][session]") {
    const auto keyring = make_keyring();
    const std::string token =
        issue_session(SessionClaims{"agent-1", 1, k_now, k_now, k_now + 3600, "j"}, keyring);
    REQUIRE(verify_session(token, keyring, k_now));

    SECTION("every character replaced by another alphabet character") {
        for (size_t i = 0; i < token.size(); ++i) {
            if (token[i] == '.') {
                continue;
            }
            std::string bad = token;
            bad[i] = k_alphabet[(k_alphabet.find(bad[i]) + 1) % k_alphabet.size()];
            INFO(i);
            CHECK_FALSE(verify_session(bad, keyring, k_now));
            bad[i] = '\xff';
            CHECK_FALSE(verify_session(bad, keyring, k_now));
        }
    }
    SECTION("every bit of the decoded payload and signature") {
        auto parts = jws_decode(token);
        REQUIRE(parts);
        const std::string h = token.substr(0, token.find('.'));
        const std::string p = b64(parts->payload);
        const std::string s = b64(parts->signature);
        for (size_t bit = 0; bit < parts->payload.size() * 8; ++bit) {
            CHECK_THAT(rejection(join(h, b64(flip_bit(parts->payload, bit)), s), keyring),
                       Contains("signature"));
        }
        for (size_t bit = 0; bit < parts->signature.size() * 8; ++bit) {
            CHECK_THAT(rejection(join(h, p, b64(flip_bit(parts->signature, bit))), keyring),
                       Contains("signature"));
        }
    }
    SECTION("padding, foreign characters, segment count, length") {
        CHECK_THAT(rejection(token + "=", keyring), Contains("base64url"));
        // A valid signature followed by more bytes is not the signature.
        CHECK_THAT(rejection(token + "AAAA", keyring), Contains("signature"));
        std::string padded_payload = token;
        padded_payload.insert(token.rfind('.'), "=");
        CHECK_FALSE(verify_session(padded_payload, keyring, k_now));
        for (const char c : {'+', '/', ' ', '\n', '\0'}) {
            std::string bad = token;
            bad[5] = c;
            CHECK_THAT(rejection(bad, keyring), Contains("base64url"));
        }
        CHECK_THAT(rejection(token.substr(0, token.rfind('.')), keyring), Contains("segments"));
        CHECK_THAT(rejection(token + ".e30", keyring), Contains("segments"));
        CHECK_THAT(rejection("", keyring), Contains("segments"));

        auto big = good_claims();
        big["jti"] = std::string(5000, 'j');
        CHECK(verify_session(forge(keyring, big), keyring, k_now));
        big["jti"] = std::string(6200, 'j');
        const std::string too_big = forge(keyring, big);
        REQUIRE(too_big.size() > k_jws_max_token_size);
        CHECK_THAT(rejection(too_big, keyring), Contains("too long"));
    }
}

TEST_CASE("the MAC is checked before the payload is read", "[auth][session]") {
    const auto keyring = make_keyring();
    const auto other = make_keyring();
    // An expired or malformed payload under a wrong key is a signature failure, not an expiry
    // or a parse error, so nothing about the claims is trusted (or revealed) unauthenticated.
    auto expired = good_claims();
    expired["exp"] = k_now - 3600;
    const std::string foreign = forge(other, expired);
    const std::string msg = rejection(foreign, keyring);
    CHECK_THAT(msg, Contains("signature"));
    CHECK_FALSE(is_session_expired(failure(verify_session(foreign, keyring, k_now))));
    CHECK_THAT(rejection(forge(other, k_header, "not json"), keyring), Contains("signature"));
    CHECK_THAT(rejection(forge(keyring, k_header, "not json"), keyring), Contains("payload"));
    CHECK_THAT(rejection(forge(keyring, k_header, "[1]"), keyring), Contains("payload"));
}

TEST_CASE("session claims are checked", "[auth][session]") {
    const auto keyring = make_keyring();
    REQUIRE(verify_session(forge(keyring, good_claims()), keyring, k_now));
    auto with = [&](const char* name, nlohmann::ordered_json value) {
        auto claims = good_claims();
        claims[name] = std::move(value);
        return forge(keyring, claims);
    };
    auto without = [&](const char* name) {
        auto claims = good_claims();
        claims.erase(name);
        return forge(keyring, claims);
    };

    SECTION("duplicate payload keys") {
        std::string dup = good_claims().dump();
        dup.insert(1, R"("sub":"admin",)");
        CHECK_THAT(rejection(forge(keyring, k_header, dup), keyring), Contains("payload"));
        std::string nested = good_claims().dump();
        nested.insert(1, R"("x":{"a":1,"a":2},)");
        CHECK_THAT(rejection(forge(keyring, k_header, nested), keyring), Contains("payload"));
    }
    SECTION("iss") {
        CHECK_THAT(rejection(with("iss", "joe"), keyring), Contains("iss"));
        CHECK_THAT(rejection(with("iss", "AGENTGW"), keyring), Contains("iss"));
        CHECK_THAT(rejection(with("iss", {"agentgw"}), keyring), Contains("iss"));
        CHECK_THAT(rejection(without("iss"), keyring), Contains("iss"));
    }
    SECTION("aud as a string or in an array of strings") {
        CHECK_THAT(rejection(with("aud", "agentgw-control"), keyring), Contains("aud"));
        CHECK_THAT(rejection(without("aud"), keyring), Contains("aud"));
        CHECK_THAT(rejection(with("aud", nlohmann::ordered_json::array()), keyring),
                   Contains("aud"));
        CHECK_THAT(rejection(with("aud", {"a", "b"}), keyring), Contains("aud"));
        CHECK_THAT(rejection(with("aud", {1, "agentgw-agent-api"}), keyring), Contains("aud"));
        CHECK_THAT(rejection(with("aud", {{"aud", "agentgw-agent-api"}}), keyring),
                   Contains("aud"));
        CHECK(verify_session(with("aud", {"agentgw-agent-api"}), keyring, k_now));
        CHECK(verify_session(with("aud", {"other", "agentgw-agent-api"}), keyring, k_now));
    }
    SECTION("exp: required, an integer, 60 s of leeway at most") {
        const int64_t exp = k_now + 3600;
        const std::string token = forge(keyring, good_claims());
        CHECK(verify_session(token, keyring, exp - 1));
        CHECK(verify_session(token, keyring, exp));
        CHECK(verify_session(token, keyring, exp + 59));
        for (const int64_t late : {exp + 60, exp + 61, exp + 86400}) {
            auto expired = verify_session(token, keyring, late);
            REQUIRE_FALSE(expired);
            CHECK(expired.error().code == Code::unauthenticated);
            CHECK_THAT(expired.error().message, Catch::StartsWith("session expired"));
            CHECK(is_session_expired(expired.error()));
        }
        // ("exp missing", not the expiry message: these are malformed, not expired.)
        CHECK_THAT(rejection(without("exp"), keyring), Contains("exp missing"));
        CHECK_THAT(rejection(with("exp", "1700003600"), keyring), Contains("exp missing"));
        CHECK_THAT(rejection(with("exp", 1700003600.0), keyring), Contains("exp missing"));
        CHECK_THAT(rejection(with("exp", nullptr), keyring), Contains("exp missing"));
        // Beyond int64_t: must not wrap around to a negative (expired) or any other time.
        CHECK_THAT(rejection(with("exp", std::numeric_limits<uint64_t>::max()), keyring),
                   Contains("exp missing"));
        // Extreme values neither overflow nor wrap around.
        CHECK(verify_session(with("exp", std::numeric_limits<int64_t>::max()), keyring, k_now));
        CHECK(is_session_expired(failure(
            verify_session(with("exp", std::numeric_limits<int64_t>::min()), keyring, k_now))));
        CHECK(is_session_expired(
            failure(verify_session(token, keyring, std::numeric_limits<int64_t>::max()))));
    }
    SECTION("nbf and iat: integers if present, not in the future beyond the leeway") {
        for (const char* name : {"nbf", "iat"}) {
            INFO(name);
            CHECK(verify_session(with(name, k_now + 60), keyring, k_now));
            const std::string msg = rejection(with(name, k_now + 61), keyring);
            CHECK_THAT(msg, Contains(name));
            CHECK_FALSE(is_session_expired(
                failure(verify_session(with(name, k_now + 61), keyring, k_now))));
            // ... and accepted once the clock catches up.
            CHECK(verify_session(with(name, k_now + 61), keyring, k_now + 1));
            CHECK_THAT(rejection(with(name, "0"), keyring), Contains(name));
            CHECK_THAT(rejection(with(name, 1.5), keyring), Contains(name));
            CHECK_THAT(rejection(with(name, std::numeric_limits<int64_t>::max()), keyring),
                       Contains(name));
        }
        auto absent = verify_session(without("nbf"), keyring, k_now);
        REQUIRE(absent);
        CHECK(absent->nbf == 0);
        CHECK(verify_session(without("iat"), keyring, k_now));
    }
    SECTION("sub is a non-empty string") {
        CHECK_THAT(rejection(without("sub"), keyring), Contains("sub"));
        CHECK_THAT(rejection(with("sub", ""), keyring), Contains("sub"));
        CHECK_THAT(rejection(with("sub", 42), keyring), Contains("sub"));
    }
    SECTION("gen is an unsigned integer") {
        CHECK_THAT(rejection(without("gen"), keyring), Contains("gen"));
        CHECK_THAT(rejection(with("gen", -1), keyring), Contains("gen"));
        CHECK_THAT(rejection(with("gen", 1.5), keyring), Contains("gen"));
        CHECK_THAT(rejection(with("gen", 3.0), keyring), Contains("gen"));
        CHECK_THAT(rejection(with("gen", "3"), keyring), Contains("gen"));
        auto big =
            verify_session(with("gen", std::numeric_limits<uint64_t>::max()), keyring, k_now);
        REQUIRE(big);
        CHECK(big->gen == std::numeric_limits<uint64_t>::max());
        CHECK(verify_session(with("gen", 0), keyring, k_now)->gen == 0);
    }
    SECTION("jti is a string if present") {
        CHECK_THAT(rejection(with("jti", 5), keyring), Contains("jti"));
        CHECK(verify_session(without("jti"), keyring, k_now));
    }
    SECTION("only expiry reads as expiry") {
        CHECK_FALSE(is_session_expired(failure(verify_session(with("iss", "x"), keyring, k_now))));
        CHECK_FALSE(is_session_expired(failure(verify_session("a.b", keyring, k_now))));
        CHECK_FALSE(is_session_expired(Error{Code::invalid_argument, "session expired"}));
    }
}
