// CredentialStore: the secrets agentgwd injects into upstream requests, at service, user or
// agent scope (SPEC §2), sealed in the vault. Nothing here ever returns a secret to the
// control API: list() gives metadata only. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "common/result.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

enum class CredentialScope { service, user, agent };
std::string_view scope_name(CredentialScope scope) noexcept;
// The inverse of scope_name; std::nullopt for any other text.
std::optional<CredentialScope> parse_scope(std::string_view name) noexcept;

// The longest lifetime a credential is given: what `expires_in` may say on the control API,
// and where a token server's larger `expires_in` is cut.
inline constexpr int64_t k_max_credential_lifetime_secs = int64_t{10} * 365 * 86400;

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
    std::string scopes;  // oauth2: the scopes granted, space-separated (not a secret)
    ~CredentialInput();  // wipes the secret fields
};

struct CredentialInfo {
    std::string service;
    CredentialScope scope = CredentialScope::service;
    std::string owner_id;
    std::string type;
    int64_t expires_at = 0;  // 0: does not expire
    int64_t updated_at = 0;
    bool refreshable = false;      // holds a refresh token, or is a client secret
    bool reauth_required = false;  // a refresh was refused (invalid_grant): connect again
    std::string key;               // the record's key, for the refresher
    std::string scopes;            // oauth2: the scopes granted, space-separated
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
    std::string key;          // the record's key
    uint64_t generation = 0;  // bumped by every refresh
    bool refreshable = false;
    bool reauth_required = false;

    ResolvedCredential() = default;
    ResolvedCredential(const ResolvedCredential&) = delete;
    ResolvedCredential& operator=(const ResolvedCredential&) = delete;
    ~ResolvedCredential();
};

// An OAuth2 credential's tokens as the refresher needs them. Wiped when destroyed.
struct OAuthTokens {
    std::string key;
    std::string service;
    std::string type;  // "oauth2" or "client_secret"
    std::string access_token;
    std::string refresh_token;
    std::string client_secret;
    int64_t expires_at = 0;
    int64_t lifetime = 0;  // the last refresh's expires_in; 0: unknown
    uint64_t generation = 0;
    bool reauth_required = false;

    OAuthTokens() = default;
    OAuthTokens(const OAuthTokens&) = delete;
    OAuthTokens& operator=(const OAuthTokens&) = delete;
    ~OAuthTokens();
};

// A token endpoint's answer, to be stored. An empty refresh_token keeps the stored one.
struct RefreshedTokens {
    std::string access_token;
    std::string refresh_token;
    std::string scopes;      // the answer's "scope"; empty keeps the stored scopes
    int64_t expires_in = 0;  // 0: the answer gave no lifetime
    ~RefreshedTokens();
};

class CredentialStore {
  public:
    CredentialStore(Vault& vault, const Clock& clock) : vault_(vault), clock_(clock) {}

    // Stores (or replaces) a credential; the input must already be validated. `with`, when
    // given, is a write of the caller's made in the same transaction: both land, or neither.
    boost::asio::awaitable<Result<CredentialInfo>> set(const CredentialInput& input,
                                                       const Vault::WriteFn& with = nullptr);
    Result<std::vector<CredentialInfo>> list() const;
    // The credential the proxy injects for `service` on behalf of an agent: the agent's own,
    // else its user's, else the service-wide one (SPEC §2). nullptr when none is stored.
    // Answers are kept (wiped when dropped) until the credentials table next changes, so a
    // request does not open and parse its record again.
    Result<std::shared_ptr<const ResolvedCredential>> resolve(std::string_view service,
                                                              std::string_view user_id,
                                                              std::string_view agent_id) const;
    // Code::not_found when there is no such credential.
    boost::asio::awaitable<Status> remove(const std::string& service, CredentialScope scope,
                                          const std::string& owner_id);
    // The tokens of the credential stored under `key`; std::nullopt when it is gone.
    Result<std::optional<std::unique_ptr<OAuthTokens>>> load_tokens(std::string_view key) const;
    // Stores refreshed tokens in one durable write, bumping the generation. Code::conflict
    // when the credential changed since `generation` was read (replaced or refreshed).
    boost::asio::awaitable<Status> store_tokens(const std::string& key, uint64_t generation,
                                                const RefreshedTokens& tokens);
    // Marks the credential as needing re-authorisation (its refresh was refused).
    boost::asio::awaitable<Status> mark_reauth_required(const std::string& key,
                                                        uint64_t generation);

    // Removes every credential owned by `owner_id` (a deleted user or agent) inside `txn`.
    static Status remove_owned(WriteTxn& txn, const std::string& owner_id);

  private:
    Result<std::shared_ptr<const ResolvedCredential>> read_resolved(
        std::string_view service, std::string_view user_id, std::string_view agent_id) const;
    // Drops (and so wipes) every answer resolve() kept: called after each write here, so that a
    // removed or replaced secret leaves memory at once rather than at the next resolve().
    void forget_resolved() const;
    // Every write goes through here (the write is taken by reference: co_await it at once).
    boost::asio::awaitable<Status> commit(const Vault::WriteFn& write);

    Vault& vault_;
    const Clock& clock_;
    mutable std::mutex cache_mutex_;  // guards the two below
    // resolve()'s answers (nullptr: none stored) by service/user/agent, all read at this
    // version of the credentials table.
    mutable std::unordered_map<std::string, std::shared_ptr<const ResolvedCredential>> resolved_;
    mutable uint64_t resolved_version_ = 0;
};

}  // namespace agentgw
