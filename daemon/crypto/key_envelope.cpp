#include "daemon/crypto/key_envelope.hpp"

#include <cstdint>
#include <optional>

#include <climits>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "daemon/crypto/encoding.hpp"

namespace agentgw {

namespace {

constexpr int k_format = 1;
constexpr size_t k_nonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t k_dek_size = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
constexpr char k_kek_context[crypto_kdf_CONTEXTBYTES + 1] = "agw-kek_";

std::string_view kind_name(MasterKind kind) {
    return kind == MasterKind::key ? "key" : "passphrase";
}

// Additional data binds the envelope to its purpose, data key id and master-secret kind.
std::string envelope_ad(const KeyEnvelope& e) {
    std::string ad("agentgw/v1/data-key");
    ad.push_back('\0');
    ad.append(std::to_string(e.key_id));
    ad.push_back('\0');
    ad.append(kind_name(e.kind));
    return ad;
}

Result<SecureBuffer> derive_kek(const KeyEnvelope& e, const MasterSecret& master) {
    SecureBuffer kek(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    if (master.kind == MasterKind::key) {
        if (master.secret.size() != crypto_kdf_KEYBYTES) {
            return make_error(Code::invalid_argument, "master key must be 32 bytes");
        }
        crypto_kdf_derive_from_key(kek.data(), kek.size(), 1, k_kek_context, master.secret.data());
        return kek;
    }
    if (e.salt.size() != crypto_pwhash_SALTBYTES || e.opslimit < crypto_pwhash_OPSLIMIT_MIN ||
        e.opslimit > crypto_pwhash_OPSLIMIT_SENSITIVE || e.memlimit < crypto_pwhash_MEMLIMIT_MIN ||
        e.memlimit > crypto_pwhash_MEMLIMIT_SENSITIVE) {
        return make_error(Code::corrupt, "vault key envelope has invalid Argon2id parameters");
    }
    if (crypto_pwhash(kek.data(), kek.size(), reinterpret_cast<const char*>(master.secret.data()),
                      master.secret.size(), reinterpret_cast<const uint8_t*>(e.salt.data()),
                      e.opslimit, e.memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        return make_error(
            Code::exhausted,
            fmt::format("Argon2id needs {} MiB of memory and could not get it", e.memlimit >> 20));
    }
    return kek;
}

}  // namespace

PwhashParams PwhashParams::moderate() noexcept {
    return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}

PwhashParams PwhashParams::interactive() noexcept {
    return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

std::string KeyEnvelope::to_json() const {
    nlohmann::json j = {
        {"format", k_format},
        {"kind", kind_name(kind)},
        {"key_id", key_id},
        {"wrapped_data_key", base64url_encode(wrapped)},
    };
    if (kind == MasterKind::passphrase) {
        j["kdf"] = {{"alg", "argon2id13"},
                    {"salt", base64url_encode(salt)},
                    {"opslimit", opslimit},
                    {"memlimit", memlimit}};
    }
    return j.dump();
}

Result<KeyEnvelope> KeyEnvelope::from_json(std::string_view text) {
    using nlohmann::json;
    auto bad = [](std::string_view why) {
        return make_error(Code::corrupt, fmt::format("vault key envelope is invalid: {}", why));
    };
    const json j = json::parse(text, nullptr, false);
    // Every field is checked for its exact type before it is read, so a damaged envelope is
    // reported as corrupt instead of throwing.
    auto string_at = [](const json& obj, const char* key) -> const std::string* {
        const auto it = obj.find(key);
        return it != obj.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
    };
    auto unsigned_at = [](const json& obj, const char* key) -> std::optional<uint64_t> {
        const auto it = obj.find(key);
        return it != obj.end() && it->is_number_unsigned() ? std::optional(it->get<uint64_t>())
                                                           : std::nullopt;
    };
    if (!j.is_object() || unsigned_at(j, "format") != uint64_t{k_format}) {
        return bad("unknown format");
    }
    KeyEnvelope e;
    const std::string* kind = string_at(j, "kind");
    if (kind != nullptr && *kind == "key") {
        e.kind = MasterKind::key;
    } else if (kind != nullptr && *kind == "passphrase") {
        e.kind = MasterKind::passphrase;
    } else {
        return bad("unknown kind");
    }
    const auto key_id = unsigned_at(j, "key_id");
    if (!key_id || *key_id > UINT32_MAX) {
        return bad("key_id");
    }
    e.key_id = static_cast<uint32_t>(*key_id);
    const std::string* wrapped_text = string_at(j, "wrapped_data_key");
    auto wrapped = wrapped_text != nullptr ? base64url_decode(*wrapped_text) : std::nullopt;
    if (!wrapped ||
        wrapped->size() != k_nonce + k_dek_size + crypto_aead_xchacha20poly1305_ietf_ABYTES) {
        return bad("wrapped_data_key");
    }
    e.wrapped = std::move(*wrapped);
    if (e.kind == MasterKind::passphrase) {
        const auto kdf = j.find("kdf");
        if (kdf == j.end() || !kdf->is_object()) {
            return bad("kdf");
        }
        const std::string* alg = string_at(*kdf, "alg");
        const std::string* salt_text = string_at(*kdf, "salt");
        auto salt = salt_text != nullptr ? base64url_decode(*salt_text) : std::nullopt;
        const auto ops = unsigned_at(*kdf, "opslimit");
        const auto mem = unsigned_at(*kdf, "memlimit");
        // Capped at libsodium's SENSITIVE limits: an edited envelope must not make start-up
        // run Argon2id for hours or ask for terabytes.
        if (alg == nullptr || *alg != "argon2id13" || !salt ||
            salt->size() != crypto_pwhash_SALTBYTES || !ops || *ops < crypto_pwhash_OPSLIMIT_MIN ||
            *ops > crypto_pwhash_OPSLIMIT_SENSITIVE || !mem || *mem < crypto_pwhash_MEMLIMIT_MIN ||
            *mem > crypto_pwhash_MEMLIMIT_SENSITIVE) {
            return bad("kdf");
        }
        e.salt = std::move(*salt);
        e.opslimit = *ops;
        e.memlimit = static_cast<size_t>(*mem);
    }
    return e;
}

Result<KeyEnvelope> wrap_data_key(const SecureBuffer& data_key, uint32_t key_id,
                                  const MasterSecret& master, PwhashParams params) {
    KeyEnvelope e;
    e.kind = master.kind;
    e.key_id = key_id;
    if (master.kind == MasterKind::passphrase) {
        e.salt.resize(crypto_pwhash_SALTBYTES);
        randombytes_buf(e.salt.data(), e.salt.size());
        e.opslimit = params.opslimit;
        e.memlimit = params.memlimit;
    }
    TRY_ASSIGN(SecureBuffer kek, derive_kek(e, master));
    const std::string ad = envelope_ad(e);
    e.wrapped.resize(k_nonce + data_key.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    auto* out = reinterpret_cast<uint8_t*>(e.wrapped.data());
    randombytes_buf(out, k_nonce);
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        out + k_nonce, nullptr, data_key.data(), data_key.size(),
        reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr, out, kek.data());
    return e;
}

Result<SecureBuffer> unwrap_data_key(const KeyEnvelope& e, const MasterSecret& master) {
    if (master.kind != e.kind) {
        return make_error(Code::unauthenticated,
                          e.kind == MasterKind::passphrase
                              ? "the vault is protected by a passphrase, but a key was given"
                              : "the vault is protected by a key file, but a passphrase was given");
    }
    TRY_ASSIGN(SecureBuffer kek, derive_kek(e, master));
    const std::string ad = envelope_ad(e);
    SecureBuffer dek(k_dek_size);
    const auto* in = reinterpret_cast<const uint8_t*>(e.wrapped.data());
    if (e.wrapped.size() != k_nonce + k_dek_size + crypto_aead_xchacha20poly1305_ietf_ABYTES ||
        crypto_aead_xchacha20poly1305_ietf_decrypt(
            dek.data(), nullptr, nullptr, in + k_nonce, e.wrapped.size() - k_nonce,
            reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), in, kek.data()) != 0) {
        return make_error(Code::unauthenticated,
                          fmt::format("wrong master {}: {} does not unlock this vault",
                                      kind_name(e.kind), master.source));
    }
    dek.make_readonly();
    return dek;
}

}  // namespace agentgw
