#include "daemon/vault/key_source.hpp"

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace agentgw {

namespace fs = std::filesystem;

Result<MasterSecret> resolve_master_secret(const DaemonConfig& config,
                                           const std::optional<KeyEnvelope>& existing) {
    if (!config.passphrase_file.empty()) {
        return load_passphrase_file(config.passphrase_file);
    }
    if (!config.key_file.empty()) {
        return load_key_file(config.key_file);
    }
    const bool wants_passphrase = existing && existing->kind == MasterKind::passphrase;
    const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
    if (credentials != nullptr && *credentials != '\0') {
        const fs::path key = fs::path(credentials) / "master.key";
        const fs::path passphrase = fs::path(credentials) / "passphrase";
        if (wants_passphrase) {
            if (fs::exists(passphrase)) {
                return load_passphrase_file(passphrase);
            }
        } else if (fs::exists(key)) {
            return load_key_file(key);
        } else if (!existing && fs::exists(passphrase)) {
            // A new vault, and the credential given is a passphrase: the vault is made with it.
            return load_passphrase_file(passphrase);
        }
    }
    if (wants_passphrase) {
        return make_error(Code::unauthenticated,
                          fmt::format("the vault in {} is protected by a passphrase: give "
                                      "--passphrase-file (or $CREDENTIALS_DIRECTORY/passphrase)",
                                      config.state_dir.string()));
    }
    const fs::path local_key = config.state_dir / "master.key";
    if (fs::exists(local_key)) {
        return load_key_file(local_key);
    }
    if (existing) {
        return make_error(Code::unauthenticated,
                          fmt::format("the vault in {} needs its master key, and {} is missing: "
                                      "give --key-file or $CREDENTIALS_DIRECTORY/master.key",
                                      config.state_dir.string(), local_key.string()));
    }
    spdlog::info("generating a new master key in {}", local_key.string());
    return generate_key_file(local_key);
}

}  // namespace agentgw
