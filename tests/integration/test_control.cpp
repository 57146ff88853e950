// The control API driven over the real Unix socket with a real HTTP client (libcurl), the way
// `curl --unix-socket` would.
#include <atomic>
#include <signal.h>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "daemon/audit/audit_log.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/lmdb.hpp"
#include "tests/integration/daemon_harness.hpp"
#include "tests/support/fake_clock.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Control {
    TempDir dir;
    RunningDaemon daemon;

    explicit Control(std::vector<std::string> extra = {}) {
        write_file(dir / "services.json", k_test_services);
        extra.insert(extra.begin(), {"--services", (dir / "services.json").string()});
        daemon = start_daemon(daemon_args(dir, extra));
    }

    HttpReply call(const std::string& method, const std::string& path,
                   const std::string& body = {}) {
        std::vector<std::string> headers;
        if (!body.empty()) {
            headers.push_back("Content-Type: application/json");
        }
        return http_request(method, "http://localhost" + path, body, headers,
                            daemon.socket.string());
    }

    json ok(const std::string& method, const std::string& path, const std::string& body = {}) {
        const auto r = call(method, path, body);
        INFO(method << " " << path << " -> " << r.status << " " << r.body);
        REQUIRE(r.status == 200);
        return json::parse(r.body);
    }

    // The error a bad request gets: status, then the parsed body.
    std::pair<long, json> fail(const std::string& method, const std::string& path,
                               const std::string& body = {}) {
        const auto r = call(method, path, body);
        INFO(method << " " << path << " -> " << r.status << " " << r.body);
        REQUIRE(r.status >= 400);
        CHECK(header(r, "agentgw-error") != "");
        return {r.status, json::parse(r.body)};
    }
};

void require_keys(const json& j, std::initializer_list<const char*> keys) {
    for (const char* k : keys) {
        INFO("field " << k << " in " << j.dump());
        CHECK(j.contains(k));
    }
}

}  // namespace

TEST_CASE("a new agent's session lasts no longer than its key", "[control]") {
    Control c({"--session-ttl", "604800"});
    const json user =
        c.ok("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    const auto made = [&](int lifespan_days) {
        return c.ok("POST", "/auth/agent",
                    json{{"user_id", user["user_id"]},
                         {"agent_name", "agent-" + std::to_string(lifespan_days)},
                         {"services", {"openai"}},
                         {"lifespan_days", lifespan_days}}
                        .dump());
    };
    const json short_lived = made(1);
    CHECK(short_lived["expires_in_secs"] <= 86400);
    CHECK(short_lived["expires_in_secs"] >= 86400 - 60);
    const json long_lived = made(30);
    CHECK(long_lived["expires_in_secs"] <= 604800);
    CHECK(long_lived["expires_in_secs"] >= 604800 - 60);
}

TEST_CASE("seed-1 routes answer with seed-1 fields", "[control]") {
    Control c;
    const json user =
        c.ok("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    require_keys(user, {"user_id", "username", "email", "message"});
    CHECK(user["username"] == "alice");

    const json agent = c.ok("POST", "/auth/agent",
                            json{{"user_id", user["user_id"]},
                                 {"agent_name", "My AI Agent"},
                                 {"agent_description", "Handles API operations"},
                                 {"services", {"openai"}},
                                 {"lifespan_days", 30}}
                                .dump());
    require_keys(agent, {"agent_id", "session_id", "agent_name", "allowed_services",
                         "expires_in_secs", "key_expires_at", "lifespan_days", "api_key"});
    CHECK(agent["allowed_services"] == json{"openai"});
    CHECK(agent["lifespan_days"] == 30);
    const std::string key = agent["api_key"];
    CHECK(key.rfind("agw_", 0) == 0);
    CHECK(key.size() == 47);
    const std::string id = agent["agent_id"];

    const json shown = c.ok("GET", "/auth/agent/" + id);
    require_keys(shown, {"agent_id", "name", "description", "allowed_services", "rate_limit",
                         "expires_at", "lifespan_days", "days_until_expiry", "is_expired"});
    CHECK(shown["rate_limit"] == json{{"requests", 100}, {"window_secs", 60}});
    CHECK(shown["is_expired"] == false);
    CHECK(shown["days_until_expiry"] >= 29);  // 30 days less the seconds the test took
    CHECK(shown["days_until_expiry"] <= 30);
    CHECK(shown.dump().find(key) == std::string::npos);  // the key is shown once only

    const json granted = c.ok("POST", "/auth/agent/" + id + "/services",
                              R"({"service_id":"github","methods":["GET"],"paths":["/repos/*"]})");
    require_keys(granted, {"agent_id", "service_id", "allowed_services", "message"});
    CHECK(granted["allowed_services"] == json{"openai", "github"});
    const json revoked = c.ok("DELETE", "/auth/agent/" + id + "/services/openai");
    CHECK(revoked["allowed_services"] == json{"github"});

    const json rotated = c.ok("POST", "/auth/agent/" + id + "/rotate");
    require_keys(rotated, {"agent_id", "new_session_id", "expires_at", "message", "api_key"});
    CHECK(rotated["agent_id"] == id);  // stable across rotation
    CHECK(rotated["api_key"] != key);

    const json services = c.ok("GET", "/auth/services");
    REQUIRE(services["services"].size() == 2);
    CHECK(services["services"][0] ==
          json{{"id", "openai"}, {"name", "OpenAI"}, {"description", "LLM API"}});
}

TEST_CASE("users, agents and limits through the /v1 routes", "[control]") {
    Control c;
    c.ok("POST", "/auth/register", R"({"username":"bob","email":"b@example.com"})");
    const json agent = c.ok("POST", "/auth/agent", R"({"user_id":"bob","agent_name":"builder"})");
    const std::string id = agent["agent_id"];

    const json users = c.ok("GET", "/v1/users");
    REQUIRE(users["users"].size() == 1);
    CHECK(users["users"][0]["agents"] == 1);
    CHECK(c.ok("GET", "/v1/users/bob")["email"] == "b@example.com");

    CHECK(c.ok("GET", "/v1/agents?user=bob")["agents"].size() == 1);
    CHECK(c.ok("GET", "/v1/agents/builder")["agent_id"] == id);
    CHECK(c.ok("POST", "/v1/agents/builder/disable")["enabled"] == false);
    CHECK(c.ok("POST", "/v1/agents/" + id + "/enable")["enabled"] == true);
    const json limited =
        c.ok("PUT", "/v1/agents/builder/rate-limit", R"({"requests":5,"window_secs":10})");
    CHECK(limited["rate_limit"] == json{{"requests", 5}, {"window_secs", 10}});

    // A user with agents cannot be deleted; after the agent goes, the user can.
    CHECK(c.fail("DELETE", "/v1/users/bob").first == 409);
    CHECK(c.call("DELETE", "/v1/agents/builder").status == 204);
    CHECK(c.fail("GET", "/v1/agents/builder").first == 404);
    CHECK(c.call("DELETE", "/v1/users/bob").status == 204);
    CHECK(c.ok("GET", "/v1/users")["users"].empty());
}

TEST_CASE("bad input gets a clear 4xx naming the field and changes nothing", "[control]") {
    Control c;
    c.ok("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    struct Case {
        const char* method;
        const char* path;
        std::string body;
        long status;
        const char* mention;
    };
    const std::vector<Case> cases = {
        {"POST", "/auth/register", "{not json", 400, "request body"},
        {"POST", "/auth/register", "[1,2]", 400, "object"},
        {"POST", "/auth/register", R"({"username":5,"email":"x@y"})", 400, "username"},
        {"POST", "/auth/register", R"({"email":"x@y"})", 400, "username"},
        {"POST", "/auth/register", R"({"username":"z","email":"x@y","admin":true})", 400, "admin"},
        {"POST", "/auth/register", R"({"username":"z","username":"y","email":"x@y"})", 400,
         "duplicate"},
        {"POST", "/auth/register",
         R"({"username":")" + std::string(65, 'n') + R"(","email":"x@y"})", 400, "username"},
        {"POST", "/auth/register", R"({"username":"bad\u0001name","email":"x@y"})", 400, "control"},
        {"POST", "/auth/register", R"({"username":"bad\u009bname","email":"x@y"})", 400, "control"},
        {"POST", "/auth/register", R"({"username":"carol","email":"not-an-email"})", 400, "email"},
        {"POST", "/auth/register", R"({"username":"alice","email":"a2@example.com"})", 409,
         "alice"},
        {"POST", "/auth/agent", R"({"user_id":"nobody","agent_name":"a1"})", 404, "nobody"},
        {"POST", "/auth/agent", R"({"user_id":"alice","agent_name":"a1","services":["nope"]})", 404,
         "nope"},
        {"POST", "/auth/agent", R"({"user_id":"alice","agent_name":"a1","lifespan_days":0})", 400,
         "lifespan_days"},
        {"POST", "/auth/agent", R"({"user_id":"alice","agent_name":"a1","services":"openai"})", 400,
         "services"},
        {"GET", "/auth/agent/00000000-0000-4000-8000-000000000000", "", 404, "agent"},
        {"POST", "/auth/agent/ghost/rotate", "", 404, "ghost"},
        {"POST", "/auth/agent/ghost/services", R"({"service_id":"openai"})", 404, "ghost"},
        {"PUT", "/v1/agents/ghost/rate-limit", R"({"requests":0,"window_secs":10})", 400,
         "requests"},
        {"GET", "/v1/users/ghost", "", 404, "ghost"},
        {"PUT", "/v1/credentials/nope", R"({"type":"api_key","secret":"s"})", 404, "nope"},
        {"PUT", "/v1/credentials/openai", R"({"type":"api_key"})", 400, "secret"},
        {"PUT", "/v1/credentials/openai", R"({"type":"magic","secret":"s"})", 400, "type"},
        {"PUT", "/v1/credentials/openai", R"({"scope":"user","type":"api_key","secret":"s"})", 400,
         "user"},
        {"GET", "/v1/audit?limit=abc", "", 400, "limit"},
    };
    for (const auto& k : cases) {
        const auto [status, body] = c.fail(k.method, k.path, k.body);
        INFO(k.method << " " << k.path << " " << k.body << " -> " << body.dump());
        CHECK(status == k.status);
        CHECK(body.contains("error"));
        CHECK(body["message"].get<std::string>().find(k.mention) != std::string::npos);
    }
    // Nothing changed, and the daemon is still serving.
    const json users = c.ok("GET", "/v1/users");
    REQUIRE(users["users"].size() == 1);
    CHECK(users["users"][0]["email"] == "a@example.com");
    CHECK(c.ok("GET", "/v1/agents")["agents"].empty());
    CHECK(c.ok("GET", "/v1/credentials")["credentials"].empty());
    // Printable characters next to the C1 controls in UTF-8 (U+00A9 is C2 A9) are names' own.
    CHECK(c.ok("POST", "/auth/register", R"({"username":"\u00a9corp","email":"c@y"})")
              .at("username") == "\u00a9corp");
}

TEST_CASE("credentials are stored at three scopes and never returned", "[control]") {
    Control c;
    c.ok("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    c.ok("POST", "/auth/agent", R"({"user_id":"alice","agent_name":"worker"})");
    const std::string secret = "sk-TOPSECRET-" + std::to_string(::getpid());

    const json set =
        c.ok("PUT", "/v1/credentials/openai", json{{"type", "api_key"}, {"secret", secret}}.dump());
    CHECK(set["scope"] == "service");
    c.ok(
        "PUT", "/v1/credentials/openai",
        json{{"scope", "user"}, {"user", "alice"}, {"type", "api_key"}, {"secret", secret}}.dump());
    c.ok("PUT", "/v1/credentials/github",
         json{{"scope", "agent"},
              {"agent", "worker"},
              {"type", "oauth2"},
              {"access_token", secret},
              {"expires_in", 3600}}
             .dump());

    const auto listed = c.call("GET", "/v1/credentials");
    REQUIRE(listed.status == 200);
    CHECK(listed.body.find(secret) == std::string::npos);
    const json list = json::parse(listed.body)["credentials"];
    REQUIRE(list.size() == 3);
    bool saw_agent = false;
    for (const auto& cred : list) {
        require_keys(cred, {"service", "scope", "user", "agent", "type", "expires_at", "status"});
        if (cred["scope"] == "agent") {
            saw_agent = true;
            CHECK(cred["agent"] == "worker");
            CHECK(cred["expires_at"].is_string());
            CHECK(cred["status"] == "active");
        }
    }
    CHECK(saw_agent);

    CHECK(c.call("DELETE", "/v1/credentials/openai?user=alice").status == 204);
    CHECK(c.fail("DELETE", "/v1/credentials/openai?user=alice").first == 404);
    CHECK(c.ok("GET", "/v1/credentials")["credentials"].size() == 2);

    // The secret is in no audit entry and no log line.
    const auto audit = c.call("GET", "/v1/audit?limit=1000");
    REQUIRE(audit.status == 200);
    CHECK(audit.body.find(secret) == std::string::npos);
    CHECK(audit.body.find("credential.set") != std::string::npos);
    c.daemon.child->signal(SIGTERM);
    REQUIRE(c.daemon.child->wait(15s) == 0);
    CHECK(c.daemon.child->stderr_text().find(secret) == std::string::npos);
    for (const auto& entry : fs::recursive_directory_iterator(c.dir / "state")) {
        if (entry.is_regular_file()) {
            CHECK(read_file(entry.path()).find("TOPSECRET") == std::string::npos);
        }
    }
}

TEST_CASE("control actions are audited and tampering is detected", "[control][audit]") {
    Control c;
    c.ok("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    c.ok("POST", "/auth/agent", R"({"user_id":"alice","agent_name":"worker"})");
    c.ok("POST", "/auth/agent/worker/rotate", R"({"grace_secs":60})");
    c.fail("POST", "/auth/register", R"({"username":"alice","email":"a@example.com"})");
    // A query string is refused, and what it held is neither echoed nor kept.
    for (const char* query : {"?token=kept-out-value", "?kept-out-token"}) {
        const auto [status, body] = c.fail("POST", std::string("/auth/register") + query,
                                           R"({"username":"b","email":"b@x.y"})");
        CHECK(status == 400);
        CHECK(body.dump().find("kept-out") == std::string::npos);
    }

    const json page = c.ok("GET", "/v1/audit");
    CHECK(page.dump().find("kept-out") == std::string::npos);
    std::vector<std::string> actions;
    for (const auto& e : page["entries"]) {
        require_keys(e, {"seq", "time", "actor", "action", "target", "outcome", "details", "hash"});
        CHECK(e["actor"] == "uid:" + std::to_string(::geteuid()));
        actions.push_back(e["action"]);
    }
    CHECK(actions == std::vector<std::string>{"user.create", "agent.create", "agent.rotate",
                                              "user.create", "user.create", "user.create"});
    CHECK(page["entries"][3]["outcome"] == "conflict");
    for (const int i : {4, 5}) {
        CHECK(page["entries"][i]["outcome"] == "bad_request");
        CHECK(page["entries"][i]["target"] == "/auth/register");
    }
    // The cursor continues where the page ended.
    const json rest = c.ok("GET", "/v1/audit?after=" + page["next"].dump());
    CHECK(rest["entries"].empty());
    CHECK(c.ok("GET", "/v1/audit?action=agent.rotate")["entries"].size() == 1);

    const json verified = c.ok("POST", "/v1/audit/verify");
    CHECK(verified["ok"] == true);
    CHECK(verified["entries"] == 6);

    // Alter entry 2 on disk (the daemon stopped), restart: verify names it.
    c.daemon.child->signal(SIGTERM);
    REQUIRE(c.daemon.child->wait(15s) == 0);
    {
        auto env = agentgw::lmdb::Env::open((c.dir / "state").string(), {.max_dbs = 32});
        REQUIRE(env);
        auto txn = agentgw::lmdb::Txn::begin(env->get(), nullptr, 0);
        REQUIRE(txn);
        MDB_dbi audit = 0;
        REQUIRE(mdb_dbi_open(txn->get(), "audit", 0, &audit) == 0);
        const std::string key("\0\0\0\0\0\0\0\2", 8);
        MDB_val k = agentgw::lmdb::to_val(key), v{};
        REQUIRE(mdb_get(txn->get(), audit, &k, &v) == 0);
        std::string altered(agentgw::lmdb::view(v));
        altered[altered.size() / 2] ^= 0x20;
        MDB_val nv = agentgw::lmdb::to_val(altered);
        REQUIRE(mdb_put(txn->get(), audit, &k, &nv, 0) == 0);
        REQUIRE(txn->commit() == 0);
    }
    c.daemon = start_daemon(daemon_args(c.dir, {"--services", (c.dir / "services.json").string()}));
    const json broken = c.ok("POST", "/v1/audit/verify");
    CHECK(broken["ok"] == false);
    CHECK(broken["broken_seq"] == 2);
    CHECK(broken["message"].get<std::string>().find("entry 2") != std::string::npos);
}

namespace {

// Stops the daemon and writes `count` audit entries (action "filler") straight into its vault,
// dated by `clock`.
void fill_audit(Control& c, int count, const agentgw::Clock& clock) {
    c.daemon.child->signal(SIGTERM);
    REQUIRE(c.daemon.child->wait(15s) == 0);
    const auto key = key_at(c.dir / "state" / "master.key");
    auto vault = open_vault(c.dir / "state", key);
    REQUIRE(vault);
    agentgw::AuditLog audit(**vault, clock);
    REQUIRE(audit.init(false));
    for (int i = 0; i < count; ++i) {
        audit.record({"uid:0", "filler", "user:filler", "ok", {{"n", i}}});
    }
    REQUIRE((*vault)->write([](agentgw::WriteTxn&) { return agentgw::Status{}; }));
}

}  // namespace

TEST_CASE("verifying a long audit log leaves the agent API answering", "[control][audit]") {
    Control c;
    // Enough entries that checking the chain takes far longer than a /healthz answer (and,
    // in a sanitizer build, less than the client's 10 s timeout).
    constexpr int k_entries = 20'000;
    fill_audit(c, k_entries, agentgw::SystemClock());
    c.daemon = start_daemon(daemon_args(c.dir, {"--services", (c.dir / "services.json").string()}));

    std::atomic<bool> verifying = true;
    HttpReply verified;
    std::thread verify([&] {
        verified = c.call("POST", "/v1/audit/verify");
        verifying = false;
    });
    // /healthz on the agent port, one after another, for as long as the verify runs. Were
    // the chain checked on the event loop, none would be answered until it was done.
    int answered_meanwhile = 0;
    while (verifying) {
        const auto health = http_request("GET", c.daemon.base_url + "/healthz");
        if (health.status == 200 && verifying) {
            ++answered_meanwhile;
        }
    }
    verify.join();
    INFO(verified.status << " " << verified.body);
    REQUIRE(verified.status == 200);
    const json v = json::parse(verified.body);
    CHECK(v["ok"] == true);
    CHECK(v["entries"].get<int>() >= k_entries);
    CHECK(answered_meanwhile >= 10);
}

TEST_CASE("audit retention removes every entry past the cutoff however many there are",
          "[control][audit]") {
    Control c;
    // More than one retention batch (10,000 entries) of entries 40 days old.
    fill_audit(c, 25'000, FakeClock(agentgw::SystemClock().now_secs() - 40 * 86400));
    c.daemon = start_daemon(daemon_args(
        c.dir, {"--services", (c.dir / "services.json").string(), "--audit-retention-days", "1"}));
    // Pruning runs once the daemon is up, batch after batch: wait (bounded) for the last.
    json left;
    for (int i = 0; i < 400; ++i) {
        left = c.ok("GET", "/v1/audit?action=filler&limit=1")["entries"];
        if (left.empty()) {
            break;
        }
        std::this_thread::sleep_for(50ms);
    }
    CHECK(left.empty());
    // The chain still verifies from its new start.
    CHECK(c.ok("POST", "/v1/audit/verify")["ok"] == true);
}

TEST_CASE("services can be listed, shown and reloaded", "[control]") {
    Control c;
    CHECK(c.ok("GET", "/v1/services")["services"].size() == 2);
    const json openai = c.ok("GET", "/v1/services/openai");
    CHECK(openai["base_url"] == "https://api.openai.com");
    CHECK(c.fail("GET", "/v1/services/nope").first == 404);

    // A bad file is refused, naming the field, and the old services stay.
    write_file(c.dir / "services.json", R"({"services":[{"id":"x","name":"X",
        "base_url":"ftp://x","auth":{"type":"bearer"}}]})");
    const auto [status, body] = c.fail("POST", "/v1/services/reload");
    CHECK(status == 400);
    CHECK(body["message"].get<std::string>().find("base_url") != std::string::npos);
    CHECK(c.ok("GET", "/v1/services")["services"].size() == 2);

    write_file(c.dir / "services.json", R"({"services":[{"id":"only","name":"Only",
        "base_url":"http://127.0.0.1:9","auth":{"type":"basic"}}]})");
    CHECK(c.ok("POST", "/v1/services/reload")["services"] == 1);
    CHECK(c.ok("GET", "/auth/services")["services"][0]["id"] == "only");

    // SIGHUP reloads too.
    write_file(c.dir / "services.json", k_test_services);
    c.daemon.child->signal(SIGHUP);
    REQUIRE(c.daemon.child->wait_for_stderr("loaded 2 service").has_value());
    CHECK(c.ok("GET", "/v1/services")["services"].size() == 2);
}
