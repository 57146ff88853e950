#include "daemon/crypto/key_envelope.hpp"

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
        e.opslimit > crypto_pwhash_OPSLIMIT_MAX || e.memlimit < crypto_pwhash_MEMLIMIT_MIN ||
        e.memlimit > crypto_pwhash_MEMLIMIT_MAX) {
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
    const auto j = nlohmann::json::parse(text, nullptr, false);
    auto bad = [](std::string_view why) {
        return make_error(Code::corrupt, fmt::format("vault key envelope is invalid: {}", why));
    };
    if (!j.is_object() || j.value("format", 0) != k_format) {
        return bad("unknown format");
    }
    KeyEnvelope e;
    const std::string kind = j.value("kind", "");
    if (kind == "key") {
        e.kind = MasterKind::key;
    } else if (kind == "passphrase") {
        e.kind = MasterKind::passphrase;
    } else {
        return bad("unknown kind");
    }
    if (!j.contains("key_id") || !j["key_id"].is_number_unsigned()) {
        return bad("key_id");
    }
    e.key_id = j["key_id"].get<uint32_t>();
    auto wrapped = base64url_decode(j.value("wrapped_data_key", ""));
    if (!wrapped ||
        wrapped->size() != k_nonce + k_dek_size + crypto_aead_xchacha20poly1305_ietf_ABYTES) {
        return bad("wrapped_data_key");
    }
    e.wrapped = std::move(*wrapped);
    if (e.kind == MasterKind::passphrase) {
        const auto kdf = j.value("kdf", nlohmann::json::object());
        auto salt = base64url_decode(kdf.value("salt", ""));
        if (kdf.value("alg", "") != "argon2id13" || !salt || !kdf.contains("opslimit") ||
            !kdf["opslimit"].is_number_unsigned() || !kdf.contains("memlimit") ||
            !kdf["memlimit"].is_number_unsigned()) {
            return bad("kdf");
        }
        e.salt = std::move(*salt);
        e.opslimit = kdf["opslimit"].get<uint64_t>();
        e.memlimit = kdf["memlimit"].get<size_t>();
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
