// Thin RAII owners for LMDB handles, and conversions between MDB_val and string_view.
// LmdbEnv is safe to share between threads (LMDB's own rules apply: one write transaction at
// a time, MDB_NOTLS read transactions may move between threads but not be used concurrently).
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <lmdb.h>

#include "common/result.hpp"

namespace agentgw::lmdb {

// An Error for an LMDB return code. MDB_NOTFOUND maps to not_found; a store out of room
// (MDB_MAP_FULL and the like) to io_error, as any other failure of the store.
Error error(int rc, std::string_view what);

inline MDB_val to_val(std::string_view s) noexcept {
    return MDB_val{s.size(), const_cast<char*>(s.data())};
}

inline std::string_view view(const MDB_val& v) noexcept {
    return {static_cast<const char*>(v.mv_data), v.mv_size};
}

class Env {
  public:
    Env() = default;
    Env(Env&& other) noexcept : env_(std::exchange(other.env_, nullptr)) {}
    Env& operator=(Env&& other) noexcept {
        if (this != &other) {
            close();
            env_ = std::exchange(other.env_, nullptr);
        }
        return *this;
    }
    Env(const Env&) = delete;
    Env& operator=(const Env&) = delete;
    ~Env() { close(); }

    struct Options {
        unsigned flags = 0;
        size_t map_size = 0;  // 0 keeps LMDB's default (or the file's recorded size)
        unsigned max_dbs = 0;
        unsigned max_readers = 0;
        mdb_mode_t mode = 0600;
    };
    // Opens the environment directory `dir` (which must exist).
    static Result<Env> open(const std::string& dir, const Options& options);

    MDB_env* get() const noexcept { return env_; }
    void close() noexcept {
        if (env_ != nullptr) {
            mdb_env_close(std::exchange(env_, nullptr));
        }
    }

  private:
    explicit Env(MDB_env* env) : env_(env) {}
    MDB_env* env_ = nullptr;
};

// A transaction, aborted on destruction unless committed.
class Txn {
  public:
    Txn() = default;
    Txn(Txn&& other) noexcept : txn_(std::exchange(other.txn_, nullptr)) {}
    Txn& operator=(Txn&& other) noexcept {
        if (this != &other) {
            abort();
            txn_ = std::exchange(other.txn_, nullptr);
        }
        return *this;
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    ~Txn() { abort(); }

    static Result<Txn> begin(MDB_env* env, MDB_txn* parent, unsigned flags);
    // Takes ownership of a transaction begun with mdb_txn_begin.
    static Txn adopt(MDB_txn* txn) noexcept { return Txn(txn); }

    MDB_txn* get() const noexcept { return txn_; }
    // Returns the LMDB code; the handle is released either way.
    int commit() noexcept { return mdb_txn_commit(std::exchange(txn_, nullptr)); }
    void abort() noexcept {
        if (txn_ != nullptr) {
            mdb_txn_abort(std::exchange(txn_, nullptr));
        }
    }

  private:
    explicit Txn(MDB_txn* txn) : txn_(txn) {}
    MDB_txn* txn_ = nullptr;
};

// A cursor, closed on destruction (it must not outlive its transaction).
class Cursor {
  public:
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;
    ~Cursor() {
        if (cursor_ != nullptr) {
            mdb_cursor_close(cursor_);
        }
    }
    static Result<Cursor> open(MDB_txn* txn, MDB_dbi dbi);
    Cursor(Cursor&& other) noexcept : cursor_(std::exchange(other.cursor_, nullptr)) {}
    MDB_cursor* get() const noexcept { return cursor_; }

  private:
    explicit Cursor(MDB_cursor* cursor) : cursor_(cursor) {}
    MDB_cursor* cursor_ = nullptr;
};

}  // namespace agentgw::lmdb
