// UTF-8 at the byte level, for text from elsewhere that is shown or stored: where a character
// ends, and where text may be cut without splitting one.
#pragma once

#include <cstddef>
#include <string_view>

namespace agentgw {

// The length of the well-formed UTF-8 sequence `text` starts with (RFC 3629: no overlong
// form, no surrogate, nothing past U+10FFFF); 0 when it starts with none or is empty.
std::size_t utf8_sequence_length(std::string_view text) noexcept;

// Whether the character `text` starts with, `length` bytes long (as utf8_sequence_length
// gives it), is a control character: C0 (below U+0020), DEL, or C1 (U+0080 to U+009F, which
// terminals may take as the start of an escape sequence: U+009B is CSI).
bool utf8_is_control(std::string_view text, std::size_t length) noexcept;

// The longest prefix of `text` of at most `max_bytes` that does not end inside a multi-byte
// character: a cut that a strict UTF-8 check (nlohmann's dump()) still accepts.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept;

}  // namespace agentgw
