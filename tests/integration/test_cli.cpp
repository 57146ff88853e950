// The real `agentgw` binary driven against a real agentgwd over its control socket: the commands
// of SPEC §5 and agentgw(1), their --json documents, human tables, exit codes and one-line errors,
// and that a credential's secret never shows anywhere.
#include <algorithm>
#include <regex>
#include <set>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/integration/daemon_harness.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::optional<std::string>>;

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

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t pos = text.find(needle); pos != std::string::npos;
         pos = text.find(needle, pos + needle.size())) {
        ++n;
    }
    return n;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// The line of `lines` that contains `needle`; fails the test when there is none.
std::string line_with(const std::vector<std::string>& lines, const std::string& needle) {
    const auto it = std::find_if(lines.begin(), lines.end(),
                                 [&](const std::string& l) { return contains(l, needle); });
    INFO("looking for a line with \"" << needle << "\"");
    REQUIRE(it != lines.end());
    return *it;
}

// A failed command: its status, and one line `agentgw: <message>` on stderr and nothing on stdout.
void check_error(const RunResult& r, int code) {
    INFO("exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == code);
    CHECK(r.err.rfind("agentgw: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(!r.err.empty());
    CHECK(r.err.back() == '\n');
    CHECK(r.out.empty());
}

struct Gateway {
    TempDir dir;
    RunningDaemon daemon;
    std::string socket;
    std::string transcript;  // every CLI stdout and stderr, for the secret checks

    Gateway() {
        write_file(dir / "services.json", k_test_services);
        daemon = start_daemon(daemon_args(dir, {"--services", (dir / "services.json").string()}));
        socket = daemon.socket.string();
    }

    // agentgw --socket S [--json] args..., with `stdin_data` as its standard input.
    RunResult cli(const Args& args, bool json_output = true,
                  const std::optional<std::string>& stdin_data = std::nullopt,
                  const Env& env = {}) {
        Args argv = {AGENTGW_CLI_PATH, "--socket", socket};
        if (json_output) {
            argv.push_back("--json");
        }
        argv.insert(argv.end(), args.begin(), args.end());
        RunResult r = run(argv, env, stdin_data);
        transcript += r.out + r.err;
        return r;
    }

    // A command that must succeed and print exactly one JSON document.
    json ok(const Args& args, const std::optional<std::string>& stdin_data = std::nullopt) {
        const RunResult r = cli(args, true, stdin_data);
        INFO("agentgw --json " << joined(args) << " -> exit " << r.code << "\nstdout: " << r.out
                               << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        CHECK(r.err.empty());
        CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
        json doc;
        REQUIRE_NOTHROW(doc = json::parse(r.out));  // throws on anything after the document
        return doc;
    }

    // A command that must succeed, printing for people.
    std::string human(const Args& args) {
        const RunResult r = cli(args, false);
        INFO("agentgw " << joined(args) << " -> exit " << r.code << "\nstdout: " << r.out
                        << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        CHECK(r.err.empty());
        return r.out;
    }

    // alice, and her agent worker granted openai.
    void add_alice_and_worker() {
        ok({"user", "add", "alice", "--email", "a@example.com"});
        ok({"agent", "create", "--user", "alice", "--name", "worker", "--service", "openai"});
    }

    // Stops the daemon with SIGTERM; it must exit 0.
    void stop() {
        daemon.child->signal(SIGTERM);
        REQUIRE(daemon.child->wait(15s) == 0);
    }
};

const json* grant_for(const json& agent, const std::string& service) {
    for (const auto& g : agent.at("grants")) {
        if (g.value("service_id", "") == service) {
            return &g;
        }
    }
    return nullptr;
}

}  // namespace

TEST_CASE("agentgw --json drives users, agents, services and status", "[cli]") {
    Gateway g;

    // Users.
    const json added = g.ok({"user", "add", "alice", "--email", "a@example.com"});
    CHECK(added["username"] == "alice");
    CHECK(added["email"] == "a@example.com");
    REQUIRE(added["user_id"].is_string());
    const std::string user_id = added["user_id"];
    CHECK_FALSE(user_id.empty());

    const json users = g.ok({"user", "list"});
    REQUIRE(users["users"].size() == 1);
    CHECK(users["users"][0]["username"] == "alice");
    CHECK(users["users"][0]["user_id"] == user_id);
    CHECK(users["users"][0]["email"] == "a@example.com");
    CHECK(users["users"][0]["agents"] == 0);
    CHECK(users["users"][0]["created_at"].is_string());

    const json alice = g.ok({"user", "show", "alice"});
    CHECK(alice["user_id"] == user_id);
    CHECK(alice["email"] == "a@example.com");
    CHECK(g.ok({"user", "show", user_id})["username"] == "alice");  // by id too

    // Agents.
    const json created = g.ok({"agent", "create", "--user", "alice", "--name", "worker",
                               "--service", "openai", "--lifespan-days", "30"});
    REQUIRE(created["api_key"].is_string());
    const std::string key = created["api_key"];
    CHECK(key.rfind("agw_", 0) == 0);
    CHECK(key.size() == 47);
    REQUIRE(created["agent_id"].is_string());
    const std::string agent_id = created["agent_id"];
    CHECK_FALSE(agent_id.empty());
    CHECK(created["agent_name"] == "worker");
    CHECK(created["allowed_services"] == json{"openai"});
    CHECK(created["lifespan_days"] == 30);
    CHECK(created["session_id"].is_string());
    CHECK(g.ok({"user", "show", "alice"})["agents"] == 1);

    const json listed = g.ok({"agent", "list", "--user", "alice"});
    REQUIRE(listed["agents"].size() == 1);
    const json& listed_worker = listed["agents"][0];
    CHECK(listed_worker["name"] == "worker");
    CHECK(listed_worker["agent_id"] == agent_id);
    CHECK(listed_worker["username"] == "alice");
    CHECK(listed_worker["enabled"] == true);
    CHECK_FALSE(contains(listed.dump(), key));  // the key is shown once only

    const json shown = g.ok({"agent", "show", "worker"});
    CHECK(shown["agent_id"] == agent_id);
    CHECK(shown["name"] == "worker");
    CHECK(shown["user_id"] == user_id);
    CHECK(shown["username"] == "alice");
    CHECK(shown["enabled"] == true);
    CHECK(shown["allowed_services"] == json{"openai"});
    CHECK(shown["rate_limit"] == json{{"requests", 100}, {"window_secs", 60}});
    CHECK(shown["lifespan_days"] == 30);
    CHECK(shown["is_expired"] == false);
    CHECK(grant_for(shown, "openai") != nullptr);
    REQUIRE(shown["generation"].is_number_integer());
    const int64_t generation = shown["generation"];
    CHECK_FALSE(contains(shown.dump(), key));
    CHECK(g.ok({"agent", "show", agent_id})["name"] == "worker");  // by id too

    // Grant and revoke.
    const json granted =
        g.ok({"agent", "grant", "worker", "github", "--method", "GET", "--path", "/repos/*"});
    CHECK(granted["agent_id"] == agent_id);
    CHECK(granted["service_id"] == "github");
    CHECK(granted["allowed_services"] == json{"openai", "github"});
    {
        const json after = g.ok({"agent", "show", "worker"});
        CHECK(after["allowed_services"] == json{"openai", "github"});
        const json* grant = grant_for(after, "github");
        INFO(after.dump());
        REQUIRE(grant != nullptr);
        CHECK((*grant)["methods"] == json{"GET"});
        CHECK((*grant)["paths"] == json{"/repos/*"});
    }

    const json revoked = g.ok({"agent", "revoke", "worker", "openai"});
    CHECK(revoked["service_id"] == "openai");
    CHECK(revoked["allowed_services"] == json{"github"});
    {
        const json after = g.ok({"agent", "show", "worker"});
        CHECK(after["allowed_services"] == json{"github"});
        CHECK(grant_for(after, "openai") == nullptr);
        CHECK(after["grants"].size() == 1);
    }

    // Rate limit, disable and enable answer the agent.
    const json limited = g.ok({"agent", "limit", "worker", "--requests", "5", "--window", "10"});
    CHECK(limited["rate_limit"] == json{{"requests", 5}, {"window_secs", 10}});
    CHECK(g.ok({"agent", "show", "worker"})["rate_limit"] ==
          json{{"requests", 5}, {"window_secs", 10}});

    CHECK(g.ok({"agent", "disable", "worker"})["enabled"] == false);
    CHECK(g.ok({"agent", "show", "worker"})["enabled"] == false);
    CHECK(g.ok({"agent", "list"})["agents"][0]["enabled"] == false);
    CHECK(g.ok({"agent", "enable", "worker"})["enabled"] == true);
    CHECK(g.ok({"agent", "show", "worker"})["enabled"] == true);

    // Rotation: a new key, the same id, the next generation.
    const json rotated = g.ok({"agent", "rotate", "worker", "--grace", "60"});
    REQUIRE(rotated["api_key"].is_string());
    const std::string new_key = rotated["api_key"];
    CHECK(new_key != key);
    CHECK(new_key.rfind("agw_", 0) == 0);
    CHECK(new_key.size() == 47);
    CHECK(rotated["agent_id"] == agent_id);
    CHECK(rotated["new_session_id"].is_string());
    CHECK(rotated["expires_at"].is_string());
    const json after_rotation = g.ok({"agent", "show", "worker"});
    CHECK(after_rotation["agent_id"] == agent_id);
    CHECK(after_rotation["generation"] == generation + 1);
    CHECK_FALSE(contains(after_rotation.dump(), new_key));

    // Services.
    const json services = g.ok({"service", "list"});
    REQUIRE(services["services"].size() == 2);
    std::set<std::string> ids;
    for (const auto& s : services["services"]) {
        ids.insert(s.value("id", ""));
    }
    CHECK(ids == std::set<std::string>{"openai", "github"});
    const json openai = g.ok({"service", "show", "openai"});
    CHECK(openai["id"] == "openai");
    CHECK(openai["name"] == "OpenAI");
    CHECK(openai["base_url"] == "https://api.openai.com");
    CHECK(openai["auth"]["type"] == "bearer");
    CHECK(openai["rate_limit"] == json{{"requests", 600}, {"window_secs", 60}});

    // Status.
    const json status = g.ok({"status"});
    CHECK(status["version"].is_string());
    CHECK(status["pid"] == g.daemon.child->pid());
    CHECK(status["listeners"]["control_socket"] == g.socket);
    CHECK(
        contains(status["listeners"]["agent_api"].get<std::string>(), g.daemon.base_url.substr(7)));
    CHECK(status["counts"]["users"] == 1);
    CHECK(status["counts"]["agents"] == 1);
    CHECK(status["counts"]["services"] == 2);
    CHECK(status["counts"]["credentials"] == 0);
    CHECK(status["vault"]["state"] == "open");
    CHECK(status["audit"]["entries"].is_number_integer());
    const RunResult table = g.cli({"status"}, false);
    CHECK(table.code == 0);
    CHECK(contains(table.out, "1 user(s), 1 agent(s), 0 credential(s)"));

    // Removal: an agent, then its (now agent-less) owner. Nothing to report: {"ok":true}.
    CHECK(g.ok({"agent", "rm", "worker"}) == json{{"ok", true}});
    CHECK(g.ok({"user", "rm", "alice"}) == json{{"ok", true}});
    CHECK(g.ok({"user", "list"})["users"].empty());
}

TEST_CASE("agentgw prints aligned tables and shows a new API key once", "[cli]") {
    Gateway g;

    const std::string added = g.human({"user", "add", "alice", "--email", "a@example.com"});
    CHECK(contains(added, "alice"));
    CHECK(contains(added, "a@example.com"));
    CHECK_FALSE(contains(added, "{"));  // not JSON
    g.human({"user", "add", "bob", "--email", "bob@example.com"});
    const json users = g.ok({"user", "list"});
    REQUIRE(users["users"].size() == 2);

    SECTION("user list") {
        const auto lines = lines_of(g.human({"user", "list"}));
        REQUIRE(lines.size() == 3);  // header and two users
        const std::string& header = lines[0];
        CHECK(header.rfind("USERNAME", 0) == 0);
        const size_t id_col = header.find("ID");
        const size_t email_col = header.find("EMAIL");
        REQUIRE(id_col != std::string::npos);
        REQUIRE(email_col != std::string::npos);
        for (const auto& u : users["users"]) {
            const std::string name = u["username"];
            const std::string row = line_with(lines, u["user_id"].get<std::string>());
            INFO("header: " << header << "\nrow:    " << row);
            CHECK(row.rfind(name, 0) == 0);
            CHECK(row.find(u["user_id"].get<std::string>()) == id_col);
            CHECK(row.find(u["email"].get<std::string>()) == email_col);
        }
    }

    SECTION("agent create and agent list") {
        const std::string out = g.human({"agent", "create", "--user", "alice", "--name", "worker",
                                         "--service", "openai", "--description", "Does the work"});
        const auto lines = lines_of(out);
        const std::string key_line = line_with(lines, "API key: ");
        INFO(out);
        CHECK(key_line.rfind("API key: ", 0) == 0);  // on its own line, labelled
        const std::string key = key_line.substr(9);
        CHECK(key.rfind("agw_", 0) == 0);
        CHECK(key.size() == 47);
        CHECK(occurrences(out, key) == 1);  // printed once
        CHECK(contains(out, "will not be shown again"));
        CHECK(contains(out, "worker"));

        g.human({"agent", "create", "--user", "bob", "--name", "builder-bot"});
        const json agents = g.ok({"agent", "list"});
        REQUIRE(agents["agents"].size() == 2);

        const std::string listing = g.human({"agent", "list"});
        CHECK_FALSE(contains(listing, key));
        const auto rows = lines_of(listing);
        REQUIRE(rows.size() == 3);
        const std::string& header = rows[0];
        CHECK(header.rfind("NAME", 0) == 0);
        const size_t id_col = header.find("ID");
        const size_t user_col = header.find("USER");
        const size_t enabled_col = header.find("ENABLED");
        REQUIRE(id_col != std::string::npos);
        REQUIRE(user_col != std::string::npos);
        REQUIRE(enabled_col != std::string::npos);
        for (const auto& a : agents["agents"]) {
            const std::string row = line_with(rows, a["agent_id"].get<std::string>());
            INFO("header: " << header << "\nrow:    " << row);
            CHECK(row.rfind(a["name"].get<std::string>(), 0) == 0);
            CHECK(row.find(a["agent_id"].get<std::string>()) == id_col);
            CHECK(row.find(a["username"].get<std::string>(), id_col) == user_col);
            CHECK(row.find("yes", user_col) == enabled_col);
        }

        // --user narrows the table to alice's agent.
        const auto mine = lines_of(g.human({"agent", "list", "--user", "alice"}));
        REQUIRE(mine.size() == 2);
        CHECK(mine[1].rfind("worker", 0) == 0);

        // agent show lists the description and the grant.
        const std::string shown = g.human({"agent", "show", "worker"});
        CHECK(contains(shown, "Does the work"));
        CHECK(contains(shown, "openai"));
        CHECK_FALSE(contains(shown, key));
    }
}

TEST_CASE("agentgw credential reads secrets from stdin and never shows them", "[cli][secret]") {
    Gateway g;
    g.add_alice_and_worker();
    const std::string pid = std::to_string(::getpid());
    const std::string api_secret = "sk-SECRET-" + pid;
    const std::string basic_user = "robot-LOGIN-" + pid;
    const std::string basic_password = "pass-SECRET-" + pid;

    const json set = g.ok({"credential", "set", "openai"}, api_secret + "\n");
    CHECK(set["service"] == "openai");
    CHECK(set["scope"] == "service");
    CHECK(set["type"] == "api_key");

    const json basic = g.ok({"credential", "set", "github", "--agent", "worker", "--type", "basic"},
                            basic_user + ":" + basic_password);
    CHECK(basic["service"] == "github");
    CHECK(basic["scope"] == "agent");
    CHECK(basic["agent"] == "worker");
    CHECK(basic["type"] == "basic");

    // Human output of set, and input that does not fit the type (a usage error, not echoed).
    const RunResult human =
        g.cli({"credential", "set", "github", "--user", "alice"}, false, "gh-SECRET-" + pid + "\n");
    CHECK(human.code == 0);
    CHECK(contains(human.out, "github"));
    const RunResult no_colon =
        g.cli({"credential", "set", "github", "--type", "basic"}, true, "nocolon-SECRET-" + pid);
    check_error(no_colon, 2);
    check_error(g.cli({"credential", "set", "github"}, true, std::string()), 2);  // empty input
    // A line break inside would split the header it is sent in (the daemon refuses it); a
    // CRLF at the end is a line end, as in a file saved on Windows.
    check_error(g.cli({"credential", "set", "github"}, true, "gh-SECRET\r\nX-Injected: 1\n"), 2);
    CHECK(g.cli({"credential", "set", "openai"}, true, api_secret + "\r\n").code == 0);
    check_error(g.cli({"credential", "set", "github", "--user", "alice", "--agent", "worker"}, true,
                      "x-SECRET-" + pid),
                2);

    const RunResult listed = g.cli({"credential", "list"});
    REQUIRE(listed.code == 0);
    const json creds = json::parse(listed.out)["credentials"];
    REQUIRE(creds.size() == 3);
    bool saw_service = false, saw_agent = false;
    for (const auto& c : creds) {
        INFO(c.dump());
        for (const char* k :
             {"service", "scope", "user", "agent", "type", "expires_at", "status", "updated_at"}) {
            CHECK(c.contains(k));
        }
        CHECK(c["status"] == "active");
        CHECK(c["expires_at"].is_null());
        CHECK(c["updated_at"].is_string());
        if (c["scope"] == "service") {
            saw_service = true;
            CHECK(c["service"] == "openai");
            CHECK(c["type"] == "api_key");
            CHECK(c["user"].is_null());
            CHECK(c["agent"].is_null());
        } else if (c["scope"] == "agent") {
            saw_agent = true;
            CHECK(c["service"] == "github");
            CHECK(c["type"] == "basic");
            CHECK(c["agent"] == "worker");
        }
    }
    CHECK(saw_service);
    CHECK(saw_agent);
    const std::string table = g.human({"credential", "list"});
    CHECK(contains(table, "openai"));
    CHECK(contains(table, "worker"));

    CHECK(g.ok({"credential", "rm", "openai"}) == json{{"ok", true}});
    check_error(g.cli({"credential", "rm", "openai"}), 3);
    CHECK(g.ok({"credential", "list"})["credentials"].size() == 2);
    CHECK(g.ok({"credential", "rm", "github", "--agent", "worker"}) == json{{"ok", true}});
    CHECK(g.ok({"credential", "list"})["credentials"].size() == 1);

    const RunResult audit = g.cli({"audit", "--limit", "1000"});
    REQUIRE(audit.code == 0);
    CHECK(contains(audit.out, "credential.set"));

    g.stop();
    const std::string daemon_log = g.daemon.child->stderr_text();
    // The checks below are only worth something when both texts were captured.
    CHECK(contains(daemon_log, "ready:"));
    CHECK(contains(g.transcript, "credential.set"));
    for (const std::string& secret :
         {api_secret, basic_user, basic_password, "gh-SECRET-" + pid, "nocolon-SECRET-" + pid}) {
        INFO("secret " << secret);
        CHECK_FALSE(contains(g.transcript, secret));  // every CLI output, audit --json included
        CHECK_FALSE(contains(daemon_log, secret));
    }
    for (const auto& entry : fs::recursive_directory_iterator(g.dir / "state")) {
        if (entry.is_regular_file()) {
            INFO(entry.path());
            CHECK_FALSE(contains(read_file(entry.path()), "SECRET-" + pid));
        }
    }
}

TEST_CASE("agentgw audit lists, filters and verifies the actions taken", "[cli][audit]") {
    Gateway g;
    g.ok({"user", "add", "alice", "--email", "a@example.com"});
    const std::string agent_id =
        g.ok({"agent", "create", "--user", "alice", "--name", "worker"})["agent_id"];
    g.ok({"agent", "grant", "worker", "github"});
    g.ok({"agent", "revoke", "worker", "github"});
    g.ok({"agent", "limit", "worker", "--requests", "5", "--window", "10"});
    g.ok({"agent", "disable", "worker"});
    g.ok({"agent", "enable", "worker"});
    g.ok({"agent", "rotate", "worker", "--grace", "60"});
    g.ok({"credential", "set", "openai"}, std::string("sk-audit-secret\n"));
    g.ok({"credential", "rm", "openai"});
    CHECK(g.cli({"user", "add", "alice", "--email", "a@example.com"}).code == 1);

    const json page = g.ok({"audit", "--limit", "1000"});
    REQUIRE(page["entries"].is_array());
    CHECK(page.contains("next"));
    const std::string actor = "uid:" + std::to_string(::geteuid());
    std::vector<std::string> actions;
    int64_t last_seq = 0;
    for (const auto& e : page["entries"]) {
        INFO(e.dump());
        CHECK(e["actor"] == actor);
        CHECK(e["seq"].get<int64_t>() > last_seq);  // ascending
        last_seq = e["seq"].get<int64_t>();
        actions.push_back(e["action"]);
    }
    CHECK(actions == std::vector<std::string>{"user.create", "agent.create", "agent.grant",
                                              "agent.revoke", "agent.rate_limit", "agent.disable",
                                              "agent.enable", "agent.rotate", "credential.set",
                                              "credential.delete", "user.create"});
    CHECK(page["entries"].back()["outcome"] == "conflict");
    CHECK_FALSE(contains(page.dump(), "sk-audit-secret"));

    const json rotations = g.ok({"audit", "--action", "agent.rotate"});
    REQUIRE(rotations["entries"].size() == 1);
    CHECK(rotations["entries"][0]["action"] == "agent.rotate");
    CHECK(rotations["entries"][0]["actor"] == actor);
    CHECK(contains(rotations["entries"][0].dump(), agent_id));
    CHECK(g.ok({"audit", "--limit", "2"})["entries"].size() == 2);

    // The human table has the actions too.
    const std::string table = g.human({"audit"});
    CHECK(lines_of(table).at(0).rfind("SEQ", 0) == 0);
    CHECK(contains(table, "agent.rotate"));
    CHECK(contains(table, actor));

    const std::string verified = g.human({"audit", "verify"});
    CHECK(verified.rfind("audit log OK: ", 0) == 0);
    const std::string n = std::to_string(actions.size());
    CHECK(verified == "audit log OK: " + n + " entries (seq 1.." + n + ")\n");
    const json verified_json = g.ok({"audit", "verify"});
    CHECK(verified_json["ok"] == true);
    CHECK(verified_json["entries"].get<size_t>() >= actions.size());

    // --agent also finds the entries that name the agent only in their details: a credential
    // of its own, data published and retrieved for it by the operator.
    g.ok({"credential", "set", "openai", "--agent", "worker"}, std::string("sk-agent-secret\n"));
    const json receipt = g.ok({"publish", "--as", "worker", "--name", "note"}, std::string("hi"));
    g.ok({"retrieve", "--as", "worker"}, receipt["token"].get<std::string>() + "\n");
    const json worker_page = g.ok({"audit", "--agent", "worker", "--limit", "1000"});
    std::vector<std::string> about_worker;
    for (const auto& e : worker_page["entries"]) {
        about_worker.push_back(e["action"]);
    }
    CHECK(about_worker == std::vector<std::string>{"agent.create", "agent.grant", "agent.revoke",
                                                   "agent.rate_limit", "agent.disable",
                                                   "agent.enable", "agent.rotate", "credential.set",
                                                   "hub.publish", "hub.retrieve"});
}

TEST_CASE("agentgw exit codes and one-line errors", "[cli]") {
    Gateway g;
    g.add_alice_and_worker();

    SECTION("not found is 3") {
        for (const Args& args :
             {Args{"user", "show", "ghost"}, Args{"agent", "show", "ghost"},
              Args{"agent", "rotate", "ghost"}, Args{"user", "rm", "ghost"},
              Args{"service", "show", "nope"}, Args{"agent", "revoke", "worker", "github"}}) {
            INFO(joined(args));
            const RunResult r = g.cli(args);
            check_error(r, 3);
            if (args[2] == "ghost") {
                CHECK(contains(r.err, "ghost"));
            }
            check_error(g.cli(args, false), 3);  // the same without --json
        }
    }

    SECTION("usage errors are 2 and change nothing") {
        const json before = g.ok({"agent", "show", "worker"});
        for (const Args& args :
             {Args{"agent", "create", "--user", "alice"}, Args{"agent", "frobnicate"},
              Args{"frobnicate"}, Args{"agent"}, Args{"user", "add", "carol"},
              Args{"agent", "limit", "worker", "--requests", "0", "--window", "10"},
              Args{"agent", "limit", "worker", "--requests", "5", "--window", "86401"},
              Args{"agent", "create", "--user", "alice", "--name", "w2", "--lifespan-days", "0"},
              Args{"agent", "rotate", "worker", "--grace", "-1"},
              Args{"agent", "grant", "worker", "github", "--method", "G3T"},
              Args{"audit", "--since", "yesterday"}, Args{"audit", "--limit", "0"},
              // An empty filter (a variable that was not set) never means "everything".
              Args{"agent", "list", "--user", ""}, Args{"audit", "--agent", ""},
              Args{"audit", "--service", ""}, Args{"audit", "--action", ""},
              // Numbers are decimal: CLI11 alone would read 010 as 8 and 0x10 as 16.
              Args{"agent", "limit", "worker", "--requests", "010", "--window", "10"},
              Args{"agent", "limit", "worker", "--requests", "5", "--window", "0x10"}}) {
            INFO(joined(args));
            check_error(g.cli(args), 2);
        }
        const json worker = g.ok({"agent", "show", "worker"});
        CHECK(worker["rate_limit"] == json{{"requests", 100}, {"window_secs", 60}});
        CHECK(worker["generation"] == before["generation"]);
        CHECK(worker["grants"] == before["grants"]);
        CHECK(g.ok({"agent", "list"})["agents"].size() == 1);
        CHECK(g.ok({"user", "list"})["users"].size() == 1);
    }

    SECTION("a name already taken is 1, naming it") {
        const RunResult r = g.cli({"user", "add", "alice", "--email", "other@example.com"});
        check_error(r, 1);
        CHECK(contains(r.err, "alice"));
        CHECK(g.ok({"user", "show", "alice"})["email"] == "a@example.com");
        check_error(g.cli({"agent", "create", "--user", "alice", "--name", "worker"}), 1);
        // A user who still owns agents cannot be removed.
        check_error(g.cli({"user", "rm", "alice"}), 1);
    }

    SECTION("input the daemon rejects (HTTP 400) is 2") {
        const RunResult r = g.cli({"user", "add", "bad name with ctrl \x01", "--email", "x@y"});
        check_error(r, 2);
        check_error(g.cli({"user", "add", "carol", "--email", "not-an-email"}), 2);
        check_error(g.cli({"agent", "grant", "worker", "github", "--path", "no-slash"}), 2);
        CHECK(g.ok({"user", "list"})["users"].size() == 1);
    }

    SECTION("an unreachable daemon is 5") {
        const RunResult missing =
            run({AGENTGW_CLI_PATH, "--socket", (g.dir / "no-such.sock").string(), "status"});
        check_error(missing, 5);
        CHECK(contains(missing.err, "no-such.sock"));
        // A path no Unix socket address can hold is a usage error, not an absent daemon.
        const RunResult too_long =
            run({AGENTGW_CLI_PATH, "--socket", "/tmp/" + std::string(110, 's'), "status"});
        check_error(too_long, 2);
        CHECK(contains(too_long.err, "longer than 107 bytes"));

        g.stop();
        for (const Args& args :
             {Args{"status"}, Args{"user", "list"}, Args{"agent", "show", "worker"}}) {
            INFO(joined(args));
            check_error(g.cli(args), 5);
            check_error(g.cli(args, false), 5);
        }
    }
}

TEST_CASE("agentgw fails when what it prints cannot be written", "[cli]") {
    Gateway g;
    g.ok({"user", "add", "alice", "--email", "a@example.com"});
    // Standard output on a full device: the write fails when the output is flushed.
    auto to_full = [&](const Args& args) {
        Args argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" >/dev/full", AGENTGW_CLI_PATH};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv);
    };
    for (const Args& args : {Args{"--socket", g.socket, "--json", "user", "list"},
                             Args{"--socket", g.socket, "user", "list"}, Args{"--version"},
                             Args{"--socket", g.socket, "--json", "audit", "--follow"}}) {
        const RunResult r = to_full(args);
        INFO("stderr: " << r.err);
        CHECK(r.code == 1);
        CHECK(r.err.starts_with("agentgw: cannot write the output"));
        CHECK(lines_of(r.err).size() == 1);
    }
    // A failure keeps its own exit status.
    const RunResult missing = to_full({"--socket", g.socket, "user", "show", "nobody"});
    CHECK(missing.code == 3);

    // A reader that has gone away: the write fails (no death by SIGPIPE), and says so.
    const RunResult closed =
        run({"/bin/sh", "-c", "{ sleep 0.5; \"$0\" \"$@\"; echo \"exit=$?\" >&2; } | true",
             AGENTGW_CLI_PATH, "--socket", g.socket, "user", "list"});
    INFO("stderr: " << closed.err);
    CHECK(contains(closed.err, "agentgw: cannot write the output: Broken pipe\nexit=1\n"));
}

TEST_CASE("AGENTGW_SOCKET names the socket when --socket is not given", "[cli]") {
    Gateway g;
    const auto plain = [](const Args& args, const Env& env) {
        Args argv = {AGENTGW_CLI_PATH, "--json"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, env);
    };
    const Env good = {{"AGENTGW_SOCKET", g.socket}};
    const Env bad = {{"AGENTGW_SOCKET", (g.dir / "elsewhere.sock").string()}};

    const RunResult added = plain({"user", "add", "alice", "--email", "a@example.com"}, good);
    INFO(added.err);
    REQUIRE(added.code == 0);
    CHECK(json::parse(added.out)["username"] == "alice");
    const RunResult listed = plain({"user", "list"}, good);
    REQUIRE(listed.code == 0);
    CHECK(json::parse(listed.out)["users"].size() == 1);

    // The variable is what is used: a wrong one is unreachable...
    const RunResult wrong = plain({"user", "list"}, bad);
    check_error(wrong, 5);
    CHECK(contains(wrong.err, "elsewhere.sock"));
    // ...and --socket overrides it.
    const RunResult overridden =
        run({AGENTGW_CLI_PATH, "--socket", g.socket, "--json", "user", "show", "alice"}, bad);
    INFO(overridden.err);
    REQUIRE(overridden.code == 0);
    CHECK(json::parse(overridden.out)["email"] == "a@example.com");
}

TEST_CASE("agentgw audit --follow prints entries as they come and ends on SIGINT", "[cli][audit]") {
    Gateway g;
    Child follow({AGENTGW_CLI_PATH, "--socket", g.socket, "--json", "audit", "--follow"});
    // One JSON document per line, as each entry is written.
    const auto entry = [&] {
        const auto line = follow.read_stdout_line(10s);
        INFO("follow stderr: " << follow.stderr_text());
        REQUIRE(line.has_value());
        json doc;
        REQUIRE_NOTHROW(doc = json::parse(*line));
        return doc;
    };
    g.ok({"user", "add", "alice", "--email", "a@example.com"});
    CHECK(entry().at("action") == "user.create");
    g.ok({"agent", "create", "--user", "alice", "--name", "worker"});
    CHECK(entry().at("action") == "agent.create");
    // Like every agentgw, it may hold secrets (a key the daemon hands back, a typed secret):
    // no core dump can take them.
    const std::string limits = read_file("/proc/" + std::to_string(follow.pid()) + "/limits");
    CHECK(std::regex_search(limits, std::regex(R"(Max core file size +0 +0 )")));

    SECTION("between requests") {}
    SECTION("while a request waits for a daemon that does not answer") {
        g.daemon.child->signal(SIGSTOP);
        std::this_thread::sleep_for(2s);  // follow asks every second: one request now waits
    }
    follow.signal(SIGINT);
    const auto code = follow.wait(5s);
    g.daemon.child->signal(SIGCONT);
    INFO("follow stderr: " << follow.stderr_text());
    REQUIRE(code.has_value());
    CHECK(*code == 0);
}

TEST_CASE("agentgw gives up on a daemon that does not answer", "[cli]") {
    Gateway g;
    g.daemon.child->signal(SIGSTOP);  // it still accepts connections, through the backlog
    const auto start = std::chrono::steady_clock::now();
    const RunResult r =
        run({AGENTGW_CLI_PATH, "--socket", g.socket, "status"}, {}, std::nullopt, 60s);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    g.daemon.child->signal(SIGCONT);
    check_error(r, 5);
    CHECK(contains(r.err, "timed out"));
    CHECK(took >= 29);
    CHECK(took < 45);  // a correctness bound (the timeout is 30 s), not a benchmark
}
