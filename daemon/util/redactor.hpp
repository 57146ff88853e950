// Redactor: keeps secret values out of text that someone else will see (an error message an
// authorization server wrote, a header an upstream answered with), by replacing each
// occurrence with "[redacted]". Holds its own copies of the secrets, wiped when it goes.
#pragma once

#include <deque>
#include <string>
#include <string_view>

namespace agentgw {

class Redactor {
  public:
    Redactor() = default;
    ~Redactor();
    Redactor(const Redactor&) = delete;
    Redactor& operator=(const Redactor&) = delete;

    // Looks for `secret` as it is and URL-encoded (its reserved characters as %XX, in either
    // case of hex digit), as it would appear in a query string or a form. Empty ones are
    // ignored.
    void add(std::string_view secret);
    // Forgets every secret, wiping the copies.
    void clear();
    bool empty() const noexcept { return secrets_.empty(); }

    // True when `text` holds one of the secrets.
    bool found_in(std::string_view text) const;
    // `text` with each secret replaced, in one pass: what a replacement wrote is never searched
    // again, and where secrets overlap the longest is replaced whole.
    std::string apply(std::string_view text) const;

  private:
    // Keeps a copy of `form` unless it is held already, and wipes `form`.
    void keep(std::string& form);

    std::deque<std::string> secrets_;  // a deque, so that no copy is left behind by a move
};

}  // namespace agentgw
