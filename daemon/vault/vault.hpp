// Vault: the daemon's encrypted store. An LMDB environment in the state directory whose
// values are all sealed (RecordCipher) under a data key; the data key is wrapped by the
// master secret (KeyEnvelope) in the plaintext `meta` table.
//
// Thread-safety: every public member may be called from any thread. Reads run in short
// MDB_NOTLS read transactions on the caller's thread and never wait for the writer. Writes are
// queued to one writer thread that commits whatever has queued up together (group commit:
// many requests, one fsync) and then tells each caller its outcome.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <thread>

#include "common/result.hpp"
#include "daemon/crypto/key_envelope.hpp"
#include "daemon/crypto/master_key.hpp"
#include "daemon/crypto/record_cipher.hpp"
#include "daemon/vault/lmdb.hpp"
#include "daemon/vault/state_lock.hpp"

namespace agentgw {

class Vault;

// The named databases, opened once at start. Keys are never secret; values are sealed.
enum class Table : uint8_t {
    settings,      // daemon-wide settings and keys (e.g. the session signing key)
    users,         // user id -> user record
    user_names,    // username -> user id
    agents,        // agent id -> agent record
    agent_names,   // agent name -> agent id
    agent_keys,    // lookup hash of an agent key -> agent id
    credentials,   // service/scope key -> credential
    blobs,         // lookup hash of a data token -> hub blob
    blob_expiry,   // be64(expiry ms) | blob key -> {publisher id, data size}
    audit,         // be64(sequence) -> audit entry
    blob_usage,    // agent id -> that agent's live hub blobs and bytes (for the quotas)
    device_flows,  // flow id -> an OAuth2 device authorization in progress or just finished
};
inline constexpr size_t k_table_count = 12;
std::string_view table_name(Table table) noexcept;

struct VaultOptions {
    std::filesystem::path dir;  // the state directory (must exist, 0700)
    // Address space reserved up front (the file grows only as used); doubles when it fills.
    size_t initial_map_size = size_t{1} << 30;
    size_t max_batch = 1024;  // most write requests per commit (1 = no grouping)
    PwhashParams pwhash = PwhashParams::moderate();  // for new passphrase-protected vaults
};

class ReadTxn {
  public:
    ReadTxn(const ReadTxn&) = delete;
    ReadTxn& operator=(const ReadTxn&) = delete;

    // The opened value, std::nullopt when absent, Code::corrupt when it fails authentication.
    Result<std::optional<SecretBytes>> get(Table table, std::string_view key) const;

    // Visits records whose key starts with `prefix`, in key order, until `fn` returns false.
    Status scan(Table table, std::string_view prefix,
                const std::function<bool(std::string_view key, SecretBytes value)>& fn) const;

    // As scan(), but a record that fails to open is handed to `fn` as its error instead of
    // ending the scan (for integrity checks that must name the broken record).
    Status scan_checked(
        Table table, std::string_view prefix,
        const std::function<bool(std::string_view key, Result<SecretBytes> value)>& fn) const;

    // Visits records from the first key >= `from`, in key order, until `fn` returns false.
    Status scan_from(Table table, std::string_view from,
                     const std::function<bool(std::string_view key, SecretBytes value)>& fn) const;

    Result<size_t> count(Table table) const;

  protected:
    friend class Vault;
    ReadTxn(MDB_txn* txn, const Vault& vault) : txn_(txn), vault_(vault) {}
    MDB_txn* txn_;
    const Vault& vault_;
};

class WriteTxn : public ReadTxn {
  public:
    // Inserts or replaces.
    Status put(Table table, std::string_view key, std::string_view value);
    // Inserts; fails with Code::conflict when the key exists.
    Status insert(Table table, std::string_view key, std::string_view value);
    // Inserts a key greater than every key in the table (fails with Code::conflict
    // otherwise). LMDB skips the search and leaves each page it fills full: for a table
    // written in key order, such as the audit log, about an eighth fewer pages than insert.
    Status append(Table table, std::string_view key, std::string_view value);
    // Removes the key; returns whether it existed.
    Result<bool> erase(Table table, std::string_view key);

  private:
    friend class Vault;
    using ReadTxn::ReadTxn;
    Status put_raw(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags);
    Status check(int rc, std::string_view what);
    void touch(Table table) noexcept { touched_ |= 1u << static_cast<unsigned>(table); }
    bool map_full_ = false;
    uint32_t touched_ = 0;  // a bit per table this request wrote to
};

struct VaultStats {
    uint64_t commits = 0;  // write transactions committed
    uint64_t writes = 0;   // write requests that succeeded
    uint64_t map_growths = 0;
    size_t map_size = 0;
    bool full_sync = false;  // LMDB flushes every commit (no NOSYNC, NOMETASYNC, WRITEMAP)
};

class Vault {
  public:
    // A write request. It runs on the writer thread inside its own nested transaction: an error
    // return rolls back only its changes. It may run more than once (after the map grows), so
    // it must have no effect outside `txn` other than recording its result.
    using WriteFn = std::function<Status(WriteTxn& txn)>;
    // Told the outcome once the batch holding the request is durable (or failed). Runs on the
    // writer thread (or on the caller's, when the vault is already closing): it must be quick
    // and must not call Vault::write.
    using DoneFn = std::function<void(Status)>;

    // The key envelope of the vault in `dir`, or std::nullopt when there is no initialised
    // vault there. Reads without taking LMDB's lock and writes nothing.
    static Result<std::optional<KeyEnvelope>> probe(const std::filesystem::path& dir);

    // Opens the vault in options.dir, creating it when absent. A master secret that does not
    // unlock an existing vault fails with Code::unauthenticated before any file is touched.
    static Result<std::unique_ptr<Vault>> open(const VaultOptions& options, StateLock lock,
                                               const MasterSecret& master);

    Vault(const Vault&) = delete;
    Vault& operator=(const Vault&) = delete;
    // Commits every queued write, then closes the environment.
    ~Vault();

    Status read(const std::function<Status(const ReadTxn&)>& fn) const;
    Result<std::optional<SecretBytes>> get(Table table, std::string_view key) const;

    void submit(WriteFn fn, DoneFn done);
    // submit() and wait until durable. Must not be called from the writer thread, nor inside
    // read() (that fails with Code::internal rather than risk a deadlock).
    Status write(WriteFn fn);

    // Rewraps the data key under `next` (and, for a passphrase, fresh Argon2id salt and
    // `params`). Records are not rewritten.
    Status change_master_key(const MasterSecret& next, PwhashParams params);

    const RecordCipher& cipher() const noexcept { return cipher_; }
    const std::filesystem::path& dir() const noexcept { return lock_.dir(); }
    VaultStats stats() const;

    // A number that changes once a commit that wrote to `table` is durable, before any of
    // that commit's callers is told. A cache of what a table holds stays valid while it is
    // unchanged, provided the version was read before the records: data read before a write
    // committed is then tagged with a version the write has since moved past.
    uint64_t version(Table table) const noexcept {
        return table_versions_[static_cast<size_t>(table)].load(std::memory_order_acquire);
    }

  private:
    friend class ReadTxn;
    friend class WriteTxn;
    struct Request {
        WriteFn fn;
        DoneFn done;
    };

    Vault(const VaultOptions& options, StateLock lock, lmdb::Env env, SecureBuffer data_key,
          uint32_t key_id);
    MDB_dbi dbi(Table table) const noexcept { return dbis_[static_cast<size_t>(table)]; }
    void writer_loop();
    void commit_batch(std::deque<Request>& batch);
    // Whether LMDB has given up on the environment (MDB_PANIC).
    bool environment_failed() const;
    // Runs the batch in one transaction; returns MDB_MAP_FULL when it must be retried.
    int run_batch(std::deque<Request>& batch, std::vector<Status>& results);
    void grow_map();

    VaultOptions options_;
    StateLock lock_;
    lmdb::Env env_;
    SecureBuffer data_key_;
    RecordCipher cipher_;
    MDB_dbi meta_dbi_ = 0;
    MDB_dbi dbis_[k_table_count] = {};

    // Shared by every transaction, exclusive while the map is resized: LMDB allows
    // mdb_env_set_mapsize only when no transaction is active in the process.
    mutable std::shared_mutex resize_mutex_;

    mutable std::mutex queue_mutex_;  // guards queue_ and stopping_
    std::condition_variable queue_cv_;
    std::deque<Request> queue_;
    bool stopping_ = false;

    std::atomic<uint64_t> commits_{0};
    std::atomic<uint64_t> writes_{0};
    std::atomic<uint64_t> map_growths_{0};
    std::array<std::atomic<uint64_t>, k_table_count> table_versions_{};
    std::thread writer_;
};

}  // namespace agentgw
