// The envelope around the vault's data key: the data key sealed under a key-encryption key
// derived from the master secret. Only this small record changes when the master key does.
// Stored as plaintext JSON in the vault's meta table (it holds no secret in the clear).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "daemon/crypto/master_key.hpp"
#include "daemon/crypto/secure_buffer.hpp"

namespace agentgw {

// Argon2id cost for passphrase mode. moderate() is the default for a daemon that unlocks
// once at start; interactive() keeps tests fast.
struct PwhashParams {
    uint64_t opslimit;
    size_t memlimit;
    static PwhashParams moderate() noexcept;
    static PwhashParams interactive() noexcept;
};

struct KeyEnvelope {
    MasterKind kind = MasterKind::key;
    std::string salt;  // passphrase mode: crypto_pwhash_SALTBYTES raw bytes
    uint64_t opslimit = 0;
    size_t memlimit = 0;
    uint32_t key_id = 0;
    std::string wrapped;  // nonce | sealed data key

    std::string to_json() const;
    // Fails with Code::corrupt on a malformed or unsupported envelope.
    static Result<KeyEnvelope> from_json(std::string_view text);
};

// Seals `data_key` under `master`. For a passphrase, a fresh salt is drawn and `params` used.
Result<KeyEnvelope> wrap_data_key(const SecureBuffer& data_key, uint32_t key_id,
                                  const MasterSecret& master, PwhashParams params);

// Opens the envelope. A master secret of the wrong kind, or one that does not authenticate
// the envelope, fails with Code::unauthenticated.
Result<SecureBuffer> unwrap_data_key(const KeyEnvelope& envelope, const MasterSecret& master);

}  // namespace agentgw
