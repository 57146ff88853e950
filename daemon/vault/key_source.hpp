// Chooses the master secret that unlocks (or creates) the vault, in SPEC §6's order.
#pragma once

#include <optional>

#include "common/result.hpp"
#include "daemon/config.hpp"
#include "daemon/crypto/key_envelope.hpp"
#include "daemon/crypto/master_key.hpp"

namespace agentgw {

// In order: --passphrase-file; --key-file; $CREDENTIALS_DIRECTORY/master.key (or /passphrase
// for a passphrase-protected vault); <state dir>/master.key; and, only when no vault exists
// yet, a new random key written to <state dir>/master.key. `existing` is the envelope of the
// vault already there (Vault::probe), which decides between "generate" and "missing".
Result<MasterSecret> resolve_master_secret(const DaemonConfig& config,
                                           const std::optional<KeyEnvelope>& existing);

}  // namespace agentgw
