#include "keyring.hpp"

#include <sodium.h>

#include <cstring>
#include <system_error>
#include <mutex>
#include <set>

namespace ticktock::detail {

namespace {

constexpr std::size_t max_cached_keys = 100'000;

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

storage::identity_record keyring::seal(const identity::agent_keys& keys, time_point created,
                                       std::vector<identity::public_key> retired) const {
  storage::identity_record rec;
  rec.ed25519 = keys.pub.ed25519;
  rec.nostr = keys.pub.nostr;
  auto secret = keys.secret_bytes();
  rec.sealed = master_.seal(secret);
  std::fill(secret.begin(), secret.end(), '\0');
  rec.master_key_id = master_.id();
  rec.created = created;
  rec.retired = std::move(retired);
  return rec;
}

expected<identity::agent_keys> keyring::load(std::string_view id) const {
  auto rec = store_.get_identity(id);
  if (!rec)
    return rec.error_value();
  if (!*rec)
    return error{errc::not_found, "agent '" + std::string{id} + "' has no keys"};
  auto& r = **rec;
  if (r.sealed.empty())
    return error{errc::not_found, "agent '" + std::string{id} + "' has no secret keys on this node"};
  if (r.master_key_id != master_.id())
    return error{errc::invalid_argument, "the keys of '" + std::string{id}
                                           + "' are sealed with master key " + r.master_key_id
                                           + ", not with this node's key " + master_.id()};
  auto secret = master_.open(r.sealed);
  if (!secret)
    return secret.error_value();
  if (secret->size() != 96)
    return error{errc::corrupt_record, "the sealed keys of '" + std::string{id} + "' are "
                                         + std::to_string(secret->size()) + " bytes, not 96"};
  // The box's MAC vouches for the bytes we sealed at creation; deriving the
  // public keys again would cost a wake some 50 us.
  identity::agent_keys keys;
  keys.pub = {r.ed25519, r.nostr};
  std::memcpy(keys.ed25519_secret.data(), secret->data(), 64);
  std::memcpy(keys.nostr_secret.data(), secret->data() + 64, 32);
  sodium_memzero(secret->data(), secret->size());
  return keys;
}

std::optional<identity::public_keys> keyring::public_keys_of(std::string_view id) const {
  std::uint64_t forgotten = 0;
  {
    std::shared_lock<std::shared_mutex> guard{mtx_};
    if (auto i = cache_.find(std::string{id}); i != cache_.end())
      return i->second;
    forgotten = forgotten_;
  }
  auto rec = store_.get_identity(id);
  if (!rec || !*rec)
    return std::nullopt;
  identity::public_keys pub{(*rec)->ed25519, (*rec)->nostr};
  std::unique_lock<std::shared_mutex> guard{mtx_};
  // An agent deleted (or replaced) since the read: what was read may be its
  // old keys, which must not outlive the forget().
  if (forgotten != forgotten_)
    return pub;
  if (cache_.size() >= max_cached_keys)
    cache_.clear();
  cache_.emplace(std::string{id}, pub);
  return pub;
}

void keyring::forget(std::string_view id) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  cache_.erase(std::string{id});
  ++forgotten_;
}

error keyring::stamp(storage::inbox_entry& e, std::string_view to,
                     const identity::agent_keys& sender, std::string envelope_id,
                     const identity::public_key* encrypt_for) {
  if (encrypt_for) {
    auto sealed = identity::encrypt_to(*encrypt_for, e.payload);
    if (!sealed)
      return sealed.error_value();
    e.payload = std::move(*sealed);
    e.encrypted = true;
  }
  e.envelope_id = std::move(envelope_id);
  auto sig = identity::sign(sender, identity::envelope_signing_bytes(
                                      e.envelope_id, e.from, to, e.time.time_since_epoch().count(),
                                      e.encrypted, e.payload));
  e.signature.assign(reinterpret_cast<const char*>(sig.data()), sig.size());
  // Checked against the sender's key looked up here while the sender is an
  // agent of this node; carried for when it is not (deleted, or the
  // recipient moved to another node with export/import).
  e.sender_key.assign(reinterpret_cast<const char*>(sender.pub.ed25519.data()),
                      sender.pub.ed25519.size());
  return {};
}

std::optional<keyring::refusal> keyring::open(storage::inbox_entry& e, std::string_view self,
                                              const identity::agent_keys* self_keys) const {
  if (e.from.empty() && e.signature.empty() && !e.encrypted)
    return std::nullopt;  // from outside, authenticated by the driver that took it
  if (auto bad = check_signature(e, self))
    return bad;
  if (e.encrypted) {
    if (!self_keys)
      return refusal{"undecryptable", "the message is encrypted but this agent has no keys"};
    auto plain = identity::decrypt(*self_keys, e.payload);
    if (!plain)
      return refusal{"undecryptable", plain.error_value().message()};
    e.payload = std::move(*plain);
  }
  return std::nullopt;
}

std::optional<keyring::refusal> keyring::check_signature(const storage::inbox_entry& e,
                                                         std::string_view self,
                                                         identity::public_key* verified_with) const {
  if (e.signature.empty())
    return refusal{"bad_signature", "message claims sender '" + e.from + "' but is not signed"};
  identity::public_key key{};
  if (auto pub = public_keys_of(e.from)) {
    key = pub->ed25519;
  } else if (e.sender_key.size() == key.size()) {
    std::memcpy(key.data(), e.sender_key.data(), key.size());
  } else {
    return refusal{"bad_signature",
                   "sender '" + e.from + "' is unknown here and the message carries no sender key"};
  }
  auto signing = identity::envelope_signing_bytes(e.envelope_id, e.from, self,
                                                 e.sent.value_or(e.time).time_since_epoch().count(),
                                                 e.encrypted, e.payload);
  if (!identity::verify(key, signing, bytes_of(e.signature)))
    return refusal{"bad_signature", "the signature of the message from '" + e.from
                                      + "' does not verify with the sender's key"};
  if (verified_with)
    *verified_with = key;
  return std::nullopt;
}

namespace {

std::filesystem::path pending_path(const std::filesystem::path& path) {
  auto p = path;
  p += ".new";
  return p;
}

// Which master key ids the stored identity records are sealed with.
std::set<std::string> sealing_keys(const storage::store& store) {
  std::set<std::string> ids;
  store.for_each_identity([&](const std::string&, expected<storage::identity_record> r) {
    if (r && !r->sealed.empty())
      ids.insert(r->master_key_id);
  });
  return ids;
}

error rename_into_place(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::rename(from, to, ec);
  if (ec)
    return error{errc::storage_failure,
                 "cannot rename " + from.string() + " to " + to.string() + ": " + ec.message()};
  return {};
}

}  // namespace

expected<identity::master_key> open_master_key(const storage::store& store,
                                               const std::filesystem::path& path) {
  auto pending = pending_path(path);
  std::error_code ec;
  if (std::filesystem::exists(pending, ec)) {
    auto next = identity::master_key::load(pending, false);
    if (!next)
      return next.error_value();
    if (sealing_keys(store).count(next->id())) {
      if (auto err = rename_into_place(pending, path))
        return err;
    } else {
      std::filesystem::remove(pending, ec);
    }
  }
  auto used = sealing_keys(store);
  // A missing file is created only for a store that has sealed nothing yet:
  // on a store of sealed keys it would be a new key that opens none of them.
  if (!used.empty() && !std::filesystem::exists(path, ec))
    return error{errc::invalid_argument, "agents' keys are sealed with master key " + *used.begin()
                                           + " but there is no master key file " + path.string()};
  auto key = identity::master_key::load(path, true);
  if (!key)
    return key.error_value();
  used.erase(key->id());
  if (!used.empty())
    return error{errc::invalid_argument, "agents' keys are sealed with master key " + *used.begin()
                                           + " but " + path.string() + " holds key " + key->id()};
  return key;
}

expected<std::size_t> rotate_master_key(storage::store& store, const std::filesystem::path& path) {
  auto old = open_master_key(store, path);
  if (!old)
    return old.error_value();
  auto next = identity::master_key::generate();
  auto pending = pending_path(path);
  if (auto err = next.save(pending))
    return err;
  storage::identity_op op;
  error failed;
  store.for_each_identity([&](const std::string& id, expected<storage::identity_record> r) {
    if (failed)
      return;
    if (!r) {
      failed = r.error_value();
      return;
    }
    if (!r->sealed.empty()) {
      auto secret = old->open(r->sealed);
      if (!secret) {
        failed = error{secret.code(), "agent '" + id + "': " + secret.error_value().message()};
        return;
      }
      r->sealed = next.seal(*secret);
      sodium_memzero(secret->data(), secret->size());
      r->master_key_id = next.id();
    }
    op.records.emplace_back(id, std::move(*r));
  });
  auto undo = [&](error err) -> expected<std::size_t> {
    std::error_code ec;
    std::filesystem::remove(pending, ec);
    return err;
  };
  if (failed)
    return undo(failed);
  auto count = op.records.size();
  std::vector<storage::write_op> ops;
  ops.emplace_back(std::move(op));
  if (auto res = store.apply(ops); res[0].err)
    return undo(res[0].err);
  if (auto err = rename_into_place(pending, path))
    return err;  // the next open finishes the rotation
  return count;
}

error sign_as(const keyring& keys, const std::string& from, const std::string& to, bool encrypted,
              storage::inbox_entry& e, const identity::public_key* recipient_key) {
  auto sender = keys.load(from);
  if (!sender)
    return error{errc::invalid_argument,
                 "cannot send as '" + from + "': " + sender.error_value().message()};
  std::optional<identity::public_key> recipient;
  if (encrypted && recipient_key) {
    recipient = *recipient_key;
  } else if (encrypted) {
    auto pub = keys.public_keys_of(to);
    if (!pub)
      return error{errc::not_found, "cannot encrypt for '" + to + "': it has no keys here"};
    recipient = pub->ed25519;
  }
  std::string id(16, '\0');
  randombytes_buf(id.data(), id.size());
  e.from = from;
  return keyring::stamp(e, to, *sender, std::move(id), recipient ? &*recipient : nullptr);
}

}  // namespace ticktock::detail
