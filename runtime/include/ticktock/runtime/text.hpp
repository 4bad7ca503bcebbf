#pragma once

// Text helpers shared by the modules.

#include <string>
#include <string_view>

namespace boost::json {
class value;
}

namespace ticktock {

/// Whether `s` is strict UTF-8: no overlong forms, no surrogates, nothing
/// above U+10FFFF, no truncated sequence. Thread-safe, no allocation.
bool is_valid_utf8(std::string_view s) noexcept;

/// `s` with every byte that does not begin a strict UTF-8 sequence replaced
/// by U+FFFD; `s` itself when it is valid. For echoing untrusted bytes into
/// JSON text, which must be UTF-8.
std::string to_valid_utf8(std::string_view s);

/// The longest prefix of `s` of at most `n` bytes that does not split a
/// UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, std::size_t n) noexcept;

/// `s` as the value of a `key=value` log field: as it is when it is not empty
/// and holds only printable ASCII other than space, `"`, `=` and `\`; else in
/// double quotes, with `"` and `\` escaped by a backslash and control bytes
/// (newlines included) as `\n`, `\r`, `\t` or `\xHH`, so that a value
/// cannot end its line or forge another field.
std::string log_value(std::string_view s);

/// `v` as JSON text: boost::json::serialize's, but for numbers held as
/// doubles: those are written as Python's repr writes them, the fewest
/// digits that read back the same number, with a decimal point or an
/// exponent so that they read back as doubles (`0.5`, `10.0`, `2.5e-07`,
/// `1e+16`), rather than as Boost's `5E-1`, `1E1`.
std::string json_text(const boost::json::value& v);

}  // namespace ticktock
