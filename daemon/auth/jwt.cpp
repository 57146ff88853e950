#include "daemon/auth/jwt.hpp"

#include <limits>
#include <utility>

#include <sodium.h>

#include "daemon/crypto/encoding.hpp"

namespace agentgw {

namespace {

using json = nlohmann::json;

Error unauthenticated(std::string message) {
    return make_error(Code::unauthenticated, std::move(message));
}

Error invalid_session(std::string_view why) {
    return unauthenticated("invalid session: " + std::string(why));
}

bool valid_kid(std::string_view kid) {
    if (kid.empty() || kid.size() > SessionKeyring::k_max_kid_size) {
        return false;
    }
    for (const char c : kid) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

// A member that must be an integer representable as int64_t. Floats (1.0, 1e9) are refused:
// we only ever issue integers, so anything else was not made by us.
enum class IntClaim { absent, ok, bad };

IntClaim int64_claim(const json& claims, const char* name, int64_t& out) {
    const auto it = claims.find(name);
    if (it == claims.end()) {
        return IntClaim::absent;
    }
    if (it->is_number_unsigned()) {
        const uint64_t v = it->get<uint64_t>();
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            return IntClaim::bad;
        }
        out = static_cast<int64_t>(v);
        return IntClaim::ok;
    }
    if (it->is_number_integer()) {
        out = it->get<int64_t>();
        return IntClaim::ok;
    }
    return IntClaim::bad;
}

bool audience_matches(const json& aud) {
    if (aud.is_string()) {
        return aud.get_ref<const std::string&>() == k_session_audience;
    }
    if (!aud.is_array() || aud.empty()) {
        return false;
    }
    bool found = false;
    for (const auto& entry : aud) {
        if (!entry.is_string()) {
            return false;
        }
        found = found || entry.get_ref<const std::string&>() == k_session_audience;
    }
    return found;
}

// now ± leeway without overflow for any caller-supplied time.
int64_t saturating_add(int64_t a, int64_t b) {
    if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) {
        return std::numeric_limits<int64_t>::max();
    }
    if (b < 0 && a < std::numeric_limits<int64_t>::min() - b) {
        return std::numeric_limits<int64_t>::min();
    }
    return a + b;
}

}  // namespace

// ---- JWS ----

Result<JwsParts> jws_decode(std::string_view token) {
    if (token.size() > k_jws_max_token_size) {
        return unauthenticated("token too long");
    }
    const size_t dot1 = token.find('.');
    const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
        return unauthenticated("token must have three segments");
    }
    // base64url_decode is strict (alphabet, no padding, no leftover bits): each token has
    // exactly one encoding.
    auto header = base64url_decode(token.substr(0, dot1));
    auto payload = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
    auto signature = base64url_decode(token.substr(dot2 + 1));
    if (!header || !payload || !signature) {
        return unauthenticated("token is not valid base64url");
    }
    return JwsParts{std::move(*header), std::move(*payload), std::move(*signature),
                    std::string(token.substr(0, dot2))};
}

std::array<uint8_t, k_hs256_tag_size> hmac_sha256(std::span<const uint8_t> key,
                                                  std::string_view data) {
    // crypto_auth_hmacsha256() itself takes only 32-byte keys; the streaming API takes any
    // length (longer keys are hashed first, as RFC 2104 says).
    static_assert(crypto_auth_hmacsha256_BYTES == k_hs256_tag_size);
    crypto_auth_hmacsha256_state state;
    std::array<uint8_t, k_hs256_tag_size> tag{};
    static constexpr unsigned char k_no_key = 0;  // never pass a null pointer, even for size 0
    crypto_auth_hmacsha256_init(&state, key.empty() ? &k_no_key : key.data(), key.size());
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(data.data()),
                                  data.size());
    crypto_auth_hmacsha256_final(&state, tag.data());
    sodium_memzero(&state, sizeof state);  // holds the key-derived pads
    return tag;
}

bool hs256_verify(const JwsParts& parts, std::span<const uint8_t> key) {
    if (parts.signature.size() != k_hs256_tag_size) {
        return false;
    }
    auto expected = hmac_sha256(key, parts.signing_input);
    const bool ok =
        crypto_verify_32(expected.data(),
                         reinterpret_cast<const unsigned char*>(parts.signature.data())) == 0;
    sodium_memzero(expected.data(), expected.size());
    return ok;
}

std::string hs256_sign(std::string_view header_json, std::string_view payload_json,
                       std::span<const uint8_t> key) {
    std::string token = base64url_encode(header_json);
    token += '.';
    token += base64url_encode(payload_json);
    const auto tag = hmac_sha256(key, token);
    token += '.';
    token += base64url_encode(std::span<const unsigned char>(tag.data(), tag.size()));
    return token;
}

// ---- SessionKeyring ----

Result<SessionKeyring> SessionKeyring::create(std::string kid, SecureBuffer key) {
    SessionKeyring keyring;
    const std::string current = kid;
    TRY(keyring.add(std::move(kid), std::move(key)));
    keyring.current_ = current;
    return keyring;
}

Status SessionKeyring::add(std::string kid, SecureBuffer key) {
    if (!valid_kid(kid)) {
        return make_error(Code::invalid_argument,
                          "session key id must be 1-64 characters of [A-Za-z0-9._-]");
    }
    if (key.size() != k_key_size) {
        return make_error(Code::invalid_argument, "session key must be 32 bytes");
    }
    if (keys_.contains(kid)) {
        return make_error(Code::conflict, "session key id already in the keyring");
    }
    key.make_readonly();  // long-lived; a stray write now traps instead of changing the key
    keys_.emplace(std::move(kid), std::move(key));
    return {};
}

Status SessionKeyring::set_current(std::string_view kid) {
    const auto it = keys_.find(kid);
    if (it == keys_.end()) {
        return make_error(Code::not_found, "no such session key id");
    }
    current_ = it->first;
    return {};
}

Status SessionKeyring::remove(std::string_view kid) {
    const auto it = keys_.find(kid);
    if (it == keys_.end()) {
        return make_error(Code::not_found, "no such session key id");
    }
    if (it->first == current_) {
        return make_error(Code::conflict, "cannot remove the current session key");
    }
    keys_.erase(it);
    return {};
}

const SecureBuffer* SessionKeyring::find(std::string_view kid) const {
    const auto it = keys_.find(kid);
    return it == keys_.end() ? nullptr : &it->second;
}

// ---- Sessions ----

std::string issue_session(const SessionClaims& claims, const SessionKeyring& keyring) {
    // Written by hand to keep the member order RFC-like; kid is a validated plain identifier,
    // dumped through json anyway so the header is valid JSON whatever it holds.
    const std::string header =
        R"({"alg":"HS256","typ":"JWT","kid":)" + json(keyring.current_kid()).dump() + "}";
    nlohmann::ordered_json payload = {
        {"iss", k_session_issuer}, {"aud", k_session_audience}, {"sub", claims.sub},
        {"gen", claims.gen},       {"iat", claims.iat},         {"nbf", claims.nbf},
        {"exp", claims.exp},
    };
    if (!claims.jti.empty()) {
        payload["jti"] = claims.jti;
    }
    return hs256_sign(header, payload.dump(), keyring.current_key().span());
}

Result<SessionClaims> verify_session(std::string_view token, const SessionKeyring& keyring,
                                     int64_t now_secs) {
    TRY_ASSIGN(const JwsParts parts, jws_decode(token));

    // Header. Everything here is attacker-controlled until the MAC checks out, so it only
    // selects (from a fixed set) how to verify; RFC 8725 §2.1, §3.1, §3.11.
    auto header = parse_json_object_strict(parts.header);
    if (!header) {
        return invalid_session("bad header");
    }
    const json& h = *header;
    const auto alg = h.find("alg");
    if (alg == h.end() || !alg->is_string() || alg->get_ref<const std::string&>() != "HS256") {
        return invalid_session("alg must be HS256");
    }
    const auto typ = h.find("typ");
    if (typ == h.end() || !typ->is_string() || typ->get_ref<const std::string&>() != "JWT") {
        return invalid_session("typ must be JWT");
    }
    const auto kid = h.find("kid");
    if (kid == h.end() || !kid->is_string()) {
        return invalid_session("kid missing");
    }
    const SecureBuffer* key = keyring.find(kid->get_ref<const std::string&>());
    if (key == nullptr) {
        return invalid_session("unknown kid");
    }
    for (const char* forbidden : {"crit", "jku", "jwk", "x5u", "x5c"}) {
        if (h.contains(forbidden)) {
            return invalid_session("unsupported header parameter");
        }
    }

    if (!hs256_verify(parts, key->span())) {
        return invalid_session("bad signature");
    }

    // Claims: authentic from here on, but still checked, since a key may outlive a format.
    auto payload = parse_json_object_strict(parts.payload);
    if (!payload) {
        return invalid_session("bad payload");
    }
    const json& c = *payload;
    const auto iss = c.find("iss");
    if (iss == c.end() || !iss->is_string() ||
        iss->get_ref<const std::string&>() != k_session_issuer) {
        return invalid_session("wrong iss");
    }
    const auto aud = c.find("aud");
    if (aud == c.end() || !audience_matches(*aud)) {
        return invalid_session("wrong aud");
    }

    SessionClaims claims;
    if (int64_claim(c, "exp", claims.exp) != IntClaim::ok) {
        return invalid_session("exp missing or not an integer");
    }
    if (int64_claim(c, "nbf", claims.nbf) == IntClaim::bad) {
        return invalid_session("nbf not an integer");
    }
    if (int64_claim(c, "iat", claims.iat) == IntClaim::bad) {
        return invalid_session("iat not an integer");
    }
    // Valid while exp + leeway > now, written so that no claim value can overflow.
    if (claims.exp <= saturating_add(now_secs, -k_session_leeway_secs)) {
        return unauthenticated(std::string(k_session_expired_message));
    }
    const int64_t latest = saturating_add(now_secs, k_session_leeway_secs);
    if (claims.nbf > latest) {
        return invalid_session("not valid yet (nbf)");
    }
    if (claims.iat > latest) {
        return invalid_session("issued in the future (iat)");
    }

    const auto sub = c.find("sub");
    if (sub == c.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty()) {
        return invalid_session("sub missing");
    }
    claims.sub = sub->get_ref<const std::string&>();
    const auto gen = c.find("gen");
    if (gen == c.end() || !gen->is_number_unsigned()) {
        return invalid_session("gen missing or not an unsigned integer");
    }
    claims.gen = gen->get<uint64_t>();
    if (const auto jti = c.find("jti"); jti != c.end()) {
        if (!jti->is_string()) {
            return invalid_session("jti not a string");
        }
        claims.jti = jti->get_ref<const std::string&>();
    }
    return claims;
}

bool is_session_expired(const Error& error) noexcept {
    return error.code == Code::unauthenticated &&
           std::string_view(error.message).starts_with(k_session_expired_message);
}

}  // namespace agentgw
