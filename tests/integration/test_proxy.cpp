// The credential-injecting proxy (SPEC §3.2, §8, §10) driven end to end: the real agentgwd and
// agentgw binaries, the project's test upstream (tests/support/upstream.py) and HTTP from libcurl
// or, where the exact bytes matter, a raw TCP socket. Covered: each injection type and what the
// upstream receives (secret, query, body, hop-by-hop and agent headers, Host), credential scope
// precedence, authentication and grant refusals, rate limits, path traversal and request
// smuggling, upstream failures and timeouts, response headers (hop-by-hop, a forged
// Agentgw-Error) from a scripted upstream, streaming (SSE, 200 MiB, slow clients) with bounded
// daemon memory, TLS verification, discovery and login, and that no secret ever leaks into a
// response, the daemon's log or the audit log.
#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <curl/curl.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/raw_connection.hpp"
#include "tests/support/test_upstream.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

using Args = std::vector<std::string>;
using Headers = std::vector<std::string>;

constexpr long k_mib = 1024 * 1024;

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string joined(const Args& args) {
    std::string out;
    for (const auto& a : args) {
        out += (out.empty() ? "" : " ") + a;
    }
    return out;
}

double seconds_since(SteadyClock::time_point start) {
    return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// The bytes of a body the upstream recorded: it decodes bodies as Latin-1 and nlohmann::json
// hands them back as UTF-8, so every character above 0x7f is two bytes here.
std::string latin1(const std::string& utf8) {
    std::string out;
    for (size_t i = 0; i < utf8.size(); ++i) {
        const auto c = static_cast<unsigned char>(utf8[i]);
        if (c < 0x80 || i + 1 == utf8.size()) {
            out.push_back(static_cast<char>(c));
        } else {
            const auto d = static_cast<unsigned char>(utf8[++i]);
            out.push_back(static_cast<char>(((c & 0x1f) << 6) | (d & 0x3f)));
        }
    }
    return out;
}

std::string base64(const std::string& bytes) {
    std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
    sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                      bytes.size(), sodium_base64_VARIANT_ORIGINAL);
    out.resize(std::strlen(out.c_str()));
    return out;
}

uint16_t port_of(const std::string& base_url) {
    return static_cast<uint16_t>(std::stoi(base_url.substr(base_url.rfind(':') + 1)));
}

// ASan keeps freed memory in quarantine (256 MiB by default), so under it a process's RSS says
// nothing about what it holds; the memory bounds are checked by the normal build.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool k_rss_is_meaningful = false;
#else
constexpr bool k_rss_is_meaningful = true;
#endif
constexpr long k_rss_growth_bound_kib = 32 * 1024;

// Whether RSS growth from `before` to `peak` (KiB) stays under the bound, or true when RSS
// cannot be judged in this build.
bool rss_growth_ok(long before, long peak) {
    if (!k_rss_is_meaningful) {
        WARN("RSS growth " << peak - before << " KiB not checked under AddressSanitizer");
        return true;
    }
    return peak - before < k_rss_growth_bound_kib;
}

// VmRSS of a process in KiB (0 when it cannot be read).
long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("VmRSS:")) {
            return std::stol(line.substr(6));
        }
    }
    return 0;
}

// A response read off a raw socket.
// An upstream that answers every connection with the same bytes, for response headers the test
// upstream cannot produce: a thread on 127.0.0.1 (kernel-picked port) reads one request head
// (and a Content-Length body), records the head, writes `answer` and closes.
class ScriptedUpstream {
  public:
    explicit ScriptedUpstream(std::string answer) : answer_(std::move(answer)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(listen_fd_ >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(listen_fd_, 16) == 0);
        socklen_t len = sizeof addr;
        REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
        port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~ScriptedUpstream() {
        stop_ = true;
        thread_.join();
        ::close(listen_fd_);
    }
    ScriptedUpstream(const ScriptedUpstream&) = delete;
    ScriptedUpstream& operator=(const ScriptedUpstream&) = delete;

    std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::vector<std::string> heads() const {
        std::lock_guard lock(mutex_);
        return heads_;
    }

  private:
    void serve() {
        while (!stop_) {
            pollfd p{listen_fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) {
                continue;
            }
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                continue;
            }
            std::string got;
            const auto deadline = SteadyClock::now() + 3s;
            size_t need = std::string::npos;
            while (SteadyClock::now() < deadline &&
                   (need == std::string::npos || got.size() < need)) {
                pollfd q{fd, POLLIN, 0};
                if (::poll(&q, 1, 50) <= 0) {
                    continue;
                }
                char buf[4096];
                const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) {
                    break;
                }
                got.append(buf, static_cast<size_t>(n));
                const size_t end = got.find("\r\n\r\n");
                if (need == std::string::npos && end != std::string::npos) {
                    const std::string head = lower(got.substr(0, end));
                    const size_t cl = head.find("\r\ncontent-length:");
                    need =
                        end + 4 + (cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 17)));
                }
            }
            {
                std::lock_guard lock(mutex_);
                heads_.push_back(got.substr(0, got.find("\r\n\r\n")));
            }
            (void)!::send(fd, answer_.data(), answer_.size(), MSG_NOSIGNAL);
            ::shutdown(fd, SHUT_WR);
            ::close(fd);
        }
    }

    std::string answer_;
    int listen_fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    mutable std::mutex mutex_;
    std::vector<std::string> heads_;
};

// A service entry for the services file.
json service(const std::string& id, const std::string& base_url, json auth, json extra = {}) {
    json s = {{"id", id},
              {"name", id},
              {"description", "test service " + id},
              {"base_url", base_url},
              {"auth", std::move(auth)}};
    for (auto& [k, v] : extra.items()) {
        s[k] = v;
    }
    return s;
}

const json k_bearer = {{"type", "bearer"}};

struct Agent {
    std::string name;
    std::string id;
    std::string key;
    std::string session;
};

// A daemon, an upstream, and the CLI to set them up.
struct Gateway {
    TempDir dir;
    std::unique_ptr<TestUpstream> upstream =
        std::make_unique<TestUpstream>(make_dir(dir / "upstream"));
    RunningDaemon daemon;
    std::string socket;
    uint16_t port = 0;
    std::string transcript;  // every CLI stdout and stderr, for the secret checks

    // Starts the daemon with a services file holding `services`.
    void start(const json& services, const Args& extra = {}) {
        write_file(dir / "services.json", json{{"services", services}}.dump(2));
        Args args = {"--services", (dir / "services.json").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        daemon = start_daemon(daemon_args(dir, args));
        socket = daemon.socket.string();
        port = port_of(daemon.base_url);
    }

    // One bearer service "echo" on the upstream, with a credential, and alice's agent "worker"
    // granted it under a limit the test will not reach.
    Agent start_echo_worker() {
        start(json::array({service("echo", upstream->base_url(), k_bearer)}));
        add_user("alice");
        const Agent worker = add_agent("alice", "worker", {"echo"});
        ok({"agent", "limit", "worker", "--requests", "1000", "--window", "60"});
        set_credential("echo", "sk-echo");
        return worker;
    }

    RunResult cli(const Args& args, const std::optional<std::string>& stdin_data = std::nullopt) {
        Args argv = {AGENTGW_CLI_PATH, "--socket", socket, "--json"};
        argv.insert(argv.end(), args.begin(), args.end());
        RunResult r = run(argv, {}, stdin_data);
        transcript += r.out + r.err;
        return r;
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

    void add_user(const std::string& name) {
        ok({"user", "add", name, "--email", name + "@example.com"});
    }

    Agent add_agent(const std::string& user, const std::string& name,
                    const std::vector<std::string>& services) {
        Args args = {"agent", "create", "--user", user, "--name", name};
        for (const auto& s : services) {
            args.insert(args.end(), {"--service", s});
        }
        const json created = ok(args);
        return {name, created.at("agent_id"), created.at("api_key"), created.at("session_id")};
    }

    // `scope` is {} (service-wide), {"--user", U} or {"--agent", A}.
    void set_credential(const std::string& svc, const std::string& secret, const Args& scope = {},
                        const std::string& type = "api_key") {
        Args args = {"credential", "set", svc, "--type", type};
        args.insert(args.end(), scope.begin(), scope.end());
        ok(args, secret + "\n");
    }

    HttpReply call(const std::string& method, const std::string& path, const Headers& headers = {},
                   const std::string& body = {}) {
        return http_request(method, daemon.base_url + path, body, headers);
    }

    // Reads what the daemon wrote to stderr so far (its pipe must never fill up).
    const std::string& daemon_log() {
        daemon.child->wait_for_stderr("\x01 never printed", 1ms);
        return daemon.child->stderr_text();
    }

    // The audit entries of one action, waiting (bounded) until there are at least `at_least`:
    // the audit log is written off the request path.
    json audit_entries(const std::string& action, size_t at_least) {
        json entries;
        const auto deadline = SteadyClock::now() + 10s;
        do {
            entries = ok({"audit", "--action", action, "--limit", "1000"}).at("entries");
            if (entries.size() >= at_least) {
                break;
            }
            std::this_thread::sleep_for(100ms);
        } while (SteadyClock::now() < deadline);
        return entries;
    }
};

Headers session_of(const Agent& a, Headers more = {}) {
    more.insert(more.begin(), "X-Session-ID: " + a.session);
    return more;
}

// A gateway-made error: its status, the JSON shape and the Agentgw-Error header.
void check_gateway_error(const HttpReply& r, long status, const std::string& type) {
    INFO("status " << r.status << " body " << r.body << " error " << r.error);
    CHECK(r.status == status);
    CHECK(header(r, "agentgw-error") == type);
    json body;
    REQUIRE_NOTHROW(body = json::parse(r.body));
    CHECK(body.value("error", "") == type);
    CHECK(body.at("message").is_string());
}

void check_raw_error(const RawReply& r, int status, const std::string& type) {
    INFO("reply: " << r.raw);
    CHECK(r.status == status);
    CHECK(r.field("agentgw-error") == type);
}

bool header_recorded(const json& request, const std::string& name) {
    return std::any_of(request.at("headers").begin(), request.at("headers").end(),
                       [&](const json& pair) { return lower(pair.at(0)) == lower(name); });
}

// Paths (without query) the upstream was asked for.
std::vector<std::string> recorded_paths(const TestUpstream& up) {
    std::vector<std::string> out;
    for (const auto& r : up.requests()) {
        out.push_back(r.at("path"));
    }
    return out;
}

// The pattern of /large: byte i is i % 251.
bool large_pattern_at(const char* data, size_t n, uint64_t offset) {
    for (size_t i : {size_t{0}, n / 2, n - 1}) {
        if (static_cast<unsigned char>(data[i]) != (offset + i) % 251) {
            return false;
        }
    }
    return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("the proxy injects each credential type and forwards the request faithfully",
          "[proxy][inject][secret]") {
    Gateway g;
    const std::string pid = std::to_string(::getpid());
    const std::string up = g.upstream->base_url();
    g.start(json::array(
                {service("bearer", up, k_bearer),
                 service("header", up,
                         {{"type", "header"}, {"name", "X-Upstream-Key"}, {"prefix", "Token "}}),
                 service("query", up, {{"type", "query"}, {"name", "api_key"}}),
                 service("basic", up, {{"type", "basic"}})}),
            {"--log-level", "debug"});  // the most the daemon ever logs: still no secret

    const std::string bearer_secret = "sk-bearer-SECRET-" + pid;
    const std::string header_secret = "hdr-SECRET-" + pid;
    const std::string query_secret = "q-SECRET-" + pid;
    const std::string basic_user = "basic-user-" + pid;
    const std::string basic_password = "pw-SECRET-" + pid;
    const std::string basic_pair = basic_user + ":" + basic_password;

    g.add_user("alice");
    g.add_user("bob");
    const Agent worker = g.add_agent("alice", "worker", {"bearer", "header", "query", "basic"});
    g.set_credential("bearer", bearer_secret);
    g.set_credential("header", header_secret);
    g.set_credential("query", query_secret);
    g.set_credential("basic", basic_pair, {}, "basic");

    size_t proxied = 0;  // proxy requests made, for the audit check
    const std::string query = "b=2&a=1&a=3&s=%20x+y&e=&flag&enc=a%2Fb";
    std::string body;
    for (int i = 0; i < 3000; ++i) {
        body.push_back(static_cast<char>((i * 7) % 256));
    }
    body += "\r\n\r\nGET /x HTTP/1.1\r\n\r\n";

    struct Injection {
        std::string svc;
        std::function<void(const json&)> check;
    };
    const std::vector<Injection> injections = {
        {"bearer",
         [&](const json& r) {
             CHECK(recorded_header(r, "Authorization") == "Bearer " + bearer_secret);
             CHECK(recorded_header(r, "X-Upstream-Key") == "forged-by-agent");
         }},
        {"header",
         [&](const json& r) {
             CHECK(recorded_header(r, "X-Upstream-Key") == "Token " + header_secret);
             CHECK_FALSE(header_recorded(r, "Authorization"));
         }},
        {"query",
         [&](const json& r) {
             CHECK(r.at("target") == "/echo/in/query?" + query + "&api_key=" + query_secret);
             CHECK(r.at("query").at("api_key") == json::array({query_secret}));
             CHECK_FALSE(header_recorded(r, "Authorization"));
         }},
        {"basic",
         [&](const json& r) {
             CHECK(recorded_header(r, "Authorization") == "Basic " + base64(basic_pair));
         }},
    };

    for (const auto& inj : injections) {
        INFO("service " << inj.svc);
        g.upstream->clear_requests();
        const HttpReply reply = g.call(
            "POST", "/api/" + inj.svc + "/echo/in/" + inj.svc + "?" + query,
            session_of(worker,
                       {"Authorization: Bearer " + worker.key, "x-api-key: " + worker.key,
                        "Connection: X-Foo", "X-Foo: hop-by-hop", "Keep-Alive: timeout=5",
                        "TE: trailers", "Upgrade: h2c",
                        "Proxy-Authorization: Basic cHJveHk6cHc=", "Proxy-Connection: keep-alive",
                        "X-Custom: kept", "X-Upstream-Key: forged-by-agent",
                        "Content-Type: application/octet-stream"}),
            body);
        ++proxied;
        INFO("reply " << reply.status << " " << reply.error << " " << reply.body);
        REQUIRE(reply.status == 200);
        CHECK(header(reply, "agentgw-error").empty());
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() == 1);
        const json& r = requests[0];
        CHECK(r.at("method") == "POST");
        if (inj.svc != "query") {
            CHECK(r.at("target") == "/echo/in/" + inj.svc + "?" + query);
        }
        CHECK(r.at("body_len") == body.size());
        CHECK(latin1(r.at("body")) == body);
        CHECK(recorded_header(r, "Content-Length") == std::to_string(body.size()));
        CHECK(recorded_header(r, "Host") == "127.0.0.1:" + std::to_string(g.upstream->port()));
        CHECK(recorded_header(r, "X-Custom") == "kept");
        CHECK(recorded_header(r, "Content-Type") == "application/octet-stream");
        for (const char* name :
             {"X-Session-ID", "x-api-key", "Connection", "X-Foo", "Keep-Alive", "TE", "Upgrade",
              "Proxy-Authorization", "Proxy-Connection", "Transfer-Encoding", "Expect"}) {
            INFO("header " << name);
            CHECK_FALSE(header_recorded(r, name));
        }
        CHECK_FALSE(recorded_contains(r, worker.key));
        CHECK_FALSE(recorded_contains(r, worker.session));
        inj.check(r);
    }

    SECTION("an agent's own value under the query credential's name is dropped") {
        g.upstream->clear_requests();
        const HttpReply reply =
            g.call("GET", "/api/query/echo/q?api_key=forged&x=1&%61pi_key=forged2&api_keys=2",
                   session_of(worker));
        ++proxied;
        INFO("reply " << reply.status << " " << reply.body);
        REQUIRE(reply.status == 200);
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() == 1);
        CHECK(requests[0].at("target") == "/echo/q?x=1&api_keys=2&api_key=" + query_secret);
        CHECK(requests[0].at("query").at("api_key") == json::array({query_secret}));
        CHECK_FALSE(recorded_contains(requests[0], "forged"));
    }

    SECTION("a chunked upload reaches the upstream byte for byte") {
        g.upstream->clear_requests();
        const std::string part1 = "hello ";
        std::string part2 = "world\r\n0\r\n\r\n";
        part2.push_back('\0');
        part2 += "\xff\xfe tail";
        char size2[16];
        std::snprintf(size2, sizeof size2, "%zx", part2.size());
        const RawReply reply =
            raw_exchange(g.port,
                         "POST /api/bearer/echo/chunked?z=1&y HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "X-Session-ID: " +
                             worker.session +
                             "\r\n"
                             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                             "6\r\n" +
                             part1 + "\r\n" + size2 + ";ext=1\r\n" + part2 +
                             "\r\n"
                             "0\r\nX-Trailer: t\r\n\r\n");
        ++proxied;
        INFO("reply " << reply.raw);
        CHECK(reply.status == 200);
        CHECK(reply.closed);
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() == 1);
        CHECK(requests[0].at("target") == "/echo/chunked?z=1&y");
        CHECK(latin1(requests[0].at("body")) == part1 + part2);
        CHECK(recorded_header(requests[0], "Authorization") == "Bearer " + bearer_secret);
        CHECK_FALSE(requests[0].contains("error"));
    }

    SECTION("a large body passes in pieces, after 100-continue") {
        g.upstream->clear_requests();
        std::string big(3 * k_mib + 17, '\0');
        for (size_t i = 0; i < big.size(); ++i) {
            big[i] = static_cast<char>("0123456789abcdefghijklmnopqrstuvwxyz"[(i * 31) % 36]);
        }
        const HttpReply reply =
            g.call("PUT", "/api/basic/echo/big", session_of(worker, {"Expect: 100-continue"}), big);
        ++proxied;
        CHECK(reply.status == 200);
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() == 1);
        CHECK(requests[0].at("method") == "PUT");
        CHECK(requests[0].at("body_len") == big.size());
        CHECK(requests[0].at("body") == big);
    }

    SECTION("a secret typed at a terminal may be longer than a terminal line") {
        // A terminal's own line editing would keep 4095 bytes of a pasted line and drop the
        // rest; the prompt edits the line itself. Typos are erased in the middle (^? erases a
        // character, ^W a word). A ^Z stops nothing here (the test's terminal has no job
        // control), but the line starts again at a new prompt. NULs separate the pieces that
        // the helper types one after the other.
        const std::string secret = "sk-" + std::string(6000, 'k') + "-" + pid;
        const std::string keys = std::string("dropped") + '\0' + "\x1a" + '\0' +
                                 secret.substr(0, 3000) + "x\x7f\x7f" + secret.substr(2999, 1001) +
                                 "+junk\x17\x7f" + secret.substr(4000) + "\n";
        const RunResult typed = run({program_path("python3"), AGENTGW_TYPE_AT_TERMINAL,
                                     "API key for bearer: ", AGENTGW_CLI_PATH, "--socket", g.socket,
                                     "credential", "set", "bearer"},
                                    {}, keys);
        INFO("agentgw credential set: exit " << typed.code << "\n" << typed.out << typed.err);
        REQUIRE(typed.code == 0);
        CHECK(typed.out.find("kkkk") == std::string::npos);  // not echoed
        const size_t prompt = typed.out.find("API key for bearer: ");
        CHECK(typed.out.find("API key for bearer: ", prompt + 1) != std::string::npos);
        g.upstream->clear_requests();
        REQUIRE(g.call("GET", "/api/bearer/echo/typed", session_of(worker)).status == 200);
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() == 1);
        CHECK(recorded_header(requests[0], "Authorization") == "Bearer " + secret);
    }

    SECTION("the most specific credential wins") {
        g.set_credential("bearer", "sk-user-alice-" + pid, {"--user", "alice"});
        g.set_credential("bearer", "sk-agent-worker-" + pid, {"--agent", "worker"});
        const Agent helper = g.add_agent("alice", "helper", {"bearer"});
        const Agent third = g.add_agent("alice", "third", {"bearer"});
        const Agent outsider = g.add_agent("bob", "outsider", {"bearer"});
        g.set_credential("bearer", "sk-agent-helper-" + pid, {"--agent", "helper"});
        const std::vector<std::pair<Agent, std::string>> expected = {
            {worker, "sk-agent-worker-" + pid},  // agent-scoped beats user-scoped
            {helper, "sk-agent-helper-" + pid},  // two agents of one user, two keys
            {third, "sk-user-alice-" + pid},     // user-scoped beats service-wide
            {outsider, bearer_secret},           // another user: service-wide
        };
        for (const auto& [agent, secret] : expected) {
            INFO("agent " << agent.name);
            g.upstream->clear_requests();
            const HttpReply reply = g.call("GET", "/api/bearer/echo/scope", session_of(agent));
            ++proxied;
            CHECK(reply.status == 200);
            const auto requests = g.upstream->requests();
            REQUIRE(requests.size() == 1);
            CHECK(recorded_header(requests[0], "Authorization") == "Bearer " + secret);
        }
    }

    SECTION("no secret reaches a response, the daemon's log or the audit log") {
        const std::vector<std::string> secrets = {bearer_secret, header_secret,
                                                  query_secret,  basic_password,
                                                  basic_pair,    base64(basic_pair)};
        // Responses that do not echo the request (the /echo endpoint reflects what the
        // upstream got, credential included, by design): successes, upstream errors,
        // redirects and gateway refusals, for every injection type.
        std::string seen;
        for (const char* svc : {"bearer", "header", "query", "basic"}) {
            for (const std::string path :
                 {"/v1/models?x=1", "/status/404", "/status/500", "/redirect",
                  "/redirect?back=1&x=1", "/large?bytes=100"}) {
                const HttpReply r =
                    g.call("GET", std::string("/api/") + svc + path, session_of(worker));
                ++proxied;
                CHECK(r.status >= 200);
                seen += r.body + "\n";
                for (const auto& [name, value] : r.headers) {
                    seen += name + ": " + value + "\n";
                }
            }
            const HttpReply refused = g.call("DELETE", std::string("/api/") + svc + "/x",
                                             {"X-Session-ID: not-a-session"});
            ++proxied;
            CHECK(refused.status == 401);
            seen += refused.body;
        }
        // A URL written back into header fields loses the query-injected secret only.
        const HttpReply back = g.call("GET", "/api/query/redirect?back=1&x=1", session_of(worker));
        ++proxied;
        CHECK(back.status == 302);
        CHECK(header(back, "location") ==
              "http://upstream.test/redirect?back=1&x=1&api_key=[redacted]");
        CHECK(header(back, "content-location") == header(back, "location"));
        CHECK(header(back, "link") == "</other>; rel=\"prev\"");  // the last, as sent
        seen += header(back, "location");

        const json audit = g.audit_entries("proxy", proxied);
        const RunResult human = g.cli({"audit", "--limit", "1000"});
        const std::string log = g.daemon_log();
        CHECK(contains(log, "ready:"));  // the log was read, not an empty string
        for (const auto& secret : secrets) {
            INFO("secret " << secret);
            CHECK_FALSE(contains(seen, secret));
            CHECK_FALSE(contains(log, secret));
            CHECK_FALSE(contains(audit.dump(), secret));
            CHECK_FALSE(contains(human.out, secret));
            CHECK_FALSE(contains(g.transcript, secret));
        }

        // One proxy entry per request: method, path without the query, status, latency, bytes.
        CHECK(audit.size() == proxied);
        bool saw_models = false;
        bool saw_echo_post = false;
        for (const auto& e : audit) {
            INFO("entry " << e.dump());
            const json& d = e.at("details");
            CHECK(d.at("method").is_string());
            CHECK(d.at("status").is_number_integer());
            CHECK(d.at("latency_ms").is_number());
            CHECK(d.at("bytes_in").is_number_integer());
            CHECK(d.at("bytes_out").is_number_integer());
            const std::string path = d.at("path");
            CHECK_FALSE(contains(path, "?"));
            CHECK_FALSE(contains(e.dump(), "api_key"));
            if (path == "/v1/models" && d.at("status") == 200) {
                saw_models = true;
                CHECK(d.at("bytes_out") > 0);
                CHECK(e.at("actor") == "agent:" + worker.id);
            }
            if (path == "/echo/in/bearer") {
                saw_echo_post = true;
                CHECK(d.at("method") == "POST");
                CHECK(d.at("bytes_in") == body.size());
                CHECK(e.at("target") == "service:bearer");
            }
        }
        CHECK(saw_models);
        CHECK(saw_echo_post);
    }
}

TEST_CASE("the proxy authenticates agents and enforces grants before forwarding", "[proxy][auth]") {
    Gateway g;
    const std::string up = g.upstream->base_url();
    g.start(json::array({service("echo", up, k_bearer), service("other", up, k_bearer),
                         service("nocred", up, k_bearer)}));
    g.add_user("alice");
    Agent worker = g.add_agent("alice", "worker", {"echo", "nocred"});
    const Agent narrow = g.add_agent("alice", "narrow", {});
    g.ok({"agent", "grant", "narrow", "echo", "--method", "GET", "--path", "/echo/allowed/*"});
    g.set_credential("echo", "sk-echo");
    g.set_credential("other", "sk-other");
    g.upstream->clear_requests();

    SECTION("missing, malformed and stale credentials get 401") {
        check_gateway_error(g.call("GET", "/api/echo/echo/x"), 401, "unauthorized");
        check_gateway_error(g.call("GET", "/api/echo/echo/x", {"X-Session-ID: garbage.token.x"}),
                            401, "unauthorized");
        check_gateway_error(g.call("GET", "/api/echo/echo/x", {"Authorization: Bearer garbage"}),
                            401, "unauthorized");
        check_gateway_error(g.call("GET", "/api/echo/echo/x",
                                   {"Authorization: Bearer agw_" + std::string(43, 'A')}),
                            401, "unauthorized");
        check_gateway_error(g.call("GET", "/api/echo/echo/x", {"Authorization: Basic eDp5"}), 401,
                            "unauthorized");
        check_gateway_error(g.call("GET", "/api/echo/echo/x", {"x-api-key: " + worker.key}), 401,
                            "unauthorized");

        // Before the rotation both the key and the session work.
        CHECK(g.call("GET", "/api/echo/echo/before", session_of(worker)).status == 200);
        CHECK(g.call("GET", "/api/echo/echo/before", {"Authorization: Bearer " + worker.key})
                  .status == 200);
        const json rotated = g.ok({"agent", "rotate", "worker"});
        const std::string new_key = rotated.at("api_key");
        check_gateway_error(g.call("GET", "/api/echo/echo/stale", session_of(worker)), 401,
                            "unauthorized");
        check_gateway_error(
            g.call("GET", "/api/echo/echo/stale", {"Authorization: Bearer " + worker.session}), 401,
            "unauthorized");
        check_gateway_error(
            g.call("GET", "/api/echo/echo/stale", {"Authorization: Bearer " + worker.key}), 401,
            "unauthorized");
        CHECK(g.call("GET", "/api/echo/echo/after", {"Authorization: Bearer " + new_key}).status ==
              200);
        CHECK(g.call("GET", "/api/echo/echo/after",
                     {"X-Session-ID: " + rotated.at("new_session_id").get<std::string>()})
                  .status == 200);
        CHECK(recorded_paths(*g.upstream) == std::vector<std::string>{"/echo/before",
                                                                      "/echo/before", "/echo/after",
                                                                      "/echo/after"});
    }

    SECTION("grants, narrowed grants and unknown services") {
        const HttpReply ungranted = g.call("GET", "/api/other/echo/x", session_of(worker));
        check_gateway_error(ungranted, 403, "service_not_allowed");
        const HttpReply unknown = g.call("GET", "/api/nosuch/echo/x", session_of(worker));
        check_gateway_error(unknown, 404, "not_found");
        // SPEC §3.2's order: authentication comes before the service, named or not.
        for (const char* target : {"/api/nosuch/echo/x", "/api/", "/api//echo/x"}) {
            INFO("target " << target);
            check_gateway_error(g.call("GET", target, {}), 401, "unauthorized");
        }
        check_gateway_error(g.call("GET", "/api/", session_of(worker)), 404, "not_found");
        check_gateway_error(g.call("GET", "/api//echo/x", session_of(worker)), 404, "not_found");
        // SPEC §3.4: every response to an authenticated agent carries the RateLimit-* headers.
        for (const HttpReply* r : {&ungranted, &unknown}) {
            CHECK_FALSE(header(*r, "ratelimit-limit").empty());
            CHECK_FALSE(header(*r, "ratelimit-remaining").empty());
            CHECK_FALSE(header(*r, "ratelimit-reset").empty());
        }
        CHECK(g.call("GET", "/api/echo/echo/allowed/yes?q=1", session_of(narrow)).status == 200);
        check_gateway_error(g.call("GET", "/api/echo/echo/other", session_of(narrow)), 403,
                            "service_not_allowed");
        check_gateway_error(g.call("GET", "/api/echo/echo/allowed", session_of(narrow)), 403,
                            "service_not_allowed");
        check_gateway_error(g.call("POST", "/api/echo/echo/allowed/yes", session_of(narrow), "b"),
                            403, "service_not_allowed");
        check_gateway_error(g.call("DELETE", "/api/echo/echo/allowed/yes", session_of(narrow)), 403,
                            "service_not_allowed");
        // The upstream may act on the method an override header names: the grant must allow
        // that method too.
        for (const char* name : {"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}) {
            INFO("header " << name);
            auto headers = session_of(narrow);
            headers.push_back(std::string(name) + ": delete");
            check_gateway_error(g.call("GET", "/api/echo/echo/allowed/yes", headers), 403,
                                "service_not_allowed");
        }
        // So may it on one a _method query parameter names, decoded.
        for (const char* query : {"_method=delete", "q=1&_method=DeLeTe", "%5Fmethod=del%45te",
                                  "_method=get&_method=delete", ".method=delete",
                                  "%20_method=delete", "_method%00x=delete"}) {
            INFO("query " << query);
            check_gateway_error(g.call("GET", std::string("/api/echo/echo/allowed/yes?") + query,
                                       session_of(narrow)),
                                403, "service_not_allowed");
        }
        auto overridden = session_of(narrow);
        overridden.push_back("X-HTTP-Method-Override: get");
        overridden.push_back("X-HTTP-Method;");  // empty (curl's syntax): names no method
        CHECK(g.call("GET", "/api/echo/echo/allowed/again", overridden).status == 200);
        CHECK(g.call("GET", "/api/echo/echo/allowed/third?_method=get&_method&method=delete",
                     session_of(narrow))
                  .status == 200);
        // No credential stored: never forwarded without one.
        const HttpReply nocred = g.call("GET", "/api/nocred/echo/x", session_of(worker));
        check_gateway_error(nocred, 502, "upstream_error");
        CHECK(contains(nocred.body, "nocred"));
        CHECK(recorded_paths(*g.upstream) == std::vector<std::string>{"/echo/allowed/yes",
                                                                      "/echo/allowed/again",
                                                                      "/echo/allowed/third"});
    }

    SECTION("a disabled agent gets 403 forbidden until enabled again") {
        g.ok({"agent", "disable", "worker"});
        check_gateway_error(g.call("GET", "/api/echo/echo/x", session_of(worker)), 403,
                            "forbidden");
        check_gateway_error(
            g.call("GET", "/api/echo/echo/x", {"Authorization: Bearer " + worker.key}), 403,
            "forbidden");
        check_gateway_error(g.call("GET", "/api", session_of(worker)), 403, "forbidden");
        CHECK(g.upstream->requests().empty());
        g.ok({"agent", "enable", "worker"});
        CHECK(g.call("GET", "/api/echo/echo/x", session_of(worker)).status == 200);
    }

    SECTION("GET /api lists the caller's services; /login issues usable sessions") {
        const HttpReply listed = g.call("GET", "/api", session_of(narrow));
        REQUIRE(listed.status == 200);
        const json doc = json::parse(listed.body);
        CHECK(doc.at("agent") == "narrow");
        REQUIRE(doc.at("services").size() == 1);
        const json& s = doc.at("services")[0];
        CHECK(s.at("id") == "echo");
        CHECK(s.at("name") == "echo");
        CHECK(s.at("description") == "test service echo");
        CHECK(s.at("methods") == json::array({"GET"}));
        CHECK(s.at("paths") == json::array({"/echo/allowed/*"}));
        CHECK_FALSE(header(listed, "ratelimit-limit").empty());

        const json all = json::parse(g.call("GET", "/api", session_of(worker)).body);
        std::vector<std::string> ids;
        for (const auto& e : all.at("services")) {
            ids.push_back(e.at("id"));
            CHECK(e.at("methods").is_array());
            CHECK(e.at("paths").is_array());
        }
        std::sort(ids.begin(), ids.end());
        CHECK(ids == std::vector<std::string>{"echo", "nocred"});
        check_gateway_error(g.call("GET", "/api"), 401, "unauthorized");

        const HttpReply login =
            g.call("POST", "/login", {"x-api-key: " + worker.key, "username: worker"});
        REQUIRE(login.status == 200);
        const json token_doc = json::parse(login.body);
        const std::string token = token_doc.at("token");
        CHECK(token_doc.at("expires_at").is_string());
        CHECK(g.call("GET", "/api/echo/echo/login1", {"X-Session-ID: " + token}).status == 200);
        CHECK(g.call("GET", "/api/echo/echo/login2", {"Authorization: Bearer " + token}).status ==
              200);
        CHECK(g.call("GET", "/api/echo/echo/key", {"Authorization: Bearer " + worker.key}).status ==
              200);
        check_gateway_error(
            g.call("POST", "/login", {"x-api-key: " + worker.key, "username: narrow"}), 401,
            "unauthorized");
        CHECK(recorded_paths(*g.upstream) ==
              std::vector<std::string>{"/echo/login1", "/echo/login2", "/echo/key"});
        for (const auto& r : g.upstream->requests()) {
            CHECK(recorded_header(r, "Authorization") == "Bearer sk-echo");
            CHECK_FALSE(recorded_contains(r, token));
            CHECK_FALSE(recorded_contains(r, worker.key));
        }
    }
}

TEST_CASE("the proxy applies agent and service rate limits", "[proxy][ratelimit]") {
    Gateway g;
    const std::string up = g.upstream->base_url();
    g.start(json::array({service("echo", up, k_bearer),
                         service("limited", up, k_bearer,
                                 {{"rate_limit", {{"requests", 2}, {"window_secs", 60}}}})}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"echo", "limited"});
    const Agent helper = g.add_agent("alice", "helper", {"limited"});
    g.set_credential("echo", "sk-echo");
    g.set_credential("limited", "sk-limited");
    g.upstream->clear_requests();

    SECTION("per agent") {
        g.ok({"agent", "limit", "worker", "--requests", "3", "--window", "60"});
        for (int i = 0; i < 3; ++i) {
            INFO("request " << i);
            const HttpReply r = g.call("GET", "/api/echo/echo/n", session_of(worker));
            CHECK(r.status == 200);
            CHECK(header(r, "ratelimit-limit") == "3");
            CHECK(header(r, "ratelimit-remaining") == std::to_string(2 - i));
            const std::string reset = header(r, "ratelimit-reset");
            REQUIRE_FALSE(reset.empty());
            CHECK(std::stoi(reset) > 0);
            // Until every counted request has slid out of the sliding window: at most two
            // windows (daemon/ratelimit/rate_limiter.hpp).
            CHECK(std::stoi(reset) <= 120);
            CHECK(header(r, "retry-after").empty());
        }
        const HttpReply refused = g.call("GET", "/api/echo/echo/n", session_of(worker));
        check_gateway_error(refused, 429, "rate_limit_exceeded");
        CHECK(header(refused, "ratelimit-limit") == "3");
        CHECK(header(refused, "ratelimit-remaining") == "0");
        CHECK_FALSE(header(refused, "ratelimit-reset").empty());
        const std::string retry = header(refused, "retry-after");
        REQUIRE_FALSE(retry.empty());
        CHECK(std::stoi(retry) >= 1);
        CHECK(std::stoi(retry) <= 120);  // the sliding-window estimate: up to two windows
        CHECK(g.upstream->requests().size() == 3);
        // The limit is the agent's: another agent of the same user is not affected.
        CHECK(g.call("GET", "/api/limited/echo/h", session_of(helper)).status == 200);
    }

    SECTION("per service, shared by the agents using it") {
        const HttpReply first = g.call("GET", "/api/limited/echo/1", session_of(worker));
        CHECK(first.status == 200);
        CHECK(header(first, "ratelimit-limit") == "2");  // the most restrictive limit
        CHECK(header(first, "ratelimit-remaining") == "1");
        const HttpReply second = g.call("GET", "/api/limited/echo/2", session_of(helper));
        CHECK(second.status == 200);
        CHECK(header(second, "ratelimit-remaining") == "0");
        const HttpReply third = g.call("GET", "/api/limited/echo/3", session_of(worker));
        check_gateway_error(third, 429, "rate_limit_exceeded");
        CHECK(header(third, "ratelimit-limit") == "2");
        CHECK_FALSE(header(third, "retry-after").empty());
        CHECK(recorded_paths(*g.upstream) == std::vector<std::string>{"/echo/1", "/echo/2"});
        // Other services are not limited by it.
        CHECK(g.call("GET", "/api/echo/echo/4", session_of(worker)).status == 200);
    }

    SECTION("when both refuse, the answer gives the longer wait") {
        // The agent's window is a second, the service's a minute: retrying after the agent's
        // wait would only be refused again by the service.
        g.ok({"agent", "limit", "worker", "--requests", "2", "--window", "1"});
        CHECK(g.call("GET", "/api/limited/echo/1", session_of(worker)).status == 200);
        CHECK(g.call("GET", "/api/limited/echo/2", session_of(worker)).status == 200);
        const HttpReply refused = g.call("GET", "/api/limited/echo/3", session_of(worker));
        check_gateway_error(refused, 429, "rate_limit_exceeded");
        const std::string retry = header(refused, "retry-after");
        REQUIRE_FALSE(retry.empty());
        CHECK(std::stoi(retry) >= 30);
        CHECK(std::stoi(retry) <= 120);
        CHECK(json::parse(refused.body)["message"].get<std::string>().find("service limited") !=
              std::string::npos);
    }
}

TEST_CASE("the proxy refuses path traversal, odd targets and smuggling", "[proxy][reject]") {
    Gateway g;
    g.start(json::array(
        {service("echo", g.upstream->base_url(), k_bearer),
         service("based", g.upstream->base_url() + "/echo/base", k_bearer, {{"max_body", 1000}})}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"echo", "based"});
    g.set_credential("echo", "sk-echo");
    g.set_credential("based", "sk-based");
    g.upstream->clear_requests();
    const std::string auth = "X-Session-ID: " + worker.session + "\r\n";
    const std::string host = "Host: 127.0.0.1:" + std::to_string(g.port) + "\r\n";

    // Sanity: a raw request with a clean (if unusual) path passes, its target untouched: no
    // re-encoding, no normalizing.
    const std::string odd = "/echo/fine%20x%41;v=1/a~b!$&'()*+,=:@?q=%2F&r=%3f+%20";
    const RawReply fine = raw_exchange(g.port, "GET /api/echo" + odd + " HTTP/1.1\r\n" + host +
                                                   auth + "Connection: close\r\n\r\n");
    CHECK(fine.status == 200);
    const auto sane = g.upstream->requests();
    REQUIRE(sane.size() == 1);
    CHECK(sane[0].at("target") == odd);
    g.upstream->clear_requests();
    // A name with a slash encoded twice (as some servers expect one) is no dot-segment.
    const std::string twice = "/echo/job/feature%252Ffoo/x%2525y/..a/a..";
    CHECK(raw_exchange(g.port, "GET /api/echo" + twice + " HTTP/1.1\r\n" + host + auth +
                                   "Connection: close\r\n\r\n")
              .status == 200);
    const auto passed = g.upstream->requests();
    REQUIRE(passed.size() == 1);
    CHECK(passed[0].at("target") == twice);
    g.upstream->clear_requests();

    SECTION("traversal and targets that are not origin-form") {
        const std::vector<std::string> request_lines = {
            "GET /api/echo/../echo/x HTTP/1.1",
            "GET /api/echo/echo/../../etc/passwd HTTP/1.1",
            "GET /api/echo/echo/.. HTTP/1.1",
            "GET /api/echo/./echo HTTP/1.1",
            "GET /api/echo/echo/%2e%2e/x HTTP/1.1",
            "GET /api/echo/echo/%2E%2e/x HTTP/1.1",
            "GET /api/echo/echo/.%2e/x HTTP/1.1",
            "GET /api/echo/echo/a%2fb HTTP/1.1",
            "GET /api/echo/echo/a%2Fb HTTP/1.1",
            "GET /api/echo/echo/a%5cb HTTP/1.1",
            "GET /api/echo/echo/a%5Cb HTTP/1.1",
            "GET /api/echo/echo/a\\b HTTP/1.1",
            "GET /api/echo/echo/%00x HTTP/1.1",
            // Servers that drop ";parameters" before resolving dot-segments, and those that
            // decode twice.
            "GET /api/echo/echo/..;/x HTTP/1.1",
            "GET /api/echo/echo/.;x=1/x HTTP/1.1",
            "GET /api/echo/echo/%2e%2e;jsessionid=1/x HTTP/1.1",
            "GET /api/echo/echo/%252e%252e/x HTTP/1.1",
            "GET /api/echo/echo/a%252F..%252Fb HTTP/1.1",
            "GET /api/echo/echo/a%255c%252E%252e%253bx%255cb HTTP/1.1",
            "GET http://evil/ HTTP/1.1",
            "GET http://127.0.0.1:" + std::to_string(g.upstream->port()) + "/echo/abs HTTP/1.1",
            "GET http://127.0.0.1:" + std::to_string(g.port) + "/api/echo/echo/abs HTTP/1.1",
            "CONNECT 127.0.0.1:" + std::to_string(g.upstream->port()) + " HTTP/1.1",
            "CONNECT /api/echo/echo/x HTTP/1.1",
        };
        for (const auto& line : request_lines) {
            INFO("request line: " << line);
            const RawReply r =
                raw_exchange(g.port, line + "\r\n" + host + auth + "Connection: close\r\n\r\n");
            check_raw_error(r, 400, "bad_request");
            if (r.status == 400) {
                CHECK(json::parse(r.body, nullptr, false).value("error", "") == "bad_request");
            }
        }
        CHECK(g.upstream->requests().empty());

        // Each refusal under /api/ is audited with the method it was asked with (the other
        // request lines never reach the proxy): 20 of them, after the two that passed.
        const json audit = g.audit_entries("proxy", 22);
        size_t refused = 0;
        for (const auto& e : audit) {
            INFO("entry " << e.dump());
            const json& d = e.at("details");
            if (d.at("status") == 400) {
                ++refused;
                CHECK(e.at("actor") == "system");  // refused before authentication
                CHECK((d.at("method") == "GET" || d.at("method") == "CONNECT"));
            }
        }
        CHECK(refused == 20);
    }

    SECTION("TRACE and TRACK in any case are not forwarded: the credential would come back") {
        for (const std::string method : {"TRACE", "TRACK", "trace"}) {
            INFO("method " << method);
            const RawReply r = raw_exchange(g.port, method + " /api/echo/echo/x HTTP/1.1\r\n" +
                                                        host + auth + "Connection: close\r\n\r\n");
            check_raw_error(r, 405, "method_not_allowed");
            CHECK(r.field("allow") == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        }
        for (const std::string header : {"X-HTTP-Method-Override: TRACE", "X-HTTP-Method: track",
                                         "X-Method-Override: Trace"}) {
            INFO("header " << header);
            const RawReply r =
                raw_exchange(g.port, "POST /api/echo/echo/x HTTP/1.1\r\n" + host + auth + header +
                                         "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            check_raw_error(r, 405, "method_not_allowed");
        }
        const RawReply r =
            raw_exchange(g.port, "POST /api/echo/echo/x?_method=trace HTTP/1.1\r\n" + host + auth +
                                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
        check_raw_error(r, 405, "method_not_allowed");
        CHECK(g.upstream->requests().empty());
    }

    SECTION("the base path stays; bodies above max_body get 413") {
        const HttpReply r = g.call("GET", "/api/based/sub/x?k=v", session_of(worker));
        CHECK(r.status == 200);
        const RawReply up = raw_exchange(
            g.port, "GET /api/based/../x HTTP/1.1\r\n" + host + auth + "Connection: close\r\n\r\n");
        check_raw_error(up, 400, "bad_request");
        check_gateway_error(
            g.call("POST", "/api/based/sub", session_of(worker), std::string(1001, 'x')), 413,
            "payload_too_large");
        const RawReply chunked =
            raw_exchange(g.port, "POST /api/based/sub HTTP/1.1\r\n" + host + auth +
                                     "Transfer-Encoding: chunked\r\n\r\n400\r\n" +
                                     std::string(1024, 'y') + "\r\n0\r\n\r\n");
        check_raw_error(chunked, 413, "payload_too_large");
        CHECK(chunked.closed);
        CHECK(g.call("POST", "/api/based/sub", session_of(worker), std::string(1000, 'x')).status ==
              200);
        const auto requests = g.upstream->requests();
        REQUIRE(requests.size() >= 2);
        CHECK(requests.front().at("target") == "/echo/base/sub/x?k=v");
        CHECK(requests.back().at("target") == "/echo/base/sub");
        CHECK(requests.back().at("body_len") == 1000);
        for (const auto& req : requests) {
            // A chunked body that turned out too large may have started upstream; it must not
            // have arrived whole.
            CHECK(req.at("body_len") <= 1000);
        }
    }

    SECTION("request smuggling closes the connection and forwards nothing") {
        const std::string smuggled =
            "GET /api/echo/echo/smuggled HTTP/1.1\r\n" + host + auth + "\r\n";
        const std::vector<std::pair<std::string, std::string>> framings = {
            {"TE gzip", "Transfer-Encoding: gzip\r\n"},
            {"TE gzip, chunked", "Transfer-Encoding: chunked, gzip\r\n"},
            {"TE twice, chunked first",
             "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"},
            {"TE twice, gzip first", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"},
            {"CL and TE", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"},
            {"TE and CL", "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"},
            {"two lengths", "Content-Length: 0\r\nContent-Length: 5\r\n"},
            {"TE with space", "Transfer-Encoding : chunked\r\n"},
        };
        for (const auto& [name, framing] : framings) {
            INFO("framing: " << name);
            RawConnection c(g.port);
            c.send("POST /api/echo/echo/front HTTP/1.1\r\n" + host + auth + framing + "\r\n" +
                   smuggled);
            const RawReply r = c.read_until_close();
            check_raw_error(r, 400, "bad_request");
            CHECK(r.closed);
            size_t responses = 0;
            for (size_t pos = r.raw.find("HTTP/1.1 "); pos != std::string::npos;
                 pos = r.raw.find("HTTP/1.1 ", pos + 1)) {
                ++responses;
            }
            CHECK(responses == 1);
        }
        const auto paths = recorded_paths(*g.upstream);
        CHECK(std::find(paths.begin(), paths.end(), "/echo/smuggled") == paths.end());
        CHECK(paths.empty());
    }

    SECTION("CR, LF and NUL inside header values") {
        const std::vector<std::pair<std::string, std::string>> headers = {
            {"CR", std::string("X-Bad: a\rb\r\n")},
            {"LF", std::string("X-Bad: a\nX-Injected: evil\r\n")},
            {"NUL", std::string("X-Bad: a\0b\r\n", 12)},
            {"CR in the session", "X-Session-ID: " + worker.session + "\rX-Injected: evil\r\n"},
        };
        for (const auto& [name, bad] : headers) {
            INFO("header with " << name);
            const RawReply r = raw_exchange(g.port, "GET /api/echo/echo/hdr HTTP/1.1\r\n" + host +
                                                        auth + bad + "Connection: close\r\n\r\n");
            check_raw_error(r, 400, "bad_request");
        }
        CHECK(g.upstream->requests().empty());

        // A folded line (obs-fold) is either refused or joined into one value (RFC 9112 §5.2
        // allows both); it never becomes a header of its own.
        const RawReply folded =
            raw_exchange(g.port, "GET /api/echo/echo/fold HTTP/1.1\r\n" + host + auth +
                                     "X-Bad: a\r\n X-Injected: evil\r\nConnection: close\r\n\r\n");
        CHECK((folded.status == 400 || folded.status == 200));
        for (const auto& r : g.upstream->requests()) {
            CHECK_FALSE(header_recorded(r, "X-Injected"));
            CHECK(recorded_header(r, "X-Bad").find_first_of("\r\n") == std::string::npos);
        }
    }
}

TEST_CASE("the proxy reports upstream failures and passes upstream answers through",
          "[proxy][upstream]") {
    Gateway g;
    const std::string up = g.upstream->base_url();
    const RefusingPort down;
    const UnansweredPort unanswered;
    g.start(json::array(
        {service("echo", up, k_bearer),
         service("down", down.url(), k_bearer, {{"connect_timeout_secs", 2}}),
         service("slow", up, k_bearer, {{"timeout_secs", 2}}),
         service("unanswered", unanswered.url(), k_bearer, {{"connect_timeout_secs", 1}})}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"echo", "down", "slow", "unanswered"});
    for (const char* svc : {"echo", "down", "slow", "unanswered"}) {
        g.set_credential(svc, std::string("sk-") + svc);
    }
    g.upstream->clear_requests();

    SECTION("nobody listening: 502") {
        const auto start = SteadyClock::now();
        check_gateway_error(g.call("GET", "/api/down/x", session_of(worker)), 502,
                            "upstream_error");
        CHECK(seconds_since(start) < 5);
    }

    // A 504 once the service's timeout of `secs` has passed, and not long after it (a
    // correctness bound, not a benchmark).
    const auto check_timed_out = [&](const std::string& path, double secs) {
        const auto start = SteadyClock::now();
        const HttpReply r = g.call("GET", path, session_of(worker));
        const double took = seconds_since(start);
        check_gateway_error(r, 504, "upstream_timeout");
        CHECK(took >= secs - 0.1);
        CHECK(took < secs + 5);
    };

    SECTION("no connection in time: 504") {
        check_timed_out("/api/unanswered/x", 1);
    }

    SECTION("no answer in time: 504") {
        check_timed_out("/api/slow/stall?secs=10", 2);
    }

    SECTION("a response head the agent could misread is refused or reframed") {
        // Too large a head: 502, and the daemon goes on serving.
        const HttpReply padded = g.call("GET", "/api/echo/big-head?bytes=2000", session_of(worker));
        CHECK(padded.status == 200);
        CHECK(header(padded, "x-pad") == std::string(2000, 'a'));
        const HttpReply huge = g.call("GET", "/api/echo/big-head?bytes=70000", session_of(worker));
        check_gateway_error(huge, 502, "upstream_error");
        CHECK(contains(huge.body, "larger than"));
        // Malformed field lines are not passed on.
        for (const char* kind : {"name", "cr"}) {
            INFO("kind " << kind);
            check_gateway_error(
                g.call("GET", std::string("/api/echo/bad-head?kind=") + kind, session_of(worker)),
                502, "upstream_error");
        }
        // Transfer-Encoding with a Content-Length: the body curl decoded is relayed whole and
        // chunked, never under a Content-Length it does not match.
        const HttpReply both = g.call("GET", "/api/echo/te-and-length", session_of(worker));
        CHECK(both.status == 200);
        CHECK(header(both, "content-length").empty());
        CHECK(both.body == "abcdefghijklmnopqrstuvwxyz");
        CHECK(g.call("GET", "/api/echo/echo/after", session_of(worker)).status == 200);
    }

    SECTION("an agent slow to send its body is not taken for a silent upstream") {
        // A chunked body with a pause longer than the service's 2 s timeout between pieces:
        // the wait is the agent's, bounded by its own read timeout, not the upstream's.
        RawConnection c(g.port);
        c.send(
            "POST /api/slow/echo/slow-body HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session +
            "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n");
        std::this_thread::sleep_for(3s);
        c.send("6\r\nsecond\r\n0\r\n\r\n");
        const RawReply r = c.read_until_close(10s);
        INFO("reply " << r.raw);
        CHECK(r.status == 200);
        CHECK(contains(r.body, "firstsecond"));
    }

    SECTION("interim responses do not extend the wait for the answer") {
        // Ten 102s 0.8 s apart: the upstream keeps talking for 8 s, past the 2 s timeout.
        const auto start = SteadyClock::now();
        const HttpReply r =
            g.call("GET", "/api/slow/interim?count=10&interval_ms=800", session_of(worker));
        const double took = seconds_since(start);
        check_gateway_error(r, 504, "upstream_timeout");
        CHECK(took < 6.5);  // a correctness bound (the service says 2 s), not a benchmark
        // A 1xx within the timeout is passed over and the real answer relayed.
        const HttpReply ok =
            g.call("GET", "/api/slow/interim?count=2&interval_ms=200", session_of(worker));
        CHECK(ok.status == 200);
        CHECK(json::parse(ok.body, nullptr, false) == json{{"interim", 2}});
    }

    SECTION("a switch of protocols nobody asked for is refused at once") {
        // A 101 ends curl's reading of heads: what follows would be taken for a body with no
        // head before it. More of it than the proxy buffers, and the upstream then holds on.
        for (const char* bytes : {"100", "100000"}) {
            INFO("bytes " << bytes);
            const auto start = SteadyClock::now();
            const HttpReply r = g.call("GET", std::string("/api/slow/switch?secs=8&bytes=") + bytes,
                                       session_of(worker));
            check_gateway_error(r, 502, "upstream_error");
            CHECK(contains(r.body, "101"));
            CHECK(seconds_since(start) < 1.5);  // not the 2 s timeout, nor the upstream's 8 s
        }
        CHECK(g.call("GET", "/api/echo/echo/after", session_of(worker)).status == 200);
    }

    SECTION("a body that stops mid-way ends the response instead of hanging") {
        const auto start = SteadyClock::now();
        const HttpReply r = g.call("GET", "/api/slow/stall-body?secs=6", session_of(worker));
        const double took = seconds_since(start);
        INFO("status " << r.status << " error " << r.error << " body " << r.body.size());
        CHECK(r.status == 0);  // curl saw the response cut short
        CHECK_FALSE(r.error.empty());
        CHECK(took < 5.5);
    }

    SECTION("an answer of known length must end within the timeout and a stream keep talking") {
        // Ten pieces 0.8 s apart: 8 s in all, past the service's 2 s, never silent that long.
        const auto start = SteadyClock::now();
        const HttpReply slow =
            g.call("GET", "/api/slow/sse?events=10&interval_ms=800&type=application/json&length=1",
                   session_of(worker));
        const double took = seconds_since(start);
        INFO("status " << slow.status << " error " << slow.error << " body " << slow.body);
        CHECK(slow.status == 0);  // cut off: curl saw fewer bytes than the Content-Length
        CHECK_FALSE(slow.error.empty());
        CHECK_FALSE(contains(slow.body, "\"n\": 9"));
        CHECK(took < 6.5);
        // A stream, by its type or by a body of unknown length, may take as long as it keeps
        // sending.
        for (const std::string query : {"", "&type=application/x-ndjson"}) {
            INFO("query " << query);
            const HttpReply stream =
                g.call("GET", "/api/slow/sse?events=6&interval_ms=800" + query, session_of(worker));
            CHECK(stream.status == 200);
            CHECK(contains(stream.body, "data: {\"n\": 5}\n\n"));
        }
    }

    SECTION("time spent waiting for a slow agent does not count against the timeout") {
        // More than the sockets from the upstream to the agent hold: the transfer pauses
        // while the agent reads nothing for longer than the service's 2 s.
        const size_t total = 32 * 1024 * 1024;
        RawConnection c(g.port, 64 * 1024);
        c.send("GET /api/slow/large?bytes=" + std::to_string(total) +
               " HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session +
               "\r\nConnection: close\r\n\r\n");
        std::this_thread::sleep_for(3s);
        const RawReply r = c.read_until_close(30s);
        CHECK(r.status == 200);
        CHECK(r.body.size() == total);
        CHECK(large_pattern_at(r.body.data(), r.body.size(), 0));
    }

    SECTION("redirects are passed back, not followed") {
        const HttpReply r = g.call("GET", "/api/echo/redirect", session_of(worker));
        CHECK(r.status == 302);
        CHECK(header(r, "location") == "/echo/redirected");
        CHECK(header(r, "agentgw-error").empty());
        CHECK(json::parse(r.body) == json{{"redirect", "/echo/redirected"}});
        CHECK(recorded_paths(*g.upstream) == std::vector<std::string>{"/redirect"});
    }

    SECTION("upstream errors pass through as they are") {
        for (int code : {404, 500, 503, 401, 429}) {
            INFO("status " << code);
            const HttpReply r =
                g.call("GET", "/api/echo/status/" + std::to_string(code), session_of(worker));
            CHECK(r.status == code);
            CHECK(header(r, "agentgw-error").empty());
            CHECK(json::parse(r.body) == json{{"status", code}});
            CHECK(header(r, "content-type") == "application/json");
        }
        const HttpReply empty = g.call("GET", "/api/echo/status/204", session_of(worker));
        CHECK(empty.status == 204);
        CHECK(empty.body.empty());
        const RawReply head =
            raw_exchange(g.port, "HEAD /api/echo/echo/head HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
                                     worker.session + "\r\nConnection: close\r\n\r\n");
        CHECK(head.status == 200);
        CHECK(head.body.empty());
        CHECK_FALSE(head.field("content-length").empty());
    }

    SECTION("a connection reset mid-body truncates the response quickly") {
        const auto start = SteadyClock::now();
        const HttpReply r = g.call("GET", "/api/echo/reset?after=5000", session_of(worker));
        const double took = seconds_since(start);
        INFO("status " << r.status << " error " << r.error << " body " << r.body.size());
        CHECK((r.status == 0 || r.body.size() < 1000000));
        CHECK_FALSE(r.error.empty());
        CHECK(r.body.size() <= 5000);
        CHECK(took < 5);
    }

    // Whatever happened before, the daemon keeps serving.
    const HttpReply after = g.call("GET", "/api/echo/echo/after", session_of(worker));
    CHECK(after.status == 200);
    CHECK(g.call("GET", "/healthz").status == 200);
}

TEST_CASE("an upstream answering an upload before reading it is relayed and not waited on",
          "[proxy][body]") {
    Gateway g;
    // A total timeout far past the client's 10 s: only relaying the answer can end this.
    g.start(json::array({service("uploads", g.upstream->base_url(), k_bearer,
                                 {{"max_body", 64 << 20}, {"timeout_secs", 120}})}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"uploads"});
    g.set_credential("uploads", "sk-uploads");
    // The upstream refuses at once, with an answer larger than the proxy holds unread, and
    // reads none of the 16 MiB: curl stops sending, and the answer must go to the agent.
    const std::string upload(16 << 20, 'u');
    const HttpReply r = g.call("POST", "/api/uploads/early-answer?bytes=262144&secs=30",
                               session_of(worker), upload);
    INFO("error " << r.error);
    CHECK(r.status == 413);
    CHECK(r.body.size() == 262144);
}

// The first record of the test upstream that has `field`, waited for up to 5 s.
std::optional<json> wait_for_record(Gateway& g, const std::string& field) {
    auto recorded = [&] {
        for (const json& r : g.upstream->requests()) {
            if (r.contains(field)) {
                return std::optional<json>(r);
            }
        }
        return std::optional<json>();
    };
    const auto deadline = SteadyClock::now() + 5s;
    while (!recorded() && SteadyClock::now() < deadline) {
        std::this_thread::sleep_for(20ms);
    }
    return recorded();
}

// After an agent left: the upstream saw its connection closed within 5 s, and the request's
// one audit entry says client_gone. Returns that entry.
json abandoned_entry(Gateway& g) {
    const auto gone = wait_for_record(g, "gone");
    REQUIRE(gone);
    CHECK(gone->at("after").get<double>() < 5.0);
    const json entries = g.audit_entries("proxy", 1);
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].at("outcome") == "client_gone");
    return entries[0];
}

TEST_CASE("an agent that leaves before the answer has its upstream exchange abandoned",
          "[proxy][upstream]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    {
        RawConnection c(g.port);
        c.send("GET /api/echo/stall?secs=20&watch=1 HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
               worker.session + "\r\n\r\n");
        REQUIRE(wait_for_record(g, "method"));  // the upstream is working on it
    }                                           // the agent gives up and closes its connection
    // The upstream sees its connection closed long before its 20 s (and the service's 60 s
    // timeout) are up.
    CHECK(abandoned_entry(g).at("details").at("status") == 499);
    // The daemon goes on serving.
    CHECK(g.call("GET", "/api/echo/echo/after", session_of(worker)).status == 200);

    // Two requests at once, then the end of the agent's sending side: the second, read along
    // with the first, shows the agent still there, and the first is answered. (By the time
    // the second goes upstream nothing shows it any more, and it is taken for gone, as nginx
    // takes it.)
    RawConnection c(g.port);
    const std::string request =
        "GET /api/echo/stall?secs=0.3&watch=1 HTTP/1.1\r\nHost: x\r\n"
        "X-Session-ID: " +
        worker.session + "\r\n\r\n";
    c.send(request + request);
    c.finish_sending();
    const RawReply both = c.read_until_close();
    size_t answers = 0;
    for (size_t at = both.raw.find("HTTP/1.1 200 "); at != std::string::npos;
         at = both.raw.find("HTTP/1.1 200 ", at + 1)) {
        ++answers;
    }
    INFO(both.raw);
    CHECK(answers >= 1);
}

TEST_CASE("an agent that leaves a silent stream has its upstream exchange abandoned",
          "[proxy][stream]") {
    // Chunked, and under a Content-Length for all the events (the agent's leaving is not the
    // upstream's falling short of it).
    std::string framing;
    SECTION("chunked") {
        framing = "";
    }
    SECTION("with a Content-Length") {
        framing = "&length=1";
    }
    Gateway g;
    const Agent worker = g.start_echo_worker();
    const std::string first_event = "data: {\"n\": 0}\n\n";
    {
        RawConnection c(g.port);
        c.send("GET /api/echo/sse?events=3&interval_ms=20000&watch=1" + framing +
               " HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session + "\r\n\r\n");
        std::string got;
        const auto deadline = SteadyClock::now() + 5s;
        while (!contains(got, first_event) && SteadyClock::now() < deadline) {
            got += c.read_some(4096, 500ms);
        }
        INFO(got);
        REQUIRE(got.starts_with("HTTP/1.1 200 "));
        REQUIRE(contains(got, first_event));  // the stream is under way, then falls silent
    }                                         // the agent leaves in the silence
    // The upstream sees its connection closed long before its next event is due in 20 s.
    const json entry = abandoned_entry(g);
    CHECK(entry.at("details").at("status") == 200);
    CHECK(entry.at("details").at("bytes_out") == first_event.size());
    // The daemon goes on serving.
    CHECK(g.call("GET", "/api/echo/echo/after", session_of(worker)).status == 200);
}

TEST_CASE("the proxy keeps upstream connections open between bursts", "[proxy][reuse]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();

    // Requests that overlap upstream, so each needs a connection of its own; returns the
    // upstream ports they came from.
    constexpr int k_burst = 24;
    auto burst = [&] {
        g.upstream->clear_requests();
        std::vector<std::thread> threads;
        std::atomic<int> answered{0};
        for (int i = 0; i < k_burst; ++i) {
            threads.emplace_back([&] {
                if (g.call("GET", "/api/echo/stall?secs=2", session_of(worker)).status == 200) {
                    ++answered;
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        CHECK(answered == k_burst);
        std::set<int> ports;
        for (const auto& r : g.upstream->requests()) {
            ports.insert(r.at("peer_port").get<int>());
        }
        return ports;
    };
    const std::set<int> first = burst();
    CHECK(first.size() == k_burst);
    // curl's own bound on idle connections shrinks with the transfers in flight, so as the
    // burst ended it would have closed some; the next burst must find them all still open.
    const std::set<int> second = burst();
    CHECK(second.size() == k_burst);
    std::vector<int> opened;
    std::set_difference(second.begin(), second.end(), first.begin(), first.end(),
                        std::back_inserter(opened));
    CHECK(opened.empty());
}

namespace {

// The one request `upstream` recorded since it was last cleared; clears it again.
json take_only_request(TestUpstream& upstream) {
    const auto requests = upstream.requests();
    REQUIRE(requests.size() == 1);
    upstream.clear_requests();
    return requests[0];
}

}  // namespace

TEST_CASE("answers to HEAD carry no content and a kept-alive connection stays in step",
          "[proxy][head]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    const std::string auth = "X-Session-ID: " + worker.session + "\r\n";
    // Gateway-made answers of every kind (the router's 405, the proxy's 401 and 404, the
    // upstream's own answer), each to a HEAD, then a GET on the same connection.
    const RawReply r =
        raw_exchange(g.port,
                     "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     "HEAD /login HTTP/1.1\r\nHost: x\r\n\r\n"
                     "HEAD /api/echo/echo/a HTTP/1.1\r\nHost: x\r\n\r\n"
                     "HEAD /api/nosuch/a HTTP/1.1\r\nHost: x\r\n" +
                         auth +
                         "\r\n"
                         "HEAD /api/echo/echo/b HTTP/1.1\r\nHost: x\r\n" +
                         auth +
                         "\r\n"
                         "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    INFO(r.raw);
    // Each head ends where the next status line starts; only the GET has content.
    std::vector<int> statuses;
    size_t at = 0;
    while (at < r.raw.size()) {
        REQUIRE(r.raw.compare(at, 9, "HTTP/1.1 ") == 0);
        statuses.push_back(std::atoi(r.raw.c_str() + at + 9));
        const size_t end = r.raw.find("\r\n\r\n", at);
        REQUIRE(end != std::string::npos);
        at = end + 4;
        if (statuses.size() == 6) {
            CHECK(json::parse(r.raw.substr(at)) == json{{"status", "ok"}});
            break;
        }
    }
    CHECK(statuses == std::vector<int>{405, 405, 401, 404, 200, 200});
}

TEST_CASE("a body an upstream sends to a HEAD is never read as the next answer", "[proxy][head]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    // An upstream that honours the override answers the HEAD as a GET, body and all: that
    // body must not be left on a pooled connection for the next request to read.
    const RawReply head = raw_exchange(
        g.port, "HEAD /api/echo/head-body HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session +
                    "\r\nX-HTTP-Method-Override: GET\r\nConnection: close\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(head.body.empty());
    std::this_thread::sleep_for(300ms);  // the stray body has come by now
    const HttpReply next = g.call("GET", "/api/echo/echo/next", session_of(worker));
    INFO(next.body);
    CHECK(next.status == 200);
    CHECK_FALSE(contains(next.body, "forged"));
    CHECK(contains(next.body, "/echo/next"));
}

TEST_CASE("an HTTP/1.0 client gets a body of unknown length unchunked up to the close",
          "[proxy][head]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    // The upstream sends it chunked: the proxy does not know its length.
    const RawReply r = raw_exchange(g.port,
                                    "GET /api/echo/large?bytes=5000&chunked=1 HTTP/1.0\r\n"
                                    "Host: x\r\nX-Session-ID: " +
                                        worker.session + "\r\n\r\n");
    INFO(r.raw.substr(0, 400));
    CHECK(r.status == 200);
    CHECK(r.field("transfer-encoding").empty());
    CHECK(r.field("content-length").empty());
    CHECK(r.closed);
    REQUIRE(r.body.size() == 5000);
    for (size_t i = 0; i < r.body.size(); ++i) {
        if (static_cast<unsigned char>(r.body[i]) != i % 251) {
            FAIL("byte " << i << " differs");
        }
    }
}

TEST_CASE("each proxied request starts clean of the one before", "[proxy][reuse]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();

    // One request at a time, so every one runs on the easy handle the last one left behind.
    auto last_request = [&] { return take_only_request(*g.upstream); };
    auto check_get = [&](const std::string& tag) {
        const HttpReply r = g.call("GET", "/api/echo/echo/" + tag, session_of(worker));
        REQUIRE(r.status == 200);
        CHECK_FALSE(r.body.empty());
        const json seen = last_request();
        CHECK(seen.at("method") == "GET");
        CHECK(seen.at("target") == "/echo/" + tag);
        CHECK(seen.at("body_len") == 0);
        CHECK_FALSE(header_recorded(seen, "Content-Length"));
        CHECK_FALSE(header_recorded(seen, "Transfer-Encoding"));
    };

    g.upstream->clear_requests();
    REQUIRE(g.call("POST", "/api/echo/echo/post", session_of(worker), "posted").status == 200);
    CHECK(last_request().at("body") == "posted");
    check_get("after-post");

    const RawReply head = raw_exchange(
        g.port, "HEAD /api/echo/echo/head HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session +
                    "\r\nConnection: close\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(last_request().at("method") == "HEAD");
    check_get("after-head");

    REQUIRE(g.call("PUT", "/api/echo/echo/put", session_of(worker), "put body").status == 200);
    const json put = last_request();
    CHECK(put.at("method") == "PUT");
    CHECK(put.at("body") == "put body");
    REQUIRE(g.call("DELETE", "/api/echo/echo/delete", session_of(worker)).status == 200);
    CHECK(last_request().at("method") == "DELETE");
    check_get("after-delete");
}

TEST_CASE("request bodies arrive whole, read ahead or streamed", "[proxy][body]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    auto last_request = [&] { return take_only_request(*g.upstream); };
    g.upstream->clear_requests();

    SECTION("a small body after 100-continue, without a Content-Type") {
        const std::string body = "{\"small\":true}";
        const RawReply reply = raw_exchange(
            g.port, "PATCH /api/echo/echo/small HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
                        worker.session + "\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n" + body);
        // The interim answer first, then the upstream's.
        CHECK(reply.status == 100);
        CHECK(reply.raw.find("\r\n\r\nHTTP/1.1 200 OK\r\n") != std::string::npos);
        const json seen = last_request();
        CHECK(seen.at("method") == "PATCH");
        CHECK(seen.at("body") == body);
        CHECK(recorded_header(seen, "Content-Length") == std::to_string(body.size()));
        // Nothing the agent did not send: no Content-Type, and no Expect of curl's own.
        CHECK_FALSE(header_recorded(seen, "Content-Type"));
        CHECK_FALSE(header_recorded(seen, "Expect"));
    }

    SECTION("an empty body") {
        const RawReply reply = raw_exchange(
            g.port, "POST /api/echo/echo/empty HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
                        worker.session + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        REQUIRE(reply.status == 200);
        const json seen = last_request();
        CHECK(seen.at("method") == "POST");
        CHECK(seen.at("body_len") == 0);
        CHECK(recorded_header(seen, "Content-Length") == "0");
    }

    SECTION("bodies on either side of the 64 KiB read-ahead bound") {
        for (const size_t size : {size_t{64 * 1024}, size_t{64 * 1024 + 1}}) {
            INFO("size " << size);
            std::string body(size, '\0');
            for (size_t i = 0; i < size; ++i) {
                body[i] = static_cast<char>("abcdefghijklmnopqrstuvwxyz"[(i * 7) % 26]);
            }
            REQUIRE(g.call("PUT", "/api/echo/echo/sized", session_of(worker), body).status == 200);
            const json seen = last_request();
            CHECK(seen.at("method") == "PUT");
            CHECK(seen.at("body_len") == size);
            CHECK(seen.at("body") == body);
        }
    }

    SECTION("a chunked body goes upstream piece by piece as the agent sends it") {
        RawConnection c(g.port);
        c.send("POST /api/echo/echo/pieces?record_pieces=1 HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
               worker.session +
               "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n");
        // The upstream has the first piece while the agent still holds back the rest.
        auto pieces = [&] {
            std::vector<std::string> out;
            for (const json& r : g.upstream->requests()) {
                if (r.contains("piece")) {
                    out.push_back(r.at("piece"));
                }
            }
            return out;
        };
        const auto deadline = SteadyClock::now() + 5s;
        while (pieces().empty() && SteadyClock::now() < deadline) {
            std::this_thread::sleep_for(20ms);
        }
        CHECK(pieces() == std::vector<std::string>{"first"});
        c.send("6\r\nsecond\r\n0\r\n\r\n");
        const RawReply reply = c.read_until_close();
        CHECK(reply.status == 200);
        CHECK(pieces() == std::vector<std::string>{"first", "second"});
        std::vector<json> requests = g.upstream->requests();
        REQUIRE_FALSE(requests.empty());
        CHECK(requests.back().at("body") == "firstsecond");
    }

    SECTION("small chunks sent together go upstream together") {
        std::string chunks;
        for (int i = 0; i < 200; ++i) {
            chunks += "1\r\n" + std::string(1, static_cast<char>('a' + i % 26)) + "\r\n";
        }
        const RawReply reply = raw_exchange(
            g.port,
            "POST /api/echo/echo/small-chunks?record_pieces=1 HTTP/1.1\r\nHost: x\r\n"
            "X-Session-ID: " +
                worker.session + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                chunks + "0\r\n\r\n");
        CHECK(reply.status == 200);
        size_t pieces = 0;
        for (const json& r : g.upstream->requests()) {
            pieces += r.contains("piece") ? 1 : 0;
        }
        // One write from the agent, one read: not 200 upstream chunks of a byte each.
        CHECK(pieces >= 1);
        CHECK(pieces <= 4);
        const std::vector<json> requests = g.upstream->requests();
        REQUIRE_FALSE(requests.empty());
        CHECK(requests.back().at("body_len") == 200);
    }

    SECTION("a body cut short is refused and never forwarded") {
        RawConnection c(g.port);
        c.send("POST /api/echo/echo/cut HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session +
               "\r\nContent-Length: 100\r\n\r\nonly ten..");
        c.finish_sending();
        const RawReply reply = c.read_until_close();
        CHECK(reply.status == 400);
        CHECK(reply.closed);
        CHECK(g.upstream->requests().empty());
    }
}

TEST_CASE("the proxy drops hop-by-hop headers both ways and keeps Agentgw-Error its own",
          "[proxy][headers]") {
    const std::string body = R"({"error":"upstream's own"})";
    ScriptedUpstream scripted(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) +
        "\r\nConnection: close, X-Hop\r\nX-Hop: hop-value\r\nKeep-Alive: timeout=5\r\n"
        "Proxy-Authenticate: Basic realm=x\r\nAgentgw-Error: service_not_allowed\r\n"
        "Set-Cookie: a=b\r\nX-Upstream: yes\r\n\r\n" +
        body);
    Gateway g;
    g.start(json::array({service("scripted", scripted.base_url(), k_bearer),
                         service("echo", g.upstream->base_url(), k_bearer)}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"scripted", "echo"});
    g.set_credential("scripted", "sk-scripted");
    g.set_credential("echo", "sk-echo");

    SECTION("response: the upstream's status, body and end-to-end headers only") {
        const HttpReply r = g.call("GET", "/api/scripted/thing", session_of(worker));
        CHECK(r.status == 403);
        CHECK(r.body == body);
        CHECK(header(r, "x-upstream") == "yes");
        CHECK(header(r, "set-cookie") == "a=b");
        CHECK(header(r, "x-hop").empty());
        CHECK(header(r, "keep-alive").empty());
        CHECK(header(r, "proxy-authenticate").empty());
        REQUIRE(scripted.heads().size() == 1);
        CHECK(contains(scripted.heads()[0], "Authorization: Bearer sk-scripted"));
    }

    SECTION("response: an upstream cannot pass itself off as the gateway") {
        // SPEC §3: Agentgw-Error lets an agent *always* tell a gateway refusal from the
        // upstream's own answer, so the upstream's copy must not reach the agent.
        const HttpReply r = g.call("GET", "/api/scripted/thing", session_of(worker));
        CHECK(r.status == 403);
        CHECK(header(r, "agentgw-error").empty());
    }
}

// A request may split Connection over several field lines; every one of them counts, both for
// the headers it names and for "close".
TEST_CASE("the proxy honours every Connection field line", "[proxy][headers]") {
    Gateway g;
    g.start(json::array({service("echo", g.upstream->base_url(), k_bearer)}));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"echo"});
    g.set_credential("echo", "sk-echo");
    const std::string head =
        "GET /api/echo/echo/conn HTTP/1.1\r\nHost: x\r\nX-Session-ID: " + worker.session + "\r\n";

    const RawReply named = raw_exchange(g.port, head +
                                                    "Connection: close\r\nConnection: X-Second\r\n"
                                                    "X-Second: hop\r\nconnection: x-third\r\n"
                                                    "X-Third: hop\r\n\r\n");
    CHECK(named.status == 200);
    const auto requests = g.upstream->requests();
    REQUIRE(requests.size() == 1);
    CHECK_FALSE(header_recorded(requests[0], "X-Second"));
    CHECK_FALSE(header_recorded(requests[0], "X-Third"));
    CHECK_FALSE(header_recorded(requests[0], "Connection"));

    const RawReply closing =
        raw_exchange(g.port, head + "Connection: keep-alive\r\nConnection: close\r\n\r\n");
    CHECK(closing.status == 200);
    CHECK(closing.closed);
}

namespace {

// Arrival of a streamed body, for the SSE and large-download checks.
struct Stream {
    SteadyClock::time_point start;
    std::vector<double> event_times;  // seconds after start, one per complete event
    std::string text;                 // SSE text so far
    uint64_t bytes = 0;
    bool pattern_ok = true;
    pid_t watch_pid = 0;  // sample this process's RSS as bytes arrive
    long peak_rss = 0;
    uint64_t next_sample = 0;
};

size_t on_sse(char* data, size_t size, size_t n, void* user) {
    auto& s = *static_cast<Stream*>(user);
    s.text.append(data, size * n);
    size_t events = 0;
    for (size_t pos = s.text.find("\n\n"); pos != std::string::npos;
         pos = s.text.find("\n\n", pos + 2)) {
        ++events;
    }
    while (s.event_times.size() < events) {
        s.event_times.push_back(seconds_since(s.start));
    }
    return size * n;
}

size_t on_large(char* data, size_t size, size_t n, void* user) {
    auto& s = *static_cast<Stream*>(user);
    const size_t len = size * n;
    if (len > 0 && !large_pattern_at(data, len, s.bytes)) {
        s.pattern_ok = false;
    }
    s.bytes += len;
    if (s.watch_pid != 0 && s.bytes >= s.next_sample) {
        s.peak_rss = std::max(s.peak_rss, rss_kib(s.watch_pid));
        s.next_sample = s.bytes + 4 * k_mib;
    }
    return len;
}

// GET `url` with a libcurl easy handle feeding `write` (bounded by `timeout`).
CURLcode stream_get(const std::string& url, const Headers& headers, curl_write_callback write,
                    Stream& s, long& status, long timeout_ms) {
    CURL* c = curl_easy_init();
    curl_slist* list = nullptr;
    for (const auto& h : headers) {
        list = curl_slist_append(list, h.c_str());
    }
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    s.start = SteadyClock::now();
    const CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    return rc;
}

}  // namespace

TEST_CASE("the proxy streams responses with bounded memory", "[proxy][stream]") {
    Gateway g;
    const Agent worker = g.start_echo_worker();
    const pid_t daemon_pid = g.daemon.child->pid();

    SECTION("server-sent events arrive one by one") {
        Stream s;
        long status = 0;
        const CURLcode rc = stream_get(g.daemon.base_url + "/api/echo/sse?events=5&interval_ms=600",
                                       session_of(worker), on_sse, s, status, 15000);
        INFO("curl: " << curl_easy_strerror(rc) << "; text: " << s.text);
        CHECK(rc == CURLE_OK);
        CHECK(status == 200);
        REQUIRE(s.event_times.size() == 5);
        CHECK(contains(s.text, "data: {\"n\": 0}\n\n"));
        CHECK(contains(s.text, "data: {\"n\": 4}\n\n"));
        // Sent over 2.4 s: the first arrives long before the last, not batched at the end.
        CHECK(s.event_times.front() < 2.0);
        CHECK(s.event_times.back() >= 2.4);
        CHECK(s.event_times.back() - s.event_times.front() >= 1.0);
    }

    SECTION("200 MiB pass through without the daemon holding them") {
        // Warm up (allocator arenas, curl's buffers) before taking the baseline.
        long status = 0;
        Stream warm;
        REQUIRE(stream_get(g.daemon.base_url + "/api/echo/large?bytes=" + std::to_string(8 * k_mib),
                           session_of(worker), on_large, warm, status, 30000) == CURLE_OK);
        REQUIRE(warm.bytes == 8 * k_mib);
        const long before = rss_kib(daemon_pid);
        REQUIRE(before > 0);

        Stream s;
        s.watch_pid = daemon_pid;
        const uint64_t total = 200 * k_mib;
        const CURLcode rc =
            stream_get(g.daemon.base_url + "/api/echo/large?bytes=" + std::to_string(total),
                       session_of(worker), on_large, s, status, 60000);
        const long after = rss_kib(daemon_pid);
        INFO("curl: " << curl_easy_strerror(rc) << "; took " << seconds_since(s.start)
                      << " s; RSS before " << before << " KiB, peak " << s.peak_rss
                      << " KiB, after " << after << " KiB");
        CHECK(rc == CURLE_OK);
        CHECK(status == 200);
        CHECK(s.bytes == total);
        CHECK(s.pattern_ok);
        CHECK(rss_growth_ok(before, std::max(s.peak_rss, after)));

        // The chunked form too (no Content-Length from the upstream).
        Stream chunked;
        CHECK(stream_get(g.daemon.base_url +
                             "/api/echo/large?chunked=1&bytes=" + std::to_string(5 * k_mib + 3),
                         session_of(worker), on_large, chunked, status, 30000) == CURLE_OK);
        CHECK(chunked.bytes == 5 * k_mib + 3);
        CHECK(chunked.pattern_ok);
    }

    SECTION("a slow reader slows the upstream instead of growing the daemon") {
        const long before = rss_kib(daemon_pid);
        REQUIRE(before > 0);
        {
            RawConnection c(g.port, 64 * 1024);
            c.send("GET /api/echo/large?bytes=104857600 HTTP/1.1\r\nHost: x\r\nX-Session-ID: " +
                   worker.session + "\r\n\r\n");
            std::string got = c.read_exactly(256 * 1024, 5s);
            REQUIRE(got.size() == 256 * 1024);
            const size_t head_end = got.find("\r\n\r\n");
            REQUIRE(head_end != std::string::npos);
            CHECK(got.starts_with("HTTP/1.1 200"));
            std::this_thread::sleep_for(2s);
            const long stalled = rss_kib(daemon_pid);
            got += c.read_exactly(256 * 1024, 5s);
            REQUIRE(got.size() == 512 * 1024);
            const std::string body = got.substr(head_end + 4);
            CHECK(large_pattern_at(body.data(), body.size(), 0));
            CHECK(large_pattern_at(body.data() + 100000, 1000, 100000));
            std::this_thread::sleep_for(1s);
            const long later = rss_kib(daemon_pid);
            INFO("RSS before " << before << " KiB, stalled " << stalled << " KiB, later " << later
                               << " KiB");
            CHECK(rss_growth_ok(before, stalled));
            CHECK(rss_growth_ok(before, later));
        }
        // The daemon drops the abandoned transfer and keeps serving.
        CHECK(g.call("GET", "/api/echo/echo/after", session_of(worker)).status == 200);
    }
}

TEST_CASE("the proxy verifies upstream TLS certificates", "[proxy][tls]") {
    Gateway g;
    TestUpstream tls(make_dir(g.dir / "tls"), true);
    const fs::path wrong = g.dir / "wrong-ca";
    const RunResult made =
        run({"/usr/bin/env", "python3", AGENTGW_TEST_UPSTREAM, "--make-ca", wrong.string()});
    INFO("make-ca: " << made.err);
    REQUIRE(made.code == 0);
    g.start(json::array({
        service("tls", tls.base_url(), k_bearer, {{"ca_file", tls.ca_file().string()}}),
        service("tls-system", tls.base_url(), k_bearer),
        service("tls-wrong", tls.base_url(), k_bearer, {{"ca_file", (wrong / "ca.pem").string()}}),
    }));
    g.add_user("alice");
    const Agent worker = g.add_agent("alice", "worker", {"tls", "tls-system", "tls-wrong"});
    for (const char* svc : {"tls", "tls-system", "tls-wrong"}) {
        g.set_credential(svc, "sk-tls-secret");
    }

    const HttpReply ok = g.call("POST", "/api/tls/echo/secure?a=1", session_of(worker), "payload");
    INFO("reply " << ok.status << " " << ok.body);
    CHECK(ok.status == 200);
    const auto requests = tls.requests();
    REQUIRE(requests.size() == 1);
    CHECK(requests[0].at("target") == "/echo/secure?a=1");
    CHECK(requests[0].at("body") == "payload");
    CHECK(recorded_header(requests[0], "Authorization") == "Bearer sk-tls-secret");

    tls.clear_requests();
    check_gateway_error(g.call("GET", "/api/tls-system/echo/x", session_of(worker)), 502,
                        "upstream_error");
    check_gateway_error(g.call("GET", "/api/tls-wrong/echo/x", session_of(worker)), 502,
                        "upstream_error");
    CHECK(tls.requests().empty());  // the handshake failed: no request was sent
    CHECK_FALSE(contains(g.daemon_log(), "sk-tls-secret"));
}
