#include "daemon/audit/audit_log.hpp"

#include <algorithm>
#include <cassert>
#include <iterator>
#include <utility>

#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "daemon/vault/async_write.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

constexpr std::string_view k_head_key = "audit_head";      // {"seq", "hash"} of the last entry
constexpr std::string_view k_anchor_key = "audit_anchor";  // {"first_seq", "prev"} after pruning
// {"seq", "time_ms"}: the first entry written after the head was found missing.
constexpr std::string_view k_break_key = "audit_break";
constexpr size_t k_hash_size = crypto_generichash_BYTES;  // 32

std::string seq_key(uint64_t seq) {
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i) {
        key[static_cast<size_t>(i)] = static_cast<char>(seq & 0xff);
        seq >>= 8;
    }
    return key;
}

uint64_t seq_of(std::string_view key) {
    uint64_t seq = 0;
    for (char c : key) {
        seq = (seq << 8) | static_cast<uint8_t>(c);
    }
    return seq;
}

std::string hex(const unsigned char* data, size_t size) {
    std::string out(size * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), data, size);
    out.pop_back();
    return out;
}

const std::string& zero_hash() {
    static const std::string zeros(k_hash_size * 2, '0');
    return zeros;
}

// hash = BLAKE2b-256(prev hash (hex) | 0x00 | the entry without "hash", as sorted-key JSON).
std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string chain_hash_of_text(const std::string& prev, std::string_view body) {
    unsigned char out[k_hash_size];
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, sizeof out);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(prev.data()),
                              prev.size());
    const unsigned char separator = 0;
    crypto_generichash_update(&st, &separator, 1);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(body.data()),
                              body.size());
    crypto_generichash_final(&st, out, sizeof out);
    return hex(out, sizeof out);
}

std::string chain_hash(const std::string& prev, const json& entry_without_hash) {
    return chain_hash_of_text(prev, dump(entry_without_hash));
}

Result<json> read_json(const ReadTxn& txn, Table table, std::string_view key) {
    TRY_ASSIGN(auto value, txn.get(table, key));
    if (!value) {
        return json();
    }
    json j = json::parse(as_view(*value), nullptr, false);
    if (j.is_discarded()) {
        return make_error(Code::corrupt, fmt::format("stored {} is malformed", key));
    }
    return j;
}

// The head of a log that had one has gone: the log was cut at its end or emptied, head and
// all, by someone able to delete records, who cannot forge a sealed head. The chain goes on
// from the last entry left (or from where pruning left it), and where it does is kept, so
// that verify() reports the loss for good instead of an intact or empty log. An entry that
// fails to open is passed over here; verify() names it. Returns the new head.
Result<json> restart_chain(WriteTxn& txn, int64_t now_ms) {
    TRY_ASSIGN(json anchor, read_json(txn, Table::settings, k_anchor_key));
    uint64_t seq = anchor.is_object() ? anchor.value("first_seq", uint64_t{1}) - 1 : 0;
    std::string prev = anchor.is_object() ? anchor.value("prev", zero_hash()) : zero_hash();
    TRY(txn.scan_checked(Table::audit, "", [&](std::string_view key, Result<SecretBytes> value) {
        seq = seq_of(key);
        json entry = value ? json::parse(as_view(*value), nullptr, false) : json();
        prev = entry.is_object() && entry.contains("hash") && entry["hash"].is_string()
                   ? entry["hash"].get<std::string>()
                   : zero_hash();
        return true;
    }));
    TRY_ASSIGN(json found, read_json(txn, Table::settings, k_break_key));
    if (!found.is_object()) {  // the first loss is the one to report
        TRY(txn.put(Table::settings, k_break_key,
                    json{{"seq", seq + 1}, {"time_ms", now_ms}}.dump()));
    }
    json head = {{"seq", seq}, {"hash", prev}};
    TRY(txn.put(Table::settings, k_head_key, head.dump()));
    return head;
}

// Whether the vault holds anything a running daemon would have audited making: a vault
// without (its first start was cut short before the log's head was written) has had no log
// to lose. Emptying the log together with every user, agent, credential, blob and flow is
// no quieter than what it would hide.
Result<bool> ever_used(const ReadTxn& txn) {
    for (const Table table : {Table::audit, Table::users, Table::agents, Table::credentials,
                              Table::blobs, Table::device_flows}) {
        TRY_ASSIGN(size_t records, txn.count(table));
        if (records > 0) {
            return true;
        }
    }
    TRY_ASSIGN(auto anchor, txn.get(Table::settings, k_anchor_key));
    TRY_ASSIGN(auto lost, txn.get(Table::settings, k_break_key));
    return anchor.has_value() || lost.has_value();
}

// Whether the entry is about the `kind` ("agent", "service") called `id`: its actor or target
// is "<kind>:<id>", or one of its details names it, as that reference, as the bare id under the
// kind's own name ({"agent": "<id>"}), or as the owner of something scoped to that kind
// ({"scope": "agent", "owner": "<id>"}, as credential and device flow entries have it).
bool about(const json& entry, std::string_view kind, const std::string& id) {
    const std::string ref = fmt::format("{}:{}", kind, id);
    if (entry.value("actor", "") == ref || entry.value("target", "") == ref) {
        return true;
    }
    const auto details = entry.find("details");
    if (details == entry.end() || !details->is_object()) {
        return false;
    }
    const bool owned_by_kind = details->value("scope", "") == kind;
    for (const auto& [key, value] : details->items()) {
        if (!value.is_string()) {
            continue;
        }
        const auto& text = value.get_ref<const std::string&>();
        if (text == ref ||
            (text == id &&
             (key == kind || (owned_by_kind && (key == "owner" || key == "owner_id"))))) {
            return true;
        }
    }
    return false;
}

// Appends `text` as a JSON string, exactly as dump() writes it: printable ASCII other than
// the quote and the backslash goes through as it is, and anything else is left to the library.
void append_json_string(std::string& out, std::string_view text) {
    const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
        return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
    });
    if (plain) {
        out.append(1, '"').append(text).append(1, '"');
    } else {
        out.append(dump(json(text)));
    }
}

void append_json_number(std::string& out, auto n) {
    fmt::format_to(std::back_inserter(out), "{}", n);
}

// The entry's text, as dump() would write the object {seq, time, time_ms, actor, action,
// target, outcome, details, prev}: keys sorted, no spaces. It is written directly rather than
// through a json object because every proxied request appends one; verify() re-serialises the
// parsed entry with dump(), so any difference would show as a broken chain.
std::string entry_text(uint64_t seq, int64_t time_ms, const std::string& time,
                       const AuditEvent& event, const std::string& details_text,
                       const std::string& prev) {
    std::string text;
    text.reserve(256);
    text.append("{\"action\":");
    append_json_string(text, event.action);
    text.append(",\"actor\":");
    append_json_string(text, event.actor);
    text.append(",\"details\":");
    if (details_text.empty()) {
        text.append(dump(event.details));
    } else {
        text.append(details_text);
    }
    text.append(",\"outcome\":");
    append_json_string(text, event.outcome);
    text.append(",\"prev\":");
    append_json_string(text, prev);
    text.append(",\"seq\":");
    append_json_number(text, seq);
    text.append(",\"target\":");
    append_json_string(text, event.target);
    text.append(",\"time\":");
    append_json_string(text, time);
    text.append(",\"time_ms\":");
    append_json_number(text, time_ms);
    text.append("}");
    return text;
}

}  // namespace

void DetailsText::begin_member(std::string_view key) {
    assert(text_.empty() || key > last_key_);
    last_key_ = key;
    if (text_.empty()) {
        text_.reserve(160);
        text_.push_back('{');
    } else {
        text_.push_back(',');
    }
    append_json_string(text_, key);
    text_.push_back(':');
}

DetailsText& DetailsText::add(std::string_view key, std::string_view value) {
    begin_member(key);
    append_json_string(text_, value);
    return *this;
}

DetailsText& DetailsText::add(std::string_view key, bool value) {
    begin_member(key);
    text_.append(value ? "true" : "false");
    return *this;
}

DetailsText& DetailsText::add(std::string_view key, int64_t value) {
    begin_member(key);
    append_json_number(text_, value);
    return *this;
}

DetailsText& DetailsText::add(std::string_view key, uint64_t value) {
    begin_member(key);
    append_json_number(text_, value);
    return *this;
}

std::string DetailsText::take() {
    if (text_.empty()) {
        text_.push_back('{');
    }
    text_.push_back('}');
    last_key_.clear();
    return std::exchange(text_, {});
}

Status AuditLog::init(bool new_vault) {
    const int64_t now_ms = clock_.now_ms();
    return vault_.write([new_vault, now_ms](WriteTxn& txn) -> Status {
        TRY_ASSIGN(json head, read_json(txn, Table::settings, k_head_key));
        if (head.is_object()) {
            return {};
        }
        bool used = false;
        if (!new_vault) {
            TRY_ASSIGN(used, ever_used(txn));
        }
        if (used) {
            TRY_ASSIGN(json restarted, restart_chain(txn, now_ms));
            spdlog::error(
                "the audit log's head record is missing: the log was cut at its end "
                "or emptied; it goes on from entry {}, and `agentgw audit verify` "
                "reports the loss",
                restarted.value("seq", uint64_t{0}) + 1);
            return {};
        }
        return txn.put(Table::settings, k_head_key, json{{"seq", 0}, {"hash", zero_hash()}}.dump());
    });
}

Status AuditLog::append_all(WriteTxn& txn, const std::vector<Stamped>& events) {
    if (events.empty()) {
        return {};
    }
    TRY_ASSIGN(json head, read_json(txn, Table::settings, k_head_key));
    if (!head.is_object()) {
        // init() wrote it: it went while the daemon ran.
        TRY_ASSIGN(head, restart_chain(txn, events.front().time_ms));
        spdlog::error(
            "the audit log's head record went missing: the log was cut at its end or "
            "emptied; it goes on from entry {}, and `agentgw audit verify` reports the "
            "loss",
            head.value("seq", uint64_t{0}) + 1);
    }
    uint64_t seq = head.value("seq", uint64_t{0});
    std::string prev = head.value("hash", zero_hash());
    int64_t time_secs = -1;
    std::string time;  // rfc3339 of time_secs: a batch mostly shares one second
    for (const auto& [now_ms, event, details_text] : events) {
        ++seq;
        if (now_ms / 1000 != time_secs) {
            time_secs = now_ms / 1000;
            time = rfc3339(time_secs);
        }
        // The stored entry is the hashed text with "hash" added at its end (verify() parses
        // it, so the key order there does not matter).
        std::string text = entry_text(seq, now_ms, time, event, details_text, prev);
        std::string hash = chain_hash_of_text(prev, text);
        text.pop_back();  // the closing brace
        text.append(",\"hash\":\"").append(hash).append("\"}");
        TRY(txn.append(Table::audit, seq_key(seq), text));
        prev = std::move(hash);
    }
    return txn.put(Table::settings, k_head_key, json{{"seq", seq}, {"hash", prev}}.dump());
}

void AuditLog::defer_with(Scheduler schedule, size_t max_batch) {
    schedule_ = std::move(schedule);
    max_batch_ = max_batch;
}

void AuditLog::record(AuditEvent event) {
    record(std::move(event), std::string());
}

void AuditLog::record(AuditEvent event, std::string details_text) {
    bool queue_now = false;
    bool schedule = false;
    {
        const std::lock_guard lock(pending_->mutex);
        pending_->events.push_back({clock_.now_ms(), std::move(event), std::move(details_text)});
        if (!pending_->write_queued) {
            if (!schedule_ || pending_->events.size() >= max_batch_) {
                queue_now = pending_->write_queued = true;
            } else if (pending_->events.size() == 1) {
                schedule = true;  // the first event held back asks for a flush
            }
        }
    }
    if (queue_now) {
        queue_write();
    } else if (schedule) {
        schedule_([this] { flush(); });
    }
}

size_t AuditLog::waiting() const {
    const std::lock_guard lock(pending_->mutex);
    return pending_->events.size();
}

void AuditLog::flush() {
    {
        const std::lock_guard lock(pending_->mutex);
        if (pending_->events.empty() || pending_->write_queued) {
            return;
        }
        pending_->write_queued = true;
    }
    queue_write();
}

void AuditLog::queue_write() {
    // The write takes every event recorded until it runs. It may run again after the map
    // grows, so the events it took stay with it; and it may run after the log is gone (the
    // vault drains its queue on close), so it holds the pending state, not the log.
    auto taken = std::make_shared<std::optional<std::vector<Stamped>>>();
    Vault::WriteFn write = [pending = pending_, taken](WriteTxn& txn) -> Status {
        if (!*taken) {
            const std::lock_guard lock(pending->mutex);
            taken->emplace();
            std::swap(**taken, pending->events);
            pending->write_queued = false;
        }
        return append_all(txn, **taken);
    };
    vault_.submit(std::move(write), [taken](Status s) {
        if (!s) {
            spdlog::error("cannot append {} event(s) to the audit log: {}",
                          *taken ? (*taken)->size() : 0, s.error().message);
        }
    });
}

boost::asio::awaitable<Status> AuditLog::append(const AuditEvent& event) {
    const std::vector<Stamped> events{{clock_.now_ms(), event, {}}};
    const Vault::WriteFn write = [&events](WriteTxn& txn) { return append_all(txn, events); };
    Status s = co_await async_write(vault_, write);
    if (!s) {
        spdlog::error("cannot append to the audit log: {}", s.error().message);
    }
    co_return s;
}

Result<AuditPage> AuditLog::list(const AuditQuery& q) const {
    AuditPage page;
    page.next = q.after;
    Status inner;
    TRY(vault_.read([&](const ReadTxn& txn) {
        return txn.scan_from(
            Table::audit, seq_key(q.after + 1), [&](std::string_view key, SecretBytes value) {
                const uint64_t seq = seq_of(key);
                json entry = json::parse(as_view(value), nullptr, false);
                if (entry.is_discarded()) {
                    inner =
                        make_error(Code::corrupt, fmt::format("audit entry {} is malformed", seq));
                    return false;
                }
                page.next = seq;
                const bool match =
                    (!q.since || entry.value("time_ms", int64_t{0}) / 1000 >= *q.since) &&
                    (!q.agent || about(entry, "agent", *q.agent)) &&
                    (!q.service || about(entry, "service", *q.service)) &&
                    (!q.action || entry.value("action", "") == *q.action);
                if (match) {
                    entry.erase("time_ms");
                    entry.erase("prev");
                    page.entries.push_back(std::move(entry));
                }
                return page.entries.size() < q.limit;
            });
    }));
    TRY(std::move(inner));
    return page;
}

Result<AuditVerification> AuditLog::verify() const {
    AuditVerification v;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(json anchor, read_json(txn, Table::settings, k_anchor_key));
        TRY_ASSIGN(json head, read_json(txn, Table::settings, k_head_key));
        uint64_t expected = anchor.is_object() ? anchor.value("first_seq", uint64_t{1}) : 1;
        std::string prev = anchor.is_object() ? anchor.value("prev", zero_hash()) : zero_hash();
        v.first_seq = expected;
        auto broken = [&](uint64_t seq, std::string why) {
            v.ok = false;
            v.broken_seq = seq;
            v.message = fmt::format("entry {}: {}", seq, why);
        };
        // Walk raw keys so that an entry that fails to open is reported, not skipped.
        TRY(txn.scan_checked(
            Table::audit, "", [&](std::string_view key, Result<SecretBytes> value) {
                const uint64_t seq = seq_of(key);
                if (seq != expected) {
                    broken(expected, fmt::format("missing (found {} next)", seq));
                    return false;
                }
                if (!value) {
                    broken(seq, "fails authentication (altered or moved)");
                    return false;
                }
                json entry = json::parse(as_view(*value), nullptr, false);
                if (!entry.is_object() || !entry.contains("hash") || !entry["hash"].is_string()) {
                    broken(seq, "malformed");
                    return false;
                }
                const std::string stored = entry["hash"].get<std::string>();
                entry.erase("hash");
                if (entry.value("seq", uint64_t{0}) != seq || entry.value("prev", "") != prev ||
                    chain_hash(prev, entry) != stored) {
                    broken(seq, "hash chain mismatch");
                    return false;
                }
                prev = stored;
                v.last_seq = seq;
                ++v.entries;
                ++expected;
                return true;
            }));
        // The sealed head records the last entry written, number and hash, so a log cut
        // short at its end (or with its head removed) is caught too; and where a lost head
        // was found, the entries before it may be gone.
        TRY_ASSIGN(json lost, read_json(txn, Table::settings, k_break_key));
        const uint64_t head_seq = head.is_object() ? head.value("seq", uint64_t{0}) : 0;
        if (v.ok && !head.is_object()) {
            broken(v.first_seq, "the log's head record is missing");
        } else if (v.ok && head_seq + 1 != expected) {
            if (head_seq >= expected) {
                broken(expected, "missing (the log ends early)");
            } else {
                broken(head_seq + 1, "past the log's head record");
            }
        } else if (v.ok && head.value("hash", "") != prev) {
            broken(head_seq, "does not match the log's head record");
        } else if (v.ok && lost.is_object()) {
            broken(lost.value("seq", uint64_t{0}),
                   fmt::format("the log's head record was found missing at {}: entries before "
                               "this one may have been removed",
                               rfc3339(lost.value("time_ms", int64_t{0}) / 1000)));
        }
        if (v.ok) {
            v.message = v.entries == 0 ? "audit log is empty"
                                       : fmt::format("{} entries verified", v.entries);
        }
        return {};
    }));
    return v;
}

Result<uint64_t> AuditLog::prune(int64_t before_secs, uint64_t max_entries) {
    uint64_t removed = 0;
    TRY(vault_.write([&](WriteTxn& txn) -> Status {
        removed = 0;
        std::vector<std::pair<std::string, std::string>> doomed;  // key, hash
        TRY(txn.scan(Table::audit, "", [&](std::string_view key, SecretBytes value) {
            json entry = json::parse(as_view(value), nullptr, false);
            if (entry.is_discarded() || entry.value("time_ms", int64_t{0}) / 1000 >= before_secs ||
                doomed.size() >= max_entries) {
                return false;
            }
            doomed.emplace_back(std::string(key), entry.value("hash", ""));
            return true;
        }));
        if (doomed.empty()) {
            return {};
        }
        for (const auto& [key, _] : doomed) {
            TRY(txn.erase(Table::audit, key));
        }
        removed = doomed.size();
        const json anchor = {{"first_seq", seq_of(doomed.back().first) + 1},
                             {"prev", doomed.back().second}};
        return txn.put(Table::settings, k_anchor_key, anchor.dump());
    }));
    return removed;
}

Result<std::pair<uint64_t, uint64_t>> AuditLog::head() const {
    std::pair<uint64_t, uint64_t> out{0, 0};
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(json head, read_json(txn, Table::settings, k_head_key));
        out.first = head.is_object() ? head.value("seq", uint64_t{0}) : 0;
        TRY_ASSIGN(out.second, txn.count(Table::audit));
        return {};
    }));
    return out;
}

}  // namespace agentgw
