// OAuth2 credentials (SPEC §3.2, §4, §5, §8, §9, §11) end to end: the real agentgwd and agentgw
// binaries against a real authorization server (oidc-provider, tests/node/oidc_server.mjs, whose
// own protected resources check every token the proxy sends) and, for the answers that server
// will not give on cue, the project's scripted token endpoint (tests/support/token_stub.py).
// Covered: an expired or missing access token refreshed before forwarding; concurrent requests
// sharing one refresh (and waiting for it idle); refresh-token rotation (an old refresh token is
// never replayed — the server would revoke the whole grant; an answer without one keeps it); the
// rotated set surviving a SIGKILL; one refresh and retry after an upstream 401; invalid_grant →
// reauth_required with audit and metrics; client_credentials; proactive refresh; retries of
// failures safe to repeat; the device flow through `agentgw connect` (approve, deny, slow_down,
// access_denied, expired_token, the CLI or the daemon killed mid-flow) and the control API.
#include <chrono>
#include <csignal>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/oidc_server.hpp"
#include "tests/support/token_stub.hpp"

using namespace agentgw::test;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

namespace {

using Args = std::vector<std::string>;

std::string joined(const Args& args) {
    std::string out;
    for (const auto& a : args) {
        out += (out.empty() ? "" : " ") + a;
    }
    return out;
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

// Polls `done` every 100 ms until it holds or `timeout` passes; whether it held.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    for (;;) {
        if (done()) {
            return true;
        }
        if (SteadyClock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(100ms);
    }
}

json service(const std::string& id, const std::string& base_url, const json& auth) {
    return {{"id", id},
            {"name", id},
            {"description", "OAuth2 test service " + id},
            {"base_url", base_url},
            {"auth", auth}};
}

// The oidc-provider device client: device flow, refresh tokens; refreshed only once expired
// (refresh_before_secs 0), so the background refresh never adds a token request of its own.
json oidc_user_service(const OidcServer& oidc, int64_t refresh_before_secs = 0) {
    return service("oidc", oidc.issuer(),
                   {{"type", "oauth2"},
                    {"grant", "refresh_token"},
                    {"token_url", oidc.issuer() + "/token"},
                    {"device_authorization_url", oidc.issuer() + "/device/auth"},
                    {"client_id", OidcServer::k_device_client},
                    {"scopes", json::array({"openid", "offline_access"})},
                    {"refresh_before_secs", refresh_before_secs}});
}

// The oidc-provider confidential client: client_credentials with a secret from the vault.
json oidc_client_service(const OidcServer& oidc) {
    return service("machine", oidc.issuer(),
                   {{"type", "oauth2"},
                    {"grant", "client_credentials"},
                    {"token_url", oidc.issuer() + "/token"},
                    {"client_id", OidcServer::k_service_client},
                    {"scopes", json::array({"api:read"})},
                    {"refresh_before_secs", 0}});
}

json stub_service(const TokenStub& stub) {
    return service("stub", stub.base_url(),
                   {{"type", "oauth2"},
                    {"grant", "refresh_token"},
                    {"token_url", stub.base_url() + "/token"},
                    {"device_authorization_url", stub.base_url() + "/device"},
                    {"client_id", "stub-client"},
                    {"refresh_before_secs", 0}});
}

// A daemon with one service, a user alice and her agent "worker" granted it.
struct Gateway {
    TempDir dir;
    RunningDaemon daemon;
    std::string session;

    explicit Gateway(const json& service) {
        write_file(dir / "services.json", json{{"services", json::array({service})}}.dump(2));
        start();
        ok({"user", "add", "alice", "--email", "alice@example.com"});
        session = ok({"agent", "create", "--user", "alice", "--name", "worker", "--service",
                      service.at("id").get<std::string>()})
                      .at("session_id");
    }

    void start() {
        daemon = start_daemon(daemon_args(dir, {"--services", (dir / "services.json").string()}));
    }

    // SIGKILL, then a new daemon on the same state dir (a crash and a restart).
    void crash_and_restart() {
        daemon.child->signal(SIGKILL);
        REQUIRE(daemon.child->wait(10s).has_value());
        start();
    }

    Args cli_argv(const Args& args, bool json_output = true) const {
        Args argv = {AGENTGW_CLI_PATH, "--socket", daemon.socket.string()};
        if (json_output) {
            argv.push_back("--json");
        }
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }

    RunResult cli(const Args& args, const std::optional<std::string>& stdin_data = std::nullopt) {
        return run(cli_argv(args), {}, stdin_data, 60s);
    }

    json ok(const Args& args, const std::optional<std::string>& stdin_data = std::nullopt) {
        const RunResult r = cli(args, stdin_data);
        INFO("agentgw --json " << joined(args) << " -> exit " << r.code << "\nstdout: " << r.out
                               << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        json doc;
        REQUIRE_NOTHROW(doc = json::parse(r.out));
        return doc;
    }

    // Stores an oauth2 token set for alice: {"access_token"?, "refresh_token"?, "expires_in"?}.
    void import_tokens(const std::string& svc, const json& set) {
        ok({"credential", "set", svc, "--user", "alice", "--type", "oauth2"}, set.dump());
    }

    // The credential of `svc` as `credential list` shows it (null when there is none).
    json credential(const std::string& svc) {
        const json listed = ok({"credential", "list"});
        for (const auto& c : listed.at("credentials")) {
            if (c.at("service") == svc) {
                return c;
            }
        }
        return nullptr;
    }

    // A proxied request as agent "worker".
    HttpReply call(const std::string& method, const std::string& path,
                   const std::string& body = {}) {
        return http_request(method, daemon.base_url + path, body,
                            {"X-Session-ID: " + session, "Content-Type: application/json"});
    }

    // A request on the control socket.
    HttpReply control(const std::string& method, const std::string& path,
                      const std::string& body = {}) {
        return http_request(method, "http://localhost" + path, body,
                            {"Content-Type: application/json"}, daemon.socket.string());
    }

    // The audit entries of one action, waiting (bounded) until there are at least `at_least`:
    // the audit log is written off the request path.
    json audit_entries(const std::string& action, size_t at_least) {
        json entries;
        wait_until(
            [&] {
                entries = ok({"audit", "--action", action, "--limit", "1000"}).at("entries");
                return entries.size() >= at_least;
            },
            10s);
        return entries;
    }

    // The value of one Prometheus series (`name{labels}`), or -1 when it is absent.
    double metric(const std::string& series) {
        const HttpReply r = http_request("GET", daemon.base_url + "/metrics");
        REQUIRE(r.status == 200);
        const std::string prefix = series + " ";
        size_t pos = 0;
        while (pos < r.body.size()) {
            size_t end = r.body.find('\n', pos);
            if (end == std::string::npos) {
                end = r.body.size();
            }
            const std::string line = r.body.substr(pos, end - pos);
            if (line.starts_with(prefix)) {
                return std::stod(line.substr(prefix.size()));
            }
            pos = end + 1;
        }
        return -1;
    }

    // Reads what the daemon wrote to stderr so far (its pipe must never fill up).
    const std::string& daemon_log() {
        daemon.child->wait_for_stderr("\x01 never printed", 1ms);
        return daemon.child->stderr_text();
    }
};

// A token set from the server whose access token is already dead at the server and, once a
// second has passed, expired for the daemon too: only a refreshed token can reach the resource.
json expired_token_set(OidcServer& oidc) {
    const json set = oidc.tokens();
    REQUIRE(oidc.revoke_access_tokens() >= 1);
    return {{"access_token", set.at("access_token")},
            {"refresh_token", set.at("refresh_token")},
            {"expires_in", 1}};
}

// Waits past the one-second lifetime that expired_token_set() gives the daemon (it counts in
// whole seconds, so one second after the import the token is expired).
void let_expire() {
    std::this_thread::sleep_for(1100ms);
}

void check_refresh_failed(const HttpReply& r) {
    INFO("status " << r.status << " body " << r.body << " error " << r.error);
    CHECK(r.status == 502);
    CHECK(header(r, "agentgw-error") == "upstream_error");
    const json body = json::parse(r.body, nullptr, false);
    REQUIRE(body.is_object());
    CHECK(body.value("error", "") == "upstream_error");
    CHECK(body.value("message", "").starts_with("credential refresh failed: "));
}

// CPU time (user + system, seconds) a process has used so far.
double cpu_seconds(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Fields after the command name (which may hold spaces) start past the last ')'.
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14 || i == 15) {  // utime, stime
            ticks += std::stod(field);
        }
    }
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A running `agentgw connect` and the user code it printed.
struct Connect {
    std::unique_ptr<Child> child;
    std::string user_code;
    std::string verification_uri;
};

// Starts `agentgw connect SERVICE --user alice` (human output, or --json) and reads the code it
// shows the user; FAILs when none comes within 20 s.
Connect start_connect(const Gateway& g, const std::string& svc, bool json_output = false) {
    Connect c;
    c.child = std::make_unique<Child>(g.cli_argv({"connect", svc, "--user", "alice"}, json_output));
    const std::string code_prefix = "and enter the code ";
    const auto deadline = SteadyClock::now() + 20s;
    while (c.user_code.empty() && SteadyClock::now() < deadline) {
        std::optional<std::string> line;
        if (json_output) {
            line = c.child->wait_for_stderr(code_prefix, 1s);
        } else {
            line = c.child->read_stdout_line(1s);
        }
        if (!line) {
            if (c.child->wait(0ms)) {
                break;  // exited early
            }
            continue;
        }
        if (line->starts_with("    http")) {
            c.verification_uri = line->substr(4);
        }
        if (const auto at = line->find(code_prefix); at != std::string::npos) {
            c.user_code = line->substr(at + code_prefix.size());
        }
    }
    INFO("connect stdout: " << c.child->stdout_text() << "\nstderr: " << c.child->stderr_text());
    REQUIRE_FALSE(c.user_code.empty());
    return c;
}

// Waits (30 s at most) for a started `connect` to end with `expected` as its exit status, and
// returns what it wrote to stderr.
std::string ended_with(Connect& c, int expected) {
    const auto code = c.child->wait(30s);
    INFO("connect stderr: " << c.child->stderr_text());
    REQUIRE(code.has_value());
    CHECK(*code == expected);
    return c.child->stderr_text();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("an expired or missing access token is refreshed before the request is forwarded",
          "[oauth][refresh]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    const json dead = expired_token_set(oidc);

    SECTION("expired") {
        g.import_tokens("oidc", dead);
        let_expire();
    }
    SECTION("missing: only a refresh token was imported") {
        g.import_tokens("oidc", {{"refresh_token", dead.at("refresh_token")}});
    }

    const HttpReply r = g.call("GET", "/api/oidc/resource/items");
    INFO("body " << r.body << " " << r.error << "\ndaemon: " << g.daemon_log());
    REQUIRE(r.status == 200);
    const json seen = json::parse(r.body);
    CHECK(seen.at("kind") == "AccessToken");
    CHECK(seen.at("client_id") == OidcServer::k_device_client);
    CHECK(seen.at("account_id") == OidcServer::k_account);

    json stats = oidc.stats();
    INFO("server stats " << stats.dump());
    CHECK(oidc.token_ok("refresh_token") == 1);
    CHECK(stats.at("resource").at("rejected") == 0);  // the dead token was never sent
    CHECK(stats.at("refresh_token_reuse") == 0);

    // The server's own userinfo endpoint takes the refreshed token too.
    const HttpReply me = g.call("GET", "/api/oidc/me");
    INFO("me: " << me.status << " " << me.body);
    CHECK(me.status == 200);
    CHECK(json::parse(me.body, nullptr, false).value("sub", "") == OidcServer::k_account);

    // The new token is stored: later requests use it without another refresh.
    CHECK(g.call("GET", "/api/oidc/resource/again").status == 200);
    CHECK(oidc.token_ok("refresh_token") == 1);

    const json cred = g.credential("oidc");
    REQUIRE(cred.is_object());
    CHECK(cred.at("status") == "active");
    CHECK(cred.at("user") == "alice");
    CHECK(cred.at("type") == "oauth2");
    CHECK(cred.at("expires_at").is_string());

    CHECK(g.metric(R"(agentgw_token_refreshes_total{service="oidc",outcome="success"})") == 1);
    const json audit = g.audit_entries("credential.refresh", 1);
    REQUIRE(audit.size() == 1);
    CHECK(audit[0].at("outcome") == "ok");

    // No token reached the daemon's log.
    CHECK_FALSE(contains(g.daemon_log(), dead.at("refresh_token").get<std::string>()));
}

TEST_CASE("fifty concurrent requests with an expired token share one refresh",
          "[oauth][refresh][concurrency]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    g.import_tokens("oidc", expired_token_set(oidc));
    let_expire();

    constexpr int k_requests = 50;
    std::vector<HttpReply> replies(k_requests);
    {
        std::vector<std::thread> threads;
        for (int i = 0; i < k_requests; ++i) {
            threads.emplace_back([&, i] {
                replies[static_cast<size_t>(i)] =
                    g.call("GET", "/api/oidc/resource/" + std::to_string(i));
            });
        }
        for (auto& t : threads) {
            t.join();
        }
    }
    int succeeded = 0;
    for (const auto& r : replies) {
        INFO("status " << r.status << " body " << r.body << " error " << r.error);
        CHECK(r.status == 200);
        succeeded += r.status == 200 ? 1 : 0;
    }
    CHECK(succeeded == k_requests);

    const json stats = oidc.stats();
    INFO("server stats " << stats.dump() << "\ndaemon: " << g.daemon_log());
    CHECK(stats.at("token_requests").at("refresh_token").at("total") == 1);
    CHECK(stats.at("token_max_in_flight") == 1);
    CHECK(stats.at("resource").at("ok") == k_requests);
    CHECK(stats.at("resource").at("rejected") == 0);
    CHECK(g.metric(R"(agentgw_token_refreshes_total{service="oidc",outcome="success"})") == 1);

    // The access token revoked at the server: every request gets a 401 from the upstream, and
    // still one refresh serves them all (a request finding the token already renewed retries
    // with it).
    REQUIRE(oidc.revoke_access_tokens() >= 1);
    constexpr int k_after_revoke = 20;
    std::vector<HttpReply> retried(k_after_revoke);
    {
        std::vector<std::thread> threads;
        for (int i = 0; i < k_after_revoke; ++i) {
            threads.emplace_back([&, i] {
                retried[static_cast<size_t>(i)] = g.call("GET", "/api/oidc/resource/again");
            });
        }
        for (auto& t : threads) {
            t.join();
        }
    }
    for (const auto& r : retried) {
        INFO("status " << r.status << " body " << r.body << " error " << r.error);
        CHECK(r.status == 200);
    }
    const json after = oidc.stats();
    INFO("server stats " << after.dump());
    CHECK(after.at("token_requests").at("refresh_token").at("total") == 2);
    CHECK(after.at("token_max_in_flight") == 1);
    CHECK(after.at("refresh_token_reuse") == 0);
}

TEST_CASE("requests waiting for a slow refresh wait idle", "[oauth][refresh][concurrency][stub]") {
    // The token endpoint takes 2 s; twenty requests wait for that one refresh meanwhile.
    TokenStub stub({.refresh_script = "slow_tokens"});
    Gateway g(stub_service(stub));
    g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});

    constexpr int k_requests = 20;
    std::vector<HttpReply> replies(k_requests);
    const double cpu_before = cpu_seconds(g.daemon.child->pid());
    {
        std::vector<std::thread> threads;
        for (int i = 0; i < k_requests; ++i) {
            threads.emplace_back(
                [&, i] { replies[static_cast<size_t>(i)] = g.call("GET", "/api/stub/resource"); });
        }
        for (auto& t : threads) {
            t.join();
        }
    }
    const double cpu_used = cpu_seconds(g.daemon.child->pid()) - cpu_before;
    for (const auto& r : replies) {
        INFO("status " << r.status << " body " << r.body << " error " << r.error);
        CHECK(r.status == 200);
    }
    CHECK(stub.requests("refresh_token").size() == 1);
    // Twenty proxied requests cost the daemon a few milliseconds; waiting must cost nothing
    // (a busy wait would burn a core for the whole 2 s). The bound leaves room for a sanitizer
    // build on a loaded machine.
    INFO("daemon CPU time while the refresh ran: " << cpu_used << " s");
    CHECK(cpu_used < 1.0);
}

TEST_CASE("a rotated refresh token replaces the old one, which is never sent again",
          "[oauth][refresh][rotation]") {
    // oidc-provider rotates the refresh token at every refresh and, when a used one comes back,
    // revokes the whole grant: any replay would make every later refresh fail.
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    g.import_tokens("oidc", expired_token_set(oidc));
    let_expire();
    REQUIRE(g.call("GET", "/api/oidc/resource/first").status == 200);
    REQUIRE(oidc.token_ok("refresh_token") == 1);

    // Each round kills the access token at the server: the upstream answers 401, the daemon
    // refreshes once with the refresh token it holds now and retries the request.
    for (int round = 2; round <= 4; ++round) {
        INFO("round " << round);
        CHECK(oidc.revoke_access_tokens() >= 1);
        const HttpReply r = g.call("GET", "/api/oidc/resource/round");
        INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
        CHECK(r.status == 200);
        CHECK(oidc.token_ok("refresh_token") == round);
    }

    // A body read whole (up to 64 KiB) is sent again, byte for byte, with the new token.
    CHECK(oidc.revoke_access_tokens() >= 1);
    const HttpReply posted = g.call("POST", "/api/oidc/resource/write", R"({"n": 1})");
    INFO("status " << posted.status << " body " << posted.body);
    CHECK(posted.status == 200);
    CHECK(json::parse(posted.body, nullptr, false).value("body", "") == R"({"n": 1})");
    CHECK(oidc.token_ok("refresh_token") == 5);

    // A body streamed to the upstream cannot be sent again: the upstream's 401 comes back as
    // it is, and the next request refreshes on its own 401.
    CHECK(oidc.revoke_access_tokens() >= 1);
    const HttpReply streamed =
        g.call("POST", "/api/oidc/resource/write", std::string(100 * 1024, 'x'));
    CHECK(streamed.status == 401);
    CHECK(header(streamed, "agentgw-error").empty());  // the upstream's answer, not the gateway's
    CHECK(oidc.token_ok("refresh_token") == 5);
    CHECK(g.call("GET", "/api/oidc/resource/after").status == 200);

    const json stats = oidc.stats();
    INFO("server stats " << stats.dump());
    CHECK(oidc.token_ok("refresh_token") == 6);
    CHECK(stats.at("token_requests").at("refresh_token").at("errors").empty());
    CHECK(stats.at("refresh_token_reuse") == 0);
    CHECK(stats.at("grants_revoked") == 0);
    CHECK(g.credential("oidc").at("status") == "active");
}

TEST_CASE("each refresh sends the newest refresh token, or keeps the old one when none came",
          "[oauth][refresh][rotation][stub]") {
    // The first answer has no refresh token (RFC 6749 §6: the client keeps its own); the
    // others rotate it. Each refresh here follows an upstream 401 for a revoked access token.
    TokenStub stub({.refresh_script = "access_only,tokens,tokens"});
    Gateway g(stub_service(stub));
    g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
    CHECK(g.call("GET", "/api/stub/resource").status == 200);
    for (int round = 2; round <= 3; ++round) {
        stub.revoke_access_tokens();
        const HttpReply r = g.call("GET", "/api/stub/resource");
        INFO("round " << round << ": " << r.status << " " << r.body);
        CHECK(r.status == 200);
    }
    std::vector<std::string> sent;
    for (const auto& q : stub.requests("refresh_token")) {
        sent.push_back(q.at("form").value("refresh_token", ""));
        CHECK(q.at("form").value("client_id", "") == "stub-client");
    }
    CHECK(sent == std::vector<std::string>{"stub-refresh-0", "stub-refresh-0", "stub-refresh-2"});
}

TEST_CASE("the rotated token set survives a SIGKILL right after the refresh",
          "[oauth][refresh][crash]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    g.import_tokens("oidc", expired_token_set(oidc));
    let_expire();
    REQUIRE(g.call("GET", "/api/oidc/resource/before-crash").status == 200);
    REQUIRE(oidc.token_ok("refresh_token") == 1);

    // Killed the moment the answer is in: the new tokens had to be durable before their use.
    g.crash_and_restart();

    // The next refresh must use the rotated refresh token: the first one would be a replay.
    CHECK(oidc.revoke_access_tokens() >= 1);
    const HttpReply r = g.call("GET", "/api/oidc/resource/after-crash");
    const json stats = oidc.stats();
    INFO("status " << r.status << " body " << r.body << "\nserver stats " << stats.dump()
                   << "\ndaemon: " << g.daemon_log());
    CHECK(r.status == 200);
    CHECK(oidc.token_ok("refresh_token") == 2);
    CHECK(stats.at("refresh_token_reuse") == 0);
    CHECK(stats.at("grants_revoked") == 0);
}

TEST_CASE("a refused refresh token marks the credential reauth_required", "[oauth][refresh]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    g.import_tokens("oidc", {{"access_token", "expired-access-token"},
                             {"refresh_token", "a-refresh-token-the-server-never-issued"},
                             {"expires_in", 1}});
    let_expire();

    const HttpReply r = g.call("GET", "/api/oidc/resource/x");
    check_refresh_failed(r);
    CHECK(contains(r.body, "invalid_grant"));
    CHECK(oidc.token_errors("refresh_token", "invalid_grant") == 1);
    CHECK(oidc.stats().at("resource").at("rejected") == 0);  // nothing was forwarded

    const json cred = g.credential("oidc");
    REQUIRE(cred.is_object());
    CHECK(cred.at("status") == "reauth_required");
    CHECK(g.ok({"status"}).at("counts").at("credentials_reauth_required") == 1);
    CHECK(g.metric(R"(agentgw_token_refreshes_total{service="oidc",outcome="invalid_grant"})") ==
          1);

    const json audit = g.audit_entries("credential.refresh", 1);
    REQUIRE(audit.size() == 1);
    CHECK(audit[0].at("outcome") == "upstream_error");
    CHECK(contains(audit[0].dump(), "oidc"));
    CHECK_FALSE(contains(audit[0].dump(), "a-refresh-token-the-server-never-issued"));

    // Until someone authorises again, requests fail without asking the server again.
    check_refresh_failed(g.call("GET", "/api/oidc/resource/y"));
    CHECK(oidc.stats().at("token_requests").at("refresh_token").at("total") == 1);

    // A new token set clears the state.
    g.import_tokens("oidc", {{"refresh_token", oidc.tokens().at("refresh_token")}});
    CHECK(g.credential("oidc").at("status") == "active");
    CHECK(g.ok({"status"}).at("counts").at("credentials_reauth_required") == 0);
    CHECK(g.call("GET", "/api/oidc/resource/z").status == 200);
}

TEST_CASE("an expired access token without a refresh token is reported, not refreshed",
          "[oauth][refresh]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    // Long enough to be seen active even on a loaded machine (a sanitizer build, say).
    g.import_tokens("oidc", {{"access_token", "an-access-token"}, {"expires_in", 5}});
    CHECK(g.credential("oidc").at("status") == "active");
    std::this_thread::sleep_for(5100ms);
    CHECK(g.credential("oidc").at("status") == "expired");
    const HttpReply r = g.call("GET", "/api/oidc/resource/x");
    INFO("status " << r.status << " body " << r.body);
    CHECK(r.status == 502);
    CHECK(header(r, "agentgw-error") == "upstream_error");
    CHECK(contains(r.body, "expired"));
    CHECK(oidc.stats().at("token_requests").empty());
    CHECK(oidc.stats().at("resource").at("rejected") == 0);
}

TEST_CASE("a service-wide client secret gets its tokens with client_credentials",
          "[oauth][client_credentials]") {
    OidcServer oidc;
    Gateway g(oidc_client_service(oidc));

    SECTION("the right secret") {
        g.ok({"credential", "set", "machine", "--type", "client_secret"},
             std::string(OidcServer::k_service_secret) + "\n");
        const json listed = g.credential("machine");
        REQUIRE(listed.is_object());
        CHECK(listed.at("scope") == "service");
        CHECK(listed.at("type") == "client_secret");
        CHECK(listed.at("status") == "active");

        const HttpReply r = g.call("GET", "/api/machine/resource/jobs");
        INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
        REQUIRE(r.status == 200);
        const json seen = json::parse(r.body);
        CHECK(seen.at("kind") == "ClientCredentials");
        CHECK(seen.at("client_id") == OidcServer::k_service_client);
        CHECK(seen.at("scope") == "api:read");
        CHECK(oidc.token_ok("client_credentials") == 1);

        // The token is kept until it expires.
        CHECK(g.call("GET", "/api/machine/resource/jobs").status == 200);
        CHECK(oidc.token_ok("client_credentials") == 1);
        CHECK(g.metric(R"(agentgw_token_refreshes_total{service="machine",outcome="success"})") ==
              1);
        CHECK_FALSE(contains(g.daemon_log(), OidcServer::k_service_secret));
    }
    SECTION("a wrong secret") {
        g.ok({"credential", "set", "machine", "--type", "client_secret"}, "not-the-secret\n");
        check_refresh_failed(g.call("GET", "/api/machine/resource/jobs"));
        CHECK(oidc.token_errors("client_credentials", "invalid_client") == 1);
        CHECK(g.credential("machine").at("status") == "reauth_required");
    }
}

TEST_CASE("an access token close to expiry is refreshed in the background", "[oauth][refresh]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc, 300));
    const json set = oidc.tokens();
    // Within refresh_before_secs (300) of its end: the next background pass (every 15 s)
    // refreshes it without any request.
    g.import_tokens("oidc", {{"access_token", set.at("access_token")},
                             {"refresh_token", set.at("refresh_token")},
                             {"expires_in", 200}});
    CHECK(wait_until([&] { return oidc.token_ok("refresh_token") == 1; }, 30s));
    CHECK(wait_until([&] { return g.audit_entries("credential.refresh", 0).size() == 1; }, 10s));
    CHECK(g.call("GET", "/api/oidc/resource/x").status == 200);
    CHECK(oidc.token_ok("refresh_token") == 1);
}

TEST_CASE("agentgw connect runs the device flow against a real server", "[oauth][device]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));

    SECTION("approved: the tokens are stored and the proxy uses them") {
        Connect c = start_connect(g, "oidc");
        CHECK(c.verification_uri == oidc.issuer() + "/device");
        REQUIRE(oidc.approve(c.user_code));
        const auto code = c.child->wait(40s);
        INFO("connect stdout: " << c.child->stdout_text() << "\nstderr: " << c.child->stderr_text()
                                << "\ndaemon: " << g.daemon_log());
        REQUIRE(code.has_value());
        CHECK(*code == 0);
        CHECK(contains(c.child->stdout_text(), "connected"));

        const json cred = g.credential("oidc");
        REQUIRE(cred.is_object());
        CHECK(cred.at("scope") == "user");
        CHECK(cred.at("user") == "alice");
        CHECK(cred.at("status") == "active");
        // The scopes the server granted are stored with the tokens.
        REQUIRE(cred.at("scopes").is_string());
        CHECK(contains(cred.at("scopes").get<std::string>(), "openid"));
        CHECK(oidc.token_ok(k_device_code_grant) == 1);

        const HttpReply me = g.call("GET", "/api/oidc/me");
        INFO("me: " << me.status << " " << me.body);
        CHECK(me.status == 200);
        CHECK(json::parse(me.body, nullptr, false).value("sub", "") == OidcServer::k_account);
        // Its refresh token works too (the flow stored one).
        CHECK(oidc.revoke_access_tokens() >= 1);
        CHECK(g.call("GET", "/api/oidc/resource/x").status == 200);
        CHECK(oidc.token_ok("refresh_token") == 1);

        const json audit = g.audit_entries("oauth.connect", 1);
        REQUIRE(audit.size() == 1);
        CHECK(audit[0].at("outcome") == "ok");
    }
    SECTION("denied by the user: exit 4") {
        Connect c = start_connect(g, "oidc");
        REQUIRE(oidc.deny(c.user_code));
        const auto code = c.child->wait(40s);
        INFO("connect stderr: " << c.child->stderr_text());
        REQUIRE(code.has_value());
        CHECK(*code == 4);
        CHECK(contains(c.child->stderr_text(), "denied"));
        CHECK(g.credential("oidc").is_null());
    }
    SECTION("the control API: POST /v1/oauth/device, then GET it until complete") {
        const HttpReply started =
            g.control("POST", "/v1/oauth/device", R"({"service": "oidc", "user": "alice"})");
        INFO("POST -> " << started.status << " " << started.body);
        REQUIRE(started.status == 200);
        const json flow = json::parse(started.body);
        for (const char* key : {"flow_id", "status", "user_code", "verification_uri",
                                "verification_uri_complete", "expires_at", "interval"}) {
            INFO("field " << key);
            CHECK(flow.contains(key));
        }
        CHECK(flow.at("status") == "pending");
        CHECK(flow.at("interval") == 5);  // the server named none: RFC 8628's default
        const std::string path = "/v1/oauth/device/" + flow.at("flow_id").get<std::string>();
        CHECK(json::parse(g.control("GET", path).body).at("status") == "pending");
        REQUIRE(oidc.approve(flow.at("user_code")));
        json now;
        CHECK(wait_until(
            [&] {
                now = json::parse(g.control("GET", path).body, nullptr, false);
                return now.is_object() && now.value("status", "") != "pending";
            },
            30s));
        CHECK(now.value("status", "") == "complete");
        CHECK(g.credential("oidc").is_object());

        CHECK(g.control("GET", "/v1/oauth/device/no-such-flow").status == 404);
        CHECK(g.control("POST", "/v1/oauth/device", R"({"service": "nope"})").status == 404);
    }
}

TEST_CASE("the device flow goes on without the CLI, and across a daemon restart",
          "[oauth][device]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    Connect c = start_connect(g, "oidc");
    c.child->signal(SIGKILL);
    REQUIRE(c.child->wait(10s).has_value());

    SECTION("the CLI killed") {}
    SECTION("the CLI killed, then the daemon") {
        g.crash_and_restart();
    }

    REQUIRE(oidc.approve(c.user_code));
    CHECK(wait_until([&] { return g.credential("oidc").is_object(); }, 30s));
    INFO("daemon: " << g.daemon_log());
    CHECK(g.call("GET", "/api/oidc/me").status == 200);
    CHECK(oidc.token_ok(k_device_code_grant) == 1);
}

TEST_CASE("agentgw connect waits through a daemon restart", "[oauth][device]") {
    OidcServer oidc;
    Gateway g(oidc_user_service(oidc));
    Connect c = start_connect(g, "oidc");
    g.crash_and_restart();
    REQUIRE(oidc.approve(c.user_code));
    const auto code = c.child->wait(60s);
    INFO("connect stdout: " << c.child->stdout_text() << "\nstderr: " << c.child->stderr_text()
                            << "\ndaemon: " << g.daemon_log());
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    CHECK(g.credential("oidc").is_object());
    CHECK(g.call("GET", "/api/oidc/me").status == 200);
}

namespace {

// Runs `agentgw connect --json` to its end against `stub` and returns the final interval with
// the gaps between the stub's device_code polls (seconds; gaps[i] is between polls i-1 and i,
// gaps[0] is 0). REQUIREs a completed flow of `polls` polls.
std::pair<int64_t, std::vector<double>> completed_flow(Gateway& g, TokenStub& stub, size_t polls) {
    Connect c = start_connect(g, "stub", true);
    const auto code = c.child->wait(60s);
    INFO("connect stdout: " << c.child->stdout_text() << "\nstderr: " << c.child->stderr_text()
                            << "\ndaemon: " << g.daemon_log());
    REQUIRE(code.has_value());
    REQUIRE(*code == 0);
    const json done = json::parse(c.child->stdout_text());
    REQUIRE(done.at("status") == "complete");
    const auto requests = stub.requests(k_device_code_grant);
    REQUIRE(requests.size() == polls);
    std::vector<double> gaps(polls, 0.0);
    for (size_t i = 1; i < polls; ++i) {
        gaps[i] = requests[i].at("time").get<double>() - requests[i - 1].at("time").get<double>();
    }
    for (const auto& poll : requests) {
        CHECK(poll.at("form").value("device_code", "") == "stub-device-1");
        CHECK(poll.at("form").value("client_id", "") == "stub-client");
    }
    return {done.at("interval").get<int64_t>(), gaps};
}

}  // namespace

TEST_CASE("the device flow follows the token endpoint's answers", "[oauth][device][stub]") {
    SECTION("slow_down adds 5 s to the interval for good") {
        TokenStub stub({.device_script = "pending,slow_down,pending,tokens"});
        Gateway g(stub_service(stub));
        const auto [interval, gaps] = completed_flow(g, stub, 4);
        INFO("gaps " << gaps[1] << " " << gaps[2] << " " << gaps[3]);
        CHECK(interval == 6);
        CHECK(gaps[2] >= 5.5);  // the poll after slow_down: 1 s + 5 s
        CHECK(gaps[3] >= 5.5);  // and the one after that: the change is permanent
        CHECK(g.call("GET", "/api/stub/resource").status == 200);
    }
    SECTION("a poll without a usable answer doubles the interval for good") {
        TokenStub stub({.device_script = "http500,http500,pending,tokens"});
        Gateway g(stub_service(stub));
        const auto [interval, gaps] = completed_flow(g, stub, 4);
        INFO("gaps " << gaps[1] << " " << gaps[2] << " " << gaps[3]);
        CHECK(interval == 4);
        CHECK(gaps[1] >= 1.8);  // after the first failure: 2 s
        CHECK(gaps[2] >= 3.6);  // after the second: 4 s
        CHECK(gaps[3] >= 3.6);  // a pending answer does not bring it back down
    }
    SECTION("a server in trouble is polled again slower whatever error it names") {
        // A 503 naming temporarily_unavailable, then a 400 naming it.
        TokenStub stub({.device_script = "unavailable,busy,tokens"});
        Gateway g(stub_service(stub));
        const auto [interval, gaps] = completed_flow(g, stub, 3);
        INFO("gaps " << gaps[1] << " " << gaps[2]);
        CHECK(interval == 4);
        CHECK(gaps[1] >= 1.8);  // after the 503: 2 s
        CHECK(gaps[2] >= 3.6);  // after the 400: 4 s
        CHECK(g.call("GET", "/api/stub/resource").status == 200);
    }
    SECTION("a reload that takes the service away ends the flow and is audited") {
        TokenStub stub({.device_script = "pending"});
        json svc = stub_service(stub);
        Gateway g(svc);
        Connect c = start_connect(g, "stub");
        svc["id"] = "other";
        write_file(g.dir / "services.json", json{{"services", json::array({svc})}}.dump(2));
        REQUIRE(g.control("POST", "/v1/services/reload").status == 200);
        const std::string err = ended_with(c, 1);
        CHECK(contains(err, "service stub is no longer an oauth2 service"));
        const json audit = g.audit_entries("oauth.connect", 1);
        REQUIRE(audit.size() == 1);
        CHECK(audit[0].at("outcome") == "not_found");
        CHECK(audit[0].at("target") == "service:stub");
    }
    SECTION("tokens for an agent") {
        TokenStub stub({.device_script = "tokens"});
        Gateway g(stub_service(stub));
        const RunResult r =
            run(g.cli_argv({"connect", "stub", "--agent", "worker"}, true), {}, std::nullopt, 30s);
        INFO("connect exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        CHECK(json::parse(r.out).at("status") == "complete");
        const json cred = g.credential("stub");
        REQUIRE(cred.is_object());
        CHECK(cred.at("scope") == "agent");
        CHECK(cred.at("agent") == "worker");
        CHECK(g.call("GET", "/api/stub/resource").status == 200);
    }
    SECTION("access_denied: connect exits 4") {
        TokenStub stub({.device_script = "pending,denied"});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 4);
        CHECK(contains(err, "agentgw: "));
        CHECK(g.credential("stub").is_null());
        const json audit = g.audit_entries("oauth.connect", 1);
        REQUIRE(audit.size() == 1);
        CHECK(audit[0].at("outcome") == "denied");
    }
    SECTION("expired_token: connect exits 1") {
        TokenStub stub({.device_script = "pending,expired"});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 1);
        CHECK(contains(err, "expired"));
        CHECK(g.credential("stub").is_null());
    }
    SECTION("another error while polling: the flow fails, connect exits 1") {
        TokenStub stub({.device_script = "pending,invalid_grant"});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 1);
        CHECK(contains(err, "invalid_grant"));
        CHECK(g.credential("stub").is_null());
    }
    SECTION("an error with a long description: the flow fails, connect exits 1") {
        // The description is cut at 200 bytes, between two characters: cut inside one, the
        // flow's record could not be stored and the flow stayed pending for good.
        TokenStub stub({.device_script = "pending,long_invalid_grant"});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const auto code = c.child->wait(30s);
        INFO("connect stderr: " << c.child->stderr_text() << "\ndaemon: " << g.daemon_log());
        REQUIRE(code.has_value());
        CHECK(*code == 1);
        CHECK(contains(c.child->stderr_text(), "invalid_grant: x\xc3\xa9"));
    }
    SECTION("a code that runs out within the interval ends the flow when it runs out") {
        TokenStub stub({.device_script = "pending", .interval = 60, .expires_in = 2});
        Gateway g(stub_service(stub));
        const auto started = std::chrono::steady_clock::now();
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 1);
        const double took =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        CHECK(contains(err, "expired"));
        CHECK(took < 20.0);  // not the 60 s interval
        CHECK(stub.requests(k_device_code_grant).empty());
    }
    SECTION("the code's expires_in runs out: connect exits 1") {
        TokenStub stub({.device_script = "pending", .expires_in = 3});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 1);
        CHECK(contains(err, "expired"));
        CHECK(stub.requests(k_device_code_grant).size() <= 3);
    }
}

TEST_CASE("a device authorization the server refuses is reported by connect",
          "[oauth][device][stub]") {
    // Nobody listens at the device authorization URL: the daemon, not the CLI, failed to
    // reach it, so connect reports a failure (1), not an unreachable daemon (5).
    TokenStub stub;
    json svc = stub_service(stub);
    svc["auth"]["device_authorization_url"] = stub.base_url() + "/no-such-endpoint";
    Gateway g(svc);
    const RunResult r =
        run(g.cli_argv({"connect", "stub", "--user", "alice"}, false), {}, std::nullopt, 30s);
    INFO("connect exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(contains(r.err, "agentgw: "));
    CHECK(contains(r.err, "device authorization failed"));
    CHECK(stub.requests(k_device_code_grant).empty());

    const HttpReply started =
        g.control("POST", "/v1/oauth/device", R"({"service": "stub", "user": "alice"})");
    INFO("POST -> " << started.status << " " << started.body);
    CHECK(started.status == 502);
    CHECK(header(started, "agentgw-error") == "upstream_error");
}

TEST_CASE("a refresh failure that is safe to repeat is retried, a refusal is not",
          "[oauth][refresh][stub]") {
    SECTION("HTTP 500 without an OAuth error: tried again") {
        TokenStub stub({.refresh_script = "http500,tokens"});
        Gateway g(stub_service(stub));
        g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
        const HttpReply r = g.call("GET", "/api/stub/resource");
        INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
        CHECK(r.status == 200);
        CHECK(stub.requests("refresh_token").size() == 2);
    }
    SECTION("invalid_grant: not repeated") {
        TokenStub stub({.refresh_script = "invalid_grant,tokens"});
        Gateway g(stub_service(stub));
        g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
        check_refresh_failed(g.call("GET", "/api/stub/resource"));
        CHECK(stub.requests("refresh_token").size() == 1);
        CHECK(g.credential("stub").at("status") == "reauth_required");
    }
}

TEST_CASE("lifetimes and intervals from the token server are bounded", "[oauth][stub]") {
    // A year as RFC 3339 text starts: the first four characters.
    const auto year_of = [](const std::string& rfc3339) { return std::stoi(rfc3339.substr(0, 4)); };
    const std::time_t now = std::time(nullptr);
    std::tm today{};
    REQUIRE(gmtime_r(&now, &today) != nullptr);
    const int this_year = today.tm_year + 1900;
    constexpr int64_t huge = std::numeric_limits<int64_t>::max();

    SECTION("a device code's expires_in and interval") {
        TokenStub stub({.interval = huge, .expires_in = huge});
        Gateway g(stub_service(stub));
        const HttpReply r = g.control("POST", "/v1/oauth/device",
                                      json{{"service", "stub"}, {"user", "alice"}}.dump());
        INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
        REQUIRE(r.status / 100 == 2);
        const json flow = json::parse(r.body);
        CHECK(flow.at("interval") == 3600);
        CHECK(year_of(flow.at("expires_at")) >= this_year + 9);
        CHECK(year_of(flow.at("expires_at")) <= this_year + 11);
        // The poller waits its (bounded) interval instead of polling at once.
        std::this_thread::sleep_for(1500ms);
        CHECK(stub.requests(k_device_code_grant).empty());
        const HttpReply shown =
            g.control("GET", "/v1/oauth/device/" + flow.at("flow_id").get<std::string>());
        REQUIRE(shown.status == 200);
        CHECK(json::parse(shown.body).at("status") == "pending");
    }
    SECTION("an access token's expires_in") {
        TokenStub stub({.token_expires_in = huge});
        Gateway g(stub_service(stub));
        g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
        for (int i = 0; i < 3; ++i) {
            const HttpReply r = g.call("GET", "/api/stub/resource");
            INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
            CHECK(r.status == 200);
        }
        // One refresh: the token it brought is good for ten years, not already expired.
        CHECK(stub.requests("refresh_token").size() == 1);
        const json cred = g.credential("stub");
        REQUIRE(cred.is_object());
        INFO("credential " << cred.dump());
        REQUIRE(cred.at("expires_at").is_string());
        CHECK(year_of(cred.at("expires_at")) >= this_year + 9);
        CHECK(year_of(cred.at("expires_at")) <= this_year + 11);
    }
}

TEST_CASE("an access token with a line break in it is never sent", "[oauth][stub]") {
    // The token is "stub-access-1\r\nX-Injected: 1": sent as it is, its first line would be a
    // valid token (the stub's resource would answer 200) and the rest a header of its own.
    TokenStub stub({.refresh_script = "split_tokens"});
    Gateway g(stub_service(stub));
    g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
    const HttpReply r = g.call("GET", "/api/stub/resource");
    INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
    CHECK(r.status == 502);
    CHECK(header(r, "agentgw-error") == "upstream_error");
    CHECK(contains(r.body, "CR, LF or NUL"));
    CHECK(stub.requests("refresh_token").size() == 1);
}

TEST_CASE("SIGTERM ends the daemon while a device flow's poll is under way",
          "[oauth][device][stub]") {
    // Polls every 8 s; the token endpoint takes 3 s to answer the first one.
    TokenStub stub({.device_script = "slow_pending", .interval = 8});
    Gateway g(stub_service(stub));
    const HttpReply started =
        g.control("POST", "/v1/oauth/device", json{{"service", "stub"}, {"user", "alice"}}.dump());
    REQUIRE(started.status / 100 == 2);
    REQUIRE(wait_until([&] { return !stub.requests(k_device_code_grant).empty(); }, 25s));

    const auto start = SteadyClock::now();
    g.daemon.child->signal(SIGTERM);
    const auto code = g.daemon.child->wait(20s);
    const double took = std::chrono::duration<double>(SteadyClock::now() - start).count();
    INFO("daemon: " << g.daemon_log());
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    // The poll under way may finish (3 s at most), but no new 8 s wait begins after it.
    CHECK(took < 7.0);
}

TEST_CASE("an upstream 401 for a credential marked reauth_required is passed back",
          "[oauth][refresh][stub]") {
    TokenStub stub({.refresh_script = "invalid_grant"});
    Gateway g(stub_service(stub));
    // An access token the resource does not know, good for an hour by its expiry.
    g.import_tokens("stub", {{"access_token", "unknown-to-the-stub"},
                             {"refresh_token", "stub-refresh-0"},
                             {"expires_in", 3600}});
    // The 401 leads to a refresh, which the server refuses: the credential is marked.
    check_refresh_failed(g.call("GET", "/api/stub/resource"));
    CHECK(g.credential("stub").at("status") == "reauth_required");
    // From then on, no refresh: the upstream's own 401 goes back to the agent.
    const HttpReply r = g.call("GET", "/api/stub/resource");
    INFO("status " << r.status << " body " << r.body);
    CHECK(r.status == 401);
    CHECK(header(r, "agentgw-error").empty());
    CHECK(stub.requests("refresh_token").size() == 1);
}

TEST_CASE("a token endpoint that quotes the secret it refuses does not make it leak",
          "[oauth][refresh][device][stub][secret]") {
    SECTION("a refresh token, in the agent's 502, the audit log and the daemon's log") {
        TokenStub stub({.refresh_script = "quoting_invalid_grant"});
        Gateway g(stub_service(stub));
        const std::string refresh = "rt-quoted-0123456789abcdef";
        g.import_tokens("stub", {{"refresh_token", refresh}});
        const HttpReply r = g.call("GET", "/api/stub/resource");
        check_refresh_failed(r);
        INFO("body " << r.body);
        CHECK(contains(r.body, "invalid_grant: Invalid token: [redacted]; x"));
        // Also the copy the 200-byte cut falls in: no prefix of it is left either.
        CHECK_FALSE(contains(r.body, "rt-quot"));
        const json audit = g.audit_entries("credential.refresh", 1);
        REQUIRE(audit.size() == 1);
        CHECK(contains(audit.dump(), "[redacted]"));
        CHECK_FALSE(contains(g.control("GET", "/v1/audit?limit=1000").body, "rt-quot"));
        CHECK_FALSE(contains(g.daemon_log(), "rt-quot"));
    }
    SECTION("a device code, in what connect reports") {
        TokenStub stub({.device_script = "pending,quoting_invalid_grant"});
        Gateway g(stub_service(stub));
        Connect c = start_connect(g, "stub");
        const std::string err = ended_with(c, 1);
        CHECK(contains(err, "Invalid token: [redacted]"));
        CHECK_FALSE(contains(err, "stub-device"));
        CHECK_FALSE(contains(g.daemon_log(), "stub-device"));
    }
}

TEST_CASE("a token_url whose scheme is written in upper case still reaches an http server",
          "[oauth][refresh][stub]") {
    TokenStub stub;
    json svc = stub_service(stub);
    svc["auth"]["token_url"] = "HTTP" + stub.base_url().substr(4) + "/token";  // HTTP://127...
    Gateway g(svc);
    g.import_tokens("stub", {{"refresh_token", "stub-refresh-0"}});
    const HttpReply r = g.call("GET", "/api/stub/resource");
    INFO("status " << r.status << " body " << r.body << "\ndaemon: " << g.daemon_log());
    CHECK(r.status == 200);
    CHECK(stub.requests("refresh_token").size() == 1);
}
