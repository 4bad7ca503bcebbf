#include "ticktock/actors/test_harness.hpp"

#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>

#include "agent_host.hpp"
#include "keyring.hpp"
#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::testing {

struct harness::loaded {
  std::unique_ptr<detail::agent_host> host;
};

namespace {

std::filesystem::path make_temp_dir() {
  auto base = std::filesystem::temp_directory_path() / "ticktock-test-XXXXXX";
  std::string tmpl = base.string();
  if (!mkdtemp(tmpl.data()))
    throw std::runtime_error("cannot create a temporary directory");
  return tmpl;
}

// The ticks' clock: the manual clock's time, and a tick takes no time
// (duration_ns 0), so records repeat from run to run.
class tick_clock final : public clock {
public:
  explicit tick_clock(const manual_clock& c) : c_(c) {}
  time_point now() const override { return c_.now(); }
  std::chrono::nanoseconds elapsed() const override { return {}; }

private:
  const manual_clock& c_;
};

}  // namespace

harness::harness(agent_registry registry, harness_options options)
  : registry_(std::move(registry)), options_(std::move(options)),
    clock_(std::make_shared<manual_clock>(options_.start)),
    tick_clock_(std::make_unique<tick_clock>(*clock_)) {
  if (options_.dir.empty()) {
    dir_ = make_temp_dir();
    owns_dir_ = true;
  } else {
    dir_ = options_.dir;
  }
  open_store();
}

void harness::open_store() {
  storage::store_options so;
  so.dir = dir_;
  so.faults = options_.faults;
  so.idempotency_ttl = options_.idempotency_ttl;
  so.clock = clock_;
  auto s = storage::store::open(so);
  if (!s)
    throw std::runtime_error(s.error_value().to_string());
  store_ = std::move(*s);
  auto master = detail::open_master_key(*store_, dir_ / "master.key");
  if (!master)
    throw std::runtime_error(master.error_value().to_string());
  keys_ = std::make_unique<detail::keyring>(*store_, std::move(*master));
}

harness::~harness() {
  hosts_.clear();
  keys_.reset();
  store_.reset();
  if (owns_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::vector<storage::op_result> harness::apply(storage::write_op op) {
  std::vector<storage::write_op> ops;
  ops.push_back(std::move(op));
  return store_->apply(ops);
}

error harness::create(const std::string& id, const std::string& type, std::string config) {
  if (auto err = check_agent_id(id))
    return err;
  if (auto err = registry_.check(type))
    return err;
  storage::create_op op;
  op.meta.id = id;
  op.meta.type = type;
  op.meta.config = config;
  op.meta.created = clock_->now();
  op.init.kind = trigger_kind::init;
  op.init.time = op.meta.created;
  op.init.payload = std::move(config);
  // In the harness's own temporary store, keys derived from the id (test
  // keys, anyone can derive them): the same agent signs the same records on
  // every run. A store in a directory the caller keeps gets random keys, as
  // a node's: it may be opened by a node later.
  auto keys = owns_dir_ ? identity::agent_keys::from_seed(
                            storage::blake2b("ticktock/harness-keys/" + id))
                        : identity::agent_keys::generate();
  op.identity = keys_->seal(keys, op.meta.created);
  return apply(std::move(op))[0].err;
}

expected<send_receipt> harness::send(const std::string& id, std::string payload,
                                     const send_options& opts) {
  if (auto err = check_agent_id(id))
    return err;
  if (payload.size() > options_.limits.max_message_bytes)
    return error{errc::message_too_large, "message exceeds the size limit"};
  storage::enqueue_op op;
  op.agent = id;
  op.entry.kind = opts.kind;
  op.entry.time = clock_->now();
  op.entry.from = opts.from;
  op.entry.payload = std::move(payload);
  op.entry.idempotency_key = opts.idempotency_key;
  op.entry.nostr = opts.nostr;
  op.depth_limit = options_.limits.inbox_limit;
  if (!opts.from.empty())
    if (auto err = detail::sign_as(*keys_, opts.from, id, opts.encrypted, op.entry))
      return err;
  auto r = apply(std::move(op))[0];
  if (r.err)
    return r.err;
  return send_receipt{r.seq, r.duplicate};
}

expected<send_receipt> harness::tick(const std::string& id) {
  send_options opts;
  opts.kind = trigger_kind::ctl;
  return send(id, "tick", opts);
}

expected<send_receipt> harness::send_http(const std::string& id, const http_request& req) {
  send_options opts;
  opts.kind = trigger_kind::http;
  return send(id, req.encode(), opts);
}

std::optional<expected<http_reply>> harness::reply(const std::string& id, std::uint64_t seq) {
  auto i = replies_.find({id, seq});
  if (i == replies_.end())
    return std::nullopt;
  auto out = std::move(i->second);
  replies_.erase(i);
  return out;
}

expected<http_reply> harness::http(const std::string& id, const http_request& req) {
  auto r = send_http(id, req);
  if (!r)
    return r.error_value();
  run();
  if (auto out = reply(id, r->seq))
    return std::move(*out);
  if (deferred_.count({id, r->seq}))
    return error{errc::timeout, "agent '" + id + "' deferred its reply to http trigger "
                                  + std::to_string(r->seq) + " and no tick has given it yet"};
  return error{errc::agent_errored, "agent '" + id + "' did not tick"};
}

error harness::terminate(const std::string& id) {
  hosts_.erase(id);
  // A new agent of the id counts its seqs again: none of these are its.
  std::erase_if(replies_, [&](auto& r) { return r.first.first == id; });
  std::erase_if(deferred_, [&](auto& d) { return d.first == id; });
  keys_->forget(id);
  return apply(storage::terminate_op{id})[0].err;
}

harness::loaded* harness::host(const std::string& id) {
  if (errored_.count(id))
    return nullptr;
  if (auto i = hosts_.find(id); i != hosts_.end())
    return i->second.get();
  auto fail = [&](std::string reason) -> loaded* {
    errored_[id] = reason;
    apply(storage::mark_errored_op{id, std::move(reason)});
    return nullptr;
  };
  auto meta = store_->get_agent(id);
  if (!meta)
    return fail(meta.error_value().to_string());
  if (auto mark = store_->errored_mark(id))
    return fail(*mark);
  auto host = detail::load_agent(registry_, *store_, *keys_, *tick_clock_, std::move(*meta),
                                 options_.limits);
  if (!host)
    return fail(host.error_value().to_string());
  auto l = std::make_unique<loaded>();
  l->host = std::move(*host);
  return (hosts_[id] = std::move(l)).get();
}

std::size_t harness::run() {
  std::size_t attempts = 0;
  for (bool progress = true; progress;) {
    progress = false;
    for (auto& id : store_->agents_with_inbox()) {
      auto* l = host(id);
      if (!l)
        continue;
      auto entries = store_->read_inbox(id, 0, 1);
      if (entries.empty())
        continue;
      auto a = l->host->run(entries.front());
      l->host->seal({&a.op, 1});
      l->host->advance(a);
      auto r = apply(std::move(a.op))[0];
      ++attempts;
      progress = true;
      if (r.err) {
        l->host->rolled_back();
        throw std::runtime_error("commit failed: " + r.err.to_string());
      }
      if (a.kind == trigger_kind::http && a.outcome != storage::outcome::failed) {
        std::pair<std::string, std::uint64_t> key{id, a.trigger_seq};
        if (a.outcome == storage::outcome::deadlettered)
          replies_.insert_or_assign(key, error{errc::tick_failed, a.error});
        else if (a.reply || !a.reply_deferred)
          replies_.insert_or_assign(key, a.reply ? *a.reply : http_reply{204, {}, {}});
        else
          deferred_.insert(std::move(key));  // a later tick answers, with reply_to
      }
      if (a.outcome == storage::outcome::ok)
        for (auto& [seq, late] : a.late_replies)
          if (deferred_.erase({id, seq}))
            replies_.insert_or_assign({id, seq}, std::move(late));
      l->host->committed();
    }
  }
  return attempts;
}

void harness::fire_alarms(time_point missed_before) {
  for (;;) {
    storage::fire_alarms_op op;
    op.now = clock_->now();
    op.missed_before = missed_before;
    op.policy = options_.missed_alarms;
    op.depth_limit = [limit = options_.limits.inbox_limit](const std::string&) { return limit; };
    auto r = apply(op)[0];
    if (r.err)
      throw std::runtime_error("firing alarms failed: " + r.err.to_string());
    if (!r.more_alarms)
      return;
  }
}

std::size_t harness::advance(duration d) {
  clock_->advance(d);
  // Alarms fire in due order, each followed by the ticks it causes, so a
  // periodic alarm crossed several times fires once per period.
  std::size_t attempts = run();
  for (;;) {
    auto due = store_->next_alarm_due();
    if (!due || *due > clock_->now())
      break;
    auto now = clock_->now();
    clock_->set(*due);
    fire_alarms(time_point{});
    clock_->set(now);
    attempts += run();
  }
  return attempts;
}

void harness::restart() {
  hosts_.clear();
  errored_.clear();
  deferred_.clear();  // their clients' connections are gone with the process
  keys_.reset();
  store_.reset();
  open_store();
  fire_alarms(clock_->now());
}

std::string harness::state_bytes(const std::string& id) const {
  auto s = store_->get_state(id);
  return s && *s ? **s : std::string{};
}

std::vector<storage::outbox_event> harness::outbox(const std::string& id) const {
  return store_->read_outbox(id, 0, SIZE_MAX);
}

std::vector<storage::trajectory_record> harness::trajectory(const std::string& id) const {
  return store_->read_trajectory(id, 0, SIZE_MAX);
}

storage::chain_report harness::verify(const std::string& id) const {
  auto rep = store_->verify_trajectory(id);
  if (rep)
    return *rep;
  storage::chain_report failed;  // no agent: nothing verifies
  failed.ok = false;
  failed.first_bad = 0;
  failed.reason = rep.error_value().to_string();
  return failed;
}

std::vector<storage::deadletter_entry> harness::deadletter(const std::string& id) const {
  return store_->read_deadletter(id, 0, SIZE_MAX);
}

std::vector<storage::alarm_record> harness::alarms(const std::string& id) const {
  return store_->list_alarms(id);
}

bool harness::errored(const std::string& id) const {
  return errored_.count(id) != 0 || store_->errored_mark(id).has_value();
}

}  // namespace ticktock::testing
