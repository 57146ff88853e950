#include "daemon/vault/lmdb.hpp"

#include <fmt/format.h>

namespace agentgw::lmdb {

Error error(int rc, std::string_view what) {
    Code code = Code::io_error;
    switch (rc) {
        case MDB_NOTFOUND:
            code = Code::not_found;
            break;
        // MDB_MAP_FULL, MDB_READERS_FULL, MDB_TXN_FULL, MDB_DBS_FULL: the store is out of room,
        // which is no fault of the request (not exhausted, a 413): io_error, as the default.
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
        case MDB_INVALID:
        case MDB_VERSION_MISMATCH:
            code = Code::corrupt;
            break;
        case MDB_KEYEXIST:
            code = Code::conflict;
            break;
        case EACCES:
        case EPERM:
            code = Code::permission_denied;
            break;
        default:
            break;
    }
    return make_error(code, fmt::format("{}: {}", what, mdb_strerror(rc)));
}

Result<Env> Env::open(const std::string& dir, const Options& options) {
    MDB_env* raw = nullptr;
    if (int rc = mdb_env_create(&raw); rc != 0) {
        return error(rc, "cannot create LMDB environment");
    }
    Env env(raw);
    int rc = 0;
    if (options.max_dbs != 0 && (rc = mdb_env_set_maxdbs(raw, options.max_dbs)) != 0) {
        return error(rc, "cannot set LMDB max databases");
    }
    if (options.max_readers != 0 && (rc = mdb_env_set_maxreaders(raw, options.max_readers)) != 0) {
        return error(rc, "cannot set LMDB max readers");
    }
    if (options.map_size != 0 && (rc = mdb_env_set_mapsize(raw, options.map_size)) != 0) {
        return error(rc, "cannot set LMDB map size");
    }
    if ((rc = mdb_env_open(raw, dir.c_str(), options.flags, options.mode)) != 0) {
        return error(rc, fmt::format("cannot open LMDB environment in {}", dir));
    }
    return env;
}

Result<Txn> Txn::begin(MDB_env* env, MDB_txn* parent, unsigned flags) {
    MDB_txn* raw = nullptr;
    if (int rc = mdb_txn_begin(env, parent, flags, &raw); rc != 0) {
        return error(rc, "cannot begin LMDB transaction");
    }
    return Txn(raw);
}

Result<Cursor> Cursor::open(MDB_txn* txn, MDB_dbi dbi) {
    MDB_cursor* raw = nullptr;
    if (int rc = mdb_cursor_open(txn, dbi, &raw); rc != 0) {
        return error(rc, "cannot open LMDB cursor");
    }
    return Cursor(raw);
}

}  // namespace agentgw::lmdb
