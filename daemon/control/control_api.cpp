#include "daemon/control/control_api.hpp"

#include <array>
#include <charconv>

#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/control/json_body.hpp"
#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/http/message.hpp"
#include "daemon/hub/hub_wire.hpp"
#include "daemon/oauth/device_flow.hpp"
#include "daemon/util/on_worker.hpp"

namespace agentgw {

namespace asio = boost::asio;
using http::HttpStatus;
using nlohmann::json;
using Ctx = http::RequestContext;
using verb = http::beast_http::verb;

// ---- ServiceDirectory --------------------------------------------------------------------

Status ServiceDirectory::reload(std::string_view trigger) {
    Status outcome;
    if (file_.empty()) {
        std::lock_guard lk(mutex_);
        loaded_at_ = clock_.now_secs();
    } else if (auto catalog = ServiceCatalog::load(file_); !catalog) {
        std::lock_guard lk(mutex_);
        last_error_ = catalog.error().message;
        last_error_at_ = clock_.now_secs();
        outcome = catalog.error();
    } else {
        std::lock_guard lk(mutex_);
        catalog_ = std::make_shared<const ServiceCatalog>(std::move(*catalog));
        loaded_at_ = clock_.now_secs();
        last_error_.reset();
    }
    if (observer_) {
        observer_(trigger, outcome);
    }
    return outcome;
}

json ServiceDirectory::state() const {
    std::lock_guard lk(mutex_);
    json out = {{"file", file_.empty() ? json(nullptr) : json(file_.string())},
                {"services", catalog_->services().size()},
                {"loaded_at", rfc3339(loaded_at_)}};
    if (last_error_) {
        out["last_error"] = *last_error_;
        out["last_error_at"] = rfc3339(last_error_at_);
    }
    return out;
}

std::shared_ptr<const ServiceCatalog> ServiceDirectory::current() const {
    std::lock_guard lk(mutex_);
    return catalog_;
}

namespace {

// What a successful handler produced: the answer, and what the audit entry says about it.
struct Done {
    HttpStatus status = HttpStatus::ok;
    json body;  // null for 204
    std::string target;
    json details = json::object();
};

using Step = std::function<asio::awaitable<Result<Done>>(Ctx&)>;

std::string actor_of(const Ctx& c) {
    return fmt::format("uid:{}", c.peer.uid);
}

// The answer to a route that succeeded. Its body may hold a secret handed out once (a new
// agent key, a session, a retrieved blob): the answer keeps its own serialised copy, and the
// tree is wiped.
http::Response respond(Done& d) {
    if (d.status == HttpStatus::no_content) {
        http::Response res{HttpStatus::no_content, 11};
        return res;
    }
    http::Response res = http::json_response(d.status, d.body);
    wipe_json(d.body);
    return res;
}

// Query parameters a route does not name are refused, so that a typo such as
// `?usr=alice` cannot silently widen what a request means.
Status check_query(const Ctx& c, const std::vector<std::string>& allowed) {
    for (const auto& [key, value] : c.query) {
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
            // A query of a bare token or secret ("?sk-...") must not come back in the answer
            // or the audit log.
            return make_error(Code::invalid_argument,
                              quotable_name(key)
                                  ? fmt::format("query parameter \"{}\": unknown", key)
                                  : std::string("an unknown query parameter"));
        }
        if (value.empty()) {
            return make_error(Code::invalid_argument,
                              fmt::format("query parameter \"{}\": empty", key));
        }
    }
    return {};
}

// A read-only route: no audit entry.
http::Handler read_route(Step step, std::vector<std::string> query = {}) {
    return [step = std::move(step),
            query = std::move(query)](Ctx& c) -> asio::awaitable<http::Response> {
        if (auto s = check_query(c, query); !s) {
            co_return http::error_response(s.error());
        }
        auto done = co_await step(c);
        co_return done ? respond(*done) : http::error_response(done.error());
    };
}

// A route that changes something: every outcome, success or not, is audited.
http::Handler action_route(ControlContext& cc, std::string action, Step step,
                           std::vector<std::string> query = {}) {
    return [&cc, action = std::move(action), step = std::move(step),
            query = std::move(query)](Ctx& c) -> asio::awaitable<http::Response> {
        Status valid = check_query(c, query);
        Result<Done> done{make_error(Code::internal, "not run")};
        if (valid) {
            done = co_await step(c);  // (not inside ?: -- GCC 12 miscompiles that)
        } else {
            done = std::move(valid).error();
        }
        if (!done) {
            http::Response res = http::error_response(done.error());
            // The route, not the target: a query string may hold what should never be kept.
            const std::string_view target = c.req.target();
            const AuditEvent event{actor_of(c),
                                   action,
                                   std::string(target.substr(0, target.find('?'))),
                                   std::string(res[std::string_view("Agentgw-Error")]),
                                   {{"message", done.error().message}}};
            co_await cc.audit.append(event);
            co_return res;
        }
        const AuditEvent event{actor_of(c), action, done->target, "ok", done->details};
        co_await cc.audit.append(event);
        co_return respond(*done);
    };
}

json seed1_agent(const Agent& a, int64_t now) {
    const int64_t left = a.key_expires_at - now;
    return {{"agent_id", a.id},
            {"name", a.name},
            {"description", a.description},
            {"allowed_services", a.allowed_services()},
            {"rate_limit",
             {{"requests", a.rate_limit.requests}, {"window_secs", a.rate_limit.window_secs}}},
            {"expires_at", rfc3339(a.key_expires_at)},
            {"lifespan_days", a.lifespan_days},
            {"days_until_expiry", left > 0 ? left / 86400 : 0},
            {"is_expired", left <= 0}};
}

json agent_json(const Agent& a, const std::string& username, int64_t now) {
    json grants = json::array();
    for (const auto& g : a.grants) {
        grants.push_back(
            {{"service_id", g.service_id}, {"methods", g.methods}, {"paths", g.paths}});
    }
    return {{"agent_id", a.id},
            {"name", a.name},
            {"user_id", a.user_id},
            {"username", username},
            {"description", a.description},
            {"allowed_services", a.allowed_services()},
            {"grants", grants},
            {"enabled", a.enabled},
            {"rate_limit",
             {{"requests", a.rate_limit.requests}, {"window_secs", a.rate_limit.window_secs}}},
            {"lifespan_days", a.lifespan_days},
            {"key_expires_at", rfc3339(a.key_expires_at)},
            {"is_expired", a.key_expires_at <= now},
            {"generation", a.generation},
            {"created_at", rfc3339(a.created_at)}};
}

Status check_service(const ControlContext& cc, std::string_view id) {
    if (cc.services.current()->find(id) == nullptr) {
        return make_error(Code::not_found, fmt::format("no service named {}", id));
    }
    return {};
}

Status check_methods(const std::vector<std::string>& methods) {
    for (const auto& m : methods) {
        const bool token =
            !m.empty() && m.size() <= 16 && std::all_of(m.begin(), m.end(), [](char ch) {
                return (ch >= 'A' && ch <= 'Z') || ch == '*';
            });
        if (!token) {
            return make_error(Code::invalid_argument,
                              fmt::format("field \"methods\": \"{}\" is not an upper-case HTTP "
                                          "method",
                                          m.substr(0, 32)));
        }
    }
    return {};
}

Status check_paths(const std::vector<std::string>& paths) {
    for (const auto& p : paths) {
        if (p.empty() || p.front() != '/' || p.size() > 512) {
            return make_error(Code::invalid_argument,
                              "field \"paths\": each glob must start with '/' (at most 512 bytes)");
        }
        TRY(check_text("paths", p, 512));
    }
    return {};
}

// The username for an agent listing, tolerating a user deleted meanwhile.
std::string username_of(const Registry& registry, const std::string& user_id) {
    auto user = registry.find_user(user_id);
    return user ? user->username : std::string();
}

void add_seed1_routes(http::Router& r, ControlContext& cc) {
    Registry& reg = cc.registry;

    r.add(verb::post, "/auth/register",
          action_route(cc, "user.create", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"username", "email"});
              if (!body) {
                  co_return body.error();
              }
              auto username = body->string("username");
              auto email = body->string("email");
              if (!username) {
                  co_return username.error();
              }
              if (!email) {
                  co_return email.error();
              }
              if (auto s = check_name("username", *username); !s) {
                  co_return s.error();
              }
              if (auto s = check_email("email", *email); !s) {
                  co_return s.error();
              }
              auto user = co_await reg.create_user(*username, *email);
              if (!user) {
                  co_return user.error();
              }
              co_return Done{HttpStatus::ok,
                             {{"user_id", user->id},
                              {"username", user->username},
                              {"email", user->email},
                              {"message", "User registered"}},
                             "user:" + user->id,
                             {{"username", user->username}}};
          }));

    r.add(verb::post, "/auth/agent",
          action_route(cc, "agent.create", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(
                  c.req.body(),
                  {"user_id", "agent_name", "agent_description", "services", "lifespan_days"});
              if (!body) {
                  co_return body.error();
              }
              auto user_ref = body->string("user_id");
              if (!user_ref) {
                  co_return user_ref.error();
              }
              auto name = body->string("agent_name");
              if (!name) {
                  co_return name.error();
              }
              if (auto s = check_name("agent_name", *name); !s) {
                  co_return s.error();
              }
              auto description = body->optional_string("agent_description");
              if (!description) {
                  co_return description.error();
              }
              if (auto s = check_text("agent_description", description->value_or(""), 1024); !s) {
                  co_return s.error();
              }
              auto services = body->string_list("services");
              if (!services) {
                  co_return services.error();
              }
              auto lifespan = body->optional_int("lifespan_days", 1, 3650);
              if (!lifespan) {
                  co_return lifespan.error();
              }
              auto user = reg.find_user(*user_ref);
              if (!user) {
                  co_return user.error();
              }
              for (const auto& s : *services) {
                  if (auto ok = check_service(cc, s); !ok) {
                      co_return ok.error();
                  }
              }
              NewAgent spec{user->id, *name, description->value_or(""), *services,
                            lifespan->value_or(90)};
              auto issued = co_await reg.create_agent(std::move(spec));
              if (!issued) {
                  co_return issued.error();
              }
              const Agent& a = issued->agent;
              co_return Done{
                  HttpStatus::ok,
                  {{"agent_id", a.id},
                   {"session_id", issued->session},
                   {"agent_name", a.name},
                   {"allowed_services", a.allowed_services()},
                   // The session ends with the key when that comes first.
                   {"expires_in_secs",
                    std::max<int64_t>(0, issued->session_expires_at - reg.clock().now_secs())},
                   {"key_expires_at", rfc3339(a.key_expires_at)},
                   {"lifespan_days", a.lifespan_days},
                   {"api_key", issued->api_key}},
                  "agent:" + a.id,
                  {{"name", a.name}, {"user_id", a.user_id}, {"services", a.allowed_services()}}};
          }));

    r.add(verb::get, "/auth/agent/{agent}",
          read_route([&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              co_return Done{HttpStatus::ok, seed1_agent(*agent, reg.clock().now_secs()), {}, {}};
          }));

    r.add(verb::post, "/auth/agent/{agent}/rotate",
          action_route(cc, "agent.rotate", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"grace_secs"}, true);
              if (!body) {
                  co_return body.error();
              }
              auto grace = body->optional_int("grace_secs", 0, 7 * 86400);
              if (!grace) {
                  co_return grace.error();
              }
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              auto issued = co_await reg.rotate(agent->id, grace->value_or(0));
              if (!issued) {
                  co_return issued.error();
              }
              const Agent& a = issued->agent;
              co_return Done{
                  HttpStatus::ok,
                  {{"agent_id", a.id},
                   {"new_session_id", issued->session},
                   {"expires_at", rfc3339(a.key_expires_at)},
                   {"message", grace->value_or(0) > 0
                                   ? fmt::format("Key rotated; the old key and sessions stay "
                                                 "valid for {} seconds",
                                                 grace->value_or(0))
                                   : std::string("Key rotated; the old key and sessions no "
                                                 "longer work")},
                   {"api_key", issued->api_key}},
                  "agent:" + a.id,
                  {{"generation", a.generation}, {"grace_secs", grace->value_or(0)}}};
          }));

    r.add(verb::post, "/auth/agent/{agent}/services",
          action_route(cc, "agent.grant", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"service_id", "methods", "paths"});
              if (!body) {
                  co_return body.error();
              }
              auto service = body->string("service_id");
              if (!service) {
                  co_return service.error();
              }
              auto methods = body->string_list("methods");
              auto paths = body->string_list("paths");
              if (!methods) {
                  co_return methods.error();
              }
              if (!paths) {
                  co_return paths.error();
              }
              // Checked one by one: GCC 12 mishandles co_return inside a range-for over an
              // initializer list of temporaries.
              Status valid = check_service(cc, *service);
              if (valid) {
                  valid = check_methods(*methods);
              }
              if (valid) {
                  valid = check_paths(*paths);
              }
              if (!valid) {
                  co_return valid.error();
              }
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              Grant grant{*service, *methods, *paths};
              const std::function<Status(Agent&)> change = [grant](Agent& a) -> Status {
                  auto& grants = a.grants;
                  std::erase_if(grants,
                                [&](const Grant& g) { return g.service_id == grant.service_id; });
                  grants.push_back(grant);
                  return {};
              };
              auto updated = co_await reg.update_agent(agent->id, change);
              if (!updated) {
                  co_return updated.error();
              }
              co_return Done{
                  HttpStatus::ok,
                  {{"agent_id", updated->id},
                   {"service_id", *service},
                   {"allowed_services", updated->allowed_services()},
                   {"message", fmt::format("Access to {} granted", *service)}},
                  "agent:" + updated->id,
                  {{"service", "service:" + *service}, {"methods", *methods}, {"paths", *paths}}};
          }));

    r.add(verb::delete_, "/auth/agent/{agent}/services/{service}",
          action_route(cc, "agent.revoke", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              const std::string service = c.param("service");
              const std::function<Status(Agent&)> change = [service](Agent& a) -> Status {
                  if (std::erase_if(a.grants,
                                    [&](const Grant& g) { return g.service_id == service; }) == 0) {
                      return make_error(Code::not_found, fmt::format("agent {} has no grant for {}",
                                                                     a.name, service));
                  }
                  return {};
              };
              auto updated = co_await reg.update_agent(agent->id, change);
              if (!updated) {
                  co_return updated.error();
              }
              co_return Done{HttpStatus::ok,
                             {{"agent_id", updated->id},
                              {"service_id", service},
                              {"allowed_services", updated->allowed_services()},
                              {"message", fmt::format("Access to {} revoked", service)}},
                             "agent:" + updated->id,
                             {{"service", "service:" + service}}};
          }));

    r.add(verb::get, "/auth/services", read_route([&](Ctx&) -> asio::awaitable<Result<Done>> {
              json list = json::array();
              for (const auto& s : cc.services.current()->services()) {
                  list.push_back({{"id", s.id}, {"name", s.name}, {"description", s.description}});
              }
              co_return Done{HttpStatus::ok, {{"services", list}}, {}, {}};
          }));
}

// Resolves a `user=`/`agent=` reference to an id, or 404.
Result<std::string> user_id_of(const Registry& reg, const std::string& ref) {
    TRY_ASSIGN(auto user, reg.find_user(ref));
    return user.id;
}

Result<std::string> agent_id_of(const Registry& reg, const std::string& ref) {
    TRY_ASSIGN(auto agent, reg.find_agent(ref));
    return agent.id;
}

// reauth_required: a refresh was refused, someone must authorise again (agentgw connect);
// expired: the token has run out and nothing can renew it; otherwise active.
std::string_view credential_status(const CredentialInfo& info, int64_t now) {
    if (info.reauth_required) {
        return "reauth_required";
    }
    if (info.expires_at != 0 && info.expires_at <= now && !info.refreshable) {
        return "expired";
    }
    return "active";
}

json credential_json(const Registry& reg, const CredentialInfo& info, int64_t now) {
    json user = nullptr;
    json agent = nullptr;
    if (info.scope == CredentialScope::user) {
        auto u = reg.find_user(info.owner_id);
        user = u ? json(u->username) : json(info.owner_id);
    } else if (info.scope == CredentialScope::agent) {
        auto a = reg.find_agent(info.owner_id);
        agent = a ? json(a->name) : json(info.owner_id);
    }
    return {{"service", info.service},
            {"scope", scope_name(info.scope)},
            {"user", user},
            {"agent", agent},
            {"type", info.type},
            {"expires_at", info.expires_at == 0 ? json(nullptr) : json(rfc3339(info.expires_at))},
            {"status", credential_status(info, now)},
            {"scopes", info.scopes.empty() ? json(nullptr) : json(info.scopes)},
            {"updated_at", rfc3339(info.updated_at)}};
}

void add_user_agent_routes(http::Router& r, ControlContext& cc) {
    Registry& reg = cc.registry;

    r.add(verb::get, "/v1/users", read_route([&](Ctx&) -> asio::awaitable<Result<Done>> {
              auto users = reg.list_users();
              auto agents = reg.list_agents(std::nullopt);
              if (!users) {
                  co_return users.error();
              }
              if (!agents) {
                  co_return agents.error();
              }
              json list = json::array();
              for (const auto& u : *users) {
                  const auto owned =
                      std::count_if(agents->begin(), agents->end(),
                                    [&](const Agent& a) { return a.user_id == u.id; });
                  list.push_back({{"user_id", u.id},
                                  {"username", u.username},
                                  {"email", u.email},
                                  {"created_at", rfc3339(u.created_at)},
                                  {"agents", owned}});
              }
              co_return Done{HttpStatus::ok, {{"users", list}}, {}, {}};
          }));

    r.add(verb::get, "/v1/users/{user}", read_route([&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto user = reg.find_user(c.param("user"));
              if (!user) {
                  co_return user.error();
              }
              auto agents = reg.list_agents(user->id);
              if (!agents) {
                  co_return agents.error();
              }
              co_return Done{HttpStatus::ok,
                             {{"user_id", user->id},
                              {"username", user->username},
                              {"email", user->email},
                              {"created_at", rfc3339(user->created_at)},
                              {"agents", agents->size()}},
                             {},
                             {}};
          }));

    r.add(verb::delete_, "/v1/users/{user}",
          action_route(cc, "user.delete", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto user = reg.find_user(c.param("user"));
              if (!user) {
                  co_return user.error();
              }
              if (auto s = co_await reg.delete_user(user->id); !s) {
                  co_return s.error();
              }
              co_return Done{HttpStatus::no_content,
                             nullptr,
                             "user:" + user->id,
                             {{"username", user->username}}};
          }));

    r.add(verb::get, "/v1/agents",
          read_route(
              [&](Ctx& c) -> asio::awaitable<Result<Done>> {
                  std::optional<std::string> user_id;
                  if (auto ref = c.query_value("user")) {
                      auto id = user_id_of(reg, *ref);
                      if (!id) {
                          co_return id.error();
                      }
                      user_id = *id;
                  }
                  auto agents = reg.list_agents(user_id);
                  if (!agents) {
                      co_return agents.error();
                  }
                  const int64_t now = reg.clock().now_secs();
                  json list = json::array();
                  for (const auto& a : *agents) {
                      list.push_back(agent_json(a, username_of(reg, a.user_id), now));
                  }
                  co_return Done{HttpStatus::ok, {{"agents", list}}, {}, {}};
              },
              {"user"}));

    r.add(verb::get, "/v1/agents/{agent}", read_route([&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              co_return Done{
                  HttpStatus::ok,
                  agent_json(*agent, username_of(reg, agent->user_id), reg.clock().now_secs()),
                  {},
                  {}};
          }));

    r.add(verb::delete_, "/v1/agents/{agent}",
          action_route(cc, "agent.delete", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              if (auto s = co_await reg.delete_agent(agent->id); !s) {
                  co_return s.error();
              }
              co_return Done{
                  HttpStatus::no_content, nullptr, "agent:" + agent->id, {{"name", agent->name}}};
          }));

    for (const bool enable : {true, false}) {
        r.add(verb::post, enable ? "/v1/agents/{agent}/enable" : "/v1/agents/{agent}/disable",
              action_route(
                  cc, enable ? "agent.enable" : "agent.disable",
                  [&, enable](Ctx& c) -> asio::awaitable<Result<Done>> {
                      auto agent = reg.find_agent(c.param("agent"));
                      if (!agent) {
                          co_return agent.error();
                      }
                      const std::function<Status(Agent&)> change = [enable](Agent& a) -> Status {
                          a.enabled = enable;
                          return {};
                      };
                      auto updated = co_await reg.update_agent(agent->id, change);
                      if (!updated) {
                          co_return updated.error();
                      }
                      co_return Done{HttpStatus::ok,
                                     agent_json(*updated, username_of(reg, updated->user_id),
                                                reg.clock().now_secs()),
                                     "agent:" + updated->id,
                                     {}};
                  }));
    }

    r.add(verb::put, "/v1/agents/{agent}/rate-limit",
          action_route(cc, "agent.rate_limit", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"requests", "window_secs"});
              if (!body) {
                  co_return body.error();
              }
              auto requests = body->integer("requests", 1, 1000000);
              if (!requests) {
                  co_return requests.error();
              }
              auto window = body->integer("window_secs", 1, 86400);
              if (!window) {
                  co_return window.error();
              }
              auto agent = reg.find_agent(c.param("agent"));
              if (!agent) {
                  co_return agent.error();
              }
              const RateLimit limit{*requests, *window};
              const std::function<Status(Agent&)> change = [limit](Agent& a) -> Status {
                  a.rate_limit = limit;
                  return {};
              };
              auto updated = co_await reg.update_agent(agent->id, change);
              if (!updated) {
                  co_return updated.error();
              }
              co_return Done{
                  HttpStatus::ok,
                  agent_json(*updated, username_of(reg, updated->user_id), reg.clock().now_secs()),
                  "agent:" + updated->id,
                  {{"requests", limit.requests}, {"window_secs", limit.window_secs}}};
          }));
}

void add_credential_routes(http::Router& r, ControlContext& cc) {
    Registry& reg = cc.registry;

    r.add(verb::put, "/v1/credentials/{service}",
          action_route(cc, "credential.set", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              const std::string service = c.param("service");
              auto body = JsonBody::parse(
                  c.req.body(), {"scope", "user", "agent", "type", "secret", "username", "password",
                                 "access_token", "refresh_token", "expires_in", "scopes"});
              if (!body) {
                  co_return body.error();
              }
              if (auto s = check_service(cc, service); !s) {
                  co_return s.error();
              }
              CredentialInput in;
              in.service = service;
              auto scope = body->optional_string("scope");
              auto type = body->string("type");
              auto user = body->optional_string("user");
              auto agent = body->optional_string("agent");
              auto expires_in = body->optional_int("expires_in", 1, k_max_credential_lifetime_secs);
              if (!scope) {
                  co_return scope.error();
              }
              if (!type) {
                  co_return type.error();
              }
              if (!user) {
                  co_return user.error();
              }
              if (!agent) {
                  co_return agent.error();
              }
              if (!expires_in) {
                  co_return expires_in.error();
              }
              const std::string scope_text = scope->value_or("service");
              if (scope_text == "service") {
                  in.scope = CredentialScope::service;
              } else if (scope_text == "user") {
                  in.scope = CredentialScope::user;
              } else if (scope_text == "agent") {
                  in.scope = CredentialScope::agent;
              } else {
                  co_return make_error(Code::invalid_argument,
                                       "field \"scope\": must be service, user or agent");
              }
              if ((in.scope == CredentialScope::user) != user->has_value()) {
                  co_return make_error(Code::invalid_argument,
                                       "field \"user\": required exactly when scope is user");
              }
              if ((in.scope == CredentialScope::agent) != agent->has_value()) {
                  co_return make_error(Code::invalid_argument,
                                       "field \"agent\": required exactly when scope is agent");
              }
              if (*user) {
                  auto id = user_id_of(reg, **user);
                  if (!id) {
                      co_return id.error();
                  }
                  in.owner_id = *id;
              }
              if (*agent) {
                  auto id = agent_id_of(reg, **agent);
                  if (!id) {
                      co_return id.error();
                  }
                  in.owner_id = *id;
              }
              in.type = *type;
              in.expires_in = *expires_in;
              auto scopes = body->optional_string("scopes");
              if (!scopes) {
                  co_return scopes.error();
              }
              if (*scopes) {
                  if (auto s = check_text("scopes", **scopes, 1024); !s) {
                      co_return s.error();
                  }
                  in.scopes = **scopes;
              }
              // Secrets: read into the wiping input, checked for presence, never echoed.
              const std::array<std::pair<const char*, std::string*>, 5> secret_fields = {{
                  {"secret", &in.secret},
                  {"username", &in.username},
                  {"password", &in.password},
                  {"access_token", &in.access_token},
                  {"refresh_token", &in.refresh_token},
              }};
              for (const auto& [field, slot] : secret_fields) {
                  auto value = body->optional_string(field);
                  if (!value) {
                      co_return value.error();
                  }
                  if (*value) {
                      if ((*value)->empty() || (*value)->size() > 16384) {
                          co_return make_error(
                              Code::invalid_argument,
                              fmt::format("field \"{}\": must be 1 to 16384 bytes", field));
                      }
                      // It goes into a header line: a line break would end that line and
                      // start a header (or a request) of its own.
                      if (http::holds_line_break(**value)) {
                          co_return make_error(
                              Code::invalid_argument,
                              fmt::format("field \"{}\": must not hold CR, LF or NUL", field));
                      }
                      *slot = std::move(**value);
                  }
              }
              auto need = [&](bool ok, std::string_view what) -> Status {
                  return ok ? Status{}
                            : Status{make_error(Code::invalid_argument,
                                                fmt::format("type {} needs {}", in.type, what))};
              };
              Status shape;
              if (in.type == "api_key" || in.type == "client_secret") {
                  shape = need(!in.secret.empty(), "field \"secret\"");
              } else if (in.type == "basic") {
                  shape = need(!in.username.empty() && !in.password.empty(),
                               "fields \"username\" and \"password\"");
              } else if (in.type == "oauth2") {
                  shape = need(!in.access_token.empty() || !in.refresh_token.empty(),
                               "field \"access_token\" or \"refresh_token\"");
              } else {
                  shape = make_error(Code::invalid_argument,
                                     "field \"type\": must be api_key, basic, oauth2 or "
                                     "client_secret");
              }
              // Fields that do not belong to the type are refused rather than stored.
              const bool oauth = in.type == "oauth2";
              const bool basic = in.type == "basic";
              const std::array<std::pair<const char*, bool>, 7> misplaced = {{
                  {"secret", !in.secret.empty() && (oauth || basic)},
                  {"username", !in.username.empty() && !basic},
                  {"password", !in.password.empty() && !basic},
                  {"access_token", !in.access_token.empty() && !oauth},
                  {"refresh_token", !in.refresh_token.empty() && !oauth},
                  {"expires_in", in.expires_in.has_value() && !oauth},
                  {"scopes", !in.scopes.empty() && !oauth},
              }};
              for (const auto& [field, wrong] : misplaced) {
                  if (wrong && shape) {
                      shape = make_error(
                          Code::invalid_argument,
                          fmt::format("field \"{}\": not used by type {}", field, in.type));
                  }
              }
              if (!shape) {
                  co_return shape.error();
              }
              auto info = co_await cc.credentials.set(in);
              if (!info) {
                  co_return info.error();
              }
              co_return Done{
                  HttpStatus::ok,
                  credential_json(reg, *info, reg.clock().now_secs()),
                  "service:" + service,
                  {{"scope", scope_name(in.scope)}, {"owner", in.owner_id}, {"type", in.type}}};
          }));

    r.add(verb::get, "/v1/credentials", read_route([&](Ctx&) -> asio::awaitable<Result<Done>> {
              auto list = cc.credentials.list();
              if (!list) {
                  co_return list.error();
              }
              const int64_t now = reg.clock().now_secs();
              json out = json::array();
              for (const auto& info : *list) {
                  out.push_back(credential_json(reg, info, now));
              }
              co_return Done{HttpStatus::ok, {{"credentials", out}}, {}, {}};
          }));

    r.add(verb::delete_, "/v1/credentials/{service}",
          action_route(cc, "credential.delete",
                       [&](Ctx& c) -> asio::awaitable<Result<Done>> {
                           const std::string service = c.param("service");
                           const auto user = c.query_value("user");
                           const auto agent = c.query_value("agent");
                           if (user && agent) {
                               co_return make_error(Code::invalid_argument,
                                                    "give user= or agent=, not both");
                           }
                           CredentialScope scope = CredentialScope::service;
                           std::string owner;
                           if (user || agent) {
                               scope = user ? CredentialScope::user : CredentialScope::agent;
                               auto id = user ? user_id_of(reg, *user) : agent_id_of(reg, *agent);
                               if (!id) {
                                   co_return id.error();
                               }
                               owner = *id;
                           }
                           if (auto s = co_await cc.credentials.remove(service, scope, owner); !s) {
                               co_return s.error();
                           }
                           co_return Done{HttpStatus::no_content,
                                          nullptr,
                                          "service:" + service,
                                          {{"scope", scope_name(scope)}, {"owner", owner}}};
                       },
                       {"user", "agent"}));
}

void add_service_status_audit_routes(http::Router& r, ControlContext& cc) {
    r.add(verb::get, "/v1/services", read_route([&](Ctx&) -> asio::awaitable<Result<Done>> {
              json list = json::array();
              for (const auto& s : cc.services.current()->services()) {
                  list.push_back(to_json(s));
              }
              co_return Done{HttpStatus::ok, {{"services", list}}, {}, {}};
          }));

    r.add(verb::get, "/v1/services/{service}",
          read_route([&](Ctx& c) -> asio::awaitable<Result<Done>> {
              const auto catalog = cc.services.current();
              const Service* s = catalog->find(c.param("service"));
              if (s == nullptr) {
                  co_return make_error(Code::not_found,
                                       fmt::format("no service named {}", c.param("service")));
              }
              co_return Done{HttpStatus::ok, to_json(*s), {}, {}};
          }));

    r.add(verb::post, "/v1/services/reload",
          action_route(cc, "services.reload", [&](Ctx&) -> asio::awaitable<Result<Done>> {
              if (auto s = cc.services.reload("reload requested on the control socket"); !s) {
                  co_return make_error(Code::invalid_argument, s.error().message);
              }
              const size_t n = cc.services.current()->services().size();
              co_return Done{HttpStatus::ok,
                             {{"services", n}, {"message", fmt::format("loaded {} service(s)", n)}},
                             "services",
                             {{"count", n}}};
          }));

    r.add(verb::get, "/v1/status", read_route([&](Ctx&) -> asio::awaitable<Result<Done>> {
              co_return Done{HttpStatus::ok, cc.status(), {}, {}};
          }));

    r.add(verb::get, "/v1/audit",
          read_route(
              [&](Ctx& c) -> asio::awaitable<Result<Done>> {
                  AuditQuery q;
                  auto number = [&](const char* name,
                                    uint64_t max) -> Result<std::optional<uint64_t>> {
                      const auto v = c.query_value(name);
                      if (!v) {
                          return std::optional<uint64_t>{};
                      }
                      uint64_t n = 0;
                      const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
                      if (ec != std::errc{} || end != v->data() + v->size() || n > max) {
                          return make_error(
                              Code::invalid_argument,
                              fmt::format("query \"{}\": must be 0 to {}", name, max));
                      }
                      return std::optional<uint64_t>(n);
                  };
                  auto after = number("after", UINT64_MAX);
                  auto limit = number("limit", 1000);
                  if (!after) {
                      co_return after.error();
                  }
                  if (!limit) {
                      co_return limit.error();
                  }
                  q.after = after->value_or(0);
                  q.limit = limit->value_or(100);
                  if (q.limit == 0) {
                      co_return make_error(Code::invalid_argument,
                                           "query \"limit\": must be 1 to 1000");
                  }
                  if (auto since = c.query_value("since")) {
                      q.since = parse_rfc3339(*since);
                      if (!q.since) {
                          co_return make_error(Code::invalid_argument,
                                               "query \"since\": must be an RFC 3339 UTC time");
                      }
                  }
                  if (auto agent = c.query_value("agent")) {
                      auto id = agent_id_of(cc.registry, *agent);
                      q.agent = id ? *id : *agent;  // a deleted agent's id still matches entries
                  }
                  q.service = c.query_value("service");
                  q.action = c.query_value("action");
                  const auto read_page = [&] { return cc.audit.list(q); };
                  auto page = co_await on_worker(cc.slow_reads, read_page);
                  if (!page) {
                      co_return page.error();
                  }
                  co_return Done{
                      HttpStatus::ok, {{"entries", page->entries}, {"next", page->next}}, {}, {}};
              },
              {"after", "since", "agent", "service", "action", "limit"}));

    r.add(verb::post, "/v1/audit/verify",
          action_route(cc, "audit.verify", [&](Ctx&) -> asio::awaitable<Result<Done>> {
              const auto check_chain = [&] { return cc.audit.verify(); };
              auto v = co_await on_worker(cc.slow_reads, check_chain);
              if (!v) {
                  co_return v.error();
              }
              json body = {{"ok", v->ok},
                           {"entries", v->entries},
                           {"first_seq", v->first_seq},
                           {"last_seq", v->last_seq},
                           {"message", v->message}};
              if (v->broken_seq) {
                  body["broken_seq"] = *v->broken_seq;
              }
              co_return Done{HttpStatus::ok, body, "audit", {{"ok", v->ok}}};
          }));
}

// The hub on behalf of an agent. Tokens travel in bodies, never in a path an error could echo.
void add_hub_routes(http::Router& r, ControlContext& cc) {
    Registry& reg = cc.registry;

    r.add(verb::post, "/v1/hub/publish",
          action_route(cc, "hub.publish", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(),
                                          {"agent", "name", "data", "ttl", "once", "recipients"});
              if (!body) {
                  co_return body.error();
              }
              auto who = body->string("agent");
              if (!who) {
                  co_return who.error();
              }
              auto agent = reg.find_agent(*who);
              if (!agent) {
                  co_return agent.error();
              }
              auto input = blob_input_from(*body, *agent, reg, cc.hub.limits());
              if (!input) {
                  co_return input.error();
              }
              auto published = co_await cc.hub.publish(*input);
              if (!published) {
                  co_return published.error();
              }
              co_return Done{HttpStatus::ok,
                             publish_receipt(*published),
                             "blob:" + published->fingerprint,
                             {{"agent", agent->id},
                              {"name", input->name},
                              {"bytes", input->data.size()},
                              {"ttl", input->ttl_secs},
                              {"once", input->once},
                              {"recipients", input->recipient_ids.size()}}};
          }));

    r.add(verb::post, "/v1/hub/retrieve",
          action_route(cc, "hub.retrieve", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"token", "agent"});
              if (!body) {
                  co_return body.error();
              }
              auto token = body->string("token");
              if (!token) {
                  co_return token.error();
              }
              auto who = body->optional_string("agent");
              if (!who) {
                  co_return who.error();
              }
              std::string agent_id;  // empty: the operator, whom recipients do not restrict
              if (*who) {
                  auto agent = reg.find_agent(**who);
                  if (!agent) {
                      co_return agent.error();
                  }
                  agent_id = agent->id;
              }
              auto blob = co_await cc.hub.retrieve(*token, agent_id);
              if (!blob) {
                  co_return blob.error();
              }
              json details = {{"name", blob->name}, {"once", blob->once}};
              if (!agent_id.empty()) {
                  details["agent"] = agent_id;
              }
              co_return Done{HttpStatus::ok, blob_json(*token, *blob),
                             "blob:" + cc.hub.fingerprint(*token), details};
          }));
}

// OAuth2 device flows (RFC 8628): started here, polled by the daemon, watched by the CLI.
void add_oauth_routes(http::Router& r, ControlContext& cc) {
    Registry& reg = cc.registry;

    r.add(verb::post, "/v1/oauth/device",
          action_route(cc, "oauth.device_start", [&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto body = JsonBody::parse(c.req.body(), {"service", "user", "agent"});
              if (!body) {
                  co_return body.error();
              }
              auto service_id = body->string("service");
              auto user = body->optional_string("user");
              auto agent = body->optional_string("agent");
              if (!service_id) {
                  co_return service_id.error();
              }
              if (!user) {
                  co_return user.error();
              }
              if (!agent) {
                  co_return agent.error();
              }
              if (*user && *agent) {
                  co_return make_error(Code::invalid_argument,
                                       "give \"user\" or \"agent\", not both");
              }
              const auto catalog = cc.services.current();
              const Service* service = catalog->find(*service_id);
              if (service == nullptr) {
                  co_return make_error(Code::not_found,
                                       fmt::format("no service named {}", *service_id));
              }
              CredentialScope scope = CredentialScope::service;
              std::string owner_id;
              if (*user) {
                  auto id = user_id_of(reg, **user);
                  if (!id) {
                      co_return id.error();
                  }
                  scope = CredentialScope::user;
                  owner_id = *id;
              } else if (*agent) {
                  auto id = agent_id_of(reg, **agent);
                  if (!id) {
                      co_return id.error();
                  }
                  scope = CredentialScope::agent;
                  owner_id = *id;
              }
              auto flow = co_await cc.device_flows.start(*service, scope, owner_id);
              if (!flow) {
                  co_return flow.error();
              }
              const std::string flow_id = (*flow)["flow_id"];
              co_return Done{HttpStatus::ok,
                             *flow,
                             "service:" + service->id,
                             {{"flow_id", flow_id}, {"scope", scope_name(scope)}}};
          }));

    r.add(verb::get, "/v1/oauth/device/{flow}",
          read_route([&](Ctx& c) -> asio::awaitable<Result<Done>> {
              auto flow = cc.device_flows.get(c.param("flow"));
              if (!flow) {
                  co_return flow.error();
              }
              co_return Done{HttpStatus::ok, *flow, {}, {}};
          }));
}

}  // namespace

void add_control_routes(http::Router& router, ControlContext& ctx) {
    add_seed1_routes(router, ctx);
    add_user_agent_routes(router, ctx);
    add_credential_routes(router, ctx);
    add_service_status_audit_routes(router, ctx);
    add_hub_routes(router, ctx);
    add_oauth_routes(router, ctx);
}

}  // namespace agentgw
