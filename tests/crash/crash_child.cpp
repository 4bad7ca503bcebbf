// crash_child: the process that crash_test.cpp starts, SIGKILLs at random
// points and restarts. It speaks a line protocol on stdout. Every line of
// `run` is one write(2) of less than PIPE_BUF bytes, so a line is either whole
// or absent when the process dies, and lines written before the kill can
// still be read after it.
//
//   crash_child run DIR START_N COUNT [RESEND_FILE]
//     Opens a node on DIR (durability sync), creates the agents s0..s7 and
//     c0..c7 if missing, re-sends every number listed in RESEND_FILE, then
//     sends START_N .. START_N+COUNT-1. Number n goes to c(n % 8) with
//     payload "n" and idempotency key "k<n>". Prints
//       OPEN                      once the node is open
//       READY                     once the agents exist
//       SEND n                    before the send is submitted
//       ACK n DUP                 after the node acknowledged it (DUP 0|1)
//       FAIL n CODE               if the node rejected it
//       IDLE 0|1                  after all sends, whether wait_idle succeeded
//       EXIT                      after the node shut down
//   crash_child verify DIR
//     Opens the node, waits until idle and prints per agent
//       AGENT id applied=n,n,... chain=ok|bad:reason depth=D dead=D errored=0|1
//     then DONE.
//
// Counter agents c0..c7 record every number they apply and forward it to
// their sink (c3 to s3) through ctx.send; sinks record what they receive.
// This checks that agent-to-agent messages are exactly-once as well.

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ticktock/ticktock.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int counter_agents = 8;
constexpr int sender_threads = 4;
constexpr int window_per_thread = 2;  // async sends in flight per thread

struct applied_state {
  std::vector<std::uint64_t> applied;  // numbers, in the order they were applied
};

bool parse_number(std::string_view s, std::uint64_t& n) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
}

/// Records each message number and forwards it to its sink: c<i> to s<i>.
struct counter_agent : ticktock::agent<applied_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    if (t.kind != ticktock::trigger_kind::message)
      return;
    std::uint64_t n = 0;
    if (!parse_number(t.payload, n)) {
      ctx.fail("payload is not a number: " + t.payload);
      return;
    }
    state().applied.push_back(n);
    ctx.send("s" + ctx.self().substr(1), t.payload);
  }
};

/// Records each number its counter forwards.
struct sink_agent : ticktock::agent<applied_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    if (t.kind != ticktock::trigger_kind::message)
      return;
    std::uint64_t n = 0;
    if (!parse_number(t.payload, n)) {
      ctx.fail("payload is not a number: " + t.payload);
      return;
    }
    state().applied.push_back(n);
  }
};

ticktock::agent_registry registry() {
  ticktock::agent_registry r;
  r.add<counter_agent>("counter");
  r.add<sink_agent>("sink");
  return r;
}

// Writes one line with a single write(2) (atomic on a pipe below PIPE_BUF).
void say(std::string line) {
  line.push_back('\n');
  std::string_view rest = line;
  while (!rest.empty()) {
    auto n = ::write(1, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR)
        continue;
      std::_Exit(3);  // the parent went away
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "crash_child: %s\n", what.c_str());
  std::exit(2);
}

std::unique_ptr<ticktock::node> open_node(const std::string& dir) {
  ticktock::node_options opts;
  opts.data_dir = dir;
  opts.durability = ticktock::durability::sync;
  auto n = ticktock::node::open(opts, registry());
  if (!n)
    die("cannot open node: " + n.error_value().to_string());
  return std::move(*n);
}

std::string agent_of(std::uint64_t n) { return "c" + std::to_string(n % counter_agents); }

// A counting window of async sends in flight.
class window {
public:
  explicit window(int size) : free_(size), size_(size) {}
  void acquire() {
    std::unique_lock<std::mutex> lock{mtx_};
    cv_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void release() {
    std::lock_guard<std::mutex> guard{mtx_};
    ++free_;
    cv_.notify_all();
  }
  void drain() {
    std::unique_lock<std::mutex> lock{mtx_};
    cv_.wait(lock, [&] { return free_ == size_; });
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  int free_;
  int size_;
};

int run(const std::string& dir, std::uint64_t start, std::uint64_t count,
        const std::string& resend_file) {
  std::vector<std::uint64_t> numbers;
  if (!resend_file.empty()) {
    std::ifstream in{resend_file};
    if (!in)
      die("cannot read " + resend_file);
    std::string line;
    while (std::getline(in, line)) {
      std::uint64_t n = 0;
      if (line.empty())
        continue;
      if (!parse_number(line, n))
        die("bad line in resend file: " + line);
      numbers.push_back(n);
    }
  }
  for (std::uint64_t n = start; n < start + count; ++n)
    numbers.push_back(n);

  // The windows outlive the node, whose callbacks release them.
  std::vector<std::unique_ptr<window>> windows;
  auto node = open_node(dir);
  say("OPEN");
  // Sinks first, so counters never forward to an unknown agent.
  std::vector<std::pair<std::string, std::string>> agents;
  for (int i = 0; i < counter_agents; ++i)
    agents.emplace_back("s" + std::to_string(i), "sink");
  for (int i = 0; i < counter_agents; ++i)
    agents.emplace_back("c" + std::to_string(i), "counter");
  for (auto& [id, type] : agents)
    if (auto err = node->create(id, type); err && err.code() != ticktock::errc::already_exists)
      die("cannot create " + id + ": " + err.to_string());
  say("READY");

  for (int t = 0; t < sender_threads; ++t)
    windows.push_back(std::make_unique<window>(window_per_thread));
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < sender_threads; ++t)
    threads.emplace_back([&, t] {
      auto& w = *windows[static_cast<std::size_t>(t)];
      for (;;) {
        auto i = next.fetch_add(1);
        if (i >= numbers.size())
          break;
        auto n = numbers[i];
        ticktock::send_options opts;
        opts.idempotency_key = "k" + std::to_string(n);
        w.acquire();
        say("SEND " + std::to_string(n));
        node->send_async(agent_of(n), std::to_string(n), opts,
                         [n, &w](ticktock::expected<ticktock::send_receipt> r) {
                           if (r)
                             say("ACK " + std::to_string(n) + (r->duplicate ? " 1" : " 0"));
                           else
                             say("FAIL " + std::to_string(n) + " " + r.error_value().to_string());
                           w.release();
                         });
      }
      w.drain();
    });
  for (auto& t : threads)
    t.join();
  say(node->wait_idle(15s) ? "IDLE 1" : "IDLE 0");
  node.reset();
  say("EXIT");
  return 0;
}

std::string join(const std::vector<std::uint64_t>& v) {
  std::string s;
  for (auto n : v) {
    if (!s.empty())
      s.push_back(',');
    s += std::to_string(n);
  }
  return s;
}

int verify(const std::string& dir) {
  auto node = open_node(dir);
  say(node->wait_idle(15s) ? "IDLE 1" : "IDLE 0");
  for (auto& st : node->list({}, 1000)) {
    std::string line = "AGENT " + st.id;
    auto s = node->state<applied_state>(st.id);
    line += " applied=" + (s ? join(s->applied) : std::string{"?"});
    auto rep = node->verify(st.id);
    if (!rep)
      line += " chain=bad:" + rep.error_value().to_string();
    else if (!rep->ok)
      line += " chain=bad:" + rep->reason;
    else
      line += " chain=ok";
    // Replace spaces so the line stays space-separated.
    for (auto pos = line.find("chain=bad:"); pos != std::string::npos && pos < line.size(); ++pos)
      if (line[pos] == ' ')
        line[pos] = '_';
    auto dead = node->deadletter(st.id);
    line += " depth=" + std::to_string(st.queue_depth);
    line += " dead=" + (dead ? std::to_string(dead->size()) : std::string{"?"});
    line += " errored=" + std::string{st.state == ticktock::agent_state::errored ? "1" : "0"};
    say(line);
  }
  say("DONE");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::uint64_t start = 0;
  std::uint64_t count = 0;
  if (args.size() >= 4 && args.size() <= 5 && args[0] == "run" && parse_number(args[2], start)
      && parse_number(args[3], count))
    return run(args[1], start, count, args.size() == 5 ? args[4] : std::string{});
  if (args.size() == 2 && args[0] == "verify")
    return verify(args[1]);
  std::fprintf(stderr,
               "usage: crash_child run DIR START_N COUNT [RESEND_FILE]\n"
               "       crash_child verify DIR\n");
  return 2;
}
