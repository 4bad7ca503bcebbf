#pragma once

// Default state serializer. Aggregates are encoded field by field with
// Boost.PFR; scalars little-endian, strings and containers length-prefixed.
// Each aggregate starts with its field count, so fields appended to the end
// of a state struct load from older bytes (they keep their default value).
//
// Custom hook: specialize ticktock::serializer<T> with
//   static void save(ticktock::encoder&, const T&);
//   static bool load(ticktock::decoder&, T&);
// and T may then be a state type or a field of one.

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <boost/pfr.hpp>

namespace ticktock {

/// Appends encoded values to a byte string.
class encoder {
public:
  void put_varint(std::uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void put_bytes(std::string_view s) {
    put_varint(s.size());
    out_.append(s);
  }
  template <class T>
  void put_fixed(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));  // hosts are little-endian (x86_64, aarch64)
    out_.append(buf, sizeof(T));
  }
  std::string take() { return std::move(out_); }
  const std::string& bytes() const { return out_; }

private:
  std::string out_;
};

/// Reads values written by encoder. Every getter returns false on truncated
/// or malformed input and never reads past the end.
class decoder {
public:
  explicit decoder(std::string_view in) : in_(in) {}
  bool get_varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty())
        return false;
      auto b = static_cast<unsigned char>(in_.front());
      in_.remove_prefix(1);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0)
        return true;
    }
    return false;
  }
  bool get_bytes(std::string& s) {
    std::uint64_t n = 0;
    if (!get_varint(n) || n > in_.size())
      return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  template <class T>
  bool get_fixed(T& v) {
    if (in_.size() < sizeof(T))
      return false;
    std::memcpy(&v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool at_end() const { return in_.empty(); }
  std::size_t remaining() const { return in_.size(); }

private:
  std::string_view in_;
};

template <class T, class Enable = void>
struct serializer;

namespace detail {

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

template <class T>
struct is_map : std::false_type {};
template <class K, class V, class C, class A>
struct is_map<std::map<K, V, C, A>> : std::true_type {};
template <class K, class V, class H, class E, class A>
struct is_map<std::unordered_map<K, V, H, E, A>> : std::true_type {};

template <class T>
struct is_set : std::false_type {};
template <class K, class C, class A>
struct is_set<std::set<K, C, A>> : std::true_type {};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class T>
struct is_array : std::false_type {};
template <class T, std::size_t N>
struct is_array<std::array<T, N>> : std::true_type {};

template <class T>
struct is_duration : std::false_type {};
template <class R, class P>
struct is_duration<std::chrono::duration<R, P>> : std::true_type {};

template <class T>
struct is_time_point : std::false_type {};
template <class C, class D>
struct is_time_point<std::chrono::time_point<C, D>> : std::true_type {};

// Guards against absurd lengths in corrupt input before allocating.
inline constexpr std::uint64_t max_container_size = std::uint64_t{1} << 32;

}  // namespace detail

template <class T>
void save_value(encoder& e, const T& x) {
  serializer<T>::save(e, x);
}

template <class T>
bool load_value(decoder& d, T& x) {
  return serializer<T>::load(d, x);
}

/// Scalars: integers, floating point, enums, bool.
template <class T>
struct serializer<T, std::enable_if_t<std::is_arithmetic_v<T> || std::is_enum_v<T>>> {
  static void save(encoder& e, const T& x) { e.put_fixed(x); }
  static bool load(decoder& d, T& x) { return d.get_fixed(x); }
};

/// bool: one byte, 0 or 1. Any other byte is malformed input: copied into a
/// bool it would give the bool an invalid value (undefined behaviour).
template <>
struct serializer<bool> {
  static void save(encoder& e, const bool& x) { e.put_fixed(static_cast<std::uint8_t>(x)); }
  static bool load(decoder& d, bool& x) {
    std::uint8_t b = 0;
    if (!d.get_fixed(b) || b > 1)
      return false;
    x = b == 1;
    return true;
  }
};

template <>
struct serializer<std::string> {
  static void save(encoder& e, const std::string& x) { e.put_bytes(x); }
  static bool load(decoder& d, std::string& x) { return d.get_bytes(x); }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_duration<T>::value>> {
  static void save(encoder& e, const T& x) { e.put_fixed(static_cast<std::int64_t>(x.count())); }
  static bool load(decoder& d, T& x) {
    std::int64_t v = 0;
    if (!d.get_fixed(v))
      return false;
    x = T{static_cast<typename T::rep>(v)};
    return true;
  }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_time_point<T>::value>> {
  static void save(encoder& e, const T& x) { save_value(e, x.time_since_epoch()); }
  static bool load(decoder& d, T& x) {
    typename T::duration since{};
    if (!load_value(d, since))
      return false;
    x = T{since};
    return true;
  }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_optional<T>::value>> {
  static void save(encoder& e, const T& x) {
    e.put_fixed(static_cast<std::uint8_t>(x.has_value()));
    if (x)
      save_value(e, *x);
  }
  static bool load(decoder& d, T& x) {
    std::uint8_t has = 0;
    if (!d.get_fixed(has) || has > 1)
      return false;
    if (!has) {
      x.reset();
      return true;
    }
    x.emplace();
    return load_value(d, *x);
  }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_array<T>::value>> {
  static void save(encoder& e, const T& x) {
    for (const auto& v : x)
      save_value(e, v);
  }
  static bool load(decoder& d, T& x) {
    for (auto& v : x)
      if (!load_value(d, v))
        return false;
    return true;
  }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_vector<T>::value>> {
  static void save(encoder& e, const T& x) {
    e.put_varint(x.size());
    for (const auto& v : x)
      save_value(e, v);
  }
  static bool load(decoder& d, T& x) {
    std::uint64_t n = 0;
    if (!d.get_varint(n) || n > detail::max_container_size || n > d.remaining())
      return false;
    x.clear();
    x.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      typename T::value_type v{};
      if (!load_value(d, v))
        return false;
      x.push_back(std::move(v));
    }
    return true;
  }
};

template <class T>
struct serializer<T, std::enable_if_t<detail::is_map<T>::value || detail::is_set<T>::value>> {
  static void save(encoder& e, const T& x) {
    e.put_varint(x.size());
    for (const auto& v : x) {
      if constexpr (detail::is_map<T>::value) {
        save_value(e, v.first);
        save_value(e, v.second);
      } else {
        save_value(e, v);
      }
    }
  }
  static bool load(decoder& d, T& x) {
    std::uint64_t n = 0;
    if (!d.get_varint(n) || n > d.remaining())
      return false;
    x.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      if constexpr (detail::is_map<T>::value) {
        typename T::key_type k{};
        typename T::mapped_type v{};
        if (!load_value(d, k) || !load_value(d, v))
          return false;
        x.emplace(std::move(k), std::move(v));
      } else {
        typename T::value_type v{};
        if (!load_value(d, v))
          return false;
        x.insert(std::move(v));
      }
    }
    return true;
  }
};

/// Aggregates (plain structs): field count, then each field in order.
template <class T>
struct serializer<
  T, std::enable_if_t<std::is_aggregate_v<T> && std::is_class_v<T> && !detail::is_array<T>::value>> {
  static void save(encoder& e, const T& x) {
    e.put_varint(boost::pfr::tuple_size_v<T>);
    boost::pfr::for_each_field(x, [&](const auto& f) { save_value(e, f); });
  }
  static bool load(decoder& d, T& x) {
    std::uint64_t n = 0;
    if (!d.get_varint(n) || n > boost::pfr::tuple_size_v<T>)
      return false;
    bool ok = true;
    std::uint64_t i = 0;
    boost::pfr::for_each_field(x, [&](auto& f) {
      if (ok && i++ < n)
        ok = load_value(d, f);
    });
    return ok;
  }
};

/// Serializes a whole value into bytes.
template <class T>
std::string to_bytes(const T& x) {
  encoder e;
  save_value(e, x);
  return e.take();
}

/// Parses bytes written by to_bytes. Returns false (leaving `x` unspecified)
/// on malformed input or trailing bytes.
template <class T>
bool from_bytes(std::string_view bytes, T& x) {
  decoder d{bytes};
  return load_value(d, x) && d.at_end();
}

}  // namespace ticktock
