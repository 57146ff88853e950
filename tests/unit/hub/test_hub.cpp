// Hub (SPEC §3.3) against a real vault in a temp dir and a fake clock: publish and retrieve,
// TTL expiry without sleeping, the sweeper's batches, recipients, once blobs (also retrieved
// concurrently), deletion by the publisher only, the input checks, the per-agent quotas and
// what frees them, tokens that name nothing, and no blob data or token in plaintext on disk.
#include <filesystem>
#include <future>
#include <optional>
#include <regex>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "daemon/hub/hub.hpp"
#include "tests/support/fake_clock.hpp"
#include "tests/support/run_await.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;
using agentgw::test::run_await;
namespace fs = std::filesystem;

namespace {

struct Fixture {
    test::TempDir dir;
    test::FakeClock clock;
    std::unique_ptr<Vault> vault;
    std::unique_ptr<Hub> hub;

    explicit Fixture(HubLimits limits = {}) { open(limits); }

    void open(HubLimits limits) {
        const auto key = test::key_at(dir / "k");
        auto opened = test::open_vault(dir / "state", key);
        REQUIRE(opened);
        vault = std::move(*opened);
        hub = std::make_unique<Hub>(*vault, clock, limits);
    }

    // Closes the vault (committing what is queued) and opens it again, as a restart does.
    void reopen() {
        const HubLimits limits = hub->limits();
        hub.reset();
        vault.reset();
        open(limits);
    }

    Result<PublishedBlob> publish(const BlobInput& in) { return run_await(hub->publish(in)); }

    // A publish that must succeed; returns the data token.
    std::string published(const BlobInput& in) {
        auto p = publish(in);
        INFO((p ? std::string() : p.error().message));
        REQUIRE(p);
        return p->token;
    }

    Result<Blob> retrieve(const std::string& token, const std::string& who) {
        return run_await(hub->retrieve(token, who));
    }

    Status remove(const std::string& token, const std::string& who) {
        return run_await(hub->remove(token, who));
    }

    Result<size_t> sweep() { return run_await(hub->sweep()); }

    uint64_t stored() {
        auto n = hub->stored();
        REQUIRE(n);
        return *n;
    }
};

BlobInput input(const std::string& publisher, const std::string& name, const std::string& data,
                int64_t ttl = 60, bool once = false, std::vector<std::string> recipients = {}) {
    BlobInput in;
    in.publisher_id = publisher;
    in.publisher_name = "name-of-" + publisher;
    in.name = name;
    in.data = data;
    in.ttl_secs = ttl;
    in.once = once;
    in.recipient_ids = std::move(recipients);
    return in;
}

// The refusal every retrieval of something it may not have gets.
template <typename T>
void check_gone(const Result<T>& r) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::not_found);
    CHECK(r.error().message == "Data not found or expired");
}

void check_gone(const Status& s) {
    REQUIRE_FALSE(s);
    CHECK(s.error().code == Code::not_found);
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("a published blob is retrieved with every field", "[hub]") {
    Fixture f;
    const int64_t t0 = f.clock.now_ms();
    auto p = f.publish(input("a1", "report", "sealed-payload", 120, false, {"b1"}));
    REQUIRE(p);
    CHECK(std::regex_match(p->token, std::regex("[A-Za-z0-9_-]{43}")));
    CHECK(std::regex_match(p->fingerprint, std::regex("[0-9a-f]{16}")));
    CHECK(p->fingerprint == f.hub->fingerprint(p->token));
    CHECK(p->created_ms == t0);
    CHECK(p->expires_ms == t0 + 120'000);
    CHECK(f.stored() == 1);

    f.clock.advance_secs(5);
    auto b = f.retrieve(p->token, "b1");
    REQUIRE(b);
    CHECK(b->name == "report");
    CHECK(b->data == "sealed-payload");
    CHECK(b->publisher_id == "a1");
    CHECK(b->publisher_name == "name-of-a1");
    CHECK(b->created_ms == t0);
    CHECK(b->expires_ms == t0 + 120'000);
    CHECK(b->ttl_secs == 120);
    CHECK_FALSE(b->once);
    CHECK(b->recipient_ids == std::vector<std::string>{"b1"});

    // Reusable: served again, and to the publisher too.
    CHECK(f.retrieve(p->token, "b1"));
    CHECK(f.retrieve(p->token, "a1"));
    CHECK(f.stored() == 1);

    // Every publish gets its own token, fingerprint included.
    auto q = f.publish(input("a1", "report", "sealed-payload"));
    REQUIRE(q);
    CHECK(q->token != p->token);
    CHECK(q->fingerprint != p->fingerprint);
    CHECK(f.stored() == 2);
}

TEST_CASE("no data token begins with a dash", "[hub]") {
    // A token is handed to `agentgw retrieve` as an argument, where a leading '-' would make
    // it an option. One draw in 64 would begin so: 600 tokens all pass by chance 1 in 13000.
    HubLimits limits;
    limits.quota_blobs = 600;
    Fixture f(limits);
    for (int i = 0; i < 600; ++i) {
        const std::string token = f.published(input("a1", "t", "x"));
        REQUIRE(token.size() == 43);
        REQUIRE(token.front() != '-');
    }
}

TEST_CASE("a blob is served until its expiry and never at or after it", "[hub][ttl]") {
    Fixture f;
    const std::string reusable = f.published(input("a1", "r", "reusable-data", 10));
    const std::string once = f.published(input("a1", "o", "once-data", 10, true));

    f.clock.advance_ms(10'000 - 1);
    CHECK(f.retrieve(reusable, "a1"));
    CHECK(f.retrieve(reusable, "someone"));

    f.clock.advance_ms(1);  // exactly at expiry
    check_gone(f.retrieve(reusable, "a1"));
    check_gone(f.retrieve(reusable, ""));  // not even for the operator
    check_gone(f.retrieve(once, "a1"));
    check_gone(f.remove(reusable, "a1"));

    f.clock.advance_secs(3600);
    check_gone(f.retrieve(reusable, "a1"));
    // Still stored (the sweeper has not run), yet never served.
    CHECK(f.stored() == 2);
}

TEST_CASE("a once blob that expires while its retrieval waits for the writer is not handed out",
          "[hub][ttl][once]") {
    Fixture f;
    const std::string token = f.published(input("a1", "o", "once-data", 10, true));
    f.clock.advance_ms(10'000 - 1);

    // Hold the vault's writer, so the retrieval's write waits in the queue.
    std::promise<void> writing;
    std::promise<void> release;
    std::promise<void> held_done;
    f.vault->submit(
        [&](WriteTxn&) -> Status {
            writing.set_value();
            release.get_future().wait();
            return {};
        },
        [&](Status) { held_done.set_value(); });
    writing.get_future().wait();

    boost::asio::io_context ioc;
    std::optional<Result<Blob>> got;
    boost::asio::co_spawn(
        ioc,
        [&]() -> boost::asio::awaitable<void> {
            const std::string who = "b1";
            got.emplace(co_await f.hub->retrieve(token, who));
        },
        boost::asio::detached);
    ioc.poll();  // the blob was live when looked up: the retrieval now waits for its write
    REQUIRE_FALSE(got.has_value());

    f.clock.advance_ms(1);  // expired before the write runs
    release.set_value();
    ioc.run();
    held_done.get_future().wait();
    REQUIRE(got.has_value());
    check_gone(*got);
}

TEST_CASE("sweep removes only expired blobs, a bounded batch at a time", "[hub][sweep]") {
    HubLimits limits;
    limits.sweep_batch = 3;
    limits.quota_blobs = 9;
    Fixture f(limits);
    std::vector<std::string> short_lived;
    for (int i = 0; i < 7; ++i) {
        short_lived.push_back(f.published(input("a1", "s" + std::to_string(i), "short", 10 + i)));
    }
    const std::string long1 = f.published(input("a1", "l1", "long-one", 100));
    const std::string long2 = f.published(input("a1", "l2", "long-two", 200));
    CHECK(f.stored() == 9);

    // Nothing expired yet: nothing swept.
    auto none = f.sweep();
    REQUIRE(none);
    CHECK(*none == 0);
    CHECK(f.stored() == 9);
    // The quota is full.
    auto over = f.publish(input("a1", "x", "x"));
    REQUIRE_FALSE(over);
    CHECK(over.error().code == Code::conflict);

    f.clock.advance_secs(16);  // all seven short ones (ttl 10..16) are now expired
    std::vector<size_t> batches;
    for (int i = 0; i < 5; ++i) {
        auto n = f.sweep();
        REQUIRE(n);
        batches.push_back(*n);
    }
    CHECK(batches == std::vector<size_t>{3, 3, 1, 0, 0});
    CHECK(f.stored() == 2);
    for (const auto& t : short_lived) {
        check_gone(f.retrieve(t, "a1"));
    }
    auto l1 = f.retrieve(long1, "a1");
    REQUIRE(l1);
    CHECK(l1->data == "long-one");
    CHECK(f.retrieve(long2, "a1"));

    // The seven swept blobs freed seven slots of the quota of nine, and no more.
    for (int i = 0; i < 7; ++i) {
        INFO("publish " << i);
        CHECK(f.publish(input("a1", "n" + std::to_string(i), "new", 1000)));
    }
    auto full = f.publish(input("a1", "n7", "new", 1000));
    REQUIRE_FALSE(full);
    CHECK(full.error().code == Code::conflict);

    // Expiry order, not publish order: the ttl-100 one goes before the ttl-200 one.
    f.clock.advance_secs(100);
    auto n = f.sweep();
    REQUIRE(n);
    CHECK(*n == 1);
    check_gone(f.retrieve(long1, "a1"));
    CHECK(f.retrieve(long2, "a1"));
}

TEST_CASE("recipients limit who may retrieve a blob", "[hub][recipients]") {
    Fixture f;
    const std::string addressed =
        f.published(input("a1", "for-b-and-c", "addressed", 60, false, {"b1", "c1"}));
    const std::string open = f.published(input("a1", "for-all", "open"));

    CHECK(f.retrieve(addressed, "a1"));  // the publisher
    CHECK(f.retrieve(addressed, "b1"));
    CHECK(f.retrieve(addressed, "c1"));
    check_gone(f.retrieve(addressed, "d1"));
    auto operator_view = f.retrieve(addressed, "");  // the operator
    REQUIRE(operator_view);
    CHECK(operator_view->data == "addressed");

    CHECK(f.retrieve(open, "d1"));
    CHECK(f.retrieve(open, "anyone-at-all"));

    // A once blob is not consumed by someone who may not have it.
    const std::string once =
        f.published(input("a1", "once-for-b", "once-addressed", 60, true, {"b1"}));
    check_gone(f.retrieve(once, "d1"));
    auto taken = f.retrieve(once, "b1");
    REQUIRE(taken);
    CHECK(taken->data == "once-addressed");
    CHECK(taken->once);
    check_gone(f.retrieve(once, "b1"));
}

TEST_CASE("a once blob is handed out exactly once", "[hub][once]") {
    Fixture f;
    const std::string token = f.published(input("a1", "o", "one-time", 60, true));
    CHECK(f.stored() == 1);
    auto first = f.retrieve(token, "b1");
    REQUIRE(first);
    CHECK(first->data == "one-time");
    CHECK(first->once);
    CHECK(f.stored() == 0);
    check_gone(f.retrieve(token, "b1"));
    check_gone(f.retrieve(token, "a1"));
    check_gone(f.retrieve(token, ""));
    check_gone(f.remove(token, "a1"));
}

TEST_CASE("of many concurrent retrievals of a once blob exactly one succeeds", "[hub][once]") {
    Fixture f;
    const std::string token = f.published(input("a1", "o", "raced", 60, true));
    constexpr int k_racers = 16;
    int ok = 0;
    int gone = 0;
    int other = 0;
    boost::asio::io_context ioc;
    for (int i = 0; i < k_racers; ++i) {
        boost::asio::co_spawn(
            ioc,
            [&]() -> boost::asio::awaitable<void> {
                const std::string who = "b1";
                auto r = co_await f.hub->retrieve(token, who);
                if (r) {
                    ++ok;
                } else if (r.error().code == Code::not_found) {
                    ++gone;
                } else {
                    ++other;
                }
            },
            boost::asio::detached);
    }
    ioc.run();
    CHECK(ok == 1);
    CHECK(gone == k_racers - 1);
    CHECK(other == 0);
    CHECK(f.stored() == 0);
}

TEST_CASE("only the publisher removes a blob", "[hub][remove]") {
    Fixture f;
    const std::string token = f.published(input("a1", "r", "removable", 60, false, {"b1"}));
    check_gone(f.remove(token, "b1"));  // a recipient is not the publisher
    check_gone(f.remove(token, "c1"));
    auto still = f.retrieve(token, "b1");
    REQUIRE(still);
    CHECK(still->data == "removable");

    REQUIRE(f.remove(token, "a1"));
    check_gone(f.retrieve(token, "a1"));
    check_gone(f.retrieve(token, "b1"));
    check_gone(f.remove(token, "a1"));
    CHECK(f.stored() == 0);
}

TEST_CASE("check() refuses bad names, oversized data and ttls out of range", "[hub][check]") {
    HubLimits limits;
    limits.max_data = 100;
    limits.max_ttl_secs = 1000;
    Fixture f(limits);

    CHECK(f.hub->check(input("a1", "n", std::string(100, 'd'), 1000)));
    CHECK(f.hub->check(input("a1", std::string(256, 'n'), "d", 1)));

    const auto bad = [&](BlobInput in, Code code, const std::string& field) {
        const Status s = f.hub->check(in);
        INFO("field " << field);
        REQUIRE_FALSE(s);
        CHECK(s.error().code == code);
        CHECK(contains(s.error().message, field));
        // publish() refuses the same and stores nothing.
        auto p = f.publish(in);
        REQUIRE_FALSE(p);
        CHECK(p.error().code == code);
    };
    bad(input("a1", "", "d"), Code::invalid_argument, "name");
    bad(input("a1", std::string(257, 'n'), "d"), Code::invalid_argument, "name");
    bad(input("a1", "n", std::string(101, 'd')), Code::exhausted, "data");
    bad(input("a1", "n", "d", 0), Code::invalid_argument, "ttl");
    bad(input("a1", "n", "d", -5), Code::invalid_argument, "ttl");
    bad(input("a1", "n", "d", 1001), Code::invalid_argument, "ttl");
    CHECK(f.stored() == 0);
}

TEST_CASE("per-agent quotas on blobs and bytes, freed by delete, consumption and sweep",
          "[hub][quota]") {
    SECTION("blob count") {
        HubLimits limits;
        limits.quota_blobs = 2;
        Fixture f(limits);
        const std::string first = f.published(input("a1", "1", "d"));
        const std::string once = f.published(input("a1", "2", "d", 60, true));
        auto third = f.publish(input("a1", "3", "d"));
        REQUIRE_FALSE(third);
        CHECK(third.error().code == Code::conflict);
        CHECK(contains(third.error().message, "quota"));
        CHECK(contains(third.error().message, "2 live blobs"));
        CHECK(f.stored() == 2);
        // Per agent: another publisher is not held back by a1's blobs.
        CHECK(f.publish(input("b1", "1", "d")));

        // Deleting frees a slot.
        REQUIRE(f.remove(first, "a1"));
        f.published(input("a1", "3", "d", 5));
        REQUIRE_FALSE(f.publish(input("a1", "4", "d")));

        // Consuming a once blob frees a slot.
        REQUIRE(f.retrieve(once, "b1"));
        f.published(input("a1", "4", "d"));
        REQUIRE_FALSE(f.publish(input("a1", "5", "d")));

        // Sweeping an expired blob frees a slot.
        f.clock.advance_secs(5);
        auto swept = f.sweep();
        REQUIRE(swept);
        CHECK(*swept == 1);
        CHECK(f.publish(input("a1", "5", "d")));
        REQUIRE_FALSE(f.publish(input("a1", "6", "d")));
    }
    SECTION("bytes") {
        HubLimits limits;
        limits.quota_bytes = 100;
        Fixture f(limits);
        const std::string sixty = f.published(input("a1", "60", std::string(60, 'x')));
        auto over = f.publish(input("a1", "41", std::string(41, 'x')));
        REQUIRE_FALSE(over);
        CHECK(over.error().code == Code::conflict);
        CHECK(contains(over.error().message, "quota"));
        CHECK(contains(over.error().message, "100 bytes"));
        const std::string forty = f.published(input("a1", "40", std::string(40, 'x'), 5, true));
        REQUIRE_FALSE(f.publish(input("a1", "1", "x")));
        CHECK(f.publish(input("b1", "100", std::string(100, 'x'))));  // per agent

        REQUIRE(f.retrieve(forty, "c1"));  // consumed: 40 bytes free again
        f.published(input("a1", "40", std::string(40, 'x'), 5));
        REQUIRE_FALSE(f.publish(input("a1", "1", "x")));

        REQUIRE(f.remove(sixty, "a1"));  // deleted: 60 more
        f.published(input("a1", "60", std::string(60, 'x'), 5));
        REQUIRE_FALSE(f.publish(input("a1", "1", "x")));

        f.clock.advance_secs(5);
        auto swept = f.sweep();
        REQUIRE(swept);
        CHECK(*swept == 2);  // both ttl-5 blobs: all 100 bytes free
        CHECK(f.publish(input("a1", "100", std::string(100, 'x'))));
    }
}

TEST_CASE("blobs, their expiry and the quotas outlive reopening the vault", "[hub][restart]") {
    HubLimits limits;
    limits.quota_blobs = 2;
    Fixture f(limits);
    const std::string reusable = f.published(input("a1", "r", "kept", 10));
    const std::string once = f.published(input("a1", "o", "kept-once", 100, true));
    f.reopen();

    auto kept = f.retrieve(reusable, "b1");
    REQUIRE(kept);
    CHECK(kept->data == "kept");
    CHECK(kept->name == "r");
    REQUIRE_FALSE(f.publish(input("a1", "3", "d")));  // the usage record came back too
    auto taken = f.retrieve(once, "b1");
    REQUIRE(taken);
    CHECK(taken->data == "kept-once");
    check_gone(f.retrieve(once, "b1"));

    f.clock.advance_secs(10);
    check_gone(f.retrieve(reusable, "b1"));
    auto swept = f.sweep();  // the expiry index came back too
    REQUIRE(swept);
    CHECK(*swept == 1);
    CHECK(f.stored() == 0);
    CHECK(f.publish(input("a1", "3", "d")));
    CHECK(f.publish(input("a1", "4", "d")));
}

TEST_CASE("a token of the wrong length or unknown names nothing", "[hub][token]") {
    Fixture f;
    const std::string token = f.published(input("a1", "n", "data"));
    for (const std::string& t :
         {std::string(), std::string("short"), token.substr(0, 42), token + "A", token + token,
          std::string(43, 'A'), std::string(43, '\0')}) {
        INFO("token of " << t.size() << " chars");
        check_gone(f.retrieve(t, "a1"));
        check_gone(f.retrieve(t, ""));
        check_gone(f.remove(t, "a1"));
    }
    std::string changed = token;
    changed[10] = changed[10] == 'A' ? 'B' : 'A';
    check_gone(f.retrieve(changed, "a1"));
    check_gone(f.remove(changed, "a1"));
    CHECK(f.retrieve(token, "a1"));  // untouched by all of that
}

TEST_CASE("no blob data or token is on disk in plaintext", "[hub][disk]") {
    const std::string data = "hub-plaintext-probe-" + std::string(3000, 'Z') + "-end";
    const std::string name = "hub-name-probe-7c1f";
    const std::string publisher = "agent-id-probe-5e2a";
    std::vector<std::string> tokens;
    fs::path state;
    {
        Fixture f;
        state = f.dir / "state";
        for (int i = 0; i < 20; ++i) {
            tokens.push_back(
                f.published(input(publisher, name, data + std::to_string(i), 60, i % 2 == 0)));
        }
        // One consumed and one deleted too: what they leave behind must not show either.
        REQUIRE(f.retrieve(tokens[0], ""));
        REQUIRE(f.remove(tokens[1], publisher));
        f.vault.reset();  // commits and closes
        REQUIRE(fs::exists(state / "data.mdb"));

        std::string everything;
        for (const auto& entry : fs::recursive_directory_iterator(state)) {
            if (entry.is_regular_file()) {
                everything += test::read_file(entry.path());
            }
        }
        REQUIRE(everything.size() > data.size());
        // Keys are not secret and not sealed: the publisher's id (the usage record's key) shows,
        // which proves this scan reads what the vault wrote.
        CHECK(contains(everything, publisher));
        CHECK_FALSE(contains(everything, "hub-plaintext-probe-"));
        CHECK_FALSE(contains(everything, std::string(64, 'Z')));
        CHECK_FALSE(contains(everything, name));
        for (const auto& t : tokens) {
            CHECK_FALSE(contains(everything, t));
            CHECK_FALSE(contains(everything, t.substr(0, 16)));
        }
    }
}
