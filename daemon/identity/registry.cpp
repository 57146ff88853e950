#include "daemon/identity/registry.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/credentials/credential_store.hpp"
#include "daemon/crypto/encoding.hpp"
#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/vault/async_write.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

constexpr std::string_view k_keyring_key = "session_keyring";
constexpr std::string_view k_agent_key_domain = "agent-key";
constexpr size_t k_key_random_bytes = 32;

std::string hash_key(const Vault& vault, std::string_view api_key) {
    const LookupHash h = vault.cipher().lookup_hash(k_agent_key_domain, api_key);
    return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

std::string generate_api_key() {
    unsigned char bytes[k_key_random_bytes];
    randombytes_buf(bytes, sizeof bytes);
    std::string key = std::string(Registry::k_key_prefix) + base64url_encode({bytes, sizeof bytes});
    sodium_memzero(bytes, sizeof bytes);
    return key;
}

json grant_json(const Grant& g) {
    return {{"service_id", g.service_id}, {"methods", g.methods}, {"paths", g.paths}};
}

json to_json(const User& u) {
    return {
        {"id", u.id}, {"username", u.username}, {"email", u.email}, {"created_at", u.created_at}};
}

json to_json(const Agent& a) {
    json grants = json::array();
    for (const auto& g : a.grants) {
        grants.push_back(grant_json(g));
    }
    return {{"id", a.id},
            {"user_id", a.user_id},
            {"name", a.name},
            {"description", a.description},
            {"grants", grants},
            {"rate_limit",
             {{"requests", a.rate_limit.requests}, {"window_secs", a.rate_limit.window_secs}}},
            {"lifespan_days", a.lifespan_days},
            {"key_expires_at", a.key_expires_at},
            {"created_at", a.created_at},
            {"generation", a.generation},
            {"enabled", a.enabled},
            {"key_hash", base64url_encode(a.key_hash)},
            {"previous_key_hash", base64url_encode(a.previous_key_hash)},
            {"previous_generation", a.previous_generation},
            {"previous_valid_until", a.previous_valid_until}};
}

// Stored records were written by this code; a record that does not parse is corruption.
template <typename T>
Result<T> parse_record(const SecretBytes& bytes, std::string_view what, T (*from)(const json&)) {
    const json j = json::parse(as_view(bytes), nullptr, false);
    if (!j.is_object()) {
        return make_error(Code::corrupt, fmt::format("a stored {} record is malformed", what));
    }
    try {
        return from(j);
    } catch (const json::exception&) {
        return make_error(Code::corrupt, fmt::format("a stored {} record is malformed", what));
    }
}

User user_from(const json& j) {
    return {j.at("id").get<std::string>(), j.at("username").get<std::string>(),
            j.at("email").get<std::string>(), j.at("created_at").get<int64_t>()};
}

Agent agent_from(const json& j) {
    Agent a;
    a.id = j.at("id").get<std::string>();
    a.user_id = j.at("user_id").get<std::string>();
    a.name = j.at("name").get<std::string>();
    a.description = j.at("description").get<std::string>();
    for (const auto& g : j.at("grants")) {
        a.grants.push_back({g.at("service_id").get<std::string>(),
                            g.at("methods").get<std::vector<std::string>>(),
                            g.at("paths").get<std::vector<std::string>>()});
    }
    a.rate_limit = {j.at("rate_limit").at("requests").get<int64_t>(),
                    j.at("rate_limit").at("window_secs").get<int64_t>()};
    a.lifespan_days = j.at("lifespan_days").get<int64_t>();
    a.key_expires_at = j.at("key_expires_at").get<int64_t>();
    a.created_at = j.at("created_at").get<int64_t>();
    a.generation = j.at("generation").get<uint64_t>();
    a.enabled = j.at("enabled").get<bool>();
    a.key_hash = base64url_decode(j.at("key_hash").get<std::string>()).value_or("");
    a.previous_key_hash =
        base64url_decode(j.at("previous_key_hash").get<std::string>()).value_or("");
    a.previous_generation = j.at("previous_generation").get<uint64_t>();
    a.previous_valid_until = j.at("previous_valid_until").get<int64_t>();
    return a;
}

Result<std::optional<User>> read_user(const ReadTxn& txn, std::string_view name_or_id) {
    TRY_ASSIGN(auto record, txn.get(Table::users, name_or_id));
    if (!record) {
        TRY_ASSIGN(auto id, txn.get(Table::user_names, name_or_id));
        if (!id) {
            return std::optional<User>{};
        }
        TRY_ASSIGN(record, txn.get(Table::users, as_view(*id)));
        if (!record) {
            return make_error(Code::corrupt, "a username points to a missing user");
        }
    }
    TRY_ASSIGN(auto user, parse_record<User>(*record, "user", user_from));
    return std::optional<User>(std::move(user));
}

Result<std::optional<Agent>> read_agent(const ReadTxn& txn, std::string_view name_or_id) {
    TRY_ASSIGN(auto record, txn.get(Table::agents, name_or_id));
    if (!record) {
        TRY_ASSIGN(auto id, txn.get(Table::agent_names, name_or_id));
        if (!id) {
            return std::optional<Agent>{};
        }
        TRY_ASSIGN(record, txn.get(Table::agents, as_view(*id)));
        if (!record) {
            return make_error(Code::corrupt, "an agent name points to a missing agent");
        }
    }
    TRY_ASSIGN(auto agent, parse_record<Agent>(*record, "agent", agent_from));
    return std::optional<Agent>(std::move(agent));
}

Status put_agent(WriteTxn& txn, const Agent& a) {
    return txn.put(Table::agents, a.id, to_json(a).dump());
}

Error no_such(std::string_view what, std::string_view name) {
    return make_error(Code::not_found, fmt::format("no {} named {}", what, name));
}

}  // namespace

std::string new_id() {
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // RFC 9562 version 4
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
    char hex[33];
    sodium_bin2hex(hex, sizeof hex, b, sizeof b);
    const std::string h(hex);
    return fmt::format("{}-{}-{}-{}-{}", h.substr(0, 8), h.substr(8, 4), h.substr(12, 4),
                       h.substr(16, 4), h.substr(20));
}

std::vector<std::string> Agent::allowed_services() const {
    std::vector<std::string> out;
    for (const auto& g : grants) {
        out.push_back(g.service_id);
    }
    return out;
}

const Grant* Agent::grant_for(std::string_view service_id) const {
    for (const auto& g : grants) {
        if (g.service_id == service_id) {
            return &g;
        }
    }
    return nullptr;
}

Registry::Registry(Vault& vault, const Clock& clock, SessionKeyring keyring,
                   int64_t session_ttl_secs)
    : vault_(vault), clock_(clock), keyring_(std::move(keyring)), session_ttl_(session_ttl_secs) {}

Result<SessionKeyring> Registry::load_keyring(Vault& vault) {
    TRY_ASSIGN(auto stored, vault.get(Table::settings, k_keyring_key));
    if (!stored) {
        // First start: one random signing key. Later key rotation adds kids beside it.
        char kid_hex[17];
        unsigned char kid_bytes[8];
        randombytes_buf(kid_bytes, sizeof kid_bytes);
        sodium_bin2hex(kid_hex, sizeof kid_hex, kid_bytes, sizeof kid_bytes);
        SecureBuffer key = SecureBuffer::random(SessionKeyring::k_key_size);
        json record = {{"current", kid_hex}, {"keys", {{kid_hex, base64url_encode(key.span())}}}};
        std::string text = record.dump();
        wipe_json(record);
        const Status stored = vault.write(
            [&](WriteTxn& txn) { return txn.insert(Table::settings, k_keyring_key, text); });
        wipe(text);
        TRY(stored);
        key.make_readonly();
        return SessionKeyring::create(kid_hex, std::move(key));
    }
    json record = json::parse(as_view(*stored), nullptr, false);
    // The tree holds every signing key, base64-encoded: wiped however this ends.
    struct WipeOnExit {
        json& tree;
        ~WipeOnExit() { wipe_json(tree); }
    } wipe_record{record};
    if (!record.is_object() || !record.contains("current") || !record["current"].is_string() ||
        !record.contains("keys") || !record["keys"].is_object()) {
        return make_error(Code::corrupt, "the stored session keyring is malformed");
    }
    const std::string current = record["current"].get<std::string>();
    std::optional<SessionKeyring> keyring;
    std::vector<std::pair<std::string, SecureBuffer>> others;
    for (const auto& [kid, encoded] : record["keys"].items()) {
        auto raw = encoded.is_string() ? base64url_decode(encoded.get_ref<const std::string&>())
                                       : std::nullopt;
        if (!raw || raw->size() != SessionKeyring::k_key_size) {
            return make_error(Code::corrupt, "the stored session keyring is malformed");
        }
        SecureBuffer key(raw->size());
        std::copy(raw->begin(), raw->end(), key.data());
        sodium_memzero(raw->data(), raw->size());
        key.make_readonly();
        if (kid == current) {
            TRY_ASSIGN(keyring, SessionKeyring::create(kid, std::move(key)));
        } else {
            others.emplace_back(kid, std::move(key));
        }
    }
    if (!keyring) {
        return make_error(Code::corrupt, "the stored session keyring has no current key");
    }
    for (auto& [kid, key] : others) {
        TRY(keyring->add(kid, std::move(key)));
    }
    return std::move(*keyring);
}

Result<User> Registry::find_user(std::string_view name_or_id) const {
    std::optional<User> user;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(user, read_user(txn, name_or_id));
        return {};
    }));
    if (!user) {
        return no_such("user", name_or_id);
    }
    return std::move(*user);
}

Result<std::vector<User>> Registry::list_users() const {
    std::vector<User> out;
    Status inner;
    TRY(vault_.read([&](const ReadTxn& txn) {
        return txn.scan(Table::users, "", [&](std::string_view, SecretBytes value) {
            auto user = parse_record<User>(value, "user", user_from);
            if (!user) {
                inner = std::move(user).error();
                return false;
            }
            out.push_back(std::move(*user));
            return true;
        });
    }));
    TRY(std::move(inner));
    std::sort(out.begin(), out.end(),
              [](const User& a, const User& b) { return a.username < b.username; });
    return out;
}

namespace {
// Bounds on the caches; past them a cache starts over (a miss costs one vault read).
constexpr size_t k_max_cached_agents = 4096;
constexpr size_t k_max_cached_sessions = 16384;
}  // namespace

boost::asio::awaitable<Status> Registry::commit(const Vault::WriteFn& write) {
    Status s = co_await async_write(vault_, write);
    version_.fetch_add(1);
    co_return s;
}

Result<Agent> Registry::agent_by_id(std::string_view id) const {
    // The version is read before the vault: an entry read before a write commits is stale
    // once that write bumps the version.
    const uint64_t version = version_.load();
    {
        const std::lock_guard lock(cache_mutex_);
        if (auto it = agents_.find(std::string(id));
            it != agents_.end() && it->second.version == version) {
            return it->second.agent;
        }
    }
    auto agent = find_agent(id);
    if (agent && agent->id == id) {
        const std::lock_guard lock(cache_mutex_);
        if (agents_.size() >= k_max_cached_agents) {
            agents_.clear();
        }
        agents_.insert_or_assign(agent->id, CachedAgent{version, *agent});
    }
    return agent;
}

Result<SessionClaims> Registry::session_claims(std::string_view token, int64_t now) const {
    unsigned char digest[32];
    crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(token.data()),
                       token.size(), nullptr, 0);
    const std::string key(reinterpret_cast<const char*>(digest), sizeof digest);
    {
        const std::lock_guard lock(cache_mutex_);
        if (auto it = sessions_.find(key); it != sessions_.end()) {
            const SessionClaims& c = it->second;
            if (now < c.exp && c.nbf <= now) {
                return c;
            }
            sessions_.erase(it);  // near or past its edges: let full verification decide
        }
    }
    auto claims = verify_session(token, keyring_, now);
    if (claims) {
        const std::lock_guard lock(cache_mutex_);
        if (sessions_.size() >= k_max_cached_sessions) {
            sessions_.clear();
        }
        sessions_.insert_or_assign(key, *claims);
    }
    return claims;
}

Result<Agent> Registry::find_agent(std::string_view name_or_id) const {
    std::optional<Agent> agent;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(agent, read_agent(txn, name_or_id));
        return {};
    }));
    if (!agent) {
        return no_such("agent", name_or_id);
    }
    return std::move(*agent);
}

Result<std::vector<Agent>> Registry::list_agents(const std::optional<std::string>& user_id) const {
    std::vector<Agent> out;
    Status inner;
    TRY(vault_.read([&](const ReadTxn& txn) {
        return txn.scan(Table::agents, "", [&](std::string_view, SecretBytes value) {
            auto agent = parse_record<Agent>(value, "agent", agent_from);
            if (!agent) {
                inner = std::move(agent).error();
                return false;
            }
            if (!user_id || agent->user_id == *user_id) {
                out.push_back(std::move(*agent));
            }
            return true;
        });
    }));
    TRY(std::move(inner));
    std::sort(out.begin(), out.end(),
              [](const Agent& a, const Agent& b) { return a.name < b.name; });
    return out;
}

boost::asio::awaitable<Result<User>> Registry::create_user(const std::string& username,
                                                           const std::string& email) {
    User user{new_id(), username, email, clock_.now_secs()};
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        if (auto taken = txn.insert(Table::user_names, user.username, user.id); !taken) {
            if (taken.error().code == Code::conflict) {
                return make_error(Code::conflict,
                                  fmt::format("username {} is taken", user.username));
            }
            return taken;
        }
        return txn.insert(Table::users, user.id, to_json(user).dump());
    };
    const Status s = co_await commit(write);
    if (!s) {
        co_return s.error();
    }
    co_return user;
}

boost::asio::awaitable<Status> Registry::delete_user(const std::string& user_id) {
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto user, read_user(txn, user_id));
        if (!user) {
            return no_such("user", user_id);
        }
        size_t owned = 0;
        TRY(txn.scan(Table::agents, "", [&](std::string_view, SecretBytes value) {
            auto agent = parse_record<Agent>(value, "agent", agent_from);
            owned += agent && agent->user_id == user->id ? 1 : 0;
            return true;
        }));
        if (owned > 0) {
            return make_error(Code::conflict,
                              fmt::format("user {} still owns {} agent(s); delete them first",
                                          user->username, owned));
        }
        TRY(txn.erase(Table::users, user->id));
        TRY(txn.erase(Table::user_names, user->username));
        return CredentialStore::remove_owned(txn, user->id);
    };
    co_return co_await commit(write);
}

IssuedKey::~IssuedKey() {
    wipe(api_key);
    wipe(session);
}

boost::asio::awaitable<Result<IssuedKey>> Registry::create_agent(const NewAgent& spec) {
    const int64_t now = clock_.now_secs();
    IssuedKey issued;
    issued.api_key = generate_api_key();
    Agent& a = issued.agent;
    a.id = new_id();
    a.user_id = spec.user_id;
    a.name = spec.name;
    a.description = spec.description;
    for (const auto& service : spec.services) {
        if (a.grant_for(service) == nullptr) {
            a.grants.push_back({service, {}, {}});
        }
    }
    a.lifespan_days = spec.lifespan_days;
    a.key_expires_at = now + spec.lifespan_days * 86400;
    a.created_at = now;
    a.key_hash = hash_key(vault_, issued.api_key);

    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto owner, txn.get(Table::users, a.user_id));
        if (!owner) {
            return no_such("user", a.user_id);
        }
        if (auto taken = txn.insert(Table::agent_names, a.name, a.id); !taken) {
            if (taken.error().code == Code::conflict) {
                return make_error(Code::conflict, fmt::format("agent name {} is taken", a.name));
            }
            return taken;
        }
        TRY(txn.insert(Table::agent_keys, a.key_hash, a.id));
        return txn.insert(Table::agents, a.id, to_json(a).dump());
    };
    const Status s = co_await commit(write);
    if (!s) {
        co_return s.error();
    }
    issued.session = issue_session(a, issued.session_expires_at);
    co_return issued;
}

boost::asio::awaitable<Result<IssuedKey>> Registry::rotate(const std::string& agent_id,
                                                           int64_t grace_secs) {
    const int64_t now = clock_.now_secs();
    IssuedKey issued;
    issued.api_key = generate_api_key();
    const std::string new_hash = hash_key(vault_, issued.api_key);
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto found, read_agent(txn, agent_id));
        if (!found) {
            return no_such("agent", agent_id);
        }
        Agent a = std::move(*found);
        if (!a.previous_key_hash.empty()) {
            TRY(txn.erase(Table::agent_keys, a.previous_key_hash));
        }
        if (grace_secs > 0) {
            a.previous_key_hash = a.key_hash;
            a.previous_generation = a.generation;
            // Never past the old key's own expiry: a grace period must not revive it.
            a.previous_valid_until = std::min(now + grace_secs, a.key_expires_at);
        } else {
            TRY(txn.erase(Table::agent_keys, a.key_hash));
            a.previous_key_hash.clear();
            a.previous_generation = 0;
            a.previous_valid_until = 0;
        }
        a.key_hash = new_hash;
        a.generation += 1;
        a.key_expires_at = now + a.lifespan_days * 86400;
        TRY(txn.insert(Table::agent_keys, a.key_hash, a.id));
        TRY(put_agent(txn, a));
        issued.agent = std::move(a);
        return {};
    };
    const Status s = co_await commit(write);
    if (!s) {
        co_return s.error();
    }
    issued.session = issue_session(issued.agent, issued.session_expires_at);
    co_return issued;
}

boost::asio::awaitable<Result<Agent>> Registry::update_agent(
    const std::string& agent_id, const std::function<Status(Agent&)>& change) {
    Agent updated;
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto found, read_agent(txn, agent_id));
        if (!found) {
            return no_such("agent", agent_id);
        }
        TRY(change(*found));
        TRY(put_agent(txn, *found));
        updated = std::move(*found);
        return {};
    };
    const Status s = co_await commit(write);
    if (!s) {
        co_return s.error();
    }
    co_return updated;
}

boost::asio::awaitable<Status> Registry::delete_agent(const std::string& agent_id) {
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto found, read_agent(txn, agent_id));
        if (!found) {
            return no_such("agent", agent_id);
        }
        TRY(txn.erase(Table::agents, found->id));
        TRY(txn.erase(Table::agent_names, found->name));
        TRY(txn.erase(Table::agent_keys, found->key_hash));
        if (!found->previous_key_hash.empty()) {
            TRY(txn.erase(Table::agent_keys, found->previous_key_hash));
        }
        return CredentialStore::remove_owned(txn, found->id);
    };
    co_return co_await commit(write);
}

std::variant<Agent, AuthError> Registry::check_agent_state(Agent agent) const {
    if (!agent.enabled) {
        return AuthError{AuthFailure::disabled, fmt::format("agent {} is disabled", agent.name),
                         agent.id};
    }
    return agent;
}

namespace {

// A failed vault read while checking a credential: not the caller's fault, and not a failed
// login either.
AuthError unreadable(const Error& e) {
    return AuthError{AuthFailure::unavailable, "cannot check the credential: " + e.message};
}

}  // namespace

std::variant<Agent, AuthError> Registry::authenticate_key(std::string_view api_key,
                                                          KeyUse* used) const {
    const AuthError invalid{AuthFailure::unauthorized, "invalid API key"};
    if (!api_key.starts_with(k_key_prefix) || api_key.size() > 128) {
        return invalid;
    }
    const std::string hash = hash_key(vault_, api_key);
    std::string agent_id;
    const Status s = vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(auto id, txn.get(Table::agent_keys, hash));
        if (id) {
            agent_id = std::string(as_view(*id));
        }
        return {};
    });
    if (!s) {
        return unreadable(s.error());
    }
    if (agent_id.empty()) {
        return invalid;
    }
    auto agent = agent_by_id(agent_id);
    if (!agent) {
        return agent.error().code == Code::not_found ? invalid : unreadable(agent.error());
    }
    const int64_t now = clock_.now_secs();
    auto matches = [&](const std::string& stored) {
        return stored.size() == hash.size() &&
               sodium_memcmp(stored.data(), hash.data(), hash.size()) == 0;
    };
    if (matches(agent->key_hash)) {
        if (now >= agent->key_expires_at) {
            return AuthError{AuthFailure::key_expired, "API key expired; rotate it", agent->id};
        }
        if (used != nullptr) {
            *used = KeyUse::current;
        }
        return check_agent_state(std::move(*agent));
    }
    if (matches(agent->previous_key_hash) && now < agent->previous_valid_until) {
        if (used != nullptr) {
            *used = KeyUse::previous;
        }
        return check_agent_state(std::move(*agent));
    }
    return invalid;
}

std::variant<Agent, AuthError> Registry::authenticate_session(std::string_view token) const {
    const int64_t now = clock_.now_secs();
    auto claims = session_claims(token, now);
    if (!claims) {
        return AuthError{is_session_expired(claims.error()) ? AuthFailure::session_expired
                                                            : AuthFailure::unauthorized,
                         claims.error().message};
    }
    auto agent = agent_by_id(claims->sub);
    if (!agent && agent.error().code != Code::not_found) {
        return unreadable(agent.error());
    }
    if (!agent || agent->id != claims->sub) {
        return AuthError{AuthFailure::unauthorized, "the session's agent no longer exists"};
    }
    const bool current = claims->gen == agent->generation;
    const bool in_grace = agent->previous_generation != 0 &&
                          claims->gen == agent->previous_generation &&
                          now < agent->previous_valid_until;
    if (!current && !in_grace) {
        return AuthError{AuthFailure::unauthorized,
                         "the session predates a key rotation; log in again"};
    }
    // A session lasts no longer than the key it came from (the token's own expiry, capped so
    // at issue, is read with 60 s of leeway).
    if (current && now >= agent->key_expires_at) {
        return AuthError{AuthFailure::key_expired, "API key expired; rotate it", agent->id};
    }
    return check_agent_state(std::move(*agent));
}

std::string Registry::issue_session(const Agent& agent, int64_t& expires_at, KeyUse used) const {
    const int64_t now = clock_.now_secs();
    expires_at = now + session_ttl_;
    uint64_t generation = agent.generation;
    if (used == KeyUse::previous) {
        generation = agent.previous_generation;
        expires_at = std::min(expires_at, agent.previous_valid_until);
    } else {
        expires_at = std::min(expires_at, agent.key_expires_at);
    }
    unsigned char jti[16];
    randombytes_buf(jti, sizeof jti);
    SessionClaims claims{agent.id, generation, now,
                         now,      expires_at, base64url_encode({jti, sizeof jti})};
    return ::agentgw::issue_session(claims, keyring_);
}

}  // namespace agentgw
