// agentgwd under systemd's protocols, without systemd: a notify socket the test reads
// (READY/RELOADING/STOPPING/WATCHDOG), sockets passed by systemd-socket-activate (LISTEN_FDS),
// SIGHUP reloads of the services file and the bounded drain on SIGTERM.
#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <filesystem>
#include <future>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/integration/daemon_harness.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/test_upstream.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

using Args = std::vector<std::string>;

// The receiving end of $NOTIFY_SOCKET: a datagram socket in a temp dir.
class NotifySocket {
  public:
    explicit NotifySocket(const fs::path& path) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(path.string().size() < sizeof addr.sun_path);
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    const fs::path& path() const { return path_; }

    // The next message, or nullopt when none arrives within `timeout`.
    std::optional<std::string> next(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
            return std::nullopt;
        }
        char buf[4096];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n < 0) {
            return std::nullopt;
        }
        return std::string(buf, static_cast<size_t>(n));
    }

    // Reads until a message starting with `prefix` arrives (bounded); the ones skipped are
    // appended to `skipped`.
    std::optional<std::string> wait_for(const std::string& prefix,
                                        std::vector<std::string>* skipped = nullptr,
                                        std::chrono::milliseconds timeout = 15s) {
        const auto deadline = SteadyClock::now() + timeout;
        while (SteadyClock::now() < deadline) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - SteadyClock::now());
            auto m = next(std::max(left, std::chrono::milliseconds(1)));
            if (!m) {
                return std::nullopt;
            }
            if (m->starts_with(prefix)) {
                return m;
            }
            if (skipped != nullptr) {
                skipped->push_back(*m);
            }
        }
        return std::nullopt;
    }

  private:
    fs::path path_;
    int fd_ = -1;
};

RunResult cli(const std::string& socket, const Args& args,
              const std::optional<std::string>& stdin_data = std::nullopt) {
    Args argv = {AGENTGW_CLI_PATH, "--socket", socket, "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, {}, stdin_data);
}

json ok(const std::string& socket, const Args& args,
        const std::optional<std::string>& stdin_data = std::nullopt) {
    const RunResult r = cli(socket, args, stdin_data);
    INFO("agentgw " << args.at(0) << " -> exit " << r.code << "\nstdout: " << r.out
                    << "\nstderr: " << r.err);
    REQUIRE(r.code == 0);
    json doc;
    REQUIRE_NOTHROW(doc = json::parse(r.out));
    return doc;
}

json service(const std::string& id, const std::string& base_url) {
    return {{"id", id},
            {"name", id},
            {"description", "test service " + id},
            {"base_url", base_url},
            {"auth", {{"type", "bearer"}}}};
}

void write_services(const fs::path& file, const json& services) {
    write_file(file, json{{"services", services}}.dump(2));
}

// Waits (bounded) until the daemon's stderr has `needle` `times` times.
bool wait_for_log_count(Child& child, const std::string& needle, size_t times) {
    const auto deadline = SteadyClock::now() + 10s;
    while (SteadyClock::now() < deadline) {
        child.wait_for_stderr("\x01 never printed", 50ms);
        const std::string& log = child.stderr_text();
        size_t count = 0;
        for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
            ++count;
        }
        if (count >= times) {
            return true;
        }
    }
    return false;
}

// A daemon with one user, and an agent allowed the services it is given, for proxied calls.
struct Proxying {
    TempDir dir;
    TestUpstream upstream{make_dir(dir / "upstream")};
    fs::path services_file = dir / "services.json";
    RunningDaemon daemon;
    std::string socket;
    std::string session;

    explicit Proxying(const Args& extra = {}) {
        write_services(services_file, json::array({service("alpha", upstream.base_url())}));
        Args args = {"--services", services_file.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        daemon = start_daemon(daemon_args(dir, args));
        socket = daemon.socket.string();
        ok(socket, {"user", "add", "ann", "--email", "ann@example.com"});
        session =
            ok(socket, {"agent", "create", "--user", "ann", "--name", "bot", "--service", "alpha"})
                .at("session_id");
        ok(socket, {"credential", "set", "alpha", "--type", "api_key"}, "alpha-secret\n");
    }

    HttpReply call(const std::string& service_id, const std::string& path) {
        return http_request("GET", daemon.base_url + "/api/" + service_id + path, {},
                            {"X-Session-ID: " + session});
    }

    // Waits (bounded) until the upstream has received a request for `path`.
    bool upstream_saw(const std::string& path) {
        const auto deadline = SteadyClock::now() + 10s;
        while (SteadyClock::now() < deadline) {
            for (const auto& r : upstream.requests()) {
                if (r.at("path") == path) {
                    return true;
                }
            }
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }
};

}  // namespace

TEST_CASE("under NOTIFY_SOCKET agentgwd reports ready, reloads, stopping and feeds the watchdog",
          "[systemd]") {
    TempDir dir;
    NotifySocket notify(dir / "notify");
    auto d = start_daemon(daemon_args(dir),
                          {{"NOTIFY_SOCKET", notify.path().string()}, {"WATCHDOG_USEC", "200000"}});

    const auto ready = notify.wait_for("READY=1");
    REQUIRE(ready);
    // READY=1 comes once the listeners answer.
    CHECK(http_request("GET", d.base_url + "/healthz").status == 200);
    CHECK(ready->find("STATUS=agent API on " + d.base_url.substr(7)) != std::string::npos);

    // WATCHDOG=1 every WATCHDOG_USEC/2 (100 ms): several within a second, from the event loop.
    size_t watchdogs = 0;
    const auto until = SteadyClock::now() + 1s;
    while (SteadyClock::now() < until) {
        if (auto m = notify.next(100ms); m && *m == "WATCHDOG=1") {
            ++watchdogs;
        }
    }
    CHECK(watchdogs >= 4);

    d.child->signal(SIGHUP);
    const auto reloading = notify.wait_for("RELOADING=1");
    REQUIRE(reloading);
    CHECK(std::regex_search(*reloading, std::regex("MONOTONIC_USEC=[0-9]+")));
    CHECK(notify.wait_for("READY=1"));

    d.child->signal(SIGTERM);
    CHECK(notify.wait_for("STOPPING=1"));
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("a reload through the control socket is logged and shown in the STATUS line",
          "[systemd][reload]") {
    TempDir dir;
    NotifySocket notify(dir / "notify");
    const fs::path services_file = dir / "services.json";
    write_services(services_file, json::array({service("alpha", "http://127.0.0.1:9")}));
    auto d = start_daemon(daemon_args(dir, {"--services", services_file.string()}),
                          {{"NOTIFY_SOCKET", notify.path().string()}});
    REQUIRE(notify.wait_for("READY=1"));
    const std::string socket = d.socket.string();

    write_file(services_file, R"({"services": [{"id": "alpha"}]})");
    CHECK(cli(socket, {"service", "reload"}).code != 0);
    const auto failed = notify.wait_for("READY=1");
    REQUIRE(failed);
    CHECK(failed->find("1 service(s); services reload failed: ") != std::string::npos);
    CHECK(failed->find(services_file.string()) != std::string::npos);
    CHECK(wait_for_log_count(*d.child, "keeping the old services", 1));

    write_services(services_file, json::array({service("alpha", "http://127.0.0.1:9"),
                                               service("beta", "http://127.0.0.1:9")}));
    CHECK(ok(socket, {"service", "reload"}).at("services") == 2);
    const auto mended = notify.wait_for("READY=1");
    REQUIRE(mended);
    CHECK(mended->find("2 service(s)") != std::string::npos);
    CHECK(mended->find("failed") == std::string::npos);
    CHECK(wait_for_log_count(*d.child, "loaded 2 service(s)", 1));

    d.child->signal(SIGTERM);
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("the watchdog is not fed for another process's WATCHDOG_PID", "[systemd]") {
    TempDir dir;
    NotifySocket notify(dir / "notify");
    auto d = start_daemon(daemon_args(dir), {{"NOTIFY_SOCKET", notify.path().string()},
                                             {"WATCHDOG_USEC", "100000"},
                                             {"WATCHDOG_PID", std::to_string(::getpid())}});
    std::vector<std::string> before_ready;
    REQUIRE(notify.wait_for("READY=1", &before_ready));
    CHECK(before_ready.empty());
    CHECK_FALSE(notify.next(500ms));  // five watchdog periods, nothing sent
    d.child->signal(SIGTERM);
    CHECK(notify.wait_for("STOPPING=1"));
    CHECK(d.child->wait(15s) == 0);
}

TEST_CASE("with LISTEN_FDS agentgwd serves on the sockets systemd passes", "[systemd]") {
    // Named as the shipped units name them, and unnamed: then placed by address family.
    for (const bool named : {true, false}) {
        INFO((named ? "named" : "unnamed") << " sockets");
        TempDir dir;
        const uint16_t port = closed_port();
        const fs::path passed_socket = dir / "passed" / "control.sock";
        fs::create_directories(passed_socket.parent_path());
        // Its own --listen and --socket point elsewhere: the passed sockets win.
        Args argv = {program_path("systemd-socket-activate"),
                     "--listen=127.0.0.1:" + std::to_string(port),
                     "--listen=" + passed_socket.string()};
        if (named) {
            argv.push_back("--fdname=proxy:control");
        }
        argv.push_back(AGENTGWD_PATH);
        for (const auto& a : daemon_args(dir)) {
            argv.push_back(a);
        }
        Child child(argv);
        REQUIRE(child.wait_for_stderr("Listening on", 10s));

        // The first connection starts the daemon (systemd-socket-activate execs it in place).
        const std::string base = "http://127.0.0.1:" + std::to_string(port);
        const HttpReply health = http_request("GET", base + "/healthz");
        INFO("stderr: " << child.stderr_text());
        CHECK(health.status == 200);
        REQUIRE(child.wait_for_stderr("ready:", 10s));
        CHECK(child.stderr_text().find("control socket " + passed_socket.string()) !=
              std::string::npos);
        CHECK_FALSE(fs::exists(dir / "run" / "agentgw.sock"));

        const json status = ok(passed_socket.string(), {"status"});
        CHECK(status.at("listeners").at("agent_api") == "127.0.0.1:" + std::to_string(port));
        CHECK(status.at("listeners").at("control_socket") == passed_socket.string());

        child.signal(SIGTERM);
        CHECK(child.wait(15s) == 0);
        // The socket belongs to whoever made it: the daemon leaves it in place.
        CHECK(fs::exists(passed_socket));
    }
}

TEST_CASE("with --socket-group of its own group agentgwd needs no chown", "[systemd]") {
    // agentgwd.service forbids chown (SystemCallFilter=~@privileged); there the socket and
    // its directory already belong to the daemon's group, so starting must not call it.
    TempDir dir;
    const group* own = ::getgrgid(::getgid());
    REQUIRE(own != nullptr);
    Args argv = {AGENTGW_NO_CHOWN, AGENTGWD_PATH};
    for (const auto& a : daemon_args(dir, {"--socket-group", own->gr_name})) {
        argv.push_back(a);
    }
    Child child(argv);
    INFO("stderr: " << child.stderr_text());
    REQUIRE(child.wait_for_stderr("ready:", 30s));
    const std::string socket = (dir / "run" / "agentgw.sock").string();
    CHECK(ok(socket, {"status"}).at("vault").at("state") == "open");
    child.signal(SIGTERM);
    CHECK(child.wait(15s) == 0);
}

TEST_CASE("a passed socket that is not a listening stream socket stops the start", "[systemd]") {
    TempDir dir;
    // A datagram socket: systemd-socket-activate --datagram starts the daemon on the first
    // datagram.
    const uint16_t port = closed_port();
    Args argv = {program_path("systemd-socket-activate"), "--datagram",
                 "--listen=127.0.0.1:" + std::to_string(port), AGENTGWD_PATH};
    for (const auto& a : daemon_args(dir)) {
        argv.push_back(a);
    }
    Child child(argv);
    REQUIRE(child.wait_for_stderr("Listening on", 10s));
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 1);
    ::close(fd);
    CHECK(child.wait(15s) == 1);
    CHECK(child.stderr_text().find("not a listening stream socket") != std::string::npos);
}

TEST_CASE("SIGHUP reloads the services file and keeps the old services on a bad one",
          "[systemd][reload]") {
    Proxying g;
    CHECK(g.call("alpha", "/echo/a").status == 200);
    CHECK(g.call("beta", "/echo/b").status == 404);

    // An added service is usable after SIGHUP.
    write_services(g.services_file, json::array({service("alpha", g.upstream.base_url()),
                                                 service("beta", g.upstream.base_url())}));
    g.daemon.child->signal(SIGHUP);
    REQUIRE(wait_for_log_count(*g.daemon.child, "received SIGHUP", 1));
    ok(g.socket, {"agent", "grant", "bot", "beta"});
    ok(g.socket, {"credential", "set", "beta", "--type", "api_key"}, "beta-secret\n");
    const HttpReply beta = g.call("beta", "/echo/b");
    CHECK(beta.status == 200);
    CHECK(g.upstream_saw("/echo/b"));
    json status = ok(g.socket, {"status"});
    CHECK(status.at("services").at("services") == 2);
    CHECK_FALSE(status.at("services").contains("last_error"));

    // A broken file: the old services stay, and the log and status say why. (The field the
    // error names holds a terminal escape, which `agentgw status` must not pass on.)
    write_file(g.services_file, R"({"services": [{"id": "alpha", "\u001b[2J": 1}]})");
    g.daemon.child->signal(SIGHUP);
    REQUIRE(wait_for_log_count(*g.daemon.child, "received SIGHUP", 2));
    CHECK(g.daemon.child->stderr_text().find("keeping the old services") != std::string::npos);
    CHECK(g.call("alpha", "/echo/a2").status == 200);
    CHECK(g.call("beta", "/echo/b2").status == 200);
    status = ok(g.socket, {"status"});
    CHECK(status.at("services").at("services") == 2);
    REQUIRE(status.at("services").contains("last_error"));
    CHECK(
        status.at("services").at("last_error").get<std::string>().find(g.services_file.string()) !=
        std::string::npos);
    const RunResult human = run({AGENTGW_CLI_PATH, "--socket", g.socket, "status"});
    CHECK(human.code == 0);
    CHECK(human.out.find("reload failed") != std::string::npos);
    CHECK(human.out.find('\x1b') == std::string::npos);
    CHECK(human.out.find("\\x1b[2J") != std::string::npos);

    // Mended: the error is gone and the file's services are in force.
    write_services(g.services_file, json::array({service("alpha", g.upstream.base_url())}));
    g.daemon.child->signal(SIGHUP);
    REQUIRE(wait_for_log_count(*g.daemon.child, "received SIGHUP", 3));
    status = ok(g.socket, {"status"});
    CHECK(status.at("services").at("services") == 1);
    CHECK_FALSE(status.at("services").contains("last_error"));
    CHECK(g.call("beta", "/echo/b3").status == 404);

    g.daemon.child->signal(SIGTERM);
    CHECK(g.daemon.child->wait(15s) == 0);
}

TEST_CASE("SIGTERM lets a slow upstream response finish, then agentgwd exits 0",
          "[systemd][shutdown]") {
    Proxying g;
    auto slow = std::async(std::launch::async, [&] { return g.call("alpha", "/stall?secs=2"); });
    REQUIRE(g.upstream_saw("/stall"));
    g.daemon.child->signal(SIGTERM);
    REQUIRE(g.daemon.child->wait_for_stderr("received SIGTERM"));
    // No new connections once stopping.
    CHECK(http_request("GET", g.daemon.base_url + "/healthz").status == 0);

    const HttpReply reply = slow.get();
    INFO("error: " << reply.error);
    CHECK(reply.status == 200);
    CHECK(g.daemon.child->wait(15s) == 0);
}

TEST_CASE("SIGTERM cuts off a stalled upstream after --shutdown-timeout", "[systemd][shutdown]") {
    // The service's own timeout is 60 s, the stall 30 s, the default drain 10 s; this drain 1 s.
    Proxying g({"--shutdown-timeout", "1"});
    auto stalled =
        std::async(std::launch::async, [&] { return g.call("alpha", "/stall?secs=30"); });
    REQUIRE(g.upstream_saw("/stall"));
    g.daemon.child->signal(SIGTERM);
    // Well within the default drain: the option was honoured.
    CHECK(g.daemon.child->wait(6s) == 0);
    CHECK(g.daemon.child->stderr_text().find("cutting off 1 upstream exchange") !=
          std::string::npos);
    const HttpReply reply = stalled.get();
    CHECK(reply.status != 200);

    // The audit queue was flushed before the exit: the cut-off call is on record.
    auto again = start_daemon(daemon_args(g.dir, {"--services", g.services_file.string()}));
    const json entries = ok(again.socket.string(), {"audit", "--action", "proxy"}).at("entries");
    CHECK(std::any_of(entries.begin(), entries.end(),
                      [](const json& e) { return e.at("details").value("path", "") == "/stall"; }));
    again.child->signal(SIGTERM);
    CHECK(again.child->wait(15s) == 0);
}
