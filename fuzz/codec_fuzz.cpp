// Fuzzes the Cap'n Proto decoders of every stored record type. The first
// byte picks the type, the rest are the stored bytes. A decoder must answer
// corrupt_record (never crash, hang or throw) on anything malformed; what it
// accepts must encode to bytes that decode again, and encoding is stable
// from then on (encode(decode(encode(x))) == encode(x)).

#include <cstdio>
#include <cstdlib>
#include <string>

#include "bundle.hpp"
#include "ticktock/storage/records.hpp"

using namespace ticktock;
using namespace ticktock::storage;

namespace {

[[noreturn]] void fail(const char* type, const char* what) {
  std::fprintf(stderr, "codec %s: %s\n", type, what);
  std::abort();
}

template <class Decode, class Encode>
void check(const char* type, std::string_view bytes, Decode decode, Encode encode) {
  auto first = decode(bytes);
  if (!first) {
    if (first.error_value().code() != errc::corrupt_record)
      fail(type, "a decode error other than corrupt_record");
    return;
  }
  auto once = encode(*first);
  auto second = decode(once);
  if (!second)
    fail(type, "its own encoding does not decode");
  if (encode(*second) != once)
    fail(type, "encoding is not stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  std::string_view bytes{reinterpret_cast<const char*>(data) + 1, size - 1};
  auto enc = [](const auto& r) { return storage::encode(r); };
  switch (data[0] % 9) {
    case 0: check("agent", bytes, decode_agent, enc); break;
    case 1: check("inbox", bytes, decode_inbox, enc); break;
    case 2: check("outbox", bytes, decode_outbox, enc); break;
    case 3: check("trajectory", bytes, decode_trajectory, enc); break;
    case 4:
      check("signed trajectory", bytes, decode_signed_trajectory,
            [](const std::pair<std::string, std::string>& p) {
              return encode_signed_trajectory(p.first, p.second);
            });
      break;
    case 5: check("deadletter", bytes, decode_deadletter, enc); break;
    case 6: check("alarm", bytes, decode_alarm, enc); break;
    case 7: check("identity", bytes, decode_identity, enc); break;
    case 8: check("bundle", bytes, decode_bundle, encode_bundle); break;
  }
  return 0;
}
