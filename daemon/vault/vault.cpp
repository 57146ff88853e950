#include "daemon/vault/vault.hpp"

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fs.hpp"
#include "common/unique_fd.hpp"

namespace agentgw {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view k_table_names[k_table_count] = {
    "settings",    "users", "user_names",  "agents", "agent_names", "agent_keys",
    "credentials", "blobs", "blob_expiry", "audit",  "blob_usage",  "device_flows",
};
constexpr const char* k_meta_table = "meta";
constexpr std::string_view k_envelope_key = "key_envelope";
constexpr uint32_t k_first_key_id = 1;
constexpr unsigned k_max_dbs = 32;
constexpr unsigned k_max_readers = 512;
constexpr int k_max_growths_per_batch = 16;

// The map never grows past this: a write that would need more fails as a full vault.
constexpr size_t k_max_map_size = size_t{1} << 40;  // 1 TiB of address space, not of disk

// The envelope as stored, from an open transaction; nullopt when the vault is uninitialised.
Result<std::optional<KeyEnvelope>> read_envelope(MDB_txn* txn) {
    // A vault is created in one transaction (tables and envelope together), so a data file
    // without an envelope is new only if it holds no tables at all. Otherwise re-creating it
    // would put a fresh data key over records sealed under the old one.
    auto missing = [txn]() -> Result<std::optional<KeyEnvelope>> {
        MDB_dbi main = 0;
        MDB_stat st{};
        if (mdb_dbi_open(txn, nullptr, 0, &main) == 0 && mdb_stat(txn, main, &st) == 0 &&
            st.ms_entries == 0) {
            return std::optional<KeyEnvelope>{};
        }
        return make_error(Code::corrupt, "the vault has tables but no key envelope");
    };
    MDB_dbi meta = 0;
    if (int rc = mdb_dbi_open(txn, k_meta_table, 0, &meta); rc == MDB_NOTFOUND) {
        return missing();
    } else if (rc != 0) {
        return lmdb::error(rc, "cannot open the vault's meta table");
    }
    MDB_val key = lmdb::to_val(k_envelope_key);
    MDB_val value{};
    if (int rc = mdb_get(txn, meta, &key, &value); rc == MDB_NOTFOUND) {
        return missing();
    } else if (rc != 0) {
        return lmdb::error(rc, "cannot read the vault's key envelope");
    }
    TRY_ASSIGN(auto envelope, KeyEnvelope::from_json(lmdb::view(value)));
    return std::optional<KeyEnvelope>(std::move(envelope));
}

Error batch_error(int rc) {
    return lmdb::error(rc, "vault write failed");
}

// For a state the vault cannot leave while the process lives. Nothing of the failed batch was
// acknowledged; the supervisor starts the daemon again (agentgwd.service: Restart=on-failure),
// and LMDB opens on the last commit that reached the disk whole.
[[noreturn]] void stop_unusable(std::string_view why) {
    spdlog::critical("{}; the vault cannot be used any more, stopping", why);
    spdlog::shutdown();
    std::_Exit(EXIT_FAILURE);
}

}  // namespace

std::string_view table_name(Table table) noexcept {
    return k_table_names[static_cast<size_t>(table)];
}

// ---- ReadTxn / WriteTxn ----------------------------------------------------------------

namespace {

// LMDB's default maximum key size: keys outside 1..511 bytes cannot be stored, and LMDB
// refuses to look them up (MDB_BAD_VALSIZE) rather than not finding them.
constexpr size_t k_max_key = 511;

bool storable_key(std::string_view key) {
    return !key.empty() && key.size() <= k_max_key;
}

}  // namespace

Result<std::optional<SecretBytes>> ReadTxn::get(Table table, std::string_view key) const {
    if (!storable_key(key)) {
        return std::optional<SecretBytes>{};  // no record can have it: a name or id from
                                              // outside, say, that is empty or too long
    }
    MDB_val k = lmdb::to_val(key);
    MDB_val v{};
    const int rc = mdb_get(txn_, vault_.dbi(table), &k, &v);
    if (rc == MDB_NOTFOUND) {
        return std::optional<SecretBytes>{};
    }
    if (rc != 0) {
        return lmdb::error(rc, fmt::format("cannot read from {}", table_name(table)));
    }
    TRY_ASSIGN(auto plain, vault_.cipher_.open(table_name(table), key, lmdb::view(v)));
    return std::optional<SecretBytes>(std::move(plain));
}

Status ReadTxn::scan(Table table, std::string_view prefix,
                     const std::function<bool(std::string_view, SecretBytes)>& fn) const {
    Status failed;
    TRY(scan_checked(table, prefix, [&](std::string_view key, Result<SecretBytes> value) {
        if (!value) {
            failed = std::move(value).error();
            return false;
        }
        return fn(key, std::move(*value));
    }));
    return failed;
}

Status ReadTxn::scan_from(Table table, std::string_view from,
                          const std::function<bool(std::string_view, SecretBytes)>& fn) const {
    TRY_ASSIGN(auto cursor, lmdb::Cursor::open(txn_, vault_.dbi(table)));
    MDB_val k = lmdb::to_val(from);
    MDB_val v{};
    int rc = mdb_cursor_get(cursor.get(), &k, &v, from.empty() ? MDB_FIRST : MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT)) {
        const std::string_view key = lmdb::view(k);
        TRY_ASSIGN(auto plain, vault_.cipher_.open(table_name(table), key, lmdb::view(v)));
        if (!fn(key, std::move(plain))) {
            return {};
        }
    }
    if (rc != MDB_NOTFOUND) {
        return lmdb::error(rc, fmt::format("cannot scan {}", table_name(table)));
    }
    return {};
}

Status ReadTxn::scan_checked(
    Table table, std::string_view prefix,
    const std::function<bool(std::string_view, Result<SecretBytes>)>& fn) const {
    TRY_ASSIGN(auto cursor, lmdb::Cursor::open(txn_, vault_.dbi(table)));
    MDB_val k = lmdb::to_val(prefix);
    MDB_val v{};
    int rc = mdb_cursor_get(cursor.get(), &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT)) {
        const std::string_view key = lmdb::view(k);
        if (!key.starts_with(prefix)) {
            return {};
        }
        if (!fn(key, vault_.cipher_.open(table_name(table), key, lmdb::view(v)))) {
            return {};
        }
    }
    if (rc != MDB_NOTFOUND) {
        return lmdb::error(rc, fmt::format("cannot scan {}", table_name(table)));
    }
    return {};
}

Result<size_t> ReadTxn::count(Table table) const {
    MDB_stat st{};
    if (int rc = mdb_stat(txn_, vault_.dbi(table), &st); rc != 0) {
        return lmdb::error(rc, fmt::format("cannot count {}", table_name(table)));
    }
    return st.ms_entries;
}

Status WriteTxn::check(int rc, std::string_view what) {
    if (rc == MDB_MAP_FULL) {
        map_full_ = true;
    }
    return rc == 0 ? Status{} : Status{lmdb::error(rc, what)};
}

Status WriteTxn::put_raw(MDB_dbi dbi, std::string_view key, std::string_view value,
                         unsigned flags) {
    if (!storable_key(key)) {
        return make_error(Code::invalid_argument, "vault keys must be 1 to 511 bytes");
    }
    MDB_val k = lmdb::to_val(key);
    MDB_val v = lmdb::to_val(value);
    const int rc = mdb_put(txn_, dbi, &k, &v, flags);
    if (rc == MDB_KEYEXIST) {
        return make_error(Code::conflict, "the record exists already");
    }
    return check(rc, "cannot write to the vault");
}

Status WriteTxn::put(Table table, std::string_view key, std::string_view value) {
    touch(table);
    return put_raw(vault_.dbi(table), key, vault_.cipher_.seal(table_name(table), key, value), 0);
}

Status WriteTxn::insert(Table table, std::string_view key, std::string_view value) {
    touch(table);
    return put_raw(vault_.dbi(table), key, vault_.cipher_.seal(table_name(table), key, value),
                   MDB_NOOVERWRITE);
}

Status WriteTxn::append(Table table, std::string_view key, std::string_view value) {
    touch(table);
    return put_raw(vault_.dbi(table), key, vault_.cipher_.seal(table_name(table), key, value),
                   MDB_APPEND);
}

Result<bool> WriteTxn::erase(Table table, std::string_view key) {
    touch(table);
    if (!storable_key(key)) {
        return false;
    }
    MDB_val k = lmdb::to_val(key);
    const int rc = mdb_del(txn_, vault_.dbi(table), &k, nullptr);
    if (rc == MDB_NOTFOUND) {
        return false;
    }
    TRY(check(rc, fmt::format("cannot delete from {}", table_name(table))));
    return true;
}

// ---- Vault -------------------------------------------------------------------------------

Result<std::optional<KeyEnvelope>> Vault::probe(const fs::path& dir) {
    std::error_code ec;
    if (!fs::exists(dir / "data.mdb", ec)) {
        return std::optional<KeyEnvelope>{};
    }
    // Read-only and without the lock file, so probing (and refusing a wrong key) leaves every
    // file byte-identical. The caller holds the StateLock, so no writer runs meanwhile.
    TRY_ASSIGN(auto env,
               lmdb::Env::open(dir.string(), {.flags = MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS,
                                              .max_dbs = k_max_dbs}));
    TRY_ASSIGN(auto txn, lmdb::Txn::begin(env.get(), nullptr, MDB_RDONLY));
    return read_envelope(txn.get());
}

Result<std::unique_ptr<Vault>> Vault::open(const VaultOptions& options, StateLock lock,
                                           const MasterSecret& master) {
    const fs::path& dir = options.dir;
    // LMDB would open files of any mode; existing ones must be as private as new ones (0600).
    for (const char* name : {"data.mdb", "lock.mdb"}) {
        UniqueFd fd(::open((dir / name).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.valid()) {
            TRY(check_private_fd(fd.get(), dir / name));
        } else if (errno != ENOENT) {
            return errno_error(Code::io_error, fmt::format("cannot open {}", (dir / name).string()),
                               errno);
        }
    }
    TRY_ASSIGN(auto existing, probe(dir));
    SecureBuffer data_key;
    uint32_t key_id = k_first_key_id;
    if (existing) {
        TRY_ASSIGN(data_key, unwrap_data_key(*existing, master));
        key_id = existing->key_id;
    }

    // Never MDB_NOMEMINIT: LMDB must zero fresh pages, or freed heap memory (which may have
    // held plaintext) could be written into the data file.
    TRY_ASSIGN(auto env, lmdb::Env::open(dir.string(), {.flags = MDB_NOTLS,
                                                        .map_size = options.initial_map_size,
                                                        .max_dbs = k_max_dbs,
                                                        .max_readers = k_max_readers,
                                                        .mode = 0600}));
    int dead = 0;
    if (int rc = mdb_reader_check(env.get(), &dead); rc != 0) {
        return lmdb::error(rc, "cannot check the vault's reader table");
    }
    if (dead > 0) {
        spdlog::info("cleared {} stale reader slot(s) left by a dead process", dead);
    }

    std::optional<KeyEnvelope> created;
    if (!existing) {
        data_key = SecureBuffer::random(RecordCipher::k_key_size);
        data_key.make_readonly();
        TRY_ASSIGN(created, wrap_data_key(data_key, key_id, master, options.pwhash));
    }

    auto vault = std::unique_ptr<Vault>(
        new Vault(options, std::move(lock), std::move(env), std::move(data_key), key_id));

    // Open every table once, in one transaction, and store a new vault's envelope with them.
    TRY_ASSIGN(auto txn, lmdb::Txn::begin(vault->env_.get(), nullptr, 0));
    if (int rc = mdb_dbi_open(txn.get(), k_meta_table, MDB_CREATE, &vault->meta_dbi_); rc != 0) {
        return lmdb::error(rc, "cannot open the vault's meta table");
    }
    for (size_t i = 0; i < k_table_count; ++i) {
        const std::string name(k_table_names[i]);
        if (int rc = mdb_dbi_open(txn.get(), name.c_str(), MDB_CREATE, &vault->dbis_[i]); rc != 0) {
            return lmdb::error(rc, fmt::format("cannot open vault table {}", name));
        }
    }
    if (created) {
        const std::string json = created->to_json();
        MDB_val k = lmdb::to_val(k_envelope_key);
        MDB_val v = lmdb::to_val(json);
        if (int rc = mdb_put(txn.get(), vault->meta_dbi_, &k, &v, 0); rc != 0) {
            return lmdb::error(rc, "cannot store the vault's key envelope");
        }
    }
    if (int rc = txn.commit(); rc != 0) {
        return lmdb::error(rc, "cannot initialise the vault");
    }
    vault->writer_ = std::thread([v = vault.get()] { v->writer_loop(); });
    return vault;
}

Vault::Vault(const VaultOptions& options, StateLock lock, lmdb::Env env, SecureBuffer data_key,
             uint32_t key_id)
    : options_(options),
      lock_(std::move(lock)),
      env_(std::move(env)),
      data_key_(std::move(data_key)),
      cipher_(data_key_, key_id) {
    if (options_.max_batch == 0) {
        options_.max_batch = 1;
    }
}

Vault::~Vault() {
    {
        std::lock_guard lk(queue_mutex_);
        stopping_ = true;
    }
    queue_cv_.notify_all();
    if (writer_.joinable()) {
        writer_.join();
    }
}

namespace {
// How many Vault::read calls are active on this thread: a write from inside one would wait for
// a commit that may first need the read to end (to grow the map).
thread_local int t_reads_active = 0;
}  // namespace

Status Vault::read(const std::function<Status(const ReadTxn&)>& fn) const {
    std::shared_lock lk(resize_mutex_);
    ++t_reads_active;
    struct Leave {
        ~Leave() { --t_reads_active; }
    } leave;
    TRY_ASSIGN(auto txn, lmdb::Txn::begin(env_.get(), nullptr, MDB_RDONLY));
    const ReadTxn view(txn.get(), *this);
    return fn(view);
}

Result<std::optional<SecretBytes>> Vault::get(Table table, std::string_view key) const {
    std::optional<SecretBytes> out;
    TRY(read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(out, txn.get(table, key));
        return {};
    }));
    return out;
}

void Vault::submit(WriteFn fn, DoneFn done) {
    {
        std::lock_guard lk(queue_mutex_);
        if (!stopping_) {
            queue_.push_back({std::move(fn), std::move(done)});
            queue_cv_.notify_one();
            return;
        }
    }
    done(make_error(Code::unavailable, "the vault is closing"));
}

Status Vault::write(WriteFn fn) {
    if (t_reads_active > 0) {
        return make_error(Code::internal, "Vault::write called inside Vault::read");
    }
    auto promise = std::make_shared<std::promise<Status>>();
    auto future = promise->get_future();
    submit(std::move(fn), [promise](Status s) { promise->set_value(std::move(s)); });
    return future.get();
}

Status Vault::change_master_key(const MasterSecret& next, PwhashParams params) {
    TRY_ASSIGN(auto envelope, wrap_data_key(data_key_, cipher_.key_id(), next, params));
    const std::string json = envelope.to_json();
    return write(
        [this, &json](WriteTxn& txn) { return txn.put_raw(meta_dbi_, k_envelope_key, json, 0); });
}

VaultStats Vault::stats() const {
    MDB_envinfo info{};
    {
        const std::shared_lock lk(resize_mutex_);  // the info is read through the map
        mdb_env_info(env_.get(), &info);
    }
    unsigned flags = 0;
    mdb_env_get_flags(env_.get(), &flags);
    const bool full_sync = (flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP)) == 0;
    return {commits_.load(), writes_.load(), map_growths_.load(), info.me_mapsize, full_sync};
}

void Vault::writer_loop() {
    std::deque<Request> batch;
    for (;;) {
        {
            std::unique_lock lk(queue_mutex_);
            queue_cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) {
                return;  // stopping, and everything queued has been committed
            }
            const size_t n = std::min(queue_.size(), options_.max_batch);
            std::move(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n),
                      std::back_inserter(batch));
            queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
        }
        commit_batch(batch);
        batch.clear();
    }
}

void Vault::commit_batch(std::deque<Request>& batch) {
    std::vector<Status> results(batch.size());
    int rc = run_batch(batch, results);
    for (int growths = 0; rc == MDB_MAP_FULL && growths < k_max_growths_per_batch; ++growths) {
        grow_map();
        rc = run_batch(batch, results);
    }
    if (rc != 0) {
        const Error error = batch_error(rc);
        if (environment_failed()) {
            stop_unusable(error.message);
        }
        spdlog::error("{}", error.message);
        std::fill(results.begin(), results.end(), Status{error});
    }
    for (size_t i = 0; i < batch.size(); ++i) {
        batch[i].done(std::move(results[i]));
    }
}

int Vault::run_batch(std::deque<Request>& batch, std::vector<Status>& results) {
    std::shared_lock lk(resize_mutex_);
    MDB_txn* raw = nullptr;
    if (int rc = mdb_txn_begin(env_.get(), nullptr, 0, &raw); rc != 0) {
        return rc;
    }
    auto parent = lmdb::Txn::adopt(raw);
    uint64_t succeeded = 0;
    uint32_t touched = 0;  // tables written to (by a request that failed, too: no harm)
    for (size_t i = 0; i < batch.size(); ++i) {
        // Each request gets a nested transaction, so one request's failure leaves the others'
        // changes in the batch.
        if (int rc = mdb_txn_begin(env_.get(), parent.get(), 0, &raw); rc != 0) {
            return rc;
        }
        auto child = lmdb::Txn::adopt(raw);
        WriteTxn txn(child.get(), *this);
        Status status;
        try {
            status = batch[i].fn(txn);
        } catch (const std::exception& e) {
            status = make_error(Code::internal, fmt::format("vault write failed: {}", e.what()));
        }
        touched |= txn.touched_;
        if (txn.map_full_) {
            return MDB_MAP_FULL;
        }
        if (status) {
            if (int rc = child.commit(); rc == MDB_MAP_FULL) {
                return rc;
            } else if (rc != 0) {
                status = lmdb::error(rc, "vault write failed");
            } else {
                ++succeeded;
            }
        }
        results[i] = std::move(status);
    }
    if (int rc = parent.commit(); rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < k_table_count; ++i) {
        if (touched & (1u << i)) {
            table_versions_[i].fetch_add(1, std::memory_order_release);
        }
    }
    commits_.fetch_add(1, std::memory_order_relaxed);
    writes_.fetch_add(succeeded, std::memory_order_relaxed);
    return 0;
}

bool Vault::environment_failed() const {
    // LMDB refuses every transaction, reads too, once it could not write the meta page that
    // completes a commit (a failing disk): a daemon that went on would answer errors only.
    std::shared_lock lk(resize_mutex_);
    MDB_txn* txn = nullptr;
    const int rc = mdb_txn_begin(env_.get(), nullptr, MDB_RDONLY, &txn);
    if (rc == 0) {
        mdb_txn_abort(txn);
    }
    return rc == MDB_PANIC;
}

void Vault::grow_map() {
    std::unique_lock lk(resize_mutex_);
    MDB_envinfo info{};
    mdb_env_info(env_.get(), &info);
    if (info.me_mapsize >= k_max_map_size) {
        return;  // the batch fails as MDB_MAP_FULL
    }
    const size_t next = std::min(info.me_mapsize * 2, k_max_map_size);
    if (int rc = mdb_env_set_mapsize(env_.get(), next); rc != 0) {
        // LMDB unmapped the old map before it failed to make the new one (under an address
        // space limit, say): the environment has no map now, and the next transaction would
        // read through a dangling pointer. Nothing of the batch was acknowledged; stop here,
        // while the exclusive lock keeps every reader out.
        stop_unusable(
            fmt::format("cannot grow the vault map to {} bytes: {}", next, mdb_strerror(rc)));
    }
    map_growths_.fetch_add(1);
    spdlog::info("vault map grown to {} MiB", next >> 20);
}

}  // namespace agentgw
