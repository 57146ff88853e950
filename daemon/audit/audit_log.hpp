// AuditLog: the tamper-evident record of what happened (SPEC §11). Entries live in the vault's
// audit table, keyed by sequence number, each holding the BLAKE2b hash that chains it to the
// one before. record() never blocks the caller: entries are appended by the vault's writer
// thread, in the same group commits as everything else. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

struct AuditEvent {
    std::string actor;    // "uid:1000", "agent:<id>" or "system"
    std::string action;   // "user.create", "agent.rotate", "login", ...
    std::string target;   // what it acted on ("agent:<id>", "service:openai", ...)
    std::string outcome;  // "ok", or the error type
    nlohmann::json details = nlohmann::json::object();  // never a secret
};

// Writes an audit event's details as the text the log stores: a JSON object exactly as
// nlohmann::json::dump() writes it (no spaces, keys sorted), without building the object.
// Members must be added in increasing key order.
class DetailsText {
  public:
    DetailsText& add(std::string_view key, std::string_view value);
    DetailsText& add(std::string_view key, const char* value) {
        return add(key, std::string_view(value));  // not the bool overload
    }
    DetailsText& add(std::string_view key, bool value);
    DetailsText& add(std::string_view key, int64_t value);
    DetailsText& add(std::string_view key, uint64_t value);
    // The finished object; the writer is empty afterwards.
    std::string take();

  private:
    void begin_member(std::string_view key);

    std::string text_;
    std::string last_key_;  // the last key added, to check the order
};

struct AuditQuery {
    uint64_t after = 0;                  // entries with seq > after
    std::optional<int64_t> since;        // entries at or after this Unix time
    std::optional<std::string> agent;    // entries about this agent id (actor, target, details)
    std::optional<std::string> service;  // entries about this service id
    std::optional<std::string> action;
    size_t limit = 100;
};

struct AuditPage {
    std::vector<nlohmann::json> entries;
    uint64_t next = 0;  // pass as `after` to continue
};

struct AuditVerification {
    bool ok = true;
    uint64_t entries = 0;
    uint64_t first_seq = 0;
    uint64_t last_seq = 0;
    std::optional<uint64_t> broken_seq;
    std::string message;
};

class AuditLog {
  public:
    AuditLog(Vault& vault, const Clock& clock) : vault_(vault), clock_(clock) {}

    // Call once at start, before recording. In a vault just made (or one whose first start
    // was cut short, holding nothing yet), writes the chain's starting head. In one that had
    // a log, a missing head means the log was cut at its end or emptied: the chain goes on,
    // and verify() reports the loss from then on.
    Status init(bool new_vault);

    // Appends the event (time and chain are filled in on the writer thread), together with
    // whatever else was recorded meanwhile. Failures are logged, never thrown at the caller.
    // Without a scheduler the write is queued at once; with one, see defer_with().
    void record(AuditEvent event);
    // The same, with the details already written by DetailsText (`event.details` is ignored):
    // for callers on a hot path, which would otherwise build and destroy a JSON tree per call.
    void record(AuditEvent event, std::string details_text);

    // Runs a callback once, a little later (on a timer of the caller's event loop).
    using Scheduler = std::function<void(std::function<void()>)>;
    // From now on record() holds events back until `schedule` runs the flush it is handed or
    // `max_batch` events wait, so one commit carries many entries. `schedule` is called on the
    // thread that records; an empty Scheduler turns deferral off. Call before recording.
    void defer_with(Scheduler schedule, size_t max_batch);
    // Queues the write of every event held back (none: nothing to do).
    void flush();
    // Events recorded and not yet taken by a write: held back, or waiting for the writer.
    size_t waiting() const;

    // The same, awaited: resumes once the entry is durable (the coroutine waits, the thread
    // does not). Control actions use it, so an action is never answered before its audit
    // entry is on disk, and a reader sees the entry right after the answer.
    boost::asio::awaitable<Status> append(const AuditEvent& event);

    Result<AuditPage> list(const AuditQuery& query) const;

    // Recomputes the chain from the retained start; names the first entry that fails.
    Result<AuditVerification> verify() const;

    // Deletes entries older than `before_secs` (at most `max_entries` per call) and records
    // where the chain now starts, so verify() still checks everything that remains.
    // Returns the number of entries removed.
    Result<uint64_t> prune(int64_t before_secs, uint64_t max_entries = 10000);

    // The sequence number of the last entry (0 when empty) and the number retained.
    Result<std::pair<uint64_t, uint64_t>> head() const;

  private:
    struct Stamped {
        int64_t time_ms;
        AuditEvent event;
        std::string details_text;  // when set, stored instead of event.details
    };
    // The write that appends `events` at the end of the chain, read from the transaction itself
    // (so it stays right when a batch is retried after the map grows).
    static Status append_all(WriteTxn& txn, const std::vector<Stamped>& events);

    Vault& vault_;
    const Clock& clock_;
    // record()'s events not yet taken by a write: the first one queues a write, which takes
    // every event recorded until it runs, so a burst costs one write request. Shared with the
    // queued write, which may run after the log is gone (the vault drains its queue on close).
    struct Pending {
        std::mutex mutex;  // guards the members below
        std::vector<Stamped> events;
        bool write_queued = false;  // a queued write will take `events`
    };
    void queue_write();

    std::shared_ptr<Pending> pending_ = std::make_shared<Pending>();
    Scheduler schedule_;
    size_t max_batch_ = 0;
};

}  // namespace agentgw
