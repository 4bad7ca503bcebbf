#include "ticktock/runtime/nostr_agent.hpp"

#include <boost/json.hpp>

namespace ticktock::nostr {

namespace json = boost::json;

namespace {

json::array tags_json(const std::vector<std::vector<std::string>>& tags) {
  json::array out;
  for (auto& t : tags) {
    json::array row;
    for (auto& v : t)
      row.emplace_back(v);
    out.push_back(std::move(row));
  }
  return out;
}

std::string payload_of(const event& e, bool dm) {
  json::object o{{"id", e.id},
                 {"kind", e.kind},
                 {"from", e.pubkey},
                 {"created_at", e.created_at},
                 {"content", e.content},
                 {"tags", tags_json(e.tags)}};
  if (auto pk = key_from_hex(e.pubkey))
    o["npub"] = npub(*pk);
  if (dm)
    o["dm"] = true;
  return json::serialize(json::object{{"nostr", std::move(o)}});
}

}  // namespace

expected<std::string> sign_note(const keypair& self, const nostr_note& note,
                                std::int64_t created_at) {
  event e;
  e.kind = note.kind;
  e.content = note.content;
  e.tags = note.tags;
  e.created_at = created_at;
  auto signed_event = sign_event(std::move(e), self);
  if (auto err = verify_event(signed_event))  // kind range, UTF-8
    return error{errc::invalid_argument, "nostr_publish: " + err.message()};
  return to_json(signed_event);
}

inbound_result open_inbound(const keypair& self, std::string_view event_json) {
  auto e = event_from_json(event_json, nip59::max_layer_content_bytes);
  if (!e)
    return {{}, inbound_refusal{"malformed", e.error_value().message()}};
  if (auto err = verify_event(*e))
    return {{}, inbound_refusal{"bad_signature", err.message()}};
  if (e->kind != nip59::gift_wrap_kind)
    return {payload_of(*e, false), std::nullopt};
  auto dm = nip17::unwrap_dm(self, *e);
  if (!dm)
    return {{}, inbound_refusal{"undecryptable", dm.error_value().message()}};
  return {payload_of(dm->rumor, true), std::nullopt};
}

}  // namespace ticktock::nostr
