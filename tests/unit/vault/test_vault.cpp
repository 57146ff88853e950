#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "daemon/vault/lmdb.hpp"
#include "daemon/vault/vault.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;
using agentgw::test::TempDir;

namespace {

std::string text(const std::optional<SecretBytes>& v) {
    REQUIRE(v.has_value());
    return std::string(as_view(*v));
}

std::optional<SecretBytes> get(const Vault& vault, Table table, const std::string& key) {
    auto r = vault.get(table, key);
    REQUIRE(r);
    return std::move(*r);
}

// Runs `fn` on the raw LMDB environment of a closed vault, bypassing all sealing.
void with_raw_env(const std::filesystem::path& state,
                  const std::function<void(MDB_txn*, MDB_dbi users, MDB_dbi agents)>& fn) {
    auto env = lmdb::Env::open(state.string(), {.max_dbs = 32});
    REQUIRE(env);
    auto txn = lmdb::Txn::begin(env->get(), nullptr, 0);
    REQUIRE(txn);
    MDB_dbi users = 0, agents = 0;
    REQUIRE(mdb_dbi_open(txn->get(), "users", 0, &users) == 0);
    REQUIRE(mdb_dbi_open(txn->get(), "agents", 0, &agents) == 0);
    fn(txn->get(), users, agents);
    REQUIRE(txn->commit() == 0);
}

std::string raw_get(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
    MDB_val k = lmdb::to_val(key), v{};
    REQUIRE(mdb_get(txn, dbi, &k, &v) == 0);
    return std::string(lmdb::view(v));
}

void raw_put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value) {
    MDB_val k = lmdb::to_val(key), v = lmdb::to_val(value);
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
}

}  // namespace

TEST_CASE("a store out of room is a failure of the store and not of the request", "[vault]") {
    // A hub publish into a vault that cannot grow was told its payload was too large (413).
    for (const int rc : {MDB_MAP_FULL, MDB_READERS_FULL, MDB_TXN_FULL, MDB_DBS_FULL}) {
        INFO("rc " << rc);
        const Error e = lmdb::error(rc, "vault write failed");
        CHECK(e.code == Code::io_error);
        CHECK(e.message.find(mdb_strerror(rc)) != std::string::npos);
    }
    CHECK(lmdb::error(MDB_NOTFOUND, "x").code == Code::not_found);
}

TEST_CASE("a vault reopens with the same key and keeps its records", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "master.key");
    {
        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::users, "u1", R"({"username":"alice"})"));
        REQUIRE(test::put(**vault, Table::user_names, "alice", "u1"));
        REQUIRE(test::put(**vault, Table::users, "u2", R"({"username":"bob"})"));
        REQUIRE((*vault)->write([](WriteTxn& txn) -> Status {
            TRY_ASSIGN(bool existed, txn.erase(Table::users, "u2"));
            return existed ? Status{} : make_error(Code::internal, "u2 missing");
        }));
    }
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::users, "u1")) == R"({"username":"alice"})");
    CHECK(text(get(**vault, Table::user_names, "alice")) == "u1");
    CHECK_FALSE(get(**vault, Table::users, "u2").has_value());
    CHECK_FALSE(get(**vault, Table::agents, "u1").has_value());
}

TEST_CASE("a wrong key is refused and changes nothing on disk", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "master.key");
    {
        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::credentials, "openai", "sk-live"));
    }
    const auto before = test::hash_tree(dir / "state");
    const auto wrong = test::key_at(dir / "wrong.key");
    auto refused = test::open_vault(dir / "state", wrong);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Code::unauthenticated);
    CHECK(refused.error().message.find("wrong.key") != std::string::npos);
    CHECK(test::hash_tree(dir / "state") == before);

    auto pass = passphrase_from("not the key", "a passphrase");
    REQUIRE_FALSE(test::open_vault(dir / "state", *pass));
    CHECK(test::hash_tree(dir / "state") == before);

    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::credentials, "openai")) == "sk-live");
}

TEST_CASE("a passphrase-protected vault round-trips", "[vault]") {
    TempDir dir;
    auto pass = passphrase_from("correct horse battery staple", "test passphrase");
    REQUIRE(pass);
    {
        auto vault = test::open_vault(dir / "state", *pass);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::settings, "jwt", "signing-key"));
    }
    auto envelope = Vault::probe(dir / "state");
    REQUIRE(envelope);
    REQUIRE(envelope->has_value());
    CHECK((*envelope)->kind == MasterKind::passphrase);
    CHECK((*envelope)->salt.size() == crypto_pwhash_SALTBYTES);

    auto wrong = passphrase_from("correct horse battery stapler", "test passphrase");
    CHECK(test::open_vault(dir / "state", *wrong).error().code == Code::unauthenticated);
    const auto key = test::key_at(dir / "master.key");
    CHECK(test::open_vault(dir / "state", key).error().code == Code::unauthenticated);

    auto vault = test::open_vault(dir / "state", *pass);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::settings, "jwt")) == "signing-key");
}

TEST_CASE("no plaintext reaches the disk", "[vault]") {
    TempDir dir;
    const std::string marker = "MARKER-" + std::to_string(randombytes_random()) + "-PLAINTEXT";
    const auto key = test::key_at(dir / "state-key");
    {
        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        for (int i = 0; i < 200; ++i) {
            const auto lookup = (*vault)->cipher().lookup_hash("agent-key", marker);
            REQUIRE((*vault)->write([&](WriteTxn& txn) -> Status {
                TRY(txn.put(Table::credentials, fmt::format("svc{}", i),
                            fmt::format("{}-{}", marker, i)));
                TRY(txn.put(Table::blobs, fmt::format("b{}", i), std::string(3000, 'x') + marker));
                return txn.put(
                    Table::agent_keys,
                    std::string(reinterpret_cast<const char*>(lookup.data()), lookup.size()),
                    "agent-1");
            }));
        }
    }
    size_t scanned = 0;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir / "state")) {
        if (entry.is_regular_file()) {
            const std::string bytes = test::read_file(entry.path());
            scanned += bytes.size();
            CHECK(bytes.find(marker) == std::string::npos);
            CHECK(bytes.find("MARKER-") == std::string::npos);
        }
    }
    CHECK(scanned > 600 * 1000);  // the records really were written
}

TEST_CASE("state directory and files are private whatever the umask", "[vault]") {
    TempDir dir;
    const mode_t old = ::umask(0);
    {
        const auto key = test::key_at(dir / "state-key");
        auto vault = test::open_vault(dir / "state", key);
        ::umask(old);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::users, "u", "v"));
    }
    ::umask(old);
    CHECK(test::mode_of(dir / "state") == 0700);
    CHECK(test::mode_of(dir / "state-key") == 0600);
    for (const char* file : {"data.mdb", "lock.mdb", "agentgwd.lock"}) {
        INFO(file);
        CHECK(test::mode_of(dir / "state" / file) == 0600);
    }
}

TEST_CASE("a looser pre-existing state directory is refused", "[vault]") {
    TempDir dir;
    std::filesystem::create_directory(dir / "state");
    std::filesystem::permissions(dir / "state", std::filesystem::perms(0755));
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE_FALSE(vault);
    CHECK(vault.error().code == Code::permission_denied);
    CHECK(vault.error().message.find("0755") != std::string::npos);
}

TEST_CASE("only one owner may hold a state directory", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto first = test::open_vault(dir / "state", key);
    REQUIRE(first);
    auto second = test::open_vault(dir / "state", key);
    REQUIRE_FALSE(second);
    CHECK(second.error().code == Code::unavailable);
    CHECK(second.error().message.find("already using state directory") != std::string::npos);
    first->reset();
    CHECK(test::open_vault(dir / "state", key));
}

TEST_CASE("concurrent writers share commits", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    Vault& v = **vault;
    constexpr int k_threads = 16;
    constexpr int k_per_thread = 50;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < k_threads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < k_per_thread; ++i) {
                const std::string k = fmt::format("t{}-{}", t, i);
                if (!test::put(v, Table::audit, k, "value-" + k)) {
                    ++failures;
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    CHECK(failures == 0);
    const auto stats = v.stats();
    CHECK(stats.writes == k_threads * k_per_thread);
    CHECK(stats.commits < stats.writes);
    auto count = [&] {
        size_t n = 0;
        REQUIRE(v.read([&](const ReadTxn& txn) -> Status {
            TRY_ASSIGN(n, txn.count(Table::audit));
            return {};
        }));
        return n;
    }();
    CHECK(count == k_threads * k_per_thread);
    CHECK(text(get(v, Table::audit, "t7-42")) == "value-t7-42");
}

TEST_CASE("a failing request in a batch leaves the others committed", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    REQUIRE(test::put(**vault, Table::user_names, "alice", "u1"));

    std::vector<std::promise<Status>> done(3);
    auto submit = [&](int i, Vault::WriteFn fn) {
        (*vault)->submit(std::move(fn), [&done, i](Status s) { done[i].set_value(std::move(s)); });
    };
    submit(0, [](WriteTxn& txn) { return txn.insert(Table::user_names, "bob", "u2"); });
    submit(1, [](WriteTxn& txn) -> Status {
        TRY(txn.put(Table::users, "u3", "half-done"));
        return txn.insert(Table::user_names, "alice", "u3");  // taken: rolls back u3 too
    });
    submit(2, [](WriteTxn& txn) { return txn.insert(Table::user_names, "carol", "u4"); });
    CHECK(done[0].get_future().get());
    const Status conflict = done[1].get_future().get();
    REQUIRE_FALSE(conflict);
    CHECK(conflict.error().code == Code::conflict);
    CHECK(done[2].get_future().get());

    CHECK(text(get(**vault, Table::user_names, "alice")) == "u1");
    CHECK(text(get(**vault, Table::user_names, "bob")) == "u2");
    CHECK(text(get(**vault, Table::user_names, "carol")) == "u4");
    CHECK_FALSE(get(**vault, Table::users, "u3").has_value());
}

TEST_CASE("scans visit a prefix in key order", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    for (const char* k : {"a/2", "a/1", "b/1", "a/3", "c"}) {
        REQUIRE(test::put(**vault, Table::agents, k, std::string("v") + k));
    }
    std::vector<std::string> seen;
    REQUIRE((*vault)->read([&](const ReadTxn& txn) {
        return txn.scan(Table::agents, "a/", [&](std::string_view k, SecretBytes v) {
            seen.push_back(std::string(k) + "=" + std::string(as_view(v)));
            return seen.size() < 2;
        });
    }));
    CHECK(seen == std::vector<std::string>{"a/1=va/1", "a/2=va/2"});
}

TEST_CASE("keys no record can have are not found, and cannot be written", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    REQUIRE(test::put(**vault, Table::agents, std::string(511, 'k'), "longest"));
    for (const std::string& odd : {std::string(), std::string(512, 'k')}) {
        INFO("key of " << odd.size() << " bytes");
        std::optional<SecretBytes> found;
        REQUIRE((*vault)->read([&](const ReadTxn& txn) -> Status {
            TRY_ASSIGN(found, txn.get(Table::agents, odd));
            return {};
        }));
        CHECK_FALSE(found.has_value());
        bool erased = true;
        REQUIRE((*vault)->write([&](WriteTxn& txn) -> Status {
            TRY_ASSIGN(erased, txn.erase(Table::agents, odd));
            return {};
        }));
        CHECK_FALSE(erased);
        const Status put = test::put(**vault, Table::agents, odd, "v");
        REQUIRE_FALSE(put);
        CHECK(put.error().code == Code::invalid_argument);
    }
}

TEST_CASE("writing past the initial map size grows the map", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    VaultOptions options;
    options.initial_map_size = 1u << 20;
    const std::string big(64 * 1024, 'z');
    {
        auto vault = test::open_vault(dir / "state", key, options);
        REQUIRE(vault);
        for (int i = 0; i < 64; ++i) {  // 4 MiB into a 1 MiB map
            REQUIRE(test::put(**vault, Table::blobs, fmt::format("blob{:02}", i), big));
        }
        const auto stats = (*vault)->stats();
        CHECK(stats.map_growths >= 2);
        CHECK(stats.map_size >= 4u << 20);
    }
    auto vault = test::open_vault(dir / "state", key, options);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::blobs, "blob63")) == big);
    CHECK(text(get(**vault, Table::blobs, "blob00")) == big);
}

TEST_CASE("records moved inside the LMDB file fail to open", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    {
        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::users, "alice", "alice's record"));
        REQUIRE(test::put(**vault, Table::users, "bob", "bob's record"));
    }
    with_raw_env(dir / "state", [](MDB_txn* txn, MDB_dbi users, MDB_dbi agents) {
        const std::string sealed = raw_get(txn, users, "alice");
        raw_put(txn, users, "bob", sealed);     // to another key
        raw_put(txn, agents, "alice", sealed);  // to another table
    });
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::users, "alice")) == "alice's record");
    for (auto [table, k] : {std::pair{Table::users, "bob"}, std::pair{Table::agents, "alice"}}) {
        auto moved = (*vault)->get(table, k);
        REQUIRE_FALSE(moved);
        CHECK(moved.error().code == Code::corrupt);
    }
}

TEST_CASE("changing the master key rewraps the data key only", "[vault]") {
    TempDir dir;
    const auto old_key = test::key_at(dir / "old.key");
    const auto new_key = test::key_at(dir / "new.key");
    {
        auto vault = test::open_vault(dir / "state", old_key);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::users, "alice", "record"));
    }
    std::string sealed_before;
    with_raw_env(dir / "state", [&](MDB_txn* txn, MDB_dbi users, MDB_dbi) {
        sealed_before = raw_get(txn, users, "alice");
    });
    {
        auto vault = test::open_vault(dir / "state", old_key);
        REQUIRE(vault);
        REQUIRE((*vault)->change_master_key(new_key, PwhashParams::interactive()));
    }
    CHECK(test::open_vault(dir / "state", old_key).error().code == Code::unauthenticated);
    {
        auto vault = test::open_vault(dir / "state", new_key);
        REQUIRE(vault);
        CHECK(text(get(**vault, Table::users, "alice")) == "record");
        auto pass = passphrase_from("from now on a passphrase", "test");
        REQUIRE((*vault)->change_master_key(*pass, PwhashParams::interactive()));
    }
    with_raw_env(dir / "state", [&](MDB_txn* txn, MDB_dbi users, MDB_dbi) {
        CHECK(raw_get(txn, users, "alice") == sealed_before);
    });
    auto pass = passphrase_from("from now on a passphrase", "test");
    auto vault = test::open_vault(dir / "state", *pass);
    REQUIRE(vault);
    CHECK(text(get(**vault, Table::users, "alice")) == "record");
}

TEST_CASE("a data file with tables but no key envelope is refused, not re-created", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    {
        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        REQUIRE(test::put(**vault, Table::users, "alice", "record"));
    }
    {
        auto env = lmdb::Env::open((dir / "state").string(), {.max_dbs = 32});
        REQUIRE(env);
        auto txn = lmdb::Txn::begin(env->get(), nullptr, 0);
        REQUIRE(txn);
        MDB_dbi meta = 0;
        REQUIRE(mdb_dbi_open(txn->get(), "meta", 0, &meta) == 0);
        MDB_val k = lmdb::to_val("key_envelope");
        REQUIRE(mdb_del(txn->get(), meta, &k, nullptr) == 0);
        REQUIRE(txn->commit() == 0);
    }
    const auto before = test::hash_tree(dir / "state");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE_FALSE(vault);
    CHECK(vault.error().code == Code::corrupt);
    CHECK(test::hash_tree(dir / "state") == before);
}

TEST_CASE("loose LMDB files are refused, not silently fixed", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    REQUIRE(test::open_vault(dir / "state", key));
    std::filesystem::permissions(dir / "state" / "data.mdb", std::filesystem::perms(0644));
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE_FALSE(vault);
    CHECK(vault.error().code == Code::permission_denied);
    CHECK(test::mode_of(dir / "state" / "data.mdb") == 0644);
}

TEST_CASE("a write from inside a read fails instead of deadlocking", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    Status inner;
    REQUIRE((*vault)->read([&](const ReadTxn&) {
        inner = test::put(**vault, Table::users, "u", "v");
        return Status{};
    }));
    REQUIRE_FALSE(inner);
    CHECK(inner.error().code == Code::internal);
    CHECK(test::put(**vault, Table::users, "u", "v"));
}

namespace {

// The process's address space in use, from /proc/self/status (VmSize, in bytes).
size_t address_space_in_use() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.starts_with("VmSize:")) {
            return std::stoull(line.substr(7)) * 1024;
        }
    }
    return 0;
}

}  // namespace

TEST_CASE("a map that cannot grow stops the process instead of crashing it", "[vault]") {
#if defined(__SANITIZE_ADDRESS__)
    WARN("not run under AddressSanitizer, whose shadow memory needs all the address space");
    return;
#endif
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    // In a child, with an address space limit that leaves no room for a larger map: the
    // outcome comes back as its exit status.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        VaultOptions options;
        options.initial_map_size = 4u << 20;
        auto vault = test::open_vault(dir / "state", key, options);
        if (!vault) {
            std::_Exit(10);
        }
        const std::string big(64 * 1024, 'z');
        // A first write, so that the writer thread's allocations are in place.
        if (!test::put(**vault, Table::blobs, "warm-up", big)) {
            std::_Exit(13);
        }
        const rlimit limit{address_space_in_use() + (3u << 20), RLIM_INFINITY};
        if (::setrlimit(RLIMIT_AS, &limit) != 0) {
            std::_Exit(11);
        }
        for (int i = 0; i < 200; ++i) {  // 12 MiB into a 4 MiB map
            if (!test::put(**vault, Table::blobs, fmt::format("blob{:03}", i), big)) {
                std::_Exit(12);  // refused for another allocation: the limit was too tight
            }
        }
        std::_Exit(0);  // every growth succeeded: the limit did not bite
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    INFO("signalled " << WIFSIGNALED(status) << ", signal " << WTERMSIG(status));
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == EXIT_FAILURE);
}

TEST_CASE("appends take keys in order only and fill their pages", "[vault]") {
    TempDir dir;
    const auto key = test::key_at(dir / "k");
    auto vault = test::open_vault(dir / "state", key);
    REQUIRE(vault);
    // The same records, in key order, inserted into one table and appended to another.
    constexpr int k_records = 2000;
    const std::string value(400, 'v');
    REQUIRE((*vault)->write([&](WriteTxn& txn) -> Status {
        for (int i = 0; i < k_records; ++i) {
            const std::string k = fmt::format("{:08}", i);
            TRY(txn.insert(Table::agents, k, value));
            TRY(txn.append(Table::audit, k, value));
        }
        return {};
    }));
    const Status earlier = (*vault)->write(
        [&](WriteTxn& txn) { return txn.append(Table::audit, fmt::format("{:08}", 5), value); });
    REQUIRE_FALSE(earlier);
    CHECK(earlier.error().code == Code::conflict);
    CHECK(text(get(**vault, Table::audit, fmt::format("{:08}", 5))) == value);
    vault->reset();

    auto env = lmdb::Env::open((dir / "state").string(), {.max_dbs = 32});
    REQUIRE(env);
    auto txn = lmdb::Txn::begin(env->get(), nullptr, MDB_RDONLY);
    REQUIRE(txn);
    auto leaf_pages = [&](const char* name) {
        MDB_dbi dbi = 0;
        REQUIRE(mdb_dbi_open(txn->get(), name, 0, &dbi) == 0);
        MDB_stat st{};
        REQUIRE(mdb_stat(txn->get(), dbi, &st) == 0);
        CHECK(st.ms_entries == k_records);
        return st.ms_leaf_pages;
    };
    const size_t inserted = leaf_pages("agents");
    const size_t appended = leaf_pages("audit");
    // Inserting in key order already leaves pages about seven-eighths full here; appending
    // leaves them full (250 pages against 286).
    CHECK(appended < inserted);
}
