// Helpers to open vaults in a test's temp dir the way the daemon does.
#pragma once

#include <filesystem>
#include <memory>

#include "daemon/vault/vault.hpp"

namespace agentgw::test {

// A master key in a file (0600) at `path`, created when absent.
MasterSecret key_at(const std::filesystem::path& path);

// Creates `state` (0700) if needed, takes its lock and opens the vault.
Result<std::unique_ptr<Vault>> open_vault(const std::filesystem::path& state,
                                          const MasterSecret& master, VaultOptions options = {});

// Puts (key, value) into `table` and waits until it is durable.
Status put(Vault& vault, Table table, const std::string& key, const std::string& value);

}  // namespace agentgw::test
