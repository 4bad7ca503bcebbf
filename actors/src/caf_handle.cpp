// The gateway behind an agent_handle: an actor per handle that turns
// (deliver_atom, payload) into node::send_async and replies once the message
// is durable. The completion comes back as a message to the gateway, so the
// response promise is fulfilled on the gateway's own thread.

#include "ticktock/actors/caf_handle.hpp"

#include <caf/all.hpp>

#include <unordered_map>

#include "node_core.hpp"
#include "ticktock/runtime/agent_id.hpp"

namespace ticktock {

namespace {

using done_atom = caf::atom_constant<caf::atom("done")>;
constexpr caf::atom_value error_category = caf::atom("ticktock");

struct gateway_state {
  std::unordered_map<std::uint64_t, caf::typed_response_promise<std::uint64_t>> waiting;
  std::uint64_t next = 0;
  static inline const char* name = "ticktock.gateway";
};

caf::behavior gateway(caf::stateful_actor<gateway_state>* self, node* n, std::string id) {
  return {
    [=](deliver_atom, std::string& payload) -> caf::typed_response_promise<std::uint64_t> {
      auto rp = self->make_response_promise<std::uint64_t>();
      auto token = ++self->state.next;
      self->state.waiting.emplace(token, rp);
      caf::actor me = caf::actor_cast<caf::actor>(self);
      n->send_async(id, std::move(payload), {}, [me, token](expected<send_receipt> r) {
        if (r)
          caf::anon_send(me, done_atom::value, token, r->seq, std::uint8_t{0}, std::string{});
        else
          caf::anon_send(me, done_atom::value, token, std::uint64_t{0},
                         static_cast<std::uint8_t>(r.code()), r.error_value().message());
      });
      return rp;
    },
    [=](done_atom, std::uint64_t token, std::uint64_t seq, std::uint8_t code,
        const std::string& message) {
      auto i = self->state.waiting.find(token);
      if (i == self->state.waiting.end())
        return;
      if (code == 0)
        i->second.deliver(seq);
      else
        i->second.deliver(caf::error{code, error_category, caf::make_message(message)});
      self->state.waiting.erase(i);
    },
  };
}

}  // namespace

expected<agent_handle> caf_handle(node& n, const std::string& id) {
  if (auto err = check_agent_id(id))
    return err;
  if (!n.status(id))
    return n.status(id).error_value();
  auto g = caf_system(n).spawn(gateway, &n, id);
  return caf::actor_cast<agent_handle>(g);
}

caf::actor_system& caf_system(node& n) { return *n.core().system; }

errc caf_errc(const caf::error& err) noexcept {
  if (err.category() != error_category)
    return errc::ok;
  return static_cast<errc>(err.code());
}

}  // namespace ticktock
