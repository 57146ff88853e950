// RecordCipher seals and opens stored values with XChaCha20-Poly1305 under subkeys derived
// from the vault's data key, and computes keyed BLAKE2b lookup hashes. Thread-safe: after
// construction every member is const.
//
// Sealed record: 0x01 | key_id (4, big-endian) | nonce (24) | ciphertext+tag.
// Additional data: "agentgw/v1" | table | 0x00 | record key | key_id, so a ciphertext moved
// to another record, table or data key fails to open.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "daemon/crypto/secure_buffer.hpp"

namespace agentgw {

using LookupHash = std::array<uint8_t, 32>;

class RecordCipher {
  public:
    static constexpr size_t k_key_size = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
    static constexpr size_t k_overhead = 1 + 4 + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
                                         crypto_aead_xchacha20poly1305_ietf_ABYTES;

    // `data_key` must be k_key_size bytes; `key_id` names it inside every record.
    RecordCipher(const SecureBuffer& data_key, uint32_t key_id);

    uint32_t key_id() const noexcept { return key_id_; }

    std::string seal(std::string_view table, std::string_view record_key,
                     std::string_view plaintext) const;

    // Fails with Code::corrupt when the record was altered, moved, or sealed under another key.
    Result<SecretBytes> open(std::string_view table, std::string_view record_key,
                             std::string_view sealed) const;

    // Keyed BLAKE2b-256 of `secret`, separated by `domain` ("agent-key", "data-token", ...),
    // so that a lookup key reveals nothing about the secret without the data key.
    LookupHash lookup_hash(std::string_view domain, std::string_view secret) const;

  private:
    SecureBuffer record_key_;
    SecureBuffer lookup_key_;
    uint32_t key_id_;
};

}  // namespace agentgw
