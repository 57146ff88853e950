// Result<T>: the value of a fallible call, or the Error that stopped it.
// Errors are values at module boundaries; exceptions stay at start-up and at the top of main.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace agentgw {

// What went wrong, coarse enough that one table maps each code to an HTTP status
// (daemon) and one to an exit code (CLI).
enum class Code {
    invalid_argument,   // the caller's input is wrong
    not_found,          // the thing named does not exist
    conflict,           // it exists already, or a precondition failed
    permission_denied,  // the caller may not do this (file modes, peer uid, grants)
    unauthenticated,    // credentials missing or wrong (including a wrong master key)
    exhausted,          // a quota, a size or a rate limit was exceeded
    unavailable,        // a dependency is down or busy (another daemon, a socket)
    upstream,           // a server called on the caller's behalf failed (a token endpoint)
    io_error,           // the operating system refused (open, write, fsync, bind)
    corrupt,            // stored data failed an integrity check
    internal,           // a bug or an impossible state
};

std::string_view code_name(Code code) noexcept;

struct Error {
    Code code;
    std::string message;
};

inline Error make_error(Code code, std::string message) {
    return Error{code, std::move(message)};
}

template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return assert(ok()), std::get<0>(v_); }
    const T& value() const& { return assert(ok()), std::get<0>(v_); }
    T&& value() && { return assert(ok()), std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { return assert(!ok()), std::get<1>(v_); }
    Error&& error() && { return assert(!ok()), std::get<1>(std::move(v_)); }

  private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Error error) : error_(std::move(error)) {}

    bool ok() const noexcept { return !error_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }

    const Error& error() const& { return assert(!ok()), *error_; }
    Error&& error() && { return assert(!ok()), std::move(*error_); }

  private:
    std::optional<Error> error_;
};

using Status = Result<void>;

}  // namespace agentgw

#define AGENTGW_CONCAT_INNER(a, b) a##b
#define AGENTGW_CONCAT(a, b) AGENTGW_CONCAT_INNER(a, b)

// TRY(expr): return the error of a failed Result<void>-like expression.
#define TRY(expr)                                          \
    do {                                                   \
        auto&& agentgw_try_result_ = (expr);               \
        if (!agentgw_try_result_) {                        \
            return std::move(agentgw_try_result_).error(); \
        }                                                  \
    } while (false)

// TRY_ASSIGN(lhs, expr): evaluate a Result<T>; on error return it, else move the value into lhs
// (which may be a declaration such as `auto x`).
#define TRY_ASSIGN(lhs, expr) TRY_ASSIGN_IMPL(AGENTGW_CONCAT(agentgw_try_, __LINE__), lhs, expr)
#define TRY_ASSIGN_IMPL(tmp, lhs, expr) \
    auto tmp = (expr);                  \
    if (!tmp) {                         \
        return std::move(tmp).error();  \
    }                                   \
    lhs = std::move(tmp).value()
