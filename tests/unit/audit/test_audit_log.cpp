#include <catch2/catch.hpp>

#include "daemon/audit/audit_log.hpp"
#include "tests/support/fake_clock.hpp"
#include "tests/support/run_await.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;

namespace {

struct Fixture {
    test::TempDir dir;
    test::FakeClock clock;
    std::unique_ptr<Vault> vault;
    std::unique_ptr<AuditLog> audit;

    Fixture() {
        const auto key = test::key_at(dir / "k");
        auto opened = test::open_vault(dir / "state", key);
        REQUIRE(opened);
        vault = std::move(*opened);
        audit = std::make_unique<AuditLog>(*vault, clock);
        REQUIRE(audit->init(true));
    }

    void record(const std::string& action, const std::string& target = "agent:a1") {
        audit->record({"uid:0", action, target, "ok", {{"n", 1}}});
    }

    // Writes are queued in order, so once a later write is durable every earlier one is.
    void flush() {
        REQUIRE(vault->write([](WriteTxn&) { return Status{}; }));
    }
};

}  // namespace

TEST_CASE("audit entries chain, list with filters and a cursor, and verify", "[audit]") {
    Fixture f;
    for (int i = 0; i < 5; ++i) {
        f.record(i % 2 == 0 ? "agent.create" : "agent.rotate");
    }
    f.record("credential.set", "service:openai");
    f.flush();

    auto all = f.audit->list({});
    REQUIRE(all);
    REQUIRE(all->entries.size() == 6);
    CHECK(all->entries[0]["seq"] == 1);
    CHECK(all->next == 6);
    CHECK(all->entries[1]["action"] == "agent.rotate");
    CHECK(all->entries[5]["hash"].get<std::string>().size() == 64);

    AuditQuery page;
    page.limit = 2;
    auto first = f.audit->list(page);
    REQUIRE(first);
    CHECK(first->entries.size() == 2);
    page.after = first->next;
    auto second = f.audit->list(page);
    REQUIRE(second);
    CHECK(second->entries[0]["seq"] == 3);

    AuditQuery by_service;
    by_service.service = "openai";
    CHECK(f.audit->list(by_service)->entries.size() == 1);
    by_service.service = "open";  // exact, not a substring
    CHECK(f.audit->list(by_service)->entries.empty());
    AuditQuery by_agent;
    by_agent.agent = "a1";
    CHECK(f.audit->list(by_agent)->entries.size() == 5);
    AuditQuery by_action;
    by_action.action = "agent.rotate";
    CHECK(f.audit->list(by_action)->entries.size() == 2);

    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK(verified->ok);
    CHECK(verified->entries == 6);
    CHECK(verified->last_seq == 6);
}

TEST_CASE("entries with any text in their fields verify and list as recorded", "[audit]") {
    Fixture f;
    const std::vector<std::string> texts = {"plain",
                                            "",
                                            "quote \" and backslash \\",
                                            "tab\tnewline\n",
                                            std::string("nul\0byte", 8),
                                            "\x01\x1f\x7f",
                                            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91",
                                            "/api/x?y=1&z=%20"};
    for (const auto& t : texts) {
        f.audit->record({"agent:" + t, "proxy", t, t, {{"path", t}, {"n", -1}, {"ok", true}}});
    }
    f.audit->record({"uid:0", "bad.utf8", "agent:\xff\xfe", "ok", {{"path", "\xc3("}}});
    f.flush();

    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK(verified->ok);
    CHECK(verified->entries == texts.size() + 1);

    auto all = f.audit->list({});
    REQUIRE(all);
    REQUIRE(all->entries.size() == texts.size() + 1);
    for (size_t i = 0; i < texts.size(); ++i) {
        const auto& e = all->entries[i];
        CHECK(e["actor"] == "agent:" + texts[i]);
        CHECK(e["target"] == texts[i]);
        CHECK(e["outcome"] == texts[i]);
        CHECK(e["details"]["path"] == texts[i]);
        CHECK(e["details"]["n"] == -1);
        CHECK(e["time"].get<std::string>().size() == 20);
    }
    // Bytes that are not UTF-8 are stored replaced, and the chain still holds.
    CHECK(all->entries.back()["target"] == "agent:\xef\xbf\xbd\xef\xbf\xbd");
}

TEST_CASE("details written as text are stored as dump() writes them, and verify", "[audit]") {
    Fixture f;
    const std::vector<std::string> paths = {"/v1/models", "quote \" and backslash \\",
                                            std::string("nul\0byte", 8), "caf\xc3\xa9",
                                            "bad \xc3("};
    for (const auto& path : paths) {
        const std::string text = DetailsText()
                                     .add("bytes_in", uint64_t{18446744073709551615u})
                                     .add("duration_ms", int64_t{-3})
                                     .add("method", "GET")
                                     .add("once", false)
                                     .add("path", path)
                                     .add("status", uint64_t{200})
                                     .take();
        const nlohmann::json object = {{"path", path},      {"status", 200},
                                       {"method", "GET"},   {"once", false},
                                       {"duration_ms", -3}, {"bytes_in", 18446744073709551615u}};
        CHECK(text == object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        f.audit->record({"agent:a1", "proxy", "service:s", "ok", {{"ignored", true}}}, text);
    }
    CHECK(DetailsText().take() == "{}");
    f.flush();

    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK(verified->ok);
    auto all = f.audit->list({});
    REQUIRE(all);
    REQUIRE(all->entries.size() == paths.size());
    CHECK(all->entries[0]["details"]["path"] == "/v1/models");
    CHECK(all->entries[0]["details"]["status"] == 200);
    CHECK_FALSE(all->entries[0]["details"].contains("ignored"));
    CHECK(all->entries[2]["details"]["path"] == paths[2]);
}

TEST_CASE("pruning keeps the chain verifiable from its new start", "[audit]") {
    Fixture f;
    for (int i = 0; i < 5; ++i) {
        f.record("old");
    }
    f.flush();
    f.clock.advance_secs(10 * 86400);
    for (int i = 0; i < 3; ++i) {
        f.record("new");
    }
    f.flush();

    auto removed = f.audit->prune(f.clock.now_secs() - 5 * 86400);
    REQUIRE(removed);
    CHECK(*removed == 5);
    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK(verified->ok);
    CHECK(verified->first_seq == 6);
    CHECK(verified->entries == 3);

    f.record("after-prune");
    f.flush();
    auto again = f.audit->verify();
    REQUIRE(again);
    CHECK(again->ok);
    CHECK(again->last_seq == 9);
    auto listed = f.audit->list({});
    REQUIRE(listed);
    REQUIRE(listed->entries.size() == 4);
    CHECK(listed->entries[0]["seq"] == 6);

    // Pruning nothing changes nothing.
    CHECK(*f.audit->prune(f.clock.now_secs() - 30 * 86400) == 0);
}

TEST_CASE("a missing audit entry is named by verify", "[audit]") {
    Fixture f;
    for (int i = 0; i < 4; ++i) {
        f.record("x");
    }
    f.flush();
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        TRY(txn.erase(Table::audit, std::string("\0\0\0\0\0\0\0\3", 8)));
        return {};
    }));
    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK_FALSE(verified->ok);
    CHECK(verified->broken_seq == 3);
}

TEST_CASE("a log cut short at its end fails verification", "[audit]") {
    Fixture f;
    for (int i = 0; i < 3; ++i) {
        f.record("x");
    }
    f.flush();
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        TRY(txn.erase(Table::audit, std::string("\0\0\0\0\0\0\0\3", 8)));
        return {};
    }));
    auto cut = f.audit->verify();
    REQUIRE(cut);
    CHECK_FALSE(cut->ok);
    CHECK(cut->broken_seq == 3);

    // Removing the head as well does not hide it, nor does emptying the log entirely.
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        TRY(txn.erase(Table::settings, "audit_head"));
        return {};
    }));
    auto headless = f.audit->verify();
    REQUIRE(headless);
    CHECK_FALSE(headless->ok);
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        for (const char last : {'\1', '\2'}) {
            TRY(txn.erase(Table::audit, std::string("\0\0\0\0\0\0\0", 7) + last));
        }
        return {};
    }));
    auto emptied = f.audit->verify();
    REQUIRE(emptied);
    CHECK_FALSE(emptied->ok);
}

TEST_CASE("a log that lost its head goes on and is reported for good", "[audit]") {
    Fixture f;
    for (int i = 0; i < 3; ++i) {
        f.record("x");
    }
    f.flush();
    const auto cut = [&](std::initializer_list<char> lasts) {
        REQUIRE(f.vault->write([&](WriteTxn& txn) -> Status {
            for (const char last : lasts) {
                TRY(txn.erase(Table::audit, std::string("\0\0\0\0\0\0\0", 7) + last));
            }
            TRY(txn.erase(Table::settings, "audit_head"));
            return {};
        }));
    };
    const auto reported_at = [&](uint64_t seq) {
        auto v = f.audit->verify();
        REQUIRE(v);
        INFO(v->message);
        CHECK_FALSE(v->ok);
        CHECK(v->broken_seq == seq);
        CHECK(v->message.find("head record was found missing") != std::string::npos);
    };

    SECTION("cut at its end while the daemon runs") {
        cut({'\3'});
        // The next entry takes the place of the one removed, and the place is named.
        REQUIRE(test::run_await(f.audit->append({"uid:0", "y", "agent:a1", "ok", {{"n", 2}}})));
        reported_at(3);
        f.record("z");
        f.flush();
        reported_at(3);
        const auto page = f.audit->list({});
        REQUIRE(page);
        CHECK(page->entries.size() == 4);
    }
    SECTION("emptied, then the daemon restarts") {
        // A vault in use: it holds a user (what the entries recorded, say).
        REQUIRE(f.vault->write(
            [](WriteTxn& txn) -> Status { return txn.put(Table::users, "u1", "{}"); }));
        cut({'\1', '\2', '\3'});
        // A start finds a vault that had a log, not a new one: no fresh, empty chain.
        AuditLog restarted(*f.vault, f.clock);
        REQUIRE(restarted.init(false));
        reported_at(1);
        REQUIRE(restarted.init(false));  // a second start changes nothing
        f.record("y");
        f.flush();
        reported_at(1);
    }
}

TEST_CASE("a vault whose first start was cut short starts its log clean", "[audit]") {
    // Made, then stopped before the log's head was written: nothing in it was ever audited.
    Fixture f;
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        TRY(txn.erase(Table::settings, "audit_head"));
        return {};
    }));
    AuditLog restarted(*f.vault, f.clock);
    REQUIRE(restarted.init(false));
    auto v = restarted.verify();
    REQUIRE(v);
    CHECK(v->ok);
    CHECK(v->message == "audit log is empty");
}

TEST_CASE("a head that does not name the last entry's hash fails verification", "[audit]") {
    Fixture f;
    for (int i = 0; i < 2; ++i) {
        f.record("x");
    }
    f.flush();
    REQUIRE(f.audit->verify()->ok);
    // The right number, the hash of another chain (as a head kept from an older copy of the
    // log would be, with its entries rewritten).
    REQUIRE(f.vault->write([](WriteTxn& txn) -> Status {
        return txn.put(Table::settings, "audit_head",
                       nlohmann::json{{"seq", 2}, {"hash", std::string(64, 'a')}}.dump());
    }));
    const auto v = f.audit->verify();
    REQUIRE(v);
    CHECK_FALSE(v->ok);
    CHECK(v->broken_seq == 2);
    CHECK(v->message.find("does not match the log's head record") != std::string::npos);
}

TEST_CASE("deferred recording holds events until the scheduled flush or a full batch", "[audit]") {
    Fixture f;
    std::vector<std::function<void()>> scheduled;
    f.audit->defer_with([&](std::function<void()> flush) { scheduled.push_back(std::move(flush)); },
                        4);
    auto entries = [&] {
        f.flush();
        auto page = f.audit->list({});
        REQUIRE(page);
        return page->entries.size();
    };

    // Three events: one flush asked for, nothing written until it runs.
    f.record("a");
    f.record("b");
    f.record("c");
    CHECK(scheduled.size() == 1);
    CHECK(f.audit->waiting() == 3);
    CHECK(entries() == 0);
    scheduled.front()();
    CHECK(entries() == 3);
    CHECK(f.audit->waiting() == 0);

    // A full batch goes out without waiting for its flush; the late flush then finds nothing.
    for (int i = 0; i < 4; ++i) {
        f.record("batch");
    }
    CHECK(scheduled.size() == 2);
    CHECK(entries() == 7);
    scheduled.back()();
    CHECK(entries() == 7);

    // Off again: each record is queued at once, and the chain holds across all of it.
    f.audit->defer_with({}, 0);
    f.record("direct");
    CHECK(entries() == 8);
    auto verified = f.audit->verify();
    REQUIRE(verified);
    CHECK(verified->ok);
    CHECK(verified->entries == 8);
}
