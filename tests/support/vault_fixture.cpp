#include "tests/support/vault_fixture.hpp"

#include <stdexcept>

#include "common/fs.hpp"

namespace agentgw::test {

MasterSecret key_at(const std::filesystem::path& path) {
    auto key = std::filesystem::exists(path) ? load_key_file(path) : generate_key_file(path);
    if (!key) {
        throw std::runtime_error(key.error().message);
    }
    return std::move(*key);
}

Result<std::unique_ptr<Vault>> open_vault(const std::filesystem::path& state,
                                          const MasterSecret& master, VaultOptions options) {
    TRY(ensure_private_dir(state, 0700));
    TRY_ASSIGN(auto lock, StateLock::acquire(state));
    options.dir = state;
    options.pwhash = PwhashParams::interactive();
    return Vault::open(options, std::move(lock), master);
}

Status put(Vault& vault, Table table, const std::string& key, const std::string& value) {
    return vault.write([&](WriteTxn& txn) { return txn.put(table, key, value); });
}

}  // namespace agentgw::test
