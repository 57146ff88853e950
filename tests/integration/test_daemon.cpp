#include <algorithm>
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "common/unique_fd.hpp"
#include "daemon/config.hpp"
#include "daemon/vault/vault.hpp"
#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The whole command line of an agentgwd living in `dir`, for running it without start_daemon.
std::vector<std::string> agentgwd_argv(const TempDir& dir,
                                       const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {AGENTGWD_PATH};
    for (const auto& a : daemon_args(dir, extra)) {
        argv.push_back(a);
    }
    return argv;
}

// A TCP connection to the listener at `base_url` ("http://ADDRESS:PORT").
agentgw::UniqueFd connect_tcp(const std::string& base_url) {
    std::smatch m;
    const std::regex re(R"(http://([0-9.]+):([0-9]+))");
    REQUIRE(std::regex_search(base_url, m, re));
    agentgw::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(m[2])));
    ::inet_pton(AF_INET, m[1].str().c_str(), &addr.sin_addr);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

// Sends raw bytes to the TCP listener and returns everything it answers before closing.
std::string raw_exchange(const std::string& base_url, const std::string& bytes) {
    const auto fd = connect_tcp(base_url);
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    REQUIRE(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) {
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

// An agentgwd in `dir` started with a soft and a hard limit on open files of its own, by
// prlimit(1), which sets them and execs it (so the daemon keeps its pid).
RunningDaemon start_with_file_limit(const TempDir& dir, rlim_t soft, rlim_t hard) {
    std::vector<std::string> argv = {
        program_path("prlimit"), "--nofile=" + std::to_string(soft) + ":" + std::to_string(hard),
        "--"};
    for (const auto& a : agentgwd_argv(dir)) {
        argv.push_back(a);
    }
    return await_ready(std::make_unique<Child>(argv));
}

size_t count_of(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
        ++n;
    }
    return n;
}

int count_lines(const std::string& text) {
    return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

RunResult cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {AGENTGW_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

}  // namespace

TEST_CASE("agentgwd answers /healthz and stops on SIGTERM with exit 0", "[daemon]") {
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));

    const auto health = http_request("GET", d.base_url + "/healthz");
    CHECK(health.status == 200);
    CHECK(json::parse(health.body) == json{{"status", "ok"}});
    CHECK(header(health, "content-type") == "application/json");

    const auto missing = http_request("GET", d.base_url + "/nope");
    CHECK(missing.status == 404);
    CHECK(header(missing, "agentgw-error") == "not_found");
    CHECK(json::parse(missing.body)["error"] == "not_found");

    const auto wrong_method = http_request("POST", d.base_url + "/healthz", "{}");
    CHECK(wrong_method.status == 405);
    CHECK(header(wrong_method, "allow") == "GET");

    // Control routes never exist on the TCP port.
    CHECK(http_request("GET", d.base_url + "/v1/status").status == 404);

    const auto status =
        http_request("GET", "http://localhost/v1/status", {}, {}, d.socket.string());
    REQUIRE(status.status == 200);
    const auto s = json::parse(status.body);
    CHECK(s["vault"]["state"] == "open");
    CHECK(s["listeners"]["agent_api"] == d.base_url.substr(7));
    CHECK(mode_of(d.socket) == 0660);
    CHECK(mode_of(dir / "state") == 0700);
    CHECK(mode_of(dir / "state" / "master.key") == 0600);

    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
    CHECK_FALSE(fs::exists(d.socket));
    CHECK(d.child->stderr_text().find("stopped") != std::string::npos);
}

TEST_CASE("agentgwd stops on SIGINT with exit 0 and reopens its vault", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir));
        d.child->signal(SIGINT);
        CHECK(d.child->wait(15s) == 0);
    }
    const auto key_before = read_file(dir / "state" / "master.key");
    auto d = start_daemon(daemon_args(dir));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
    CHECK(read_file(dir / "state" / "master.key") == key_before);
    CHECK(d.child->stderr_text().find("generating") == std::string::npos);
}

TEST_CASE("a wrong master key is refused in one line and changes nothing", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir));
        d.child->signal(SIGTERM);
        REQUIRE(d.child->wait(15s) == 0);
    }
    write_file(dir / "wrong.key", std::string(64, 'f') + "\n");
    const auto before = hash_tree(dir / "state");

    std::vector<std::string> argv =
        agentgwd_argv(dir, {"--key-file", (dir / "wrong.key").string()});
    const auto r = run(argv);
    CHECK(r.code == 1);
    INFO(r.err);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("wrong master key") != std::string::npos);
    CHECK(r.err.find("wrong.key") != std::string::npos);
    CHECK(hash_tree(dir / "state") == before);
    CHECK_FALSE(fs::exists(dir / "run" / "agentgw.sock"));
}

TEST_CASE("a second agentgwd on the same state dir refuses to start", "[daemon]") {
    TempDir dir;
    auto first = start_daemon(daemon_args(dir));

    std::vector<std::string> argv = {AGENTGWD_PATH,
                                     "--state-dir",
                                     (dir / "state").string(),
                                     "--socket",
                                     (dir / "other" / "s.sock").string(),
                                     "--listen",
                                     "127.0.0.1:0"};
    const auto r = run(argv);
    CHECK(r.code == 1);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.err.find("already using state directory") != std::string::npos);
    CHECK(http_request("GET", first.base_url + "/healthz").status == 200);
}

TEST_CASE("a live control socket is kept, a stale one replaced", "[daemon]") {
    TempDir dir;
    auto first = start_daemon(daemon_args(dir));

    TempDir other;
    std::vector<std::string> argv = {
        AGENTGWD_PATH, "--state-dir", (other / "state").string(), "--socket", first.socket.string(),
        "--listen",    "127.0.0.1:0"};
    const auto r = run(argv);
    CHECK(r.code == 1);
    CHECK(r.err.find("another daemon is listening") != std::string::npos);
    CHECK(http_request("GET", "http://localhost/healthz", {}, {}, first.socket.string()).status ==
          200);

    // A socket file nobody listens on any more is taken over.
    fs::create_directory(other / "run");
    fs::permissions(other / "run", fs::perms(0700));
    const auto stale = other / "run" / "stale.sock";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
    REQUIRE(fs::exists(stale));
    auto second = start_daemon({"--state-dir", (other / "state").string(), "--socket",
                                stale.string(), "--listen", "127.0.0.1:0"});
    CHECK(http_request("GET", "http://localhost/healthz", {}, {}, stale.string()).status == 200);
}

TEST_CASE("a control socket directory looser than 0750 is refused", "[daemon]") {
    TempDir dir;
    fs::create_directory(dir / "run");
    fs::permissions(dir / "run", fs::perms(0777));
    std::vector<std::string> argv = agentgwd_argv(dir);
    const auto r = run(argv);
    CHECK(r.code == 1);
    CHECK(r.err.find("0777") != std::string::npos);
}

TEST_CASE("malformed and smuggling requests get a JSON 400 and a closed connection", "[daemon]") {
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));

    const auto garbage = raw_exchange(d.base_url, "THIS IS NOT HTTP\r\n\r\n");
    CHECK(garbage.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(garbage.find("Agentgw-Error: bad_request") != std::string::npos);
    CHECK(garbage.find(R"("error":"bad_request")") != std::string::npos);

    const auto smuggle =
        raw_exchange(d.base_url,
                     "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
                     "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(smuggle.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(smuggle.find("smuggled") == std::string::npos);
    CHECK(smuggle.find("HTTP/1.1", 5) == std::string::npos);  // exactly one response

    const auto two = raw_exchange(d.base_url,
                                  "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(two.find("HTTP/1.1 200") == 0);
    CHECK(two.find("HTTP/1.1 200", 5) != std::string::npos);  // keep-alive served both

    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);  // still serving
}

TEST_CASE("a listener out of descriptors waits for one instead of spinning, then serves again",
          "[daemon]") {
#if defined(__SANITIZE_ADDRESS__)
    // The sanitizers' runtime needs descriptors of its own to check memory (it probes with a
    // pipe), so with none left every check fails and the sanitized daemon aborts: this case
    // can only run in a plain build.
    WARN("not run under the sanitizers");
    return;
#endif
    TempDir dir;
    std::optional<RunningDaemon> d;
    d.emplace(start_with_file_limit(dir, 64, 64));
    // More connections than the daemon has descriptors left: the kernel completes them all
    // and queues the rest, which accept() then refuses with EMFILE.
    std::vector<agentgw::UniqueFd> held;
    for (int i = 0; i < 100; ++i) {
        held.push_back(connect_tcp(d->base_url));
    }
    REQUIRE(d->child->wait_for_stderr("Too many open files", 10s));
    // Time enough for a loop retrying at once to fail many thousands of times.
    std::this_thread::sleep_for(500ms);

    held.clear();  // the daemon sees these end and gets its descriptors back
    const auto health = http_request("GET", d->base_url + "/healthz");
    CHECK(health.status == 200);
    REQUIRE(d->child->wait_for_stderr("accepting connections again", 10s));

    d->child->signal(SIGTERM);
    CHECK(d->child->wait(15s) == 0);
    // One warning per episode out of descriptors, not one per retry. Freed descriptors may
    // run out again for a moment while the queued connections are taken: a second episode,
    // with its own warning and its own end.
    const std::string log = d->child->stderr_text();
    const size_t warnings = count_of(log, "accept failed");
    const size_t ends = count_of(log, "accepting connections again");
    INFO(log);
    CHECK(warnings >= 1);
    CHECK(warnings <= ends + 1);  // the last episode may still be on at SIGTERM
}

TEST_CASE("agentgwd raises its soft limit on open files to the hard one", "[daemon]") {
    rlimit own{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &own) == 0);
    if (own.rlim_max < 512) {
        WARN("not run: the hard limit on open files here is " << own.rlim_max);
        return;
    }
    TempDir dir;
    RunningDaemon d = start_with_file_limit(dir, 64, std::min<rlim_t>(own.rlim_max, 1024));
    // Three times as many agent connections as the soft limit, each open at once and answered.
    std::vector<agentgw::UniqueFd> held;
    for (int i = 0; i < 192; ++i) {
        held.push_back(connect_tcp(d.base_url));
    }
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
    int answered = 0;
    for (const auto& fd : held) {
        REQUIRE(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(request.size()));
        pollfd p{fd.get(), POLLIN, 0};
        char buf[512];
        if (::poll(&p, 1, 5000) != 1 || ::recv(fd.get(), buf, sizeof buf, 0) <= 12 ||
            std::string_view(buf, 12) != "HTTP/1.1 200") {
            break;  // not accepted: the rest would wait as long
        }
        ++answered;
    }
    CHECK(answered == 192);
    CHECK_FALSE(d.child->stderr_text().find("Too many open files") != std::string::npos);
    held.clear();
    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("settings come from flags, then environment, then the config file", "[daemon]") {
    TempDir dir;
    write_file(dir / "agentgwd.conf", "state-dir = \"" + (dir / "state").string() + "\"\n" +
                                          "socket = \"" +
                                          (dir / "run" / "from-config.sock").string() + "\"\n" +
                                          "listen = \"127.0.0.1:0\"\n");
    const std::vector<std::string> conf = {"--config", (dir / "agentgwd.conf").string()};

    SECTION("config file alone") {
        auto d = start_daemon(conf);
        CHECK(d.socket.filename() == "from-config.sock");
    }
    SECTION("environment beats the config file") {
        auto d =
            start_daemon(conf, {{"AGENTGWD_SOCKET", (dir / "run" / "from-env.sock").string()}});
        CHECK(d.socket.filename() == "from-env.sock");
    }
    SECTION("a flag beats both") {
        auto args = conf;
        args.push_back("--socket");
        args.push_back((dir / "run" / "from-flag.sock").string());
        auto d =
            start_daemon(args, {{"AGENTGWD_SOCKET", (dir / "run" / "from-env.sock").string()}});
        CHECK(d.socket.filename() == "from-flag.sock");
    }
    SECTION("the config file itself may come from the environment") {
        auto d = start_daemon({}, {{"AGENTGWD_CONFIG", (dir / "agentgwd.conf").string()}});
        CHECK(d.socket.filename() == "from-config.sock");
    }
}

TEST_CASE("bad settings are usage errors naming the problem", "[daemon]") {
    TempDir dir;
    // Exit status 2, with `says` on standard error.
    const auto refused = [](const std::vector<std::string>& args, const std::string& says,
                            const std::map<std::string, std::optional<std::string>>& env = {}) {
        const RunResult r = run(args, env);
        INFO(r.err);
        CHECK(r.code == 2);
        CHECK(r.err.find(says) != std::string::npos);
    };
    write_file(dir / "bad.conf", "listen = \"127.0.0.1:0\"\nbogus-key = 1\n");
    refused({AGENTGWD_PATH, "--config", (dir / "bad.conf").string()},
            (dir / "bad.conf").string() + ": unknown setting \"bogus-key\"");

    const auto ttl = run({AGENTGWD_PATH, "--session-ttl", "5"});
    CHECK(ttl.code == 2);
    // Numbers are decimal, from a flag, the environment or the file: CLI11 alone would take
    // 0090 for octal (and refuse it) and 0x3c for 60.
    refused({AGENTGWD_PATH, "--session-ttl", "0090"}, "not a decimal number: 0090");
    refused({AGENTGWD_PATH}, "not a decimal number: 0x3c", {{"AGENTGWD_SESSION_TTL", "0x3c"}});
    write_file(dir / "octal.conf", "shutdown-timeout = 07000\n");
    refused({AGENTGWD_PATH, "--config", (dir / "octal.conf").string()},
            "not a decimal number: 07000");
    const auto flag = run({AGENTGWD_PATH, "--no-such-flag"});
    CHECK(flag.code == 2);
    // A listen address and a socket group are checked before anything starts, from a flag,
    // the environment or the file.
    refused({AGENTGWD_PATH, "--state-dir", (dir / "s").string(), "--socket",
             (dir / "r" / "s.sock").string(), "--listen", "localhost"},
            "--listen: localhost: expected ADDR:PORT");
    refused({AGENTGWD_PATH, "--state-dir", (dir / "s").string(), "--socket",
             (dir / "r" / "s.sock").string(), "--socket-group", "no-such-group-agentgw"},
            "--socket-group: no-such-group-agentgw: no such group");
    CHECK_FALSE(fs::exists(dir / "s"));
    refused({AGENTGWD_PATH}, "127.0.0.1:65536: expected an IP address and a port",
            {{"AGENTGWD_LISTEN", "127.0.0.1:65536"}});
    write_file(dir / "listen.conf", "listen = \"127.0.0.1:+80\"\n");
    refused({AGENTGWD_PATH, "--config", (dir / "listen.conf").string()},
            "127.0.0.1:+80: expected an IP address and a port");
    // Only a daemon about to run is stopped by them, not --version.
    CHECK(run({AGENTGWD_PATH, "--config", (dir / "listen.conf").string(), "--version"}).code == 0);
    const auto version = run({AGENTGWD_PATH, "--version"});
    CHECK(version.code == 0);
    CHECK(version.out.find('.') != std::string::npos);
}

TEST_CASE("a listen address is a numeric IP address and a decimal port", "[daemon]") {
    for (const char* good : {"127.0.0.1:0", "0.0.0.0:65535", "[::1]:3000"}) {
        INFO(good);
        CHECK(agentgw::parse_listen(good));
    }
    for (const char* bad :
         {"localhost:3000", "127.0.0.1", "127.0.0.1:", ":3000", "[::1]", "127.0.0.1:65536",
          "127.0.0.1:-1", "127.0.0.1: 80", "127.0.0.1:0x50", "[127.0.0.1:80"}) {
        INFO(bad);
        CHECK_FALSE(agentgw::parse_listen(bad));
    }
    const auto v6 = agentgw::parse_listen("[::1]:3000");
    REQUIRE(v6);
    CHECK(v6->address().is_v6());
    CHECK(v6->port() == 3000);
}

TEST_CASE("agentgwd rekey moves the vault to a new key", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir));
        d.child->signal(SIGTERM);
        REQUIRE(d.child->wait(15s) == 0);
    }
    std::string new_key(32, '\0');
    randombytes_buf(new_key.data(), new_key.size());
    write_file(dir / "new.key", new_key);
    const auto r = run({AGENTGWD_PATH, "--state-dir", (dir / "state").string(), "--socket",
                        (dir / "run" / "agentgw.sock").string(), "rekey", "--new-key-file",
                        (dir / "new.key").string()});
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK_FALSE(fs::exists(dir / "state" / "master.key"));

    // Without the key the vault stays shut, and no new key is generated over it.
    const auto shut = run({AGENTGWD_PATH, "--state-dir", (dir / "state").string(), "--socket",
                           (dir / "run" / "agentgw.sock").string(), "--listen", "127.0.0.1:0"});
    CHECK(shut.code == 1);
    CHECK(shut.err.find("needs its master key") != std::string::npos);
    CHECK_FALSE(fs::exists(dir / "state" / "master.key"));

    auto d = start_daemon(daemon_args(dir, {"--key-file", (dir / "new.key").string()}));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
}

TEST_CASE("a passphrase-protected vault unlocks from standard input", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                              std::string("open sesame\n"));
        CHECK_FALSE(fs::exists(dir / "state" / "master.key"));
        d.child->signal(SIGTERM);
        REQUIRE(d.child->wait(15s) == 0);
    }
    std::vector<std::string> argv = agentgwd_argv(dir, {"--passphrase-file", "-"});
    const auto wrong = run(argv, {}, std::string("open says me\n"));
    CHECK(wrong.code == 1);
    CHECK(count_lines(wrong.err) == 1);
    CHECK(wrong.err.find("wrong master passphrase") != std::string::npos);

    const auto none = run({argv.begin(), argv.end() - 2});
    CHECK(none.code == 1);
    CHECK(none.err.find("protected by a passphrase") != std::string::npos);

    auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                          std::string("open sesame\n"));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
}

TEST_CASE("agentgw status talks to the daemon over its socket", "[daemon][cli]") {
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));

    const auto human = cli({"--socket", d.socket.string(), "status"});
    CHECK(human.code == 0);
    CHECK(human.out.find("agent API") != std::string::npos);
    CHECK(human.out.find(d.base_url.substr(7)) != std::string::npos);

    const auto machine = cli({"--json", "--socket", d.socket.string(), "status"});
    CHECK(machine.code == 0);
    CHECK(json::parse(machine.out)["vault"]["state"] == "open");

    const auto env = run({AGENTGW_CLI_PATH, "status"}, {{"AGENTGW_SOCKET", d.socket.string()}});
    CHECK(env.code == 0);

    d.child->signal(SIGTERM);
    REQUIRE(d.child->wait(15s) == 0);
    const auto down = cli({"--socket", d.socket.string(), "status"});
    CHECK(down.code == 5);
    CHECK(down.err.rfind("agentgw: ", 0) == 0);
    CHECK(count_lines(down.err) == 1);
    INFO(down.err);
    // The reason is the socket's, not that of the URL the client speaks over it.
    CHECK((down.err.find("No such file or directory") != std::string::npos ||
           down.err.find("Connection refused") != std::string::npos));
    CHECK(down.err.find("port 80") == std::string::npos);

    CHECK(cli({"--socket", d.socket.string(), "no-such-command"}).code == 2);
    CHECK(cli({}).code == 2);
}

TEST_CASE("a commit that cannot reach the disk stops the daemon and keeps what it acknowledged",
          "[daemon]") {
    // LMDB gives up on an environment whose meta page it could not write: every transaction
    // after it fails. A daemon that stays up then answers 500 to everything, /healthz 200.
    TempDir dir;
    const fs::path trigger = dir / "fail-commits";
    std::string asan = std::getenv("ASAN_OPTIONS") != nullptr ? std::getenv("ASAN_OPTIONS") : "";
    asan += (asan.empty() ? "" : ":") + std::string("verify_asan_link_order=0");
    auto d = start_daemon(daemon_args(dir), {{"LD_PRELOAD", AGENTGW_FAIL_DSYNC},
                                             {"AGENTGW_FAIL_DSYNC", trigger.string()},
                                             {"ASAN_OPTIONS", asan}});
    const std::vector<std::string> sock = {"--socket", d.socket.string()};
    const auto with = [&](std::vector<std::string> args) {
        args.insert(args.begin(), sock.begin(), sock.end());
        return args;
    };
    REQUIRE(cli(with({"user", "add", "alice", "--email", "alice@example.com"})).code == 0);

    write_file(trigger, "");
    const auto refused = cli(with({"user", "add", "bob", "--email", "bob@example.com"}));
    CHECK(refused.code != 0);
    INFO("agentgwd stderr: " << d.child->stderr_text());
    CHECK(d.child->wait(10s) == 1);
    CHECK(d.child->stderr_text().find("cannot be used") != std::string::npos);

    // The next start falls back to the last commit that reached the disk whole.
    fs::remove(trigger);
    auto again = start_daemon(daemon_args(dir));
    const auto users = cli({"--json", "--socket", again.socket.string(), "user", "list"});
    REQUIRE(users.code == 0);
    CHECK(users.out.find("alice") != std::string::npos);
    CHECK(users.out.find("bob") == std::string::npos);
    again.child->signal(SIGTERM);
    CHECK(again.child->wait(15s) == 0);
}

TEST_CASE("SIGHUP does not stop the daemon", "[daemon]") {
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));
    d.child->signal(SIGHUP);
    REQUIRE(d.child->wait_for_stderr("SIGHUP").has_value());
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("a log reader that goes away does not stop the daemon", "[daemon]") {
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));
    d.child->close_output();
    // A reload logs a line or two, which now go to a pipe nobody reads.
    for (int i = 0; i < 3; ++i) {
        d.child->signal(SIGHUP);
        std::this_thread::sleep_for(200ms);
        INFO("SIGHUP " << i);
        CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
    }
    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("a SIGHUP during startup waits for the daemon instead of killing it", "[daemon]") {
    // A new passphrase-protected vault: deriving its key (Argon2id, 256 MiB) keeps the daemon
    // starting for long enough to be caught at it.
    TempDir dir;
    std::vector<std::string> argv = agentgwd_argv(dir, {"--passphrase-file", "-"});
    auto child = std::make_unique<Child>(argv, std::map<std::string, std::optional<std::string>>{},
                                         std::string("open sesame\n"));

    // Once the daemon holds SIGHUP back (it does so first thing), a reload request comes.
    const auto holds_hup = [&] {
        const std::string status = read_file("/proc/" + std::to_string(child->pid()) + "/status");
        std::smatch m;
        return std::regex_search(status, m, std::regex("\\nSigBlk:\\s*([0-9a-f]+)")) &&
               (std::stoull(m[1], nullptr, 16) & (1ULL << (SIGHUP - 1))) != 0;
    };
    bool held = false;
    for (int i = 0; i < 2000 && !held; ++i) {
        held = holds_hup();
        if (!held) {
            std::this_thread::sleep_for(5ms);
        }
    }
    INFO("agentgwd stderr: " << child->stderr_text());
    REQUIRE(held);
    child->signal(SIGHUP);

    // The daemon comes up, and then does the reload.
    auto d = await_ready(std::move(child));
    CHECK(d.child->wait_for_stderr("received SIGHUP").has_value());
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("a master-secret flag beats the other kind from the environment", "[daemon]") {
    TempDir dir;
    write_file(dir / "k", std::string(32, 'k'));
    auto d =
        start_daemon(daemon_args(dir, {"--passphrase-file", "-"}),
                     {{"AGENTGWD_KEY_FILE", (dir / "k").string()}}, std::string("a passphrase\n"));
    d.child->signal(SIGTERM);
    REQUIRE(d.child->wait(15s) == 0);
    const auto envelope = agentgw::Vault::probe(dir / "state");
    REQUIRE(envelope);
    REQUIRE(envelope->has_value());
    CHECK((*envelope)->kind == agentgw::MasterKind::passphrase);
}

TEST_CASE("rekey to a passphrase reads it after the current secret", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir));
        d.child->signal(SIGTERM);
        REQUIRE(d.child->wait(15s) == 0);
    }
    const auto r = run({AGENTGWD_PATH, "--state-dir", (dir / "state").string(), "rekey",
                        "--new-passphrase-file", "-"},
                       {}, std::string("the new passphrase\n"));
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK_FALSE(fs::exists(dir / "state" / "master.key"));
    auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                          std::string("the new passphrase\n"));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);

    const auto nothing = run({AGENTGWD_PATH, "--state-dir", (dir / "empty").string(), "rekey",
                              "--new-key-file", (dir / "state" / "x").string()});
    CHECK(nothing.code == 1);
    CHECK(nothing.err.find("no vault") != std::string::npos);
}

TEST_CASE("a control-socket peer of another uid is answered 403", "[daemon][cli]") {
    if (::geteuid() != 0 || !fs::exists("/usr/bin/setpriv")) {
        WARN("needs root and setpriv to act as another uid; not run");
        return;
    }
    TempDir dir;
    auto d = start_daemon(daemon_args(dir));
    // Let uid/gid 65534 reach the socket, so that only the daemon's peer check stands between.
    fs::permissions(dir.path(), fs::perms(0755));
    REQUIRE(::chown((dir / "run").c_str(), 0, 65534) == 0);
    REQUIRE(::chown(d.socket.c_str(), 0, 65534) == 0);
    const auto r = run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        AGENTGW_CLI_PATH, "--socket", d.socket.string(), "status"});
    INFO(r.err);
    CHECK(r.code == 4);
    CHECK(r.err.find("may not use this socket") != std::string::npos);
    CHECK(d.child->wait_for_stderr("refusing control connection from uid 65534").has_value());
}

namespace {

// Makes the vault in `dir` with the credential `name` holding `secret`, in dir/creds (as
// systemd's LoadCredential= passes it), and checks no key was generated beside it; returns
// the environment that passes the credential.
std::map<std::string, std::optional<std::string>> first_start_with_credential(
    const TempDir& dir, const std::string& name, const std::string& secret) {
    fs::create_directory(dir / "creds");
    write_file(dir / "creds" / name, secret);
    const std::map<std::string, std::optional<std::string>> env = {
        {"CREDENTIALS_DIRECTORY", (dir / "creds").string()}};
    auto d = start_daemon(daemon_args(dir), env);
    CHECK_FALSE(fs::exists(dir / "state" / "master.key"));
    d.child->signal(SIGTERM);
    REQUIRE(d.child->wait(15s) == 0);
    return env;
}

}  // namespace

TEST_CASE("the master key comes from $CREDENTIALS_DIRECTORY when present", "[daemon]") {
    TempDir dir;
    const auto env = first_start_with_credential(dir, "master.key", std::string(64, 'c'));
    // The vault is bound to that key: without it the daemon refuses and generates nothing.
    const auto r = run(agentgwd_argv(dir));
    CHECK(r.code == 1);
    CHECK(r.err.find("needs its master key") != std::string::npos);
    CHECK_FALSE(fs::exists(dir / "state" / "master.key"));
    auto d = start_daemon(daemon_args(dir), env);
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
}

TEST_CASE("a new vault takes a passphrase from $CREDENTIALS_DIRECTORY", "[daemon]") {
    TempDir dir;
    first_start_with_credential(dir, "passphrase", "credential store passphrase\n");
    // The vault is protected by that passphrase, and by nothing generated next to it.
    const auto r = run(agentgwd_argv(dir));
    CHECK(r.code == 1);
    CHECK(r.err.find("protected by a passphrase") != std::string::npos);
    auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                          std::string("credential store passphrase\n"));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
}

TEST_CASE("rekey from one passphrase to another reads current, then new", "[daemon]") {
    TempDir dir;
    {
        auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                              std::string("old passphrase\n"));
        d.child->signal(SIGTERM);
        REQUIRE(d.child->wait(15s) == 0);
    }
    const auto r = run({AGENTGWD_PATH, "--state-dir", (dir / "state").string(), "--passphrase-file",
                        "-", "rekey", "--new-passphrase-file", "-"},
                       {}, std::string("old passphrase\nnew passphrase\n"));
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::vector<std::string> argv = agentgwd_argv(dir, {"--passphrase-file", "-"});
    CHECK(run(argv, {}, std::string("old passphrase\n")).code == 1);
    auto d = start_daemon(daemon_args(dir, {"--passphrase-file", "-"}), {},
                          std::string("new passphrase\n"));
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
}

TEST_CASE("members of --socket-group may use the control socket", "[daemon][cli]") {
    if (::geteuid() != 0 || !fs::exists("/usr/bin/setpriv") || ::getgrgid(65534) == nullptr) {
        WARN("needs root, setpriv and gid 65534 to act as another user; not run");
        return;
    }
    TempDir dir;
    const std::string group = ::getgrgid(65534)->gr_name;
    auto d = start_daemon(daemon_args(dir, {"--socket-group", group}));
    fs::permissions(dir.path(), fs::perms(0755));
    CHECK(mode_of(d.socket) == 0660);
    const auto r = run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        AGENTGW_CLI_PATH, "--socket", d.socket.string(), "status"});
    INFO(r.err);
    CHECK(r.code == 0);
}

TEST_CASE("agentgwd keeps its memory from the user's other processes and out of core dumps",
          "[daemon][security]") {
    SECTION("no core dumps") {
        TempDir dir;
        auto d = start_daemon(daemon_args(dir));
        const std::string limits = read_file("/proc/" + std::to_string(d.child->pid()) + "/limits");
        CHECK(std::regex_search(limits, std::regex(R"(Max core file size +0 +0 )")));
    }
    SECTION("no reading it from another process of its user") {
        // Runs as nobody, so that the reader shares the daemon's user without being root
        // (whom CAP_SYS_PTRACE lets in anyway).
        if (::geteuid() != 0) {
            WARN("not run: needs root, to start the daemon and the reader as another user");
            return;
        }
        const std::vector<std::string> as_nobody = {"/usr/bin/setpriv", "--reuid=65534",
                                                    "--regid=65534", "--clear-groups", "--"};
        const auto nobody = [&](std::vector<std::string> argv) {
            argv.insert(argv.begin(), as_nobody.begin(), as_nobody.end());
            return argv;
        };
        if (run(nobody({AGENTGWD_PATH, "--version"})).code != 0) {
            WARN("not run: nobody cannot run " << AGENTGWD_PATH);
            return;
        }
        TempDir dir;
        REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
        Child daemon(nobody(agentgwd_argv(dir)));
        INFO("agentgwd stderr: " << daemon.stderr_text());
        REQUIRE(daemon.wait_for_stderr("ready:", 30s));

        // The reader can read what another process of nobody's keeps in /proc...
        Child sleeper(nobody({"/bin/sleep", "60"}));
        // ... once it runs sleep: until setpriv has exec'd it, the process has just dropped
        // root and is not dumpable, so its /proc files are still root's.
        const std::string comm = "/proc/" + std::to_string(sleeper.pid()) + "/comm";
        for (int i = 0; i < 500 && read_file(comm) != "sleep\n"; ++i) {
            std::this_thread::sleep_for(10ms);
        }
        REQUIRE(read_file(comm) == "sleep\n");
        const RunResult other =
            run(nobody({"/bin/cat", "/proc/" + std::to_string(sleeper.pid()) + "/environ"}));
        CHECK(other.code == 0);
        // ... but not the daemon's environment or memory.
        for (const char* file : {"environ", "mem", "maps"}) {
            const RunResult r =
                run(nobody({"/bin/cat", "/proc/" + std::to_string(daemon.pid()) + "/" + file}));
            INFO(file << ": exit " << r.code << ", " << r.err);
            CHECK(r.code != 0);
            CHECK(r.err.find("Permission denied") != std::string::npos);
        }
        sleeper.signal(SIGKILL);
        CHECK(sleeper.wait(10s).has_value());
        daemon.signal(SIGTERM);
        CHECK(daemon.wait(15s) == 0);
    }
}
