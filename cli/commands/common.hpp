// What the command files share: declaring commands, calling the daemon, printing its answer.
// Thread-compatible.
#pragma once

#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/context.hpp"

namespace agentgw::cli {

// A check that refuses an empty value: `--user "$UNSET"` must fail, not silently mean "every
// user" or "no owner".
const CLI::Validator& non_empty();

// Adds a command group under `parent` that requires exactly one of its subcommands.
CLI::App* add_group(CLI::App& parent, const std::string& name, const std::string& description);

// Adds the leaf command `name` under `parent`; when it is the command given, `run` becomes the
// runner. `run` usually holds (a shared_ptr to) the variables its options are bound to.
CLI::App* add_leaf(CLI::App& parent, Runner& chosen, const std::string& name,
                   const std::string& description, Runner run);

// A leaf taking one required positional argument (a user, an agent, a service), run with it.
using ArgRunner = std::function<Status(Context&, const std::string& arg)>;
CLI::App* add_leaf(CLI::App& parent, Runner& chosen, const std::string& name,
                   const std::string& description, const std::string& arg_name,
                   const std::string& arg_help, ArgRunner run);

// Shorthand for ControlClient::path_segment.
inline std::string segment(std::string_view text) {
    return ControlClient::path_segment(text);
}

// Prints a successful answer for people; the body is the daemon's document (null after 204).
using Printer = std::function<void(std::ostream& out, const nlohmann::json& body)>;

// Sends one request. A non-2xx answer becomes its Error (exit code by exit_codes.hpp).
Result<Reply> call(Context& ctx, std::string_view method, const std::string& path,
                   const std::optional<nlohmann::json>& body = std::nullopt);

// Prints an answer: with --json the daemon's document as it is, or {"ok":true} when it had no
// body; otherwise print(out, body), or nothing when print is empty.
void print_reply(Context& ctx, const Reply& reply, const Printer& print = {});

// call() then print_reply(): the whole body of most commands.
Status call_and_print(Context& ctx, std::string_view method, const std::string& path,
                      const std::optional<nlohmann::json>& body = std::nullopt,
                      const Printer& print = {});

// Text shown to a person with its control characters (C0, DEL and C1) and any byte that is not
// UTF-8 written as \xNN, so that text from elsewhere (an agent's blob name, an upstream's
// answer) cannot drive the terminal. With `keep_lines`, newline and tab stay as they are.
std::string printable(std::string_view text, bool keep_lines = false);

// A JSON value as one table cell: strings as printable() makes them, null and "" as "-",
// booleans as yes/no, numbers in decimal, lists of scalars joined by ", " ("-" when empty),
// anything else as compact JSON.
std::string cell(const nlohmann::json& value);

// The member `key` of `object` as a cell; "-" when it is absent.
std::string field(const nlohmann::json& object, const std::string& key);

// An access rule ({"methods", "paths"}, as in grants and a service's `allow`) in words:
// "GET, POST on /v1/*", with "any method" and "any path" for missing or empty lists.
std::string rule_text(const nlohmann::json& rule);

// A rate limit ({"requests", "window_secs"}) in words: "100 requests per 60s"; "none" for null.
std::string rate_limit_text(const nlohmann::json& limit);

using Rows = std::vector<std::vector<std::string>>;

// Appends to a key/value table one row per item of `items` (a JSON array), text(item) labelled
// `label` on the first row only; or one row `label  none` when there are no items.
void append_rows(Rows& rows, const std::string& label, const nlohmann::json& items,
                 const std::function<std::string(const nlohmann::json&)>& text,
                 const std::string& none);

// Prints `items`, a JSON array, as a table: `header` then row(item) for each item.
using RowOf = std::function<std::vector<std::string>(const nlohmann::json& item)>;
void print_list(std::ostream& out, const std::vector<std::string>& header,
                const nlohmann::json& items, const RowOf& row);

}  // namespace agentgw::cli
