#include "daemon/credentials/credential_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/vault/async_write.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

// service \0 scope \0 owner: all of one service's credentials sort together.
std::string record_key(std::string_view service, CredentialScope scope, std::string_view owner_id) {
    std::string key(service);
    key.push_back('\0');
    key.append(scope_name(scope));
    key.push_back('\0');
    key.append(owner_id);
    return key;
}

// Bound on resolve()'s answers kept; past it they start over (a miss costs one vault read).
constexpr size_t k_max_resolved = 4096;

// Whether the proxy can get a new access token for it without the operator.
bool refreshable(const json& j) {
    const std::string type = j.value("type", "");
    return type == "client_secret" || (type == "oauth2" && j.contains("refresh_token"));
}

Result<CredentialInfo> info_from(std::string_view key, const SecretBytes& bytes) {
    json j = json::parse(as_view(bytes), nullptr, false);
    const auto scope = j.is_object() ? parse_scope(j.value("scope", "")) : std::nullopt;
    if (!scope) {
        return make_error(Code::corrupt, "a stored credential is malformed");
    }
    CredentialInfo info{j.value("service", ""),
                        *scope,
                        j.value("owner_id", ""),
                        j.value("type", ""),
                        j.value("expires_at", int64_t{0}),
                        j.value("updated_at", int64_t{0}),
                        refreshable(j),
                        j.value("status", "") == "reauth_required",
                        std::string(key),
                        j.value("scopes", "")};
    wipe_json(j);
    return info;
}

// The record under `key` inside `txn`, checked against the generation the caller read.
Result<json> record_at(const ReadTxn& txn, const std::string& key, uint64_t generation) {
    TRY_ASSIGN(auto bytes, txn.get(Table::credentials, key));
    if (!bytes) {
        return make_error(Code::conflict, "the credential was removed meanwhile");
    }
    json j = json::parse(as_view(*bytes), nullptr, false);
    if (!j.is_object()) {
        return make_error(Code::corrupt, "a stored credential is malformed");
    }
    if (j.value("generation", uint64_t{0}) != generation) {
        wipe_json(j);
        return make_error(Code::conflict, "the credential changed meanwhile");
    }
    return j;
}

// Seals `j` into `key` and wipes the secrets it held.
Status put_record(WriteTxn& txn, const std::string& key, json& j) {
    std::string text = j.dump();
    wipe_json(j);
    const Status s = txn.put(Table::credentials, key, text);
    wipe(text);
    return s;
}

}  // namespace

std::optional<CredentialScope> parse_scope(std::string_view name) noexcept {
    if (name == "service") {
        return CredentialScope::service;
    }
    if (name == "user") {
        return CredentialScope::user;
    }
    if (name == "agent") {
        return CredentialScope::agent;
    }
    return std::nullopt;
}

std::string_view scope_name(CredentialScope scope) noexcept {
    switch (scope) {
        case CredentialScope::service:
            return "service";
        case CredentialScope::user:
            return "user";
        case CredentialScope::agent:
            return "agent";
    }
    return "service";
}

CredentialInput::~CredentialInput() {
    wipe(secret);
    wipe(username);
    wipe(password);
    wipe(access_token);
    wipe(refresh_token);
}

boost::asio::awaitable<Result<CredentialInfo>> CredentialStore::set(const CredentialInput& in,
                                                                    const Vault::WriteFn& with) {
    const int64_t now = clock_.now_secs();
    CredentialInfo info{
        in.service,
        in.scope,
        in.owner_id,
        in.type,
        in.expires_in ? now + *in.expires_in : 0,
        now,
        in.type == "client_secret" || (in.type == "oauth2" && !in.refresh_token.empty()),
        false,
        record_key(in.service, in.scope, in.owner_id),
        in.scopes};
    json record = {{"service", in.service},         {"scope", scope_name(in.scope)},
                   {"owner_id", in.owner_id},       {"type", in.type},
                   {"expires_at", info.expires_at}, {"updated_at", now}};
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"secret", &in.secret},
          {"username", &in.username},
          {"password", &in.password},
          {"access_token", &in.access_token},
          {"refresh_token", &in.refresh_token}}) {
        if (!value->empty()) {
            record[name] = *value;
        }
    }
    if (!in.scopes.empty()) {
        record["scopes"] = in.scopes;
    }
    std::string sealed_input = record.dump();
    wipe_json(record);  // the tree held copies of the secrets
    const std::string key = record_key(in.service, in.scope, in.owner_id);
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        // The owner is checked again here, in the same transaction as the write: a user or
        // agent deleted meanwhile must not be left holding a secret nothing will remove.
        if (in.scope != CredentialScope::service) {
            const Table owners = in.scope == CredentialScope::user ? Table::users : Table::agents;
            TRY_ASSIGN(auto owner, txn.get(owners, in.owner_id));
            if (!owner) {
                return make_error(Code::not_found, fmt::format("the {} of this credential no "
                                                               "longer exists",
                                                               scope_name(in.scope)));
            }
        }
        // A new generation, so that a refresh of the record this one replaces cannot land on it;
        // a first one is random, so a record deleted and created again does not repeat it.
        uint64_t generation = 0;
        randombytes_buf(&generation, sizeof generation);
        TRY_ASSIGN(auto previous, txn.get(Table::credentials, key));
        if (previous) {
            json old = json::parse(as_view(*previous), nullptr, false);
            generation = old.is_object() ? old.value("generation", uint64_t{0}) + 1 : 0;
            if (old.is_object()) {
                wipe_json(old);
            }
        }
        json j = json::parse(sealed_input);
        j["generation"] = generation;
        TRY(put_record(txn, key, j));
        return with ? with(txn) : Status{};
    };
    const Status s = co_await commit(write);
    wipe(sealed_input);
    if (!s) {
        co_return s.error();
    }
    co_return info;
}

Result<std::vector<CredentialInfo>> CredentialStore::list() const {
    std::vector<CredentialInfo> out;
    Status inner;
    TRY(vault_.read([&](const ReadTxn& txn) {
        return txn.scan(Table::credentials, "", [&](std::string_view key, SecretBytes value) {
            auto info = info_from(key, value);
            if (!info) {
                inner = std::move(info).error();
                return false;
            }
            out.push_back(std::move(*info));
            return true;
        });
    }));
    TRY(std::move(inner));
    return out;
}

ResolvedCredential::~ResolvedCredential() {
    wipe(secret);
    wipe(username);
    wipe(password);
    wipe(access_token);
}

Result<std::shared_ptr<const ResolvedCredential>> CredentialStore::resolve(
    std::string_view service, std::string_view user_id, std::string_view agent_id) const {
    // The version is read before the records (see Vault::version).
    const uint64_t version = vault_.version(Table::credentials);
    std::string key(service);
    key.append(1, '\0').append(user_id).append(1, '\0').append(agent_id);
    {
        const std::lock_guard lock(cache_mutex_);
        if (version != resolved_version_) {
            // The table changed: every answer kept may be out of date, and a removed or
            // replaced secret should not stay in memory, so all are dropped (and wiped).
            resolved_.clear();
            resolved_version_ = version;
        } else if (auto it = resolved_.find(key); it != resolved_.end()) {
            return it->second;
        }
    }
    TRY_ASSIGN(auto credential, read_resolved(service, user_id, agent_id));
    const std::lock_guard lock(cache_mutex_);
    if (version == resolved_version_) {
        if (resolved_.size() >= k_max_resolved) {
            resolved_.clear();
        }
        resolved_.insert_or_assign(std::move(key), credential);
    }
    return credential;
}

boost::asio::awaitable<Status> CredentialStore::commit(const Vault::WriteFn& write) {
    Status s = co_await async_write(vault_, write);
    forget_resolved();
    co_return s;
}

void CredentialStore::forget_resolved() const {
    const std::lock_guard lock(cache_mutex_);
    resolved_.clear();
}

Result<std::shared_ptr<const ResolvedCredential>> CredentialStore::read_resolved(
    std::string_view service, std::string_view user_id, std::string_view agent_id) const {
    std::shared_ptr<ResolvedCredential> out;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        const std::pair<CredentialScope, std::string_view> order[] = {
            {CredentialScope::agent, agent_id},
            {CredentialScope::user, user_id},
            {CredentialScope::service, {}},
        };
        for (const auto& [scope, owner] : order) {
            TRY_ASSIGN(auto bytes, txn.get(Table::credentials, record_key(service, scope, owner)));
            if (!bytes) {
                continue;
            }
            json j = json::parse(as_view(*bytes), nullptr, false);
            if (!j.is_object()) {
                return make_error(Code::corrupt, "a stored credential is malformed");
            }
            out = std::make_shared<ResolvedCredential>();
            out->scope = scope;
            out->type = j.value("type", "");
            out->expires_at = j.value("expires_at", int64_t{0});
            out->key = record_key(service, scope, owner);
            out->generation = j.value("generation", uint64_t{0});
            out->refreshable = refreshable(j);
            out->reauth_required = j.value("status", "") == "reauth_required";
            for (auto& [name, field] :
                 {std::pair<const char*, std::string*>{"secret", &out->secret},
                  {"username", &out->username},
                  {"password", &out->password},
                  {"access_token", &out->access_token}}) {
                if (auto it = j.find(name); it != j.end() && it->is_string()) {
                    *field = it->get<std::string>();
                }
            }
            wipe_json(j);
            return {};
        }
        return {};
    }));
    return std::shared_ptr<const ResolvedCredential>(std::move(out));
}

boost::asio::awaitable<Status> CredentialStore::remove(const std::string& service,
                                                       CredentialScope scope,
                                                       const std::string& owner_id) {
    const std::string key = record_key(service, scope, owner_id);
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(bool existed, txn.erase(Table::credentials, key));
        if (!existed) {
            return make_error(Code::not_found, fmt::format("no {}-scoped credential for service {}",
                                                           scope_name(scope), service));
        }
        return {};
    };
    co_return co_await commit(write);
}

OAuthTokens::~OAuthTokens() {
    wipe(access_token);
    wipe(refresh_token);
    wipe(client_secret);
}

RefreshedTokens::~RefreshedTokens() {
    wipe(access_token);
    wipe(refresh_token);
}

Result<std::optional<std::unique_ptr<OAuthTokens>>> CredentialStore::load_tokens(
    std::string_view key) const {
    std::optional<std::unique_ptr<OAuthTokens>> out;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(auto bytes, txn.get(Table::credentials, key));
        if (!bytes) {
            return {};
        }
        json j = json::parse(as_view(*bytes), nullptr, false);
        if (!j.is_object()) {
            return make_error(Code::corrupt, "a stored credential is malformed");
        }
        auto t = std::make_unique<OAuthTokens>();
        t->key = std::string(key);
        t->service = j.value("service", "");
        t->type = j.value("type", "");
        t->access_token = j.value("access_token", "");
        t->refresh_token = j.value("refresh_token", "");
        t->client_secret = t->type == "client_secret" ? j.value("secret", "") : "";
        t->expires_at = j.value("expires_at", int64_t{0});
        t->lifetime = j.value("lifetime", int64_t{0});
        t->generation = j.value("generation", uint64_t{0});
        t->reauth_required = j.value("status", "") == "reauth_required";
        wipe_json(j);
        out = std::move(t);
        return {};
    }));
    return out;
}

boost::asio::awaitable<Status> CredentialStore::store_tokens(const std::string& key,
                                                             uint64_t generation,
                                                             const RefreshedTokens& tokens) {
    const int64_t now = clock_.now_secs();
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(json j, record_at(txn, key, generation));
        j["access_token"] = tokens.access_token;
        if (!tokens.refresh_token.empty()) {
            j["refresh_token"] = tokens.refresh_token;  // rotated; else the old one stays
        }
        if (!tokens.scopes.empty()) {
            j["scopes"] = tokens.scopes;
        }
        j["expires_at"] = tokens.expires_in > 0 ? now + tokens.expires_in : 0;
        j["lifetime"] = tokens.expires_in;
        j["generation"] = generation + 1;
        j["updated_at"] = now;
        j.erase("status");
        return put_record(txn, key, j);
    };
    co_return co_await commit(write);
}

boost::asio::awaitable<Status> CredentialStore::mark_reauth_required(const std::string& key,
                                                                     uint64_t generation) {
    const int64_t now = clock_.now_secs();
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(json j, record_at(txn, key, generation));
        j["status"] = "reauth_required";
        j["generation"] = generation + 1;
        j["updated_at"] = now;
        return put_record(txn, key, j);
    };
    co_return co_await commit(write);
}

Status CredentialStore::remove_owned(WriteTxn& txn, const std::string& owner_id) {
    std::vector<std::string> doomed;
    TRY(txn.scan(Table::credentials, "", [&](std::string_view key, SecretBytes value) {
        auto info = info_from(key, value);
        if (info && info->scope != CredentialScope::service && info->owner_id == owner_id) {
            doomed.emplace_back(key);
        }
        return true;
    }));
    for (const auto& key : doomed) {
        TRY(txn.erase(Table::credentials, key));
    }
    return {};
}

}  // namespace agentgw
