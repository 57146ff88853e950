// The master secret that unlocks the vault: a 32-byte key (from a key file) or a passphrase
// (stretched with Argon2id). It lives only in sodium_malloc'd memory. Loading functions are
// thread-safe; a MasterSecret is a move-only value.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.hpp"
#include "daemon/crypto/secure_buffer.hpp"

namespace agentgw {

enum class MasterKind { key, passphrase };

struct MasterSecret {
    MasterKind kind = MasterKind::key;
    SecureBuffer secret;         // 32 key bytes, or the passphrase's bytes
    std::string source;          // for messages: "key file /etc/agentgw/master.key"
    std::filesystem::path file;  // the file it came from; empty for standard input
};

inline constexpr size_t k_master_key_size = 32;

// Reads a key file holding exactly 32 raw bytes, or 64 hex characters (a trailing newline is
// allowed). The file must be private (mode 0600 or tighter, owned by us or root).
Result<MasterSecret> load_key_file(const std::filesystem::path& path);

// Creates `path` (mode 0600, must not exist yet) holding 32 fresh random bytes, durably.
Result<MasterSecret> generate_key_file(const std::filesystem::path& path);

// Reads a passphrase: the first line of `path`, or of standard input when `path` is "-".
// Empty passphrases are refused.
Result<MasterSecret> load_passphrase_file(const std::filesystem::path& path);

// A passphrase given directly (tests, tools); refused when empty.
Result<MasterSecret> passphrase_from(std::string_view passphrase, std::string source);

}  // namespace agentgw
