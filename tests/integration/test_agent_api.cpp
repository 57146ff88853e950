// The agent API (SPEC §3.1, §3.2 discovery, §3.4, §10 failed-login limits) against the real
// agentgwd over TCP: login and sessions, failed-login limiting per name and per address, health
// and Prometheus metrics, GET /api discovery, HTTP/1.1 keep-alive, pipelining and protocol-level
// refusals on a raw socket, and the official OpenAI Node SDK streaming through the proxy.
#include <chrono>
#include <ctime>
#include <regex>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/raw_connection.hpp"
#include "tests/support/test_upstream.hpp"

#ifndef AGENTGW_NODE_DIR
#error "AGENTGW_NODE_DIR (the path of tests/node) must be defined by the build"
#endif

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::optional<std::string>>;

constexpr const char* k_upstream_secret = "sk-test-upstream-secret";

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

std::string joined(const Args& args) {
    std::string out;
    for (const auto& a : args) {
        out += (out.empty() ? "" : " ") + a;
    }
    return out;
}

// A body that must be a JSON document; `discarded` when it is not.
json parsed(const std::string& body) {
    return json::parse(body, nullptr, false);
}

// An agentgwd with its own state, a services file and a CLI bound to its control socket.
struct Gateway {
    TempDir dir;
    RunningDaemon daemon;
    std::string url;  // "http://127.0.0.1:PORT"

    explicit Gateway(const json& services, const Args& extra = {}) {
        write_file(dir / "services.json", services.dump());
        Args args = {"--services", (dir / "services.json").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        daemon = start_daemon(daemon_args(dir, args));
        url = daemon.base_url;
    }

    // `agentgw --json args...` that must succeed with one JSON document.
    json ok(const Args& args, const std::optional<std::string>& stdin_data = std::nullopt) {
        Args argv = {AGENTGW_CLI_PATH, "--socket", daemon.socket.string(), "--json"};
        argv.insert(argv.end(), args.begin(), args.end());
        const RunResult r = run(argv, {}, stdin_data);
        INFO("agentgw --json " << joined(args) << " -> exit " << r.code << "\nstdout: " << r.out
                               << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        json doc = parsed(r.out);
        REQUIRE_FALSE(doc.is_discarded());
        return doc;
    }

    // A new agent of `user` granted `services`; returns its API key.
    std::string agent(const std::string& user, const std::string& name,
                      const std::vector<std::string>& services) {
        Args args = {"agent", "create", "--user", user, "--name", name};
        for (const auto& s : services) {
            args.insert(args.end(), {"--service", s});
        }
        const json created = ok(args);
        REQUIRE(created["api_key"].is_string());
        const std::string key = created["api_key"];
        REQUIRE(key.rfind("agw_", 0) == 0);
        return key;
    }

    void user(const std::string& name) {
        ok({"user", "add", name, "--email", name + "@example.com"});
    }

    void credential(const std::string& service, const std::string& secret) {
        ok({"credential", "set", service}, secret + "\n");
    }

    // From `source` (an address in 127.0.0.0/8) when given.
    HttpReply login(const std::string& name, const std::string& key,
                    const std::string& source = {}) const {
        return http_request("POST", url + "/login", {}, {"x-api-key: " + key, "username: " + name},
                            {}, source);
    }

    HttpReply get(const std::string& path, const std::vector<std::string>& headers = {}) const {
        return http_request("GET", url + path, {}, headers);
    }
};

// A services file entry.
json service(const std::string& id, const std::string& base_url, const std::string& description,
             const json& allow = nullptr) {
    json s = {{"id", id},
              {"name", "Service " + id},
              {"description", description},
              {"base_url", base_url},
              {"auth", {{"type", "bearer"}}}};
    if (!allow.is_null()) {
        s["allow"] = allow;
    }
    return s;
}

json services_file(std::initializer_list<json> entries) {
    json list = json::array();
    for (const auto& e : entries) {
        list.push_back(e);
    }
    return {{"services", list}};
}

// A gateway error: the status, `Agentgw-Error: type` and the JSON shape {"error","message"}.
void check_error(const HttpReply& r, long status, const std::string& type) {
    INFO("status " << r.status << " body " << r.body << " " << r.error);
    CHECK(r.status == status);
    CHECK(header(r, "agentgw-error") == type);
    const json body = parsed(r.body);
    REQUIRE(body.is_object());
    CHECK(body.value("error", "") == type);
    CHECK(body["message"].is_string());
    CHECK(body.size() == 2);
}

// The one answer for every wrong name/key pair (SPEC §3.1).
void check_invalid_login(const HttpReply& r) {
    INFO("status " << r.status << " body " << r.body << " " << r.error);
    CHECK(r.status == 401);
    CHECK(header(r, "agentgw-error") == "unauthorized");
    CHECK(parsed(r.body) ==
          json{{"error", "unauthorized"}, {"message", "Invalid username or API key"}});
}

// A header that must hold a whole number within [lo, hi].
void check_number_header(const HttpReply& r, const std::string& name, long lo, long hi) {
    const std::string value = header(r, name);
    INFO(name << ": \"" << value << "\"");
    REQUIRE(std::regex_match(value, std::regex("[0-9]+")));
    CHECK(std::stol(value) >= lo);
    CHECK(std::stol(value) <= hi);
}

// Seconds since the epoch of a strict RFC 3339 UTC time ("2025-01-02T03:04:05Z", optionally with
// fractional seconds), or nullopt.
std::optional<int64_t> parse_utc(const std::string& text) {
    std::smatch m;
    if (!std::regex_match(
            text, m, std::regex(R"((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z)"))) {
        return std::nullopt;
    }
    std::tm tm{};
    tm.tm_year = std::stoi(m[1]) - 1900;
    tm.tm_mon = std::stoi(m[2]) - 1;
    tm.tm_mday = std::stoi(m[3]);
    tm.tm_hour = std::stoi(m[4]);
    tm.tm_min = std::stoi(m[5]);
    tm.tm_sec = std::stoi(m[6]);
    return static_cast<int64_t>(::timegm(&tm));
}

int64_t now_secs() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The value of the sample line `series` (name and labels exactly) in a Prometheus text body.
std::optional<double> sample(const std::string& text, const std::string& series) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.size() > series.size() && line.rfind(series + " ", 0) == 0) {
            return std::stod(line.substr(series.size() + 1));
        }
    }
    return std::nullopt;
}

// Whether a sample line starts with `prefix` (a name and the start of its labels).
bool has_sample_starting(const std::string& text, const std::string& prefix) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(prefix, 0) == 0) {
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// A raw TCP connection, for what a well-behaved client library will not send.

// A protocol-level refusal: one JSON error response in the SPEC's shape, then a closed connection.
void check_refused_and_closed(RawConnection& c, int status, const std::string& type) {
    const auto r = c.next();
    INFO("unparsed: " << c.unparsed());
    REQUIRE(r.has_value());
    INFO("status " << r->status << " body " << r->body);
    CHECK(r->status == status);
    CHECK(r->field("agentgw-error") == type);
    CHECK(contains(r->field("content-type"), "application/json"));
    const json body = parsed(r->body);
    REQUIRE(body.is_object());
    CHECK(body.value("error", "") == type);
    CHECK(body["message"].is_string());
    CHECK(c.closed());
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("POST /login trades an agent's name and key for a session", "[agent_api][login]") {
    TempDir up_dir;
    TestUpstream upstream(up_dir.path());
    Gateway g(services_file({service("up", upstream.base_url(), "test upstream")}),
              {"--session-ttl", "120"});
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"up"});
    const std::string other_key = g.agent("alice", "other", {"up"});
    g.credential("up", k_upstream_secret);

    // Success: exactly {token, expires_at}, expiring session_ttl from now.
    const int64_t before = now_secs();
    const HttpReply ok = g.login("worker", key);
    const int64_t after = now_secs();
    INFO("login: " << ok.status << " " << ok.body);
    REQUIRE(ok.status == 200);
    CHECK(contains(header(ok, "content-type"), "application/json"));
    const json session = parsed(ok.body);
    REQUIRE(session.is_object());
    CHECK(session.size() == 2);
    REQUIRE(session["token"].is_string());
    REQUIRE(session["expires_at"].is_string());
    const std::string token = session["token"];
    CHECK_FALSE(token.empty());
    CHECK_FALSE(contains(token, key));
    const auto expires = parse_utc(session["expires_at"]);
    INFO("expires_at " << session["expires_at"]);
    REQUIRE(expires.has_value());
    CHECK(*expires >= before + 120 - 2);
    CHECK(*expires <= after + 120 + 2);

    // The session works both ways on the proxy; the upstream sees only the service's secret.
    upstream.clear_requests();
    const HttpReply by_session = g.get("/api/up/echo/session", {"X-Session-ID: " + token});
    INFO(by_session.body);
    CHECK(by_session.status == 200);
    const HttpReply by_bearer = g.get("/api/up/echo/bearer", {"Authorization: Bearer " + token});
    INFO(by_bearer.body);
    CHECK(by_bearer.status == 200);
    {
        const auto seen = upstream.requests();
        REQUIRE(seen.size() == 2);
        CHECK(seen[0]["path"] == "/echo/session");
        CHECK(seen[1]["path"] == "/echo/bearer");
        for (const auto& req : seen) {
            CHECK(recorded_header(req, "authorization") ==
                  std::string("Bearer ") + k_upstream_secret);
            CHECK_FALSE(recorded_contains(req, token));
            CHECK(recorded_header(req, "x-session-id").empty());
        }
    }
    const HttpReply discovery = g.get("/api", {"X-Session-ID: " + token});
    CHECK(discovery.status == 200);
    CHECK(parsed(discovery.body).value("agent", "") == "worker");

    // One answer for every wrong pair.
    check_invalid_login(g.login("worker", "agw_" + std::string(43, 'A')));  // wrong key
    std::string near_miss = key;
    near_miss.back() = near_miss.back() == 'A' ? 'B' : 'A';
    check_invalid_login(g.login("worker", near_miss));  // one character off
    check_invalid_login(g.login("nobody", key));        // wrong name
    check_invalid_login(g.login("worker", other_key));  // a real key, of another agent
    check_invalid_login(g.login("other", key));
    check_invalid_login(http_request("POST", g.url + "/login"));  // nothing at all
    // Name and key swapped: the audit log names no agent, and holds no key. A name that only
    // begins like a key is still named.
    check_invalid_login(g.login(key, "worker"));
    check_invalid_login(g.login("agw_ci", key));
    std::string logins;  // the audit log is written off the request path: wait for the last
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
        logins = g.ok({"audit", "--action", "login", "--limit", "1000"}).dump();
        if (contains(logins, "agent-name:agw_ci") || std::chrono::steady_clock::now() > deadline) {
            break;
        }
        std::this_thread::sleep_for(100ms);
    }
    CHECK(contains(logins, "agent-name:(not an agent name)"));
    CHECK(contains(logins, "agent-name:nobody"));
    CHECK(contains(logins, "agent-name:agw_ci"));
    CHECK_FALSE(contains(logins, key));

    // Only POST.
    check_error(g.get("/login"), 405, "method_not_allowed");

    // A disabled agent with the right key is told so; with a wrong one it learns nothing.
    g.ok({"agent", "disable", "worker"});
    check_error(g.login("worker", key), 403, "forbidden");
    check_invalid_login(g.login("worker", "agw_" + std::string(43, 'B')));
    check_error(g.get("/api", {"X-Session-ID: " + token}), 403, "forbidden");
    check_error(g.get("/api/up/echo/x", {"Authorization: Bearer " + key}), 403, "forbidden");
    g.ok({"agent", "enable", "worker"});
    CHECK(g.login("worker", key).status == 200);

    // Rotation: the old key and the sessions issued with it stop working at once.
    const json rotated = g.ok({"agent", "rotate", "worker"});
    REQUIRE(rotated["api_key"].is_string());
    const std::string new_key = rotated["api_key"];
    CHECK(new_key != key);
    check_invalid_login(g.login("worker", key));
    check_error(g.get("/api", {"X-Session-ID: " + token}), 401, "unauthorized");
    check_error(g.get("/api/up/echo/x", {"Authorization: Bearer " + key}), 401, "unauthorized");
    const HttpReply fresh = g.login("worker", new_key);
    CHECK(fresh.status == 200);
    const std::string new_token = parsed(fresh.body).value("token", "");
    CHECK(g.get("/api/up/echo/again", {"X-Session-ID: " + new_token}).status == 200);
    CHECK(g.login("other", other_key).status == 200);  // the other agent is untouched

    // Rotation with grace: the old key still logs in, but its session ends with the grace
    // (30 s here), not session_ttl (120 s) later; the new key's session gets the full ttl.
    const json graced = g.ok({"agent", "rotate", "worker", "--grace", "30"});
    const std::string newest_key = graced.value("api_key", "");
    const int64_t rotated_at = now_secs();
    const HttpReply by_old_key = g.login("worker", new_key);
    INFO("login with the old key: " << by_old_key.status << " " << by_old_key.body);
    REQUIRE(by_old_key.status == 200);
    const auto old_key_expiry = parse_utc(parsed(by_old_key.body).value("expires_at", ""));
    REQUIRE(old_key_expiry.has_value());
    CHECK(*old_key_expiry <= rotated_at + 30 + 2);
    const std::string grace_token = parsed(by_old_key.body).value("token", "");
    CHECK(g.get("/api/up/echo/grace", {"X-Session-ID: " + grace_token}).status == 200);
    const HttpReply by_newest = g.login("worker", newest_key);
    REQUIRE(by_newest.status == 200);
    const auto newest_expiry = parse_utc(parsed(by_newest.body).value("expires_at", ""));
    REQUIRE(newest_expiry.has_value());
    CHECK(*newest_expiry >= rotated_at + 120 - 2);
}

TEST_CASE("failed logins are limited per agent name", "[agent_api][login][ratelimit]") {
    Gateway g(services_file({service("svc", "http://127.0.0.1:9", "unused")}));
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"svc"});
    const std::string helper_key = g.agent("alice", "helper", {"svc"});

    for (int i = 0; i < 10; ++i) {
        const std::string wrong = "agw_" + std::string(42, 'A') + static_cast<char>('a' + i);
        const HttpReply r = g.login("worker", wrong);
        INFO("failure " << i + 1);
        check_invalid_login(r);
    }

    // The 11th attempt is refused before the key is looked at, right key or not.
    const HttpReply limited = g.login("worker", key);
    check_error(limited, 429, "rate_limit_exceeded");
    check_number_header(limited, "retry-after", 1, 600);
    CHECK(header(limited, "ratelimit-limit") == "10");
    CHECK(header(limited, "ratelimit-remaining") == "0");
    check_number_header(limited, "ratelimit-reset", 1, 600);
    check_error(g.login("worker", "agw_" + std::string(43, 'C')), 429, "rate_limit_exceeded");

    // Another name from the same address is not affected.
    const HttpReply helper = g.login("helper", helper_key);
    INFO(helper.body);
    CHECK(helper.status == 200);
    check_invalid_login(g.login("helper", key));
    // The limit is on logins only: the agent's key still works on the API.
    CHECK(g.get("/api", {"Authorization: Bearer " + key}).status == 200);
}

TEST_CASE("failed logins are limited per client address", "[agent_api][login][ratelimit]") {
    Gateway g(services_file({service("svc", "http://127.0.0.1:9", "unused")}));
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"svc"});

    // 49 failures spread over ten names, none of which reaches its own limit of 10, and over
    // addresses of 127.0.0.0/8, which any local process may connect from: all one client.
    for (int i = 0; i < 49; ++i) {
        const std::string source = "127.0." + std::to_string(i % 7) + "." + std::to_string(i + 1);
        const HttpReply r =
            g.login("ghost-" + std::to_string(i % 10), "agw_" + std::string(43, 'Z'), source);
        INFO("failure " << i + 1 << " from " << source << ": " << r.error);
        REQUIRE(r.status == 401);
    }
    CHECK(g.login("worker", key).status == 200);  // a success does not count
    check_invalid_login(g.login("ghost-9", "agw_" + std::string(43, 'Z')));  // the 50th failure

    const HttpReply limited = g.login("worker", key);
    check_error(limited, 429, "rate_limit_exceeded");
    check_number_header(limited, "retry-after", 1, 600);
    CHECK(header(limited, "ratelimit-limit") == "50");
    CHECK(header(limited, "ratelimit-remaining") == "0");
    check_error(g.login("never-seen", "agw_" + std::string(43, 'Y')), 429, "rate_limit_exceeded");
    check_error(g.login("worker", key, "127.200.1.2"), 429, "rate_limit_exceeded");
}

TEST_CASE("GET /healthz and GET /metrics", "[agent_api][metrics]") {
    TempDir up_dir;
    TestUpstream upstream(up_dir.path());
    const RefusingPort dead;
    const std::string dead_url = dead.url();
    Gateway g(services_file({service("up", upstream.base_url(), "test upstream"),
                             service("dead", dead_url, "nothing listens")}));
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"up", "dead"});
    g.credential("up", k_upstream_secret);
    g.credential("dead", "sk-dead-secret");

    const HttpReply health = g.get("/healthz");
    CHECK(health.status == 200);
    CHECK(contains(header(health, "content-type"), "application/json"));
    CHECK(parsed(health.body) == json{{"status", "ok"}});

    // Something for each family: a proxied 200, a 502 from a refused connection, a login 429.
    const HttpReply proxied = g.get("/api/up/echo/metrics", {"Authorization: Bearer " + key});
    INFO(proxied.body);
    CHECK(proxied.status == 200);
    check_error(g.get("/api/dead/anything", {"Authorization: Bearer " + key}), 502,
                "upstream_error");
    for (int i = 0; i < 10; ++i) {
        REQUIRE(g.login("nobody", "agw_" + std::string(43, 'Q')).status == 401);
    }
    check_error(g.login("nobody", "agw_" + std::string(43, 'Q')), 429, "rate_limit_exceeded");
    const HttpReply login = g.login("worker", key);
    REQUIRE(login.status == 200);
    const std::string token = parsed(login.body).value("token", "");

    const HttpReply metrics = g.get("/metrics");
    REQUIRE(metrics.status == 200);
    CHECK(header(metrics, "content-type").rfind("text/plain; version=0.0.4", 0) == 0);
    const std::string& text = metrics.body;
    INFO(text);
    CHECK(contains(text, "# TYPE agentgw_http_requests_total counter\n"));
    CHECK(sample(text, R"(agentgw_http_requests_total{route="/api/{service}",status="200"})")
              .value_or(0) >= 1);
    CHECK(sample(text, R"(agentgw_http_requests_total{route="/api/{service}",status="502"})")
              .value_or(0) >= 1);
    CHECK(
        sample(text, R"(agentgw_http_requests_total{route="/healthz",status="200"})").value_or(0) >=
        1);
    CHECK(contains(text, "# TYPE agentgw_proxy_request_duration_seconds histogram\n"));
    CHECK(has_sample_starting(
        text, R"(agentgw_proxy_request_duration_seconds_bucket{service="up",le=")"));
    CHECK(
        sample(text, R"(agentgw_proxy_request_duration_seconds_count{service="up"})").value_or(0) >=
        1);
    CHECK(contains(text, "# TYPE agentgw_rate_limit_rejections_total counter\n"));
    CHECK(sample(text, R"(agentgw_rate_limit_rejections_total{scope="login"})").value_or(0) >= 1);
    CHECK(contains(text, "# TYPE agentgw_upstream_errors_total counter\n"));
    CHECK(has_sample_starting(text, R"(agentgw_upstream_errors_total{service="dead",)"));
    CHECK(contains(text, "# TYPE agentgw_audit_queue_depth gauge\n"));
    CHECK(sample(text, "agentgw_audit_queue_depth").has_value());

    // No secret of any kind.
    CHECK_FALSE(contains(text, k_upstream_secret));
    CHECK_FALSE(contains(text, "sk-dead-secret"));
    CHECK_FALSE(contains(text, key));
    CHECK_FALSE(token.empty());
    CHECK_FALSE(contains(text, token));
    CHECK_FALSE(contains(text, "agw_"));
}

TEST_CASE("GET /api lists the calling agent's services only", "[agent_api][discovery]") {
    Gateway g(
        services_file({service("llm", "http://127.0.0.1:9", "LLM API",
                               json::array({{{"methods", {"GET", "POST"}}, {"paths", {"/v1/*"}}}})),
                       service("code", "http://127.0.0.1:9", "Code hosting"),
                       service("hidden", "http://127.0.0.1:9", "Not for worker")}));
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"llm"});
    g.ok({"agent", "grant", "worker", "code", "--method", "GET", "--path", "/repos/*"});
    const std::string other_key = g.agent("alice", "other", {"hidden"});

    const HttpReply r = g.get("/api", {"Authorization: Bearer " + key});
    INFO(r.body);
    REQUIRE(r.status == 200);
    CHECK(contains(header(r, "content-type"), "application/json"));
    // Discovery is not counted, and the agent has made no counted call: nothing to reset.
    CHECK_FALSE(header(r, "ratelimit-limit").empty());
    CHECK(header(r, "ratelimit-remaining") == header(r, "ratelimit-limit"));
    CHECK(header(r, "ratelimit-reset") == "0");
    const json doc = parsed(r.body);
    REQUIRE(doc.is_object());
    CHECK(doc.size() == 2);
    CHECK(doc["agent"] == "worker");
    REQUIRE(doc["services"].is_array());
    CHECK(doc["services"].size() == 2);
    std::map<std::string, json> by_id;
    for (const auto& s : doc["services"]) {
        CHECK(s.size() == 5);  // id, name, description, methods, paths: no base URL, no auth
        by_id[s.value("id", "")] = s;
    }
    REQUIRE(by_id.contains("llm"));
    REQUIRE(by_id.contains("code"));
    CHECK_FALSE(by_id.contains("hidden"));
    CHECK(by_id["llm"]["name"] == "Service llm");
    CHECK(by_id["llm"]["description"] == "LLM API");
    CHECK(by_id["llm"]["methods"] == json{"GET", "POST"});  // the service's allow rules
    CHECK(by_id["llm"]["paths"] == json{"/v1/*"});
    CHECK(by_id["code"]["description"] == "Code hosting");
    CHECK(by_id["code"]["methods"] == json{"GET"});  // the grant's narrowing
    CHECK(by_id["code"]["paths"] == json{"/repos/*"});

    // Another agent sees its own grants; a session answers the same as the key.
    const json other = parsed(g.get("/api", {"Authorization: Bearer " + other_key}).body);
    CHECK(other.value("agent", "") == "other");
    REQUIRE(other["services"].is_array());
    REQUIRE(other["services"].size() == 1);
    CHECK(other["services"][0]["id"] == "hidden");
    const std::string token = parsed(g.login("worker", key).body).value("token", "");
    CHECK(parsed(g.get("/api", {"X-Session-ID: " + token}).body) == doc);

    // Credentials are required.
    check_error(g.get("/api"), 401, "unauthorized");
    check_error(g.get("/api", {"Authorization: Bearer agw_" + std::string(43, 'A')}), 401,
                "unauthorized");
    check_error(g.get("/api", {"X-Session-ID: not-a-session"}), 401, "unauthorized");
    check_error(g.get("/api", {"Authorization: Basic dXNlcjpwYXNz"}), 401, "unauthorized");
}

TEST_CASE("the agent listener keeps connections alive, pipelines and refuses bad framing",
          "[agent_api][http]") {
    Gateway g(services_file({service("svc", "http://127.0.0.1:9", "unused")}));

    SECTION("two requests in one write get two responses, in order") {
        RawConnection c(port_of(g.url));
        c.send(
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
        for (int i = 0; i < 2; ++i) {
            const auto r = c.next();
            REQUIRE(r.has_value());
            CHECK(r->status == 200);
            CHECK(parsed(r->body) == json{{"status", "ok"}});
        }
        // Still open: a third request, in its own write, on the same connection.
        c.send("GET /login HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        const auto third = c.next();
        REQUIRE(third.has_value());
        CHECK(third->status == 405);
        CHECK(c.closed());
    }

    SECTION("pipelined requests to the router and the proxy keep their order") {
        RawConnection c(port_of(g.url));
        c.send(
            "GET /login HTTP/1.1\r\nHost: gw\r\n\r\n"
            "GET /api/svc/first HTTP/1.1\r\nHost: gw\r\n\r\n"
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            "GET /api/nosuch/second HTTP/1.1\r\nHost: gw\r\n\r\n"
            "GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        const std::vector<int> expected = {405, 401, 200, 401, 200};
        for (size_t i = 0; i < expected.size(); ++i) {
            const auto r = c.next();
            INFO("response " << i + 1);
            REQUIRE(r.has_value());
            CHECK(r->status == expected[i]);
        }
        CHECK(c.closed());
    }

    SECTION("headers over 16 KiB get 431") {
        {
            RawConnection c(port_of(g.url));  // just under the limit is fine
            c.send("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: " + std::string(15 * 1024, 'a') +
                   "\r\nConnection: close\r\n\r\n");
            const auto r = c.next();
            REQUIRE(r.has_value());
            CHECK(r->status == 200);
        }
        RawConnection c(port_of(g.url));
        c.send("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: " + std::string(17 * 1024, 'a') +
               "\r\n\r\n");
        const auto r = c.next();
        REQUIRE(r.has_value());
        INFO(r->body);
        CHECK(r->status == 431);
        const json body = parsed(r->body);
        REQUIRE(body.is_object());
        REQUIRE(body["error"].is_string());
        CHECK(r->field("agentgw-error") == body["error"].get<std::string>());
        CHECK(body["message"].is_string());
        CHECK(c.closed());
    }

    SECTION("Transfer-Encoding other than chunked is refused and the connection closed") {
        RawConnection c(port_of(g.url));
        c.send(
            "POST /login HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n"
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
        check_refused_and_closed(c, 400, "bad_request");  // nothing answers the smuggled GET
    }

    SECTION("a Transfer-Encoding other than chunked on the proxy route") {
        RawConnection c(port_of(g.url));
        c.send("POST /api/svc/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n");
        check_refused_and_closed(c, 400, "bad_request");
    }

    SECTION("a header value holding a NUL") {
        RawConnection c(port_of(g.url));
        c.send("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Bad: a\0b\r\n\r\n"s);
        check_refused_and_closed(c, 400, "bad_request");
    }

    SECTION("a header value holding a bare CR") {
        RawConnection c(port_of(g.url));
        c.send("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Bad: a\rb\r\n\r\n");
        check_refused_and_closed(c, 400, "bad_request");
    }

    SECTION("a header value holding a NUL, on the proxy route") {
        RawConnection c(port_of(g.url));
        c.send("GET /api/svc/x HTTP/1.1\r\nHost: gw\r\nX-Bad: a\0b\r\n\r\n"s);
        check_refused_and_closed(c, 400, "bad_request");
    }

    // The listener is unharmed by all of the above.
    CHECK(g.get("/healthz").status == 200);
}

TEST_CASE("the agent listener reads no large body before it knows the sender",
          "[agent_api][http][limits]") {
    Gateway g(services_file({service("svc", "http://127.0.0.1:9", "unused")}));
    g.user("alice");
    const std::string key = g.agent("alice", "alice-agent", {});
    const HttpReply login = g.login("alice-agent", key);
    REQUIRE(login.status == 200);
    const std::string session = parsed(login.body).value("token", "");
    const std::string publish_head =
        "POST /secure/agent/publish HTTP/1.1\r\nHost: gw\r\n"
        "Content-Type: application/json\r\n";

    SECTION("a publish without valid credentials is answered from its head alone") {
        for (const std::string& credentials : {
                 std::string(),
                 "x-api-key: " + key + "\r\n",
                 "x-api-key: " + key + "\r\nAuthorization: Bearer not-a-session\r\n",
                 "x-api-key: agw_wrong\r\nAuthorization: Bearer " + session + "\r\n",
             }) {
            INFO("credentials " << credentials);
            RawConnection c(port_of(g.url));
            // Announces 2 MiB (allowed to an agent) and sends none of it: the answer cannot wait.
            c.send(publish_head + credentials + "Content-Length: 2097152\r\n\r\n");
            const auto r = c.next();
            REQUIRE(r.has_value());
            CHECK(r->status == 401);
            CHECK(r->field("agentgw-error") == "unauthorized");
            CHECK(c.closed());
        }
        // Asked to confirm first, it answers instead of inviting the body.
        RawConnection asked(port_of(g.url));
        asked.send(publish_head + "Expect: 100-continue\r\nContent-Length: 100\r\n\r\n");
        const auto refused = asked.next();
        REQUIRE(refused.has_value());
        CHECK(refused->status == 401);
        // With no body left unread, the connection stays open for the next request.
        RawConnection kept(port_of(g.url));
        kept.send(publish_head + "Content-Length: 0\r\n\r\n");
        const auto empty = kept.next();
        REQUIRE(empty.has_value());
        CHECK(empty->status == 401);
        kept.send("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
        const auto next = kept.next();
        REQUIRE(next.has_value());
        CHECK(next->status == 200);
    }

    SECTION("routes that take no body refuse a large one unread") {
        for (const std::string& head : {
                 "POST /login HTTP/1.1\r\nHost: gw\r\nusername: alice-agent\r\nx-api-key: " + key +
                     "\r\n",
                 std::string("POST /nosuch HTTP/1.1\r\nHost: gw\r\n"),
                 "DELETE /secure/retrieve/abc HTTP/1.1\r\nHost: gw\r\nx-api-key: " + key +
                     "\r\nAuthorization: Bearer " + session + "\r\n",
             }) {
            INFO("head " << head);
            RawConnection c(port_of(g.url));
            c.send(head + "Content-Length: 16385\r\n\r\n");
            const auto r = c.next();
            REQUIRE(r.has_value());
            CHECK(r->status == 413);
            CHECK(c.closed());
        }
        // A small body is still read and ignored: the login works.
        RawConnection c(port_of(g.url));
        c.send("POST /login HTTP/1.1\r\nHost: gw\r\nusername: alice-agent\r\nx-api-key: " + key +
               "\r\nContent-Length: 2\r\n\r\n{}");
        const auto r = c.next();
        REQUIRE(r.has_value());
        CHECK(r->status == 200);
    }

    SECTION("only an HTTP/1.1 request is invited to send its body") {
        const std::string login =
            "POST /login HTTP/1.1\r\nHost: gw\r\nusername: alice-agent\r\n"
            "x-api-key: " +
            key + "\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        RawConnection invited(port_of(g.url));
        invited.send(login);
        const auto go_on = invited.next();
        REQUIRE(go_on.has_value());
        CHECK(go_on->status == 100);
        // An HTTP/1.0 client knows no 1xx answer: its expectation is ignored.
        RawConnection old(port_of(g.url));
        old.send(std::string(login).replace(login.find("HTTP/1.1"), 8, "HTTP/1.0"));
        CHECK_FALSE(old.next(std::chrono::milliseconds(500)).has_value());
        old.send("{}");
        const auto answer = old.next();
        REQUIRE(answer.has_value());
        CHECK(answer->status == 200);
    }

    SECTION("an authenticated publish may be as large as the hub allows") {
        // The default hub_max_data, every byte of it a control character that JSON escapes as
        // \u0001: a body of 6 MiB.
        const std::string data(1024 * 1024, '\x01');
        const HttpReply r = http_request("POST", g.url + "/secure/agent/publish",
                                         json{{"name", "big"}, {"data", data}}.dump(),
                                         {"x-api-key: " + key, "Authorization: Bearer " + session,
                                          "Content-Type: application/json"});
        INFO(r.body);
        CHECK(r.status == 200);
    }
}

TEST_CASE("the official OpenAI Node SDK streams a chat completion through the proxy",
          "[agent_api][openai]") {
    const fs::path node_dir = AGENTGW_NODE_DIR;
    if (!fs::exists(node_dir / "node_modules" / "openai" / "package.json")) {
        FAIL("the OpenAI SDK is not installed in "
             << (node_dir / "node_modules").string() << ": run `npm ci --no-audit --no-fund` in "
             << node_dir.string() << " (scripts/test does this)");
    }
    const auto node = find_on_path("node");
    if (!node) {
        FAIL("node is not on PATH (scripts/install-deps installs it)");
    }

    TempDir up_dir;
    TestUpstream upstream(up_dir.path());
    Gateway g(services_file({service("openai", upstream.base_url(), "LLM API")}));
    g.user("alice");
    const std::string key = g.agent("alice", "worker", {"openai"});
    g.credential("openai", k_upstream_secret);

    // The base URL on the command line, the agent key in the environment (not in argv).
    const RunResult r =
        run({*node, (node_dir / "openai_stream.mjs").string(), g.url + "/api/openai/v1"},
            Env{{"AGENTGW_API_KEY", key},
                {"AGENTGW_BASE_URL", std::nullopt},
                {"OPENAI_API_KEY", std::nullopt},
                {"OPENAI_BASE_URL", std::nullopt},
                {"OPENAI_ORG_ID", std::nullopt},
                {"OPENAI_PROJECT_ID", std::nullopt},
                {"NODE_OPTIONS", std::nullopt}},
            std::nullopt, std::chrono::seconds(30));
    INFO("node exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.code == 0);
    const json out = parsed(r.out);
    REQUIRE(out.is_object());
    CHECK(out["text"] == "Hello from the test upstream");
    REQUIRE(out["chunks"].is_number_integer());
    CHECK(out["chunks"].get<int>() > 1);  // streamed, not one answer
    CHECK(out["finish_reason"] == "stop");
    CHECK(out["model"] == "test-model");

    const auto seen = upstream.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0]["method"] == "POST");
    CHECK(seen[0]["path"] == "/v1/chat/completions");
    CHECK(recorded_header(seen[0], "authorization") == std::string("Bearer ") + k_upstream_secret);
    const json sent = parsed(seen[0]["body"].get<std::string>());
    CHECK(sent.value("stream", false) == true);
    CHECK(sent.value("model", "") == "test-model");
    for (const auto& req : seen) {
        CHECK_FALSE(recorded_contains(req, key));
        CHECK_FALSE(recorded_contains(req, "agw_"));
    }
}
