// The hub (SPEC §3.3) against the real agentgwd: the seed-2 flow driven by the curl binary, once
// blobs under 32 concurrent retrievals, real expiry and the background sweeper, recipients,
// deletion, size limits, bad bodies and quotas, the agent rate limit, restarts (SIGTERM and
// SIGKILL), no blob data or token on disk, in the log or in the audit log, and the control API's
// /v1/hub routes over the Unix socket.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <latch>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/raw_connection.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Args = std::vector<std::string>;
using Headers = std::vector<std::string>;

constexpr const char* k_gone_message = "Data not found or expired";

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

json parsed(const std::string& body) {
    return json::parse(body, nullptr, false);
}

int64_t now_secs() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Seconds since the epoch of an RFC 3339 UTC time "YYYY-MM-DDTHH:MM:SSZ", or nullopt.
std::optional<int64_t> parse_utc(const std::string& text) {
    std::smatch m;
    if (!std::regex_match(text, m,
                          std::regex(R"((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z)"))) {
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

// The value of the Prometheus sample line `series`, or nullopt.
std::optional<double> sample(const std::string& text, const std::string& series) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(series + " ", 0) == 0) {
            return std::stod(line.substr(series.size() + 1));
        }
    }
    return std::nullopt;
}

// A gateway error: status, Agentgw-Error and exactly {"error","message"}.
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

// The one answer for unknown, expired, consumed and not-a-recipient (SPEC §3.3).
void check_gone(const HttpReply& r) {
    INFO("status " << r.status << " body " << r.body << " " << r.error);
    CHECK(r.status == 404);
    CHECK(header(r, "agentgw-error") == "not_found");
    CHECK(parsed(r.body) == json{{"error", "not_found"}, {"message", k_gone_message}});
}

void check_rate_limit_headers(const HttpReply& r) {
    for (const char* name : {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}) {
        INFO(name << ": \"" << header(r, name) << "\"");
        CHECK(std::regex_match(header(r, name), std::regex("[0-9]+")));
    }
}

// An agent as the hub sees it: its name, key, id and a session from POST /login.
struct HubAgent {
    std::string name;
    std::string key;
    std::string id;
    std::string session;

    Headers auth() const { return {"x-api-key: " + key, "Authorization: Bearer " + session}; }
};

// An agentgwd with its own state dir, restartable on that state dir.
struct Gateway {
    TempDir dir;
    Args extra;
    RunningDaemon daemon;

    explicit Gateway(Args extra_args = {}) : extra(std::move(extra_args)) { start(); }

    void start() { daemon = start_daemon(daemon_args(dir, extra)); }

    void stop() {
        daemon.child->signal(SIGTERM);
        REQUIRE(daemon.child->wait(15s) == 0);
    }

    void kill() {
        daemon.child->signal(SIGKILL);
        REQUIRE(daemon.child->wait(15s) == 128 + SIGKILL);
    }

    const std::string& url() const { return daemon.base_url; }

    HttpReply control(const std::string& method, const std::string& path,
                      const std::string& body = {}) const {
        Headers h;
        if (!body.empty()) {
            h.push_back("Content-Type: application/json");
        }
        return http_request(method, "http://localhost" + path, body, h, daemon.socket.string());
    }

    json control_ok(const std::string& method, const std::string& path,
                    const std::string& body = {}) const {
        const HttpReply r = control(method, path, body);
        INFO(method << " " << path << " -> " << r.status << " " << r.body << " " << r.error);
        REQUIRE(r.status == 200);
        json doc = parsed(r.body);
        REQUIRE(doc.is_object());
        return doc;
    }

    // The audit log's entries once `done` holds for them, or as they are after 10 s: entries
    // recorded on the request path are written in batches.
    json audit_entries(const std::function<bool(const json&)>& done) const {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            json entries = control_ok("GET", "/v1/audit?limit=1000")["entries"];
            if (done(entries) || std::chrono::steady_clock::now() > deadline) {
                return entries;
            }
            std::this_thread::sleep_for(50ms);
        }
    }

    // A user owning one new agent `name`, logged in.
    HubAgent agent(const std::string& name) {
        control_ok("POST", "/auth/register",
                   json{{"username", "owner-" + name}, {"email", name + "@example.com"}}.dump());
        const json created = control_ok(
            "POST", "/auth/agent", json{{"user_id", "owner-" + name}, {"agent_name", name}}.dump());
        HubAgent a{name, created.at("api_key"), created.at("agent_id"), {}};
        a.session = login(a);
        return a;
    }

    std::string login(const HubAgent& a) const {
        const HttpReply r = http_request("POST", url() + "/login", {},
                                         {"x-api-key: " + a.key, "username: " + a.name});
        INFO("login " << a.name << " -> " << r.status << " " << r.body);
        REQUIRE(r.status == 200);
        return parsed(r.body).at("token");
    }

    void set_limit(const HubAgent& a, int requests, int window_secs) const {
        control_ok("PUT", "/v1/agents/" + a.name + "/rate-limit",
                   json{{"requests", requests}, {"window_secs", window_secs}}.dump());
    }

    HttpReply publish(const HubAgent& a, const std::string& body) const {
        Headers h = a.auth();
        h.push_back("Content-Type: application/json");
        return http_request("POST", url() + "/secure/agent/publish", body, h);
    }

    // A publish that must succeed; returns the data token.
    std::string published(const HubAgent& a, const json& body) const {
        const HttpReply r = publish(a, body.dump());
        INFO("publish -> " << r.status << " " << r.body << " " << r.error);
        REQUIRE(r.status == 200);
        const json doc = parsed(r.body);
        REQUIRE(doc.is_object());
        CHECK(doc.value("status", "") == "ok");
        REQUIRE(doc["token"].is_string());
        return doc["token"];
    }

    HttpReply retrieve(const HubAgent& a, const std::string& token,
                       const Headers& more = {}) const {
        Headers h = a.auth();
        h.insert(h.end(), more.begin(), more.end());
        return http_request("GET", url() + "/secure/retrieve/" + token, {}, h);
    }

    HttpReply remove(const HubAgent& a, const std::string& token) const {
        return http_request("DELETE", url() + "/secure/retrieve/" + token, {}, a.auth());
    }

    // The data of a blob that must be retrievable by `a`.
    std::string data_of(const HubAgent& a, const std::string& token) const {
        const HttpReply r = retrieve(a, token);
        INFO("retrieve -> " << r.status << " " << r.body << " " << r.error);
        REQUIRE(r.status == 200);
        return parsed(r.body).at("data");
    }

    std::optional<double> blobs_live() const {
        const HttpReply r = http_request("GET", url() + "/metrics");
        REQUIRE(r.status == 200);
        return sample(r.body, "agentgw_hub_blobs_live");
    }
};

// The curl binary, run as a user would.
struct CurlReply {
    long status = 0;
    std::string content_type;
    std::string body;
};

CurlReply curl(const std::string& program, const Args& args) {
    Args argv = {program,      "-sS", "--noproxy", "*",
                 "--max-time", "10",  "-w",        "\n%{http_code} %{content_type}"};
    argv.insert(argv.end(), args.begin(), args.end());
    const RunResult r = run(argv);
    INFO("curl exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.code == 0);
    const size_t nl = r.out.rfind('\n');
    REQUIRE(nl != std::string::npos);
    CurlReply reply;
    reply.body = r.out.substr(0, nl);
    std::istringstream tail(r.out.substr(nl + 1));
    tail >> reply.status;
    std::getline(tail >> std::ws, reply.content_type);
    return reply;
}

}  // namespace

TEST_CASE("the seed-2 flow with curl: login, publish, retrieve", "[hub][curl]") {
    const auto curl_path = find_on_path("curl");
    if (!curl_path) {
        FAIL("curl is not on PATH");
    }
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");

    // Login with the two seed-2 headers.
    const CurlReply login =
        curl(*curl_path, {"-X", "POST", g.url() + "/login", "-H", "x-api-key: " + alice.key, "-H",
                          "username: alice-agent"});
    INFO(login.body);
    REQUIRE(login.status == 200);
    const json session = parsed(login.body);
    REQUIRE(session["token"].is_string());
    CHECK(session["expires_at"].is_string());
    const std::string token = session["token"];

    const CurlReply wrong =
        curl(*curl_path, {"-X", "POST", g.url() + "/login", "-H", "x-api-key: " + bob.key, "-H",
                          "username: alice-agent"});
    CHECK(wrong.status == 401);
    CHECK(wrong.body == R"({"error":"unauthorized","message":"Invalid username or API key"})");

    // Publish.
    const std::string data = "c2VhbGVkIGJ5IHRoZSBhZ2VudA== {\"quoted\": \"é\"}\nline two";
    const int64_t before = now_secs();
    const CurlReply pub =
        curl(*curl_path,
             {"-X", "POST", g.url() + "/secure/agent/publish", "-H", "x-api-key: " + alice.key,
              "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json",
              "--data-binary", json{{"name", "handoff"}, {"data", data}, {"ttl", 600}}.dump()});
    INFO(pub.body);
    REQUIRE(pub.status == 200);
    const json receipt = parsed(pub.body);
    REQUIRE(receipt.is_object());
    CHECK(receipt.size() == 3);
    CHECK(receipt.value("status", "") == "ok");
    REQUIRE(receipt["token"].is_string());
    const std::string data_token = receipt["token"];
    CHECK(std::regex_match(data_token, std::regex("[A-Za-z0-9_-]{43}")));
    const auto expires_at = parse_utc(receipt.value("expires_at", ""));
    REQUIRE(expires_at);
    CHECK(*expires_at >= before + 600);
    CHECK(*expires_at <= now_secs() + 600);

    // Retrieve as JSON, by another agent (no recipients: anyone holding the token).
    const CurlReply got =
        curl(*curl_path, {g.url() + "/secure/retrieve/" + data_token, "-H", "x-api-key: " + bob.key,
                          "-H", "Authorization: Bearer " + bob.session});
    INFO(got.body);
    REQUIRE(got.status == 200);
    CHECK(got.content_type.rfind("application/json", 0) == 0);
    const json blob = parsed(got.body);
    REQUIRE(blob.is_object());
    CHECK(blob.size() == 8);
    CHECK(blob["token"] == data_token);
    CHECK(blob["name"] == "handoff");
    CHECK(blob["data"] == data);
    CHECK(blob["ttl"] == 600);
    CHECK(blob["publisher"] == "alice-agent");
    CHECK(blob["once"] == false);
    const auto created_at = parse_utc(blob.value("created_at", ""));
    REQUIRE(created_at);
    CHECK(*created_at >= before);
    CHECK(parse_utc(blob.value("expires_at", "")) == expires_at);
    CHECK(*expires_at == *created_at + 600);

    // Accept: text/plain gives the bare data.
    const CurlReply plain = curl(
        *curl_path, {g.url() + "/secure/retrieve/" + data_token, "-H", "x-api-key: " + bob.key,
                     "-H", "Authorization: Bearer " + bob.session, "-H", "Accept: text/plain"});
    CHECK(plain.status == 200);
    CHECK(plain.content_type.rfind("text/plain", 0) == 0);
    CHECK(plain.body == data);

    // Both credentials, of one agent.
    const std::string url = g.url() + "/secure/retrieve/" + data_token;
    const HttpReply mixed = http_request(
        "GET", url, {}, {"x-api-key: " + alice.key, "Authorization: Bearer " + bob.session});
    check_error(mixed, 401, "unauthorized");
    const HttpReply mixed_publish =
        http_request("POST", g.url() + "/secure/agent/publish", R"({"name":"n","data":"d"})",
                     {"x-api-key: " + bob.key, "Authorization: Bearer " + alice.session});
    check_error(mixed_publish, 401, "unauthorized");
    for (const Headers& h :
         {Headers{"x-api-key: " + bob.key}, Headers{"x-api-key: " + bob.key, "Authorization: x"},
          Headers{"x-api-key: " + bob.key, "Authorization: Bearer garbage.not.ajwt"},
          Headers{"x-api-key: " + bob.key, "Authorization: Bearer " + bob.key}}) {
        const HttpReply r = http_request("GET", url, {}, h);
        check_error(r, 401, "unauthorized");
        CHECK(parsed(r.body).value("message", "") == "Invalid or expired JWT");
    }
    check_error(http_request("GET", url, {}, {"Authorization: Bearer " + bob.session}), 401,
                "unauthorized");  // a session without the key
    check_error(http_request("GET", url, {},
                             {"x-api-key: agw_" + std::string(43, 'Q'),
                              "Authorization: Bearer " + bob.session}),
                401, "unauthorized");
    // None of the refusals touched the blob.
    CHECK(g.data_of(alice, data_token) == data);
}

TEST_CASE("32 concurrent retrievals of a once blob: exactly one gets it", "[hub][once]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");
    const std::string token =
        g.published(alice, {{"name", "one-time"}, {"data", "only-once-data"}, {"once", true}});

    constexpr int k_racers = 32;
    std::vector<HttpReply> replies(k_racers);
    std::latch go(k_racers);
    std::vector<std::thread> threads;
    for (int i = 0; i < k_racers; ++i) {
        threads.emplace_back([&, i] {
            go.arrive_and_wait();  // every thread sends at once
            replies[static_cast<size_t>(i)] = g.retrieve(i % 2 == 0 ? alice : bob, token);
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    int ok = 0;
    for (const auto& r : replies) {
        if (r.status == 200) {
            ++ok;
            const json blob = parsed(r.body);
            CHECK(blob.value("data", "") == "only-once-data");
            CHECK(blob.value("once", false) == true);
        } else {
            check_gone(r);
        }
    }
    CHECK(ok == 1);
    check_gone(g.retrieve(alice, token));
}

TEST_CASE("an expired blob is refused and swept from the live count", "[hub][ttl]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HttpReply r =
        g.publish(alice, json{{"name", "brief"}, {"data", "short-lived"}, {"ttl", 3}}.dump());
    REQUIRE(r.status == 200);
    const std::string token = parsed(r.body).at("token");
    const auto expires_at = parse_utc(parsed(r.body).value("expires_at", ""));
    REQUIRE(expires_at);
    CHECK(g.blobs_live() == 1.0);

    // expires_at is rounded down to the second: one second past it is past the expiry.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (now_secs() < *expires_at + 1 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(now_secs() >= *expires_at + 1);
    check_gone(g.retrieve(alice, token));

    // The sweeper runs every second; wait for it with a bound, not a timing assertion.
    std::optional<double> live = g.blobs_live();
    while (live != 0.0 && std::chrono::steady_clock::now() < deadline + 10s) {
        std::this_thread::sleep_for(200ms);
        live = g.blobs_live();
    }
    CHECK(live == 0.0);
}

TEST_CASE("recipients: the named agent gets the blob, a third does not", "[hub][recipients]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");
    const HubAgent carol = g.agent("carol-agent");
    const std::string token = g.published(
        alice, {{"name", "for-bob"}, {"data", "bob-only"}, {"recipients", {"bob-agent"}}});

    check_gone(g.retrieve(carol, token));
    const HttpReply got = g.retrieve(bob, token);
    REQUIRE(got.status == 200);
    CHECK(parsed(got.body).value("data", "") == "bob-only");
    CHECK(parsed(got.body).value("publisher", "") == "alice-agent");
    check_gone(g.retrieve(carol, token));
    CHECK(g.data_of(alice, token) == "bob-only");  // the publisher

    const HttpReply unknown = g.publish(
        alice, json{{"name", "n"}, {"data", "d"}, {"recipients", {"bob-agent", "nobody"}}}.dump());
    check_error(unknown, 400, "bad_request");
    CHECK(contains(parsed(unknown.body).value("message", ""), "recipients"));
}

TEST_CASE("only the publisher deletes a blob", "[hub][delete]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");
    const std::string token = g.published(alice, {{"name", "n"}, {"data", "deletable"}});
    const json shown = parsed(g.retrieve(bob, token).body);
    CHECK(shown.value("ttl", 0) == 86400);  // the defaults
    CHECK(shown.value("once", true) == false);

    check_gone(g.remove(bob, token));
    CHECK(g.data_of(bob, token) == "deletable");

    const HttpReply removed = g.remove(alice, token);
    CHECK(removed.status == 204);
    CHECK(removed.body.empty());
    check_rate_limit_headers(removed);
    check_gone(g.retrieve(alice, token));
    check_gone(g.retrieve(bob, token));
    check_gone(g.remove(alice, token));
    check_gone(g.remove(alice, std::string(43, 'A')));
}

TEST_CASE("size limit, bad bodies and the blob quota", "[hub][limits]") {
    Gateway g({"--hub-max-data", "1024", "--hub-quota-blobs", "2", "--hub-max-ttl", "100"});
    const HubAgent alice = g.agent("alice-agent");

    check_error(g.publish(alice, json{{"name", "big"}, {"data", std::string(1025, 'x')}}.dump()),
                413, "payload_too_large");
    const std::string first =
        g.published(alice, {{"name", "exact"}, {"data", std::string(1024, 'x')}});
    CHECK(parsed(g.retrieve(alice, first).body).value("ttl", 0) == 100);  // capped by the max

    for (const std::string& body : {
             std::string(R"({"name":"n","data":"d")"),  // malformed
             std::string("not json"),
             std::string(R"(["name","data"])"),
             std::string(R"({"name":"n","data":5})"),
             std::string(R"({"name":"n","data":"d","ttl":"x"})"),
             std::string(R"({"name":"n","data":"d","ttl":0})"),
             std::string(R"({"name":"n","data":"d","ttl":-1})"),
             std::string(R"({"name":"n","data":"d","ttl":101})"),  // over --hub-max-ttl
             std::string(R"({"name":"n","data":"d","ttl":1.5})"),
             std::string(R"({"name":"n","data":"d","once":"yes"})"),
             std::string(R"({"name":"n","data":"d","recipients":"bob"})"),
             std::string(R"({"name":"n","data":"d","recipients":[""]})"),
             R"({"name":"n","data":"d","recipients":[")" + std::string(600, 'a') + R"("]})",
             std::string(R"({"name":"n","data":"d","extra":1})"),
             std::string(R"({"data":"d"})"),
             std::string(R"({"name":"","data":"d"})"),
             std::string(R"({"name":"n"})"),
         }) {
        INFO("body " << body);
        check_error(g.publish(alice, body), 400, "bad_request");
    }

    // An unknown field is named only when it looks like one: a long or odd key (a token pasted
    // in the wrong place, megabytes of text) goes neither into the answer nor the audit log.
    const HttpReply named = g.publish(alice, R"({"name":"n","data":"d","extra_field":1})");
    CHECK(parsed(named.body).value("message", "") == "field \"extra_field\": unknown field");
    const std::string pasted = "sk-pasted-" + std::string(1000, 'q');
    const std::string big(60 * 1024, 'z');  // well under the body limit (1 MiB)
    for (const std::string& key : {pasted, big, std::string("Extra"), std::string(33, 'e'),
                                   std::string("0123456789abcdef0123456789abcdef")}) {
        const HttpReply unnamed =
            g.publish(alice, json{{"name", "n"}, {"data", "d"}, {key, 1}}.dump());
        check_error(unnamed, 400, "bad_request");
        CHECK(parsed(unnamed.body).value("message", "") == "request body: an unknown field");
    }
    // All five refusals, the 60 KiB key's among them, are in the log before it is read.
    const auto unnamed_refusals = [](const std::string& text) {
        size_t found = 0;
        for (size_t at = text.find("request body: an unknown field"); at != std::string::npos;
             at = text.find("request body: an unknown field", at + 1)) {
            ++found;
        }
        return found;
    };
    const std::string audit_text = g.audit_entries([&](const json& entries) {
                                        return unnamed_refusals(entries.dump()) >= 5;
                                    }).dump();
    CHECK(unnamed_refusals(audit_text) == 5);
    CHECK(audit_text.find("extra_field") != std::string::npos);
    CHECK(audit_text.find("sk-pasted") == std::string::npos);
    CHECK(audit_text.find("zzzz") == std::string::npos);
    CHECK(audit_text.size() < 64 * 1024);

    // The quota: two live blobs per agent.
    const std::string second = g.published(alice, {{"name", "second"}, {"data", "d"}});
    const HttpReply third = g.publish(alice, json{{"name", "third"}, {"data", "d"}}.dump());
    check_error(third, 409, "conflict");
    const std::string message = parsed(third.body).value("message", "");
    CHECK(contains(message, "quota"));
    CHECK(contains(message, "2 live blobs"));

    REQUIRE(g.remove(alice, first).status == 204);
    g.published(alice, {{"name", "third"}, {"data", "d"}});
    check_error(g.publish(alice, json{{"name", "fourth"}, {"data", "d"}}.dump()), 409, "conflict");
    CHECK(g.data_of(alice, second) == "d");
}

TEST_CASE("hub calls count against the agent's rate limit", "[hub][ratelimit]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    // A day-long window: the limiter's windows are aligned to the clock, and a test that
    // straddled a boundary would see the previous window's weight in RateLimit-Remaining.
    g.set_limit(alice, 3, 86400);

    const HttpReply pub = g.publish(alice, json{{"name", "n"}, {"data", "limited"}}.dump());
    REQUIRE(pub.status == 200);
    check_rate_limit_headers(pub);
    CHECK(header(pub, "ratelimit-limit") == "3");
    CHECK(header(pub, "ratelimit-remaining") == "2");
    const std::string token = parsed(pub.body).at("token");

    const HttpReply second = g.retrieve(alice, token);
    CHECK(second.status == 200);
    check_rate_limit_headers(second);
    CHECK(header(second, "ratelimit-remaining") == "1");
    const HttpReply third = g.retrieve(alice, token, {"Accept: text/plain"});
    CHECK(third.status == 200);
    check_rate_limit_headers(third);
    CHECK(header(third, "ratelimit-remaining") == "0");

    for (const HttpReply& r : {g.retrieve(alice, token), g.remove(alice, token),
                               g.publish(alice, json{{"name", "n"}, {"data", "d"}}.dump())}) {
        check_error(r, 429, "rate_limit_exceeded");
        check_rate_limit_headers(r);
        CHECK(header(r, "ratelimit-limit") == "3");
        CHECK(header(r, "ratelimit-remaining") == "0");
        const std::string retry = header(r, "retry-after");
        INFO("Retry-After: " << retry);
        REQUIRE(std::regex_match(retry, std::regex("[0-9]+")));
        CHECK(std::stol(retry) >= 1);
        // Up to the rest of this window plus the part of the next one that the full window
        // still weighs on: at most two windows.
        CHECK(std::stol(retry) <= 2 * 86400);
    }
    // The refused DELETE did not delete: the operator still finds the blob.
    const json kept = g.control_ok("POST", "/v1/hub/retrieve", json{{"token", token}}.dump());
    CHECK(kept.value("data", "") == "limited");
}

TEST_CASE("a publish over the body limit is the agent's: counted, audited, limited first",
          "[hub][ratelimit][limits]") {
    Gateway g({"--hub-max-data", "1024"});  // the body limit is then its floor, 1 MiB
    const HubAgent alice = g.agent("alice-agent");
    g.set_limit(alice, 3, 86400);
    const std::string big = json{{"name", "n"}, {"data", std::string(1100 * 1024, 'x')}}.dump();

    const HttpReply too_large = g.publish(alice, big);
    check_error(too_large, 413, "payload_too_large");
    check_rate_limit_headers(too_large);
    CHECK(header(too_large, "ratelimit-remaining") == "2");
    // A chunked body has no length to judge from the header: it is refused once it has grown
    // over the limit, and the refusal is the agent's all the same.
    Headers chunked = alice.auth();
    chunked.push_back("Content-Type: application/json");
    chunked.push_back("Transfer-Encoding: chunked");
    const HttpReply chunked_too_large =
        http_request("POST", g.url() + "/secure/agent/publish", big, chunked);
    check_error(chunked_too_large, 413, "payload_too_large");
    check_rate_limit_headers(chunked_too_large);
    CHECK(header(chunked_too_large, "ratelimit-remaining") == "1");
    const auto refusals_in = [&](const json& entries) {
        json found = json::array();
        for (const json& e : entries) {
            if (e.value("action", "") == "hub.publish" &&
                e.value("outcome", "") == "payload_too_large") {
                CHECK(e.value("actor", "") == "agent:" + alice.id);
                found.push_back(e);
            }
        }
        return found;
    };
    const json refusals = refusals_in(
        g.audit_entries([&](const json& entries) { return refusals_in(entries).size() >= 2; }));
    CHECK(refusals.size() == 2);

    CHECK(g.publish(alice, json{{"name", "n"}, {"data", "d"}}.dump()).status == 200);
    // Over the limit, the header is enough for the answer: 429, not 413.
    check_error(g.publish(alice, big), 429, "rate_limit_exceeded");
}

TEST_CASE("a publish counts from its header: one whose body is still coming holds the last call",
          "[hub][ratelimit]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    g.set_limit(alice, 1, 86400);

    // A publish whose header has arrived and whose body has not.
    RawConnection held(port_of(g.url()));
    std::string head = "POST /secure/agent/publish HTTP/1.1\r\nHost: x\r\n";
    for (const std::string& h : alice.auth()) {
        head += h + "\r\n";
    }
    head += "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    held.send(head);
    // Its header is checked, and the call counted, as soon as it is read: GET /api, which
    // shows the agent's limit as it stands, sees the last call taken.
    std::string remaining;
    for (int i = 0; i < 250 && remaining != "0"; ++i) {
        const HttpReply api =
            http_request("GET", g.url() + "/api", "", {"Authorization: Bearer " + alice.session});
        REQUIRE(api.status == 200);
        remaining = header(api, "ratelimit-remaining");
        if (remaining != "0") {
            std::this_thread::sleep_for(20ms);
        }
    }
    CHECK(remaining == "0");

    // The one call the limit allows is taken: a whole publish sent now is refused.
    check_error(g.publish(alice, json{{"name", "n"}, {"data", "d"}}.dump()), 429,
                "rate_limit_exceeded");
}

TEST_CASE("blobs survive a restart, and a SIGKILL after acknowledged publishes", "[hub][restart]") {
    Gateway g;
    HubAgent alice = g.agent("alice-agent");
    g.set_limit(alice, 100000, 60);

    SECTION("SIGTERM") {
        const std::string reusable = g.published(alice, {{"name", "r"}, {"data", "kept-data"}});
        const std::string once =
            g.published(alice, {{"name", "o"}, {"data", "kept-once"}, {"once", true}});
        g.stop();
        g.start();
        alice.session = g.login(alice);
        CHECK(g.data_of(alice, reusable) == "kept-data");
        CHECK(g.data_of(alice, reusable) == "kept-data");
        CHECK(g.data_of(alice, once) == "kept-once");
        check_gone(g.retrieve(alice, once));
    }
    SECTION("SIGKILL") {
        constexpr int k_threads = 8;
        constexpr int k_each = 25;
        std::mutex mutex;  // guards acknowledged and failures
        std::vector<std::pair<std::string, std::string>> acknowledged;  // token, data
        std::vector<std::string> failures;
        std::vector<std::thread> threads;
        for (int t = 0; t < k_threads; ++t) {
            threads.emplace_back([&, t] {
                for (int i = 0; i < k_each; ++i) {
                    const std::string data = "blob-" + std::to_string(t) + "-" + std::to_string(i);
                    const HttpReply r =
                        g.publish(alice, json{{"name", "n"}, {"data", data}}.dump());
                    const json doc = parsed(r.body);
                    const std::lock_guard lock(mutex);
                    if (r.status == 200 && doc.is_object() && doc["token"].is_string()) {
                        acknowledged.emplace_back(doc["token"], data);
                    } else {
                        failures.push_back(std::to_string(r.status) + " " + r.body + r.error);
                    }
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        g.kill();  // at once after the last acknowledged publish
        INFO("first failure: " << (failures.empty() ? std::string() : failures.front()));
        CHECK(failures.empty());
        REQUIRE(acknowledged.size() == size_t{k_threads * k_each});

        g.start();
        alice.session = g.login(alice);
        size_t lost = 0;
        for (const auto& [token, data] : acknowledged) {
            const HttpReply r = g.retrieve(alice, token, {"Accept: text/plain"});
            if (r.status != 200 || r.body != data) {
                ++lost;
            }
        }
        CHECK(lost == 0);
        CHECK(g.blobs_live() == static_cast<double>(k_threads * k_each));
    }
    g.stop();
}

TEST_CASE("no blob data or token on disk, in the log or in the audit log", "[hub][secret]") {
    Gateway g({"--log-level", "debug"});
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");
    const std::string data = "hub-secret-probe-" + std::string(200, 'S') + "-end";
    const std::string once_data = "hub-once-probe-4f1d9a";
    const std::string token = g.published(alice, {{"name", "probe"}, {"data", data}});
    const std::string once_token =
        g.published(alice, {{"name", "probe-once"}, {"data", once_data}, {"once", true}});
    CHECK(g.data_of(bob, token) == data);
    CHECK(g.data_of(bob, once_token) == once_data);
    check_gone(g.retrieve(bob, once_token));
    check_gone(g.remove(bob, token));
    REQUIRE(g.remove(alice, token).status == 204);
    check_gone(g.retrieve(bob, token));
    // A method the route does not take: the answer names the route, not the token in the path.
    const HttpReply wrong_method =
        http_request("PUT", g.url() + "/secure/retrieve/" + once_token, "x", bob.auth());
    check_error(wrong_method, 405, "method_not_allowed");
    CHECK_FALSE(contains(wrong_method.body, once_token));
    // Refused credentials are audited as the system's, without the token in the path.
    check_error(http_request("GET", g.url() + "/secure/retrieve/" + token, {},
                             {"x-api-key: agw_not-a-key", "Authorization: Bearer not-a-session"}),
                401, "unauthorized");
    const std::string fingerprint_target_pattern = "blob:[0-9a-f]{16}";

    // The audit entries are written in batches: wait for the last one (the refused retrieval).
    const json entries = g.audit_entries([](const json& entries) {
        size_t hub_entries = 0;
        for (const auto& e : entries) {
            hub_entries += e.value("action", "").rfind("hub.", 0) == 0 ? 1 : 0;
        }
        return hub_entries >= 9;
    });
    std::map<std::string, std::vector<json>> by_action;
    for (const auto& e : entries) {
        by_action[e.value("action", "")].push_back(e);
    }
    INFO(entries.dump(1));
    CHECK(by_action["hub.publish"].size() == 2);
    CHECK(by_action["hub.retrieve"].size() == 5);
    CHECK(by_action["hub.delete"].size() == 2);
    std::set<std::string> targets;
    size_t refused = 0;
    for (const char* action : {"hub.publish", "hub.retrieve", "hub.delete"}) {
        for (const auto& e : by_action[action]) {
            const std::string target = e.value("target", "");
            if (e.value("actor", "") == "system") {
                CHECK(target == "hub");
                CHECK(e.value("outcome", "") == "unauthorized");
                ++refused;
                continue;
            }
            CHECK(std::regex_match(target, std::regex(fingerprint_target_pattern)));
            CHECK(e.value("actor", "").rfind("agent:", 0) == 0);
            targets.insert(target);
        }
    }
    CHECK(targets.size() == 2);  // one fingerprint per token, the same in every entry
    CHECK(refused == 1);
    const std::string audit_text = entries.dump();
    const HttpReply metrics = http_request("GET", g.url() + "/metrics");
    REQUIRE(metrics.status == 200);
    CHECK(contains(metrics.body, R"(route="/secure/retrieve",status="404")"));

    g.stop();
    const std::string log = g.daemon.child->stderr_text();
    REQUIRE(contains(log, "ready"));
    std::string disk;
    for (const auto& entry : fs::recursive_directory_iterator(g.dir / "state")) {
        if (entry.is_regular_file()) {
            disk += read_file(entry.path());
        }
    }
    REQUIRE(contains(disk, alice.id));  // keys are plaintext: the scan sees what was written

    for (const auto& [where, text] : std::vector<std::pair<std::string, std::string>>{
             {"disk", disk}, {"log", log}, {"audit", audit_text}, {"metrics", metrics.body}}) {
        INFO("in the " << where);
        CHECK_FALSE(contains(text, "hub-secret-probe-"));
        CHECK_FALSE(contains(text, std::string(64, 'S')));
        CHECK_FALSE(contains(text, once_data));
        CHECK_FALSE(contains(text, token));
        CHECK_FALSE(contains(text, once_token));
        CHECK_FALSE(contains(text, token.substr(0, 20)));
        CHECK_FALSE(contains(text, once_token.substr(0, 20)));
    }
}

TEST_CASE("the control API publishes and retrieves on behalf of an agent", "[hub][control]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    const HubAgent bob = g.agent("bob-agent");
    const HubAgent carol = g.agent("carol-agent");

    const json receipt = g.control_ok("POST", "/v1/hub/publish",
                                      json{{"agent", "alice-agent"},
                                           {"name", "from-operator"},
                                           {"data", "operator-data"},
                                           {"ttl", 300},
                                           {"recipients", {"bob-agent"}}}
                                          .dump());
    CHECK(receipt.size() == 3);
    CHECK(receipt.value("status", "") == "ok");
    REQUIRE(receipt["token"].is_string());
    const std::string token = receipt["token"];
    CHECK(parse_utc(receipt.value("expires_at", "")).has_value());

    // The agent API sees it as alice's.
    const HttpReply by_bob = g.retrieve(bob, token);
    REQUIRE(by_bob.status == 200);
    CHECK(parsed(by_bob.body).value("publisher", "") == "alice-agent");
    check_gone(g.retrieve(carol, token));

    // The control API answers like the agent API.
    const json as_bob = g.control_ok("POST", "/v1/hub/retrieve",
                                     json{{"token", token}, {"agent", "bob-agent"}}.dump());
    CHECK(as_bob == parsed(by_bob.body));
    const json as_operator =
        g.control_ok("POST", "/v1/hub/retrieve", json{{"token", token}}.dump());
    CHECK(as_operator == as_bob);
    const HttpReply as_carol = g.control("POST", "/v1/hub/retrieve",
                                         json{{"token", token}, {"agent", "carol-agent"}}.dump());
    check_gone(as_carol);

    // An agent's blob, retrieved through the control API; a once blob only once.
    const std::string once =
        g.published(alice, {{"name", "o"}, {"data", "once-via-control"}, {"once", true}});
    const json first = g.control_ok("POST", "/v1/hub/retrieve", json{{"token", once}}.dump());
    CHECK(first.value("data", "") == "once-via-control");
    CHECK(first.value("once", false) == true);
    check_gone(g.control("POST", "/v1/hub/retrieve", json{{"token", once}}.dump()));
    check_gone(g.retrieve(alice, once));

    // Bad requests.
    CHECK(g.control("POST", "/v1/hub/publish",
                    json{{"agent", "nobody"}, {"name", "n"}, {"data", "d"}}.dump())
              .status == 404);
    check_error(g.control("POST", "/v1/hub/publish",
                          json{{"agent", "alice-agent"}, {"name", "n"}, {"data", 5}}.dump()),
                400, "bad_request");
    check_error(
        g.control("POST", "/v1/hub/publish",
                  json{{"agent", "alice-agent"}, {"name", "n"}, {"data", "d"}, {"ttl", 0}}.dump()),
        400, "bad_request");
    check_error(g.control("POST", "/v1/hub/retrieve", json{{"agent", "bob-agent"}}.dump()), 400,
                "bad_request");
}

TEST_CASE("agentgw publish and retrieve, with nothing an agent wrote driving the terminal",
          "[hub][cli]") {
    Gateway g;
    const HubAgent alice = g.agent("alice-agent");
    g.agent("bob-agent");
    auto cli = [&](std::vector<std::string> args, const std::string& input) {
        args.insert(args.begin(), {AGENTGW_CLI_PATH, "--socket", g.daemon.socket.string()});
        return run(args, {}, input);
    };

    // An agent labels its blob and fills it with terminal escapes (a title change, colour,
    // a screen clear through the C1 CSI U+009B), next to text that must stay as it is.
    const std::string data =
        "line 1\n\x1b[31mred\x1b[0m\tend\x7f \xc2\x9b"
        "2J caf\xc3\xa9 \xe2\x82\xac";
    const std::string token =
        g.published(alice, {{"name", "report\x1b]0;owned\x07\xc2\x9d"}, {"data", data}});
    const RunResult shown = cli({"retrieve", "--as", "bob-agent"}, token + "\n");
    INFO("stdout: " << shown.out << "\nstderr: " << shown.err);
    REQUIRE(shown.code == 0);
    CHECK(shown.out.find('\x1b') == std::string::npos);
    CHECK(shown.out.find('\x07') == std::string::npos);
    CHECK(shown.out.find('\x7f') == std::string::npos);
    CHECK(shown.out.find("\xc2\x9b") == std::string::npos);
    CHECK(shown.out.find("\xc2\x9d") == std::string::npos);
    CHECK(contains(shown.out, "report\\x1b]0;owned\\x07\\xc2\\x9d"));
    CHECK(contains(shown.out,
                   "line 1\n\\x1b[31mred\\x1b[0m\tend\\x7f \\xc2\\x9b"
                   "2J caf\xc3\xa9 \xe2\x82\xac"));
    CHECK(contains(shown.out, "alice-agent"));

    // --raw gives the data exactly as published, and nothing else.
    const RunResult raw = cli({"retrieve", "--as", "bob-agent", "--raw", "-"}, token + "\n");
    REQUIRE(raw.code == 0);
    CHECK(raw.out == data);
    // The token on the command line works too; an empty one (an unset variable) is a usage
    // error, not a prompt or a read of stdin, which a loop around it may be feeding.
    CHECK(cli({"retrieve", "--as", "bob-agent", "--raw", token}, "").out == data);
    const RunResult empty = cli({"retrieve", "--as", "bob-agent", ""}, token + "\n");
    CHECK(empty.code == 2);
    CHECK(empty.out.empty());

    // publish reads the data from stdin and prints the token; the agent API then serves it.
    const std::string bytes = std::string("from\0stdin\n", 11);
    const RunResult published =
        cli({"publish", "--as", "alice-agent", "--name", "piped", "--once"}, bytes);
    INFO("publish: " << published.out << published.err);
    REQUIRE(published.code == 0);
    std::string piped_token = published.out;
    while (!piped_token.empty() && (piped_token.back() == '\n' || piped_token.back() == '\r')) {
        piped_token.pop_back();
    }
    const RunResult once = cli({"retrieve", "--raw"}, piped_token + "\n");
    REQUIRE(once.code == 0);
    CHECK(once.out == bytes);
    check_gone(g.retrieve(alice, piped_token));  // once: gone after the first retrieval
}
