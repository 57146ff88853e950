// HS256 JSON Web Tokens for agent sessions (RFC 7515/7519, hardened per RFC 8725): a strict
// JWS compact codec, HMAC-SHA256 signing and verification, and session issue/verify (JSON
// via util/strict_json). Free functions are thread-safe; a const SessionKeyring may be shared.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/util/strict_json.hpp"

namespace agentgw {

// ---- JWS compact serialization, HS256 ----

inline constexpr size_t k_jws_max_token_size = 8 * 1024;
inline constexpr size_t k_hs256_tag_size = 32;

// The decoded segments of a compact JWS. `signing_input` is "seg0.seg1" as it appeared.
struct JwsParts {
    std::string header;     // protected header bytes (normally JSON)
    std::string payload;    // payload bytes
    std::string signature;  // signature bytes (32 for HS256)
    std::string signing_input;
};

// Splits and decodes a compact token: at most k_jws_max_token_size bytes, exactly three
// segments, each strict base64url without padding. Says nothing about the header's contents.
// Fails with Code::unauthenticated.
Result<JwsParts> jws_decode(std::string_view token);

// HMAC-SHA256 of `data` under a key of any length.
std::array<uint8_t, k_hs256_tag_size> hmac_sha256(std::span<const uint8_t> key,
                                                  std::string_view data);

// True when `parts.signature` is the HMAC-SHA256 of `parts.signing_input` under `key`
// (constant-time comparison). Does not look at the header's `alg`.
bool hs256_verify(const JwsParts& parts, std::span<const uint8_t> key);

// The compact token base64url(header).base64url(payload).base64url(HMAC), signed as given:
// the caller is responsible for `header_json` naming HS256.
std::string hs256_sign(std::string_view header_json, std::string_view payload_json,
                       std::span<const uint8_t> key);

// ---- Agent sessions ----

inline constexpr std::string_view k_session_issuer = "agentgw";
inline constexpr std::string_view k_session_audience = "agentgw-agent-api";
inline constexpr int64_t k_session_leeway_secs = 60;
// Every expiry failure's message starts with this, so the agent API can answer
// `session_expired` instead of `unauthorized` (see is_session_expired).
inline constexpr std::string_view k_session_expired_message = "session expired";

// The session signing keys: kid -> 32-byte HMAC key, with one current kid used for signing;
// the others still verify (rotation). Not thread-safe to modify; const use is.
class SessionKeyring {
  public:
    static constexpr size_t k_key_size = 32;
    static constexpr size_t k_max_kid_size = 64;

    // A keyring whose current (signing) key is `key` under `kid`. Fails with
    // Code::invalid_argument when the key is not k_key_size bytes or the kid is not 1 to
    // k_max_kid_size characters of [A-Za-z0-9._-].
    static Result<SessionKeyring> create(std::string kid, SecureBuffer key);

    // Adds a verification key; Code::conflict when `kid` is already present. The current kid
    // does not change.
    Status add(std::string kid, SecureBuffer key);
    // Makes a present kid the signing key; Code::not_found otherwise.
    Status set_current(std::string_view kid);
    // Removes a kid other than the current one; Code::not_found / Code::conflict otherwise.
    Status remove(std::string_view kid);

    const std::string& current_kid() const noexcept { return current_; }
    const SecureBuffer& current_key() const { return keys_.find(current_)->second; }
    // The key for `kid`, or nullptr when unknown.
    const SecureBuffer* find(std::string_view kid) const;

  private:
    SessionKeyring() = default;

    std::map<std::string, SecureBuffer, std::less<>> keys_;
    std::string current_;
};

struct SessionClaims {
    std::string sub;   // agent id
    uint64_t gen = 0;  // the agent's key generation when the session was issued
    int64_t iat = 0;   // seconds since the epoch; 0 when absent from a verified token
    int64_t nbf = 0;   // 0 when absent from a verified token
    int64_t exp = 0;
    std::string jti;  // empty when absent
};

// Signs `claims` with the keyring's current key. Header {"alg":"HS256","typ":"JWT","kid":…};
// payload adds iss k_session_issuer and aud k_session_audience (jti is left out when empty).
std::string issue_session(const SessionClaims& claims, const SessionKeyring& keyring);

// Verifies a session token at time `now_secs`: strict JWS decode; header (no duplicate keys,
// alg exactly HS256, typ JWT, kid in the keyring, no crit/jku/jwk/x5u/x5c); the MAC, before
// the payload is parsed; then iss, aud, exp/nbf/iat (k_session_leeway_secs of leeway), sub,
// gen, jti. Every failure is Code::unauthenticated; an expired session's message starts
// with k_session_expired_message.
Result<SessionClaims> verify_session(std::string_view token, const SessionKeyring& keyring,
                                     int64_t now_secs);

// True when `error` is verify_session's answer for a session past its expiry.
bool is_session_expired(const Error& error) noexcept;

}  // namespace agentgw
