// Registry: users and agents, agent keys and sessions, kept in the vault. Reads run on the
// caller's thread; writes are awaited (they go through the vault's group commit). The
// authentication functions are the ones the agent API uses. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "common/result.hpp"
#include "daemon/auth/jwt.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

struct Grant {
    std::string service_id;
    std::vector<std::string> methods;  // empty: every method the service allows
    std::vector<std::string> paths;    // empty: every path the service allows
};

struct RateLimit {
    int64_t requests = 100;
    int64_t window_secs = 60;
};

struct User {
    std::string id;
    std::string username;
    std::string email;
    int64_t created_at = 0;
};

struct Agent {
    std::string id;
    std::string user_id;
    std::string name;
    std::string description;
    std::vector<Grant> grants;
    RateLimit rate_limit;
    int64_t lifespan_days = 90;
    int64_t key_expires_at = 0;
    int64_t created_at = 0;
    uint64_t generation = 1;
    bool enabled = true;
    std::string key_hash;  // lookup hash of the current key (raw bytes)
    // The key and sessions before the last rotation, accepted until previous_valid_until.
    std::string previous_key_hash;
    uint64_t previous_generation = 0;
    int64_t previous_valid_until = 0;

    std::vector<std::string> allowed_services() const;
    const Grant* grant_for(std::string_view service_id) const;
};

// A key handed out once, at creation or rotation, with a first session. Both are wiped when
// it is destroyed.
struct IssuedKey {
    Agent agent;
    std::string api_key;
    std::string session;
    int64_t session_expires_at = 0;

    IssuedKey() = default;
    IssuedKey(IssuedKey&&) = default;
    IssuedKey& operator=(IssuedKey&&) = default;
    IssuedKey(const IssuedKey&) = delete;
    IssuedKey& operator=(const IssuedKey&) = delete;
    ~IssuedKey();
};

struct NewAgent {
    std::string user_id;
    std::string name;
    std::string description;
    std::vector<std::string> services;
    int64_t lifespan_days = 90;
};

// Why authentication failed, for the agent API's error types.
// unavailable: the vault could not be read, which says nothing about the credential (500).
enum class AuthFailure { unauthorized, session_expired, key_expired, disabled, unavailable };

struct AuthError {
    AuthFailure failure;
    std::string message;
    // key_expired and disabled: the agent the credential did belong to.
    std::string agent_id = {};
};

class Registry {
  public:
    static constexpr std::string_view k_key_prefix = "agw_";

    Registry(Vault& vault, const Clock& clock, SessionKeyring keyring, int64_t session_ttl_secs);

    // The session signing keyring stored in the vault, created on first use.
    static Result<SessionKeyring> load_keyring(Vault& vault);

    Result<User> find_user(std::string_view name_or_id) const;
    Result<std::vector<User>> list_users() const;
    Result<Agent> find_agent(std::string_view name_or_id) const;
    // Every agent, or those of one user (by id).
    Result<std::vector<Agent>> list_agents(const std::optional<std::string>& user_id) const;

    boost::asio::awaitable<Result<User>> create_user(const std::string& username,
                                                     const std::string& email);
    // Fails with Code::conflict while the user still owns agents.
    boost::asio::awaitable<Status> delete_user(const std::string& user_id);
    boost::asio::awaitable<Result<IssuedKey>> create_agent(const NewAgent& spec);
    // New key, generation + 1. With grace_secs > 0 the old key and sessions keep working
    // that long; otherwise they stop now.
    boost::asio::awaitable<Result<IssuedKey>> rotate(const std::string& agent_id,
                                                     int64_t grace_secs);
    // Applies `change` to the stored agent atomically and returns the result.
    boost::asio::awaitable<Result<Agent>> update_agent(const std::string& agent_id,
                                                       const std::function<Status(Agent&)>& change);
    boost::asio::awaitable<Status> delete_agent(const std::string& agent_id);

    // Which of an agent's keys an API key was: the current one, or the one before the last
    // rotation during its grace period.
    enum class KeyUse { current, previous };

    // The agent an API key belongs to, checked in constant time against its stored hash.
    // `used`, when given, is set to which key it was.
    std::variant<Agent, AuthError> authenticate_key(std::string_view api_key,
                                                    KeyUse* used = nullptr) const;
    // The agent a session names, after full JWT validation and generation/state checks; a
    // session of the current generation fails with key_expired once the key has expired.
    std::variant<Agent, AuthError> authenticate_session(std::string_view token) const;
    // A new session for `agent`; sets `expires_at`, at most session_ttl away and never past
    // the key's own expiry. A session got with the previous key belongs to the previous
    // generation: it ends with the rotation's grace period, as the key does.
    std::string issue_session(const Agent& agent, int64_t& expires_at,
                              KeyUse used = KeyUse::current) const;

    int64_t session_ttl_secs() const noexcept { return session_ttl_; }
    const Clock& clock() const noexcept { return clock_; }

  private:
    std::variant<Agent, AuthError> check_agent_state(Agent agent) const;

    // Every write goes through here: once it is durable, the agent cache is out of date.
    boost::asio::awaitable<Status> commit(const Vault::WriteFn& write);
    // The agent with this id, from the cache while no write has happened since it was read.
    Result<Agent> agent_by_id(std::string_view id) const;
    // The claims of a session, from the cache when it verified before and is inside its
    // validity; otherwise verified in full.
    Result<SessionClaims> session_claims(std::string_view token, int64_t now) const;

    Vault& vault_;
    const Clock& clock_;
    SessionKeyring keyring_;
    int64_t session_ttl_;

    // Caches for the agent API's hot path (a session and an agent record per request). Entries
    // hold no secret: agents carry key hashes only, and sessions are keyed by their BLAKE2b.
    struct CachedAgent {
        uint64_t version;
        Agent agent;
    };
    std::atomic<uint64_t> version_{0};
    mutable std::mutex cache_mutex_;  // guards the two maps
    mutable std::unordered_map<std::string, CachedAgent> agents_;
    mutable std::unordered_map<std::string, SessionClaims> sessions_;
};

std::string new_id();

}  // namespace agentgw
