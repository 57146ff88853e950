#include "daemon/crypto/record_cipher.hpp"

#include <array>
#include <cassert>
#include <cstring>

#include <fmt/format.h>

namespace agentgw {

namespace {

constexpr uint8_t k_format = 1;
constexpr size_t k_nonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t k_header = 1 + 4 + k_nonce;
constexpr std::string_view k_ad_prefix = "agentgw/v1";

// crypto_kdf contexts are exactly 8 bytes.
constexpr char k_record_context[crypto_kdf_CONTEXTBYTES + 1] = "agw-rec_";
constexpr char k_lookup_context[crypto_kdf_CONTEXTBYTES + 1] = "agw-look";

void put_be32(uint8_t* out, uint32_t v) {
    out[0] = static_cast<uint8_t>(v >> 24);
    out[1] = static_cast<uint8_t>(v >> 16);
    out[2] = static_cast<uint8_t>(v >> 8);
    out[3] = static_cast<uint8_t>(v);
}

uint32_t get_be32(const uint8_t* in) {
    return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) |
           uint32_t{in[3]};
}

// A nonce for the next record sealed on this thread, without a system call per record: a
// random 16-byte prefix drawn once per thread, then a 64-bit counter. XChaCha20 turns the
// prefix into a subkey and uses the last 8 bytes as the nonce under it, so a counter there is
// as safe as a random nonce: it never repeats (2^64 records are never reached), and threads
// and processes never share a prefix except with probability 2^-128.
void next_nonce(uint8_t* out) {
    static_assert(k_nonce == 24);
    thread_local std::array<uint8_t, k_nonce> nonce = [] {
        std::array<uint8_t, k_nonce> n{};
        randombytes_buf(n.data(), 16);
        return n;
    }();
    thread_local uint64_t counter = 0;
    ++counter;
    for (size_t i = 0; i < 8; ++i) {
        nonce[16 + i] = static_cast<uint8_t>(counter >> (8 * i));
    }
    std::memcpy(out, nonce.data(), k_nonce);
}

std::string additional_data(std::string_view table, std::string_view record_key, uint32_t key_id) {
    std::string ad;
    ad.reserve(k_ad_prefix.size() + table.size() + 1 + record_key.size() + 4);
    ad.append(k_ad_prefix).append(table).push_back('\0');
    ad.append(record_key);
    uint8_t id[4];
    put_be32(id, key_id);
    ad.append(reinterpret_cast<const char*>(id), 4);
    return ad;
}

SecureBuffer derive(const SecureBuffer& key, uint64_t id, const char* context) {
    SecureBuffer out(32);
    crypto_kdf_derive_from_key(out.data(), out.size(), id, context, key.data());
    out.make_readonly();
    return out;
}

}  // namespace

RecordCipher::RecordCipher(const SecureBuffer& data_key, uint32_t key_id)
    : record_key_(
          (assert(data_key.size() == crypto_kdf_KEYBYTES), derive(data_key, 1, k_record_context))),
      lookup_key_(derive(data_key, 2, k_lookup_context)),
      key_id_(key_id) {}

std::string RecordCipher::seal(std::string_view table, std::string_view record_key,
                               std::string_view plaintext) const {
    const std::string ad = additional_data(table, record_key, key_id_);
    std::string out(k_header + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
    auto* p = reinterpret_cast<uint8_t*>(out.data());
    p[0] = k_format;
    put_be32(p + 1, key_id_);
    next_nonce(p + 5);
    unsigned long long written = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        p + k_header, &written, reinterpret_cast<const uint8_t*>(plaintext.data()),
        plaintext.size(), reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr, p + 5,
        record_key_.data());
    out.resize(k_header + written);
    return out;
}

Result<SecretBytes> RecordCipher::open(std::string_view table, std::string_view record_key,
                                       std::string_view sealed) const {
    const auto* p = reinterpret_cast<const uint8_t*>(sealed.data());
    if (sealed.size() < k_overhead || p[0] != k_format) {
        return make_error(Code::corrupt,
                          fmt::format("a record in {} is not in the sealed format", table));
    }
    const uint32_t key_id = get_be32(p + 1);
    if (key_id != key_id_) {
        return make_error(
            Code::corrupt,
            fmt::format("record in {} is sealed under unknown data key {}", table, key_id));
    }
    const std::string ad = additional_data(table, record_key, key_id);
    SecretBytes plain(sealed.size() - k_overhead);
    unsigned long long plain_len = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain.data(), &plain_len, nullptr, p + k_header,
                                                   sealed.size() - k_header,
                                                   reinterpret_cast<const uint8_t*>(ad.data()),
                                                   ad.size(), p + 5, record_key_.data()) != 0) {
        return make_error(
            Code::corrupt,
            fmt::format("a record in {} failed authentication (altered or moved)", table));
    }
    plain.resize(plain_len);
    return plain;
}

LookupHash RecordCipher::lookup_hash(std::string_view domain, std::string_view secret) const {
    LookupHash out{};
    crypto_generichash_state state;
    crypto_generichash_init(&state, lookup_key_.data(), lookup_key_.size(), out.size());
    crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(domain.data()),
                              domain.size());
    const uint8_t separator = 0;
    crypto_generichash_update(&state, &separator, 1);
    crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(secret.data()),
                              secret.size());
    crypto_generichash_final(&state, out.data(), out.size());
    sodium_memzero(&state, sizeof state);
    return out;
}

}  // namespace agentgw
