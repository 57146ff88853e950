// CredentialStore: the secrets agentgwd injects into upstream requests, at service, user or
// agent scope (SPEC §2), sealed in the vault. Nothing here ever returns a secret to the
// control API: list() gives metadata only. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "common/result.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

enum class CredentialScope { service, user, agent };
std::string_view scope_name(CredentialScope scope) noexcept;

struct CredentialInput {
    std::string service;
    CredentialScope scope = CredentialScope::service;
    std::string owner_id;  // user id or agent id; empty for service scope
    std::string type;      // api_key, basic, oauth2, client_secret
    std::string secret;
    std::string username;
    std::string password;
    std::string access_token;
    std::string refresh_token;
    std::optional<int64_t> expires_in;
    ~CredentialInput();  // wipes the secret fields
};

struct CredentialInfo {
    std::string service;
    CredentialScope scope = CredentialScope::service;
    std::string owner_id;
    std::string type;
    int64_t expires_at = 0;  // 0: does not expire
    int64_t updated_at = 0;
};

// A stored credential opened for injection. Its secret fields are wiped when it is destroyed.
struct ResolvedCredential {
    CredentialScope scope = CredentialScope::service;
    std::string type;
    std::string secret;  // api_key and client_secret
    std::string username;
    std::string password;
    std::string access_token;
    int64_t expires_at = 0;

    ResolvedCredential() = default;
    ResolvedCredential(const ResolvedCredential&) = delete;
    ResolvedCredential& operator=(const ResolvedCredential&) = delete;
    ~ResolvedCredential();
};

class CredentialStore {
  public:
    CredentialStore(Vault& vault, const Clock& clock) : vault_(vault), clock_(clock) {}

    // Stores (or replaces) a credential; the input must already be validated.
    boost::asio::awaitable<Result<CredentialInfo>> set(const CredentialInput& input);
    Result<std::vector<CredentialInfo>> list() const;
    // The credential the proxy injects for `service` on behalf of an agent: the agent's own,
    // else its user's, else the service-wide one (SPEC §2). nullptr when none is stored.
    Result<std::unique_ptr<ResolvedCredential>> resolve(std::string_view service,
                                                        std::string_view user_id,
                                                        std::string_view agent_id) const;
    // Code::not_found when there is no such credential.
    boost::asio::awaitable<Status> remove(const std::string& service, CredentialScope scope,
                                          const std::string& owner_id);
    // Removes every credential owned by `owner_id` (a deleted user or agent) inside `txn`.
    static Status remove_owned(WriteTxn& txn, const std::string& owner_id);

  private:
    Vault& vault_;
    const Clock& clock_;
};

}  // namespace agentgw
