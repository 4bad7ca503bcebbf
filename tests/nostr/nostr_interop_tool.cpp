// nostr_interop_tool: a small command-line face of ticktock::nostr for the
// interop test (interop/interop_test.mjs), which checks it against nostr-tools.
//
//   sign-tricky                       sign an event with tricky content under a
//                                     fresh key; prints its JSON, then its id
//                                     serialization, one per line
//   verify        (event JSON on stdin) prints "valid" (exit 0) or the reason (exit 1)
//   id            (event JSON on stdin) prints compute_id, then the serialization
//   encrypt PUB   (plaintext on stdin)  NIP-44 encrypt for PUB from a fresh key;
//                                     prints the sender's pubkey, then the payload
//   decrypt SEC PUB (payload on stdin)  NIP-44 decrypt; writes the plaintext bytes
//   npub HEX | nsec HEX | decode-npub NPUB | decode-nsec NSEC
//   wrap-dm SEC PUB [WRAP_TO] (message on stdin) NIP-17 DM from SEC to PUB at the
//                                     current time, gift-wrapped for WRAP_TO
//                                     (default PUB); prints the gift wrap JSON
//   unwrap-dm SEC (gift wrap JSON on stdin) prints the sender's pubkey, then
//                                     the rumor JSON, or the reason (exit 1)
//
// Exit codes: 0 success, 1 rejected input (reason on stdout or stderr), 2 usage.

#include <chrono>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/nostr.hpp"

using namespace ticktock;
using namespace ticktock::nostr;

namespace {

std::string read_stdin() {
  std::cin >> std::noskipws;
  return std::string{std::istreambuf_iterator<char>{std::cin}, std::istreambuf_iterator<char>{}};
}

int usage() {
  std::cerr << "usage: nostr_interop_tool sign-tricky | verify | id | encrypt PUB | "
               "decrypt SEC PUB | npub HEX | nsec HEX | decode-npub NPUB | decode-nsec NSEC | "
               "wrap-dm SEC PUB [WRAP_TO] | unwrap-dm SEC\n";
  return 2;
}

int fail(const error& err) {
  std::cerr << err.to_string() << "\n";
  return 1;
}

// Quotes, backslashes, every named escape, other control characters, DEL,
// UTF-8 of 2, 3 and 4 bytes, a combining accent and U+2028.
std::string tricky_content() {
  std::string s = "she said \"hi\" \\o/\nline two\r\n\ttabbed \b\f";
  s += '\0';
  s += "\x01\x02\x1f\x7f caf\xC3\xA9 e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\xA6\x84"
       "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE2\x80\xA8 </script> {\"json\":[1,2]}";
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty())
    return usage();
  const std::string_view cmd = args[0];

  if (cmd == "sign-tricky" && args.size() == 1) {
    event e;
    e.created_at = 1700000000;
    e.kind = 1;
    e.tags = {{"t", "quote\"back\\slash"}, {"x", "new\nline", "\xF0\x9F\x98\x80"}, {}};
    e.content = tricky_content();
    e = sign_event(std::move(e), generate_keypair());
    std::cout << to_json(e) << "\n" << serialize_for_id(e) << "\n";
    return 0;
  }
  if ((cmd == "verify" || cmd == "id") && args.size() == 1) {
    auto e = event_from_json(read_stdin());
    if (!e)
      return fail(e.error_value());
    if (cmd == "id") {
      std::cout << compute_id(*e) << "\n" << serialize_for_id(*e) << "\n";
      return 0;
    }
    if (auto err = verify_event(*e)) {
      std::cout << err.message() << "\n";
      return 1;
    }
    std::cout << "valid\n";
    return 0;
  }
  if (cmd == "encrypt" && args.size() == 2) {
    auto recipient = key_from_hex(args[1]);
    if (!recipient)
      return fail(recipient.error_value());
    keypair sender = generate_keypair();
    auto ck = nip44::conversation_key(sender.secret, *recipient);
    if (!ck)
      return fail(ck.error_value());
    auto payload = nip44::encrypt(read_stdin(), *ck);
    if (!payload)
      return fail(payload.error_value());
    std::cout << to_hex(sender.pubkey) << "\n" << *payload << "\n";
    return 0;
  }
  if (cmd == "decrypt" && args.size() == 3) {
    auto secret = key_from_hex(args[1]);
    if (!secret)
      return fail(secret.error_value());
    auto sender = key_from_hex(args[2]);
    if (!sender)
      return fail(sender.error_value());
    auto ck = nip44::conversation_key(*secret, *sender);
    if (!ck)
      return fail(ck.error_value());
    std::string payload = read_stdin();
    while (!payload.empty() && (payload.back() == '\n' || payload.back() == '\r'))
      payload.pop_back();
    auto plaintext = nip44::decrypt(payload, *ck);
    if (!plaintext)
      return fail(plaintext.error_value());
    std::cout << *plaintext;
    return 0;
  }
  if ((cmd == "npub" || cmd == "nsec") && args.size() == 2) {
    auto k = key_from_hex(args[1]);
    if (!k)
      return fail(k.error_value());
    std::cout << (cmd == "npub" ? npub(*k) : nsec(*k)) << "\n";
    return 0;
  }
  if ((cmd == "decode-npub" || cmd == "decode-nsec") && args.size() == 2) {
    auto k = cmd == "decode-npub" ? decode_npub(args[1]) : decode_nsec(args[1]);
    if (!k)
      return fail(k.error_value());
    std::cout << to_hex(*k) << "\n";
    return 0;
  }
  if (cmd == "wrap-dm" && (args.size() == 3 || args.size() == 4)) {
    auto secret = key_from_hex(args[1]);
    if (!secret)
      return fail(secret.error_value());
    auto sender = keypair_from_secret(*secret);
    if (!sender)
      return fail(sender.error_value());
    auto recipient = key_from_hex(args[2]);
    if (!recipient)
      return fail(recipient.error_value());
    nip17::dm_options options;
    if (args.size() == 4) {
      auto wrap_to = key_from_hex(args[3]);
      if (!wrap_to)
        return fail(wrap_to.error_value());
      options.wrap_to = *wrap_to;
    }
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    auto wrap = nip17::wrap_dm(*sender, *recipient, read_stdin(), now, options);
    if (!wrap)
      return fail(wrap.error_value());
    std::cout << to_json(*wrap) << "\n";
    return 0;
  }
  if (cmd == "unwrap-dm" && args.size() == 2) {
    auto secret = key_from_hex(args[1]);
    if (!secret)
      return fail(secret.error_value());
    auto recipient = keypair_from_secret(*secret);
    if (!recipient)
      return fail(recipient.error_value());
    // A gift wrap's content can be longer than an ordinary event's limit.
    auto wrap = event_from_json(read_stdin(), nip59::max_layer_content_bytes);
    if (!wrap)
      return fail(wrap.error_value());
    auto dm = nip17::unwrap_dm(*recipient, *wrap);
    if (!dm) {
      std::cout << dm.error_value().message() << "\n";
      return 1;
    }
    std::cout << dm->sender << "\n" << nip59::rumor_to_json(dm->rumor) << "\n";
    return 0;
  }
  return usage();
}
