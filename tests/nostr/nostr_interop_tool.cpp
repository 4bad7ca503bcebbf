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
//   agent-publish DIR (text on stdin)   opens a ticktock node on DIR (created if
//                                     missing; the agent "interop" too), sends
//                                     the agent "publish:<text>" so that its tick
//                                     calls ctx.nostr_publish(1, text, [["t","ticktock"]]);
//                                     prints the agent's hex pubkey, its npub, then
//                                     the outbox event of topic "nostr" (the JSON
//                                     the Nostr driver sends to relays)
//   agent-receive-dm DIR (gift wrap JSON on stdin) puts the event in the inbox
//                                     of DIR's agent "interop" as the Nostr driver
//                                     does (send_options.nostr, idempotency key
//                                     "nostr:<id>"); prints the payload its tick
//                                     saw, or the deadletter reason and error, or
//                                     "duplicate" for an event it had (exit 1)
//
// Exit codes: 0 success, 1 rejected input (reason on stdout or stderr), 2 usage.

#include <chrono>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/nostr.hpp"
#include "ticktock/ticktock.hpp"

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
               "wrap-dm SEC PUB [WRAP_TO] | unwrap-dm SEC | agent-publish DIR | agent-receive-dm DIR\n";
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

// The agent of agent-publish / agent-receive-dm: records every message it
// gets; "publish:<text>" also publishes <text> as a kind-1 note.
struct interop_state {
  std::vector<std::string> seen;
};
struct interop_agent : agent<interop_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind != trigger_kind::message)
      return;
    state().seen.push_back(t.payload);
    if (t.payload.rfind("publish:", 0) == 0)
      ctx.nostr_publish(1, t.payload.substr(8), {{"t", "ticktock"}});
  }
};

const std::string agent_id = "interop";

// Opens the node on `dir` with the agent created.
expected<std::unique_ptr<node>> open_node(std::string_view dir) {
  agent_registry r;
  r.add<interop_agent>("interop");
  node_options o;
  o.data_dir = std::string{dir};
  o.threads = 1;
  auto n = node::open(o, std::move(r));
  if (!n)
    return n;
  if (auto err = (*n)->create(agent_id, "interop", "{}"); err && err.code() != errc::already_exists)
    return err;
  return n;
}

int agent_publish(std::string_view dir) {
  auto n = open_node(dir);
  if (!n)
    return fail(n.error_value());
  auto& nd = **n;
  auto before = nd.outbox(agent_id);
  if (!before)
    return fail(before.error_value());
  if (auto r = nd.send(agent_id, "publish:" + read_stdin()); !r)
    return fail(r.error_value());
  if (!nd.wait_idle(std::chrono::seconds{30}))
    return fail(error{errc::timeout, "the agent did not tick within 30 s"});
  auto out = nd.outbox(agent_id, before->empty() ? 0 : before->back().seq + 1);
  if (!out)
    return fail(out.error_value());
  auto keys = nd.public_keys(agent_id);
  if (!keys)
    return fail(keys.error_value());
  for (auto& ev : *out) {
    if (ev.topic != "nostr")
      continue;
    std::cout << to_hex(keys->nostr) << "\n" << npub(keys->nostr) << "\n" << ev.payload << "\n";
    return 0;
  }
  std::cerr << "the tick published no event of topic \"nostr\"\n";
  return 1;
}

int agent_receive_dm(std::string_view dir) {
  auto n = open_node(dir);
  if (!n)
    return fail(n.error_value());
  auto& nd = **n;
  auto wrap = event_from_json(read_stdin(), nip59::max_layer_content_bytes);
  if (!wrap)
    return fail(wrap.error_value());
  auto seen_before = nd.state<interop_state>(agent_id);
  auto dead_before = nd.deadletter(agent_id);
  if (!seen_before || !dead_before)
    return fail(!seen_before ? seen_before.error_value() : dead_before.error_value());
  // As the Nostr driver puts a relay's event in the inbox.
  send_options so;
  so.nostr = true;
  so.idempotency_key = "nostr:" + wrap->id;
  auto r = nd.send(agent_id, to_json(*wrap), so);
  if (!r)
    return fail(r.error_value());
  if (r->duplicate) {
    std::cout << "duplicate\n";
    return 1;
  }
  if (!nd.wait_idle(std::chrono::seconds{30}))
    return fail(error{errc::timeout, "the agent did not tick within 30 s"});
  auto seen = nd.state<interop_state>(agent_id);
  auto dead = nd.deadletter(agent_id);
  if (!seen || !dead)
    return fail(!seen ? seen.error_value() : dead.error_value());
  if (seen->seen.size() > seen_before->seen.size()) {
    std::cout << seen->seen.back() << "\n";
    return 0;
  }
  if (dead->size() > dead_before->size()) {
    std::cout << dead->back().reason << ": " << dead->back().error << "\n";
    return 1;
  }
  std::cerr << "the agent neither ticked on the event nor deadlettered it\n";
  return 1;
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
  if (cmd == "agent-publish" && args.size() == 2)
    return agent_publish(args[1]);
  if (cmd == "agent-receive-dm" && args.size() == 2)
    return agent_receive_dm(args[1]);
  return usage();
}
