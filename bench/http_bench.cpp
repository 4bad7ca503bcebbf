// http: HTTP-triggered durable ticks against a running ticktockd. The real
// ticktockd binary runs as a child process (--durability async, --quiet) with
// `counter` agents created through POST /v1/agents; a Beast client in this
// process drives `POST /a/{id}/` over N keep-alive connections, closed loop
// per connection (1 agent, then many), then open loop at half the measured
// rate, then GET /healthz (the HTTP driver without a tick). The baseline is
// an in-process Beast server with as many I/O threads as ticktockd has event
// loops (one per core) that answers every request with a constant body,
// driven by the same client code in the same run. Beside req/s and latency,
// each row reports the server threads' CPU time and context switches per
// response.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include <ticktock/drivers/http_server.hpp>
#include <ticktock/drivers/io_loops.hpp>
#include <ticktock/runtime/detail/cpus.hpp>
#include <ticktock/runtime/identity.hpp>

#include "scenarios.hpp"

namespace ticktock::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
const std::string admin_token = "ticktock-bench-admin-token";

// -- CPU time and context switches of server threads -------------------------------

struct cpu_counters {
  double cpu_s = 0;               ///< user + system
  double context_switches = 0;    ///< voluntary + involuntary
};

/// Sums the counters of the threads `tids` of process `pid`, or of all its
/// threads if `tids` is empty (/proc/PID/task/TID/stat and status).
cpu_counters read_cpu(pid_t pid, const std::vector<pid_t>& tids = {}) {
  std::vector<std::filesystem::path> tasks;
  auto base = std::filesystem::path{"/proc"} / std::to_string(pid) / "task";
  std::error_code ec;
  if (tids.empty())
    for (auto& t : std::filesystem::directory_iterator(base, ec))
      tasks.push_back(t.path());
  else
    for (auto t : tids)
      tasks.push_back(base / std::to_string(t));
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  cpu_counters c;
  for (auto& t : tasks) {
    std::ifstream stat{t / "stat"};
    std::string line;
    std::getline(stat, line);
    // Fields after the parenthesised name; utime and stime are fields 14 and 15.
    auto paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 > line.size())
      continue;
    std::istringstream fields{line.substr(paren + 2)};
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i)
      if (i == 14)
        utime = std::stod(field);
      else if (i == 15)
        stime = std::stod(field);
    c.cpu_s += (utime + stime) / ticks;
    std::ifstream status{t / "status"};
    while (std::getline(status, line))
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0
          || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        c.context_switches += std::stod(line.substr(line.find(':') + 1));
  }
  return c;
}

// -- the ticktockd child process ------------------------------------------------

/// The ticktockd binary: --ticktockd, else the one CMake built beside this
/// bench, else ../tools/ticktockd relative to this executable's directory.
std::filesystem::path find_ticktockd(const config& cfg) {
  if (!cfg.ticktockd.empty())
    return cfg.ticktockd;
  std::error_code ec;
#ifdef TICKTOCK_BENCH_TICKTOCKD
  if (std::filesystem::is_regular_file(TICKTOCK_BENCH_TICKTOCKD, ec))
    return TICKTOCK_BENCH_TICKTOCKD;
#endif
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto near = self.parent_path().parent_path() / "tools" / "ticktockd";
    if (std::filesystem::is_regular_file(near, ec))
      return near;
  }
  return {};
}

/// ticktockd started on 127.0.0.1 with a free port, a given data directory
/// and admin token. Its stdout is read until the start line, then drained
/// (with --quiet only the stop lines follow). The child gets SIGTERM if this
/// process dies.
class ticktockd_process {
public:
  ticktockd_process(const std::filesystem::path& exe, const std::filesystem::path& data,
                    const std::vector<std::string>& extra) {
    if (access(exe.c_str(), X_OK) != 0)
      throw bench_error{"ticktockd: cannot execute " + exe.string() + ": " + std::strerror(errno)};
    std::vector<std::string> args{exe.string(),   "--data",       data.string(),
                                  "--listen",     "127.0.0.1:0",  "--admin-token",
                                  admin_token,    "--durability", "async",
                                  "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
      throw bench_error{std::string{"pipe2: "} + std::strerror(errno)};
    auto parent = getpid();
    pid_ = fork();
    if (pid_ < 0)
      throw bench_error{std::string{"fork: "} + std::strerror(errno)};
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent)
        _exit(127);
      dup2(fds[1], STDOUT_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_fd_ = fds[0];
    try {
      read_start_line();
    } catch (...) {
      stop();
      throw;
    }
    drain_ = std::thread{[fd = out_fd_] {
      char buf[4096];
      while (read(fd, buf, sizeof buf) > 0) {
      }
    }};
  }

  ~ticktockd_process() { stop(); }
  ticktockd_process(const ticktockd_process&) = delete;
  ticktockd_process& operator=(const ticktockd_process&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  pid_t pid() const noexcept { return pid_; }

  /// SIGTERM, then waits (SIGKILL after 30 s). Returns the exit status as
  /// waitpid reports it, or -1 if it was stopped before.
  int stop() {
    int status = -1;
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      auto deadline = steady::now() + 30s;
      for (;;) {
        auto r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno != EINTR))
          break;
        if (steady::now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(10ms);
      }
      pid_ = -1;
    }
    if (drain_.joinable())
      drain_.join();
    if (out_fd_ >= 0) {
      close(out_fd_);
      out_fd_ = -1;
    }
    return status;
  }

private:
  void read_start_line() {
    std::string seen;
    auto deadline = steady::now() + 30s;
    for (;;) {
      for (std::size_t pos; (pos = seen.find('\n')) != std::string::npos; seen.erase(0, pos + 1)) {
        auto line = seen.substr(0, pos);
        if (line.rfind("event=start ", 0) != 0)
          continue;
        auto at = line.find(" listen=");
        auto colon = line.find(':', at);
        auto end = line.find(' ', at + 1);
        if (at == std::string::npos || colon == std::string::npos || colon > end)
          throw bench_error{"ticktockd: no listen= in its start line: " + line};
        port_ = static_cast<std::uint16_t>(std::stoul(line.substr(colon + 1, end - colon - 1)));
        return;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left <= 0ms)
        throw bench_error{"ticktockd did not print its start line within 30 s"};
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
        throw bench_error{std::string{"poll: "} + std::strerror(errno)};
      char buf[4096];
      auto n = read(out_fd_, buf, sizeof buf);
      if (n == 0)
        throw bench_error{"ticktockd exited before it started (see its stderr above)"};
      if (n > 0)
        seen.append(buf, static_cast<std::size_t>(n));
    }
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread drain_;
};

// -- baseline: a bare Beast server ----------------------------------------------

/// The value of ticktockd's boolean option `name` among `args` ("--name",
/// "--name=BOOL"; the last wins), or `fallback`.
bool bool_arg(const std::vector<std::string>& args, const std::string& name, bool fallback) {
  bool v = fallback;
  for (auto& a : args)
    if (a == name)
      v = true;
    else if (a.rfind(name + "=", 0) == 0) {
      auto s = a.substr(name.size() + 1);
      v = !(s == "false" || s == "0" || s == "no" || s == "off");
    }
  return v;
}

/// Whether ticktockd's event loops are pinned (its default), given its args.
bool ticktockd_pins(const std::vector<std::string>& args) {
  return bool_arg(args, "--shared-threads", true) && bool_arg(args, "--pin-threads", true);
}

/// Accepts on 127.0.0.1 with its own I/O threads and answers every request
/// with the same small JSON body. The threading is ticktockd's: one
/// io_context per I/O thread, thread i on `cpus[i]` if `cpus` is not empty (as
/// ticktockd's loops by default), connections placed round-robin at accept,
/// so no strand; per connection the same parser limits and a tcp_stream
/// expiry on each read and write (Beast's own timeouts); keep-alive. Nothing
/// else.
class bare_server {
public:
  bare_server(std::size_t threads, const std::vector<int>& cpus) {
    for (std::size_t i = 0; i < threads; ++i) {
      ios_.push_back(std::make_unique<asio::io_context>(1));
      work_.emplace_back(ios_.back()->get_executor());
    }
    acceptor_.emplace(*ios_.front());
    tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), 0};
    acceptor_->open(ep.protocol());
    acceptor_->set_option(asio::socket_base::reuse_address(true));
    acceptor_->bind(ep);
    acceptor_->listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(*ios_.front(), accept_loop(), asio::detached);
    std::mutex mtx;
    std::condition_variable cv;
    for (std::size_t i = 0; i < threads; ++i)
      threads_.emplace_back([&, this, io = ios_[i].get(), cpu = cpus.empty() ? -1 : cpus[i]] {
        if (cpu >= 0)
          ticktock::detail::pin_this_thread(cpu);
        {
          std::lock_guard<std::mutex> guard{mtx};
          tids_.push_back(gettid());
          cv.notify_one();
        }
        io->run();
      });
    std::unique_lock<std::mutex> lock{mtx};
    cv.wait(lock, [&] { return tids_.size() == threads; });
  }

  ~bare_server() {
    asio::post(*ios_.front(), [this] {
      boost::system::error_code ec;
      acceptor_->close(ec);
    });
    for (auto& io : ios_)
      io->stop();
    for (auto& t : threads_)
      t.join();
    acceptor_.reset();
    work_.clear();
    ios_.clear();
  }

  bare_server(const bare_server&) = delete;
  bare_server& operator=(const bare_server&) = delete;

  std::uint16_t port() const { return acceptor_->local_endpoint().port(); }
  /// The I/O threads, for read_cpu.
  const std::vector<pid_t>& tids() const noexcept { return tids_; }

private:
  asio::awaitable<void> accept_loop() {
    for (std::size_t next = 0;; ++next) {
      auto& io = *ios_[next % ios_.size()];
      auto [ec, sock] = co_await acceptor_->async_accept(io.get_executor(), use_nothrow);
      if (ec == asio::error::operation_aborted)
        co_return;
      if (!ec)
        asio::co_spawn(io, session(beast::tcp_stream{std::move(sock)}), asio::detached);
    }
  }

  static asio::awaitable<void> session(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 << 10);
      parser.body_limit(1 << 20);
      stream.expires_after(10s);
      auto [ec, n_read] = co_await http::async_read(stream, buffer, parser, use_nothrow);
      (void)n_read;
      if (ec)
        break;
      auto& req = parser.get();
      http::response<http::string_body> res{http::status::ok, req.version()};
      res.set(http::field::server, "bare-beast");
      res.set(http::field::content_type, "application/json");
      res.keep_alive(req.keep_alive());
      res.body() = "{\"count\":1}";
      res.prepare_payload();
      stream.expires_after(30s);
      auto [wec, n_written] = co_await http::async_write(stream, res, use_nothrow);
      (void)n_written;
      if (wec || !res.keep_alive())
        break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::vector<std::unique_ptr<asio::io_context>> ios_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  std::vector<pid_t> tids_;
};

// -- the load generator -----------------------------------------------------------

struct load_options {
  std::uint16_t port = 0;
  std::size_t connections = 1;
  std::size_t threads = 1;
  /// Appends the raw bytes of request number i to the string.
  std::function<void(std::uint64_t, std::string&)> make_request;
  unsigned expect_status = 200;
  /// If set: exactly this many requests, all measured, no time bound.
  std::uint64_t total = 0;
  /// Otherwise: a warm-up (not measured), then the measured region, which
  /// ends after `measure` or once `max_measured` responses completed in it.
  std::chrono::duration<double> warmup{0};
  std::chrono::duration<double> measure{0};
  std::uint64_t max_measured = 0;
  /// Open loop if > 0: request i is due at start + i / rate and its latency
  /// counts from then (so a request that waited for a free connection shows
  /// the wait). Closed loop otherwise: each connection sends its next
  /// request as soon as the previous response arrived.
  double rate = 0;
};

struct load_result {
  /// Responses completed in the measured region.
  std::uint64_t completed = 0;
  /// Responses completed in the whole run, warm-up and tail included.
  std::uint64_t all_completed = 0;
  double seconds = 0;
  std::vector<double> latencies_us;
  std::uint64_t errors = 0;
  std::string first_error;

  double ops_per_s() const { return seconds > 0 ? static_cast<double>(completed) / seconds : 0; }
};

/// Drives the server at 127.0.0.1:port with keep-alive connections opened
/// before the clock starts. Throws bench_error if a connection cannot be
/// opened; failed requests are counted in the result.
load_result drive(const load_options& o) {
  asio::io_context io;
  struct connection {
    explicit connection(asio::any_io_executor ex) : sock(ex) {}
    tcp::socket sock;
    std::vector<double> latencies_us;
    steady::time_point last_done{};
  };
  std::vector<std::unique_ptr<connection>> conns;
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), o.port};
  for (std::size_t i = 0; i < o.connections; ++i) {
    auto c = std::make_unique<connection>(asio::make_strand(io));
    boost::system::error_code ec;
    c->sock.connect(ep, ec);
    if (!ec)
      c->sock.set_option(tcp::no_delay(true), ec);
    if (ec)
      throw bench_error{"connecting to 127.0.0.1:" + std::to_string(o.port) + ": " + ec.message()};
    conns.push_back(std::move(c));
  }

  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> all_completed{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<bool> stop{false};
  std::mutex error_mtx;
  std::string first_error;
  std::atomic<steady::rep> count_reached_at{0};
  auto fail = [&](std::string what) {
    if (errors++ == 0) {
      std::lock_guard<std::mutex> guard{error_mtx};
      first_error = std::move(what);
    }
  };

  auto start = steady::now();
  auto measure_from = start + std::chrono::duration_cast<steady::duration>(o.warmup);
  auto measure_to = measure_from + std::chrono::duration_cast<steady::duration>(o.measure);
  auto interval = o.rate > 0 ? std::chrono::duration<double>(1.0 / o.rate)
                             : std::chrono::duration<double>(0);

  auto loop = [&](connection& c) -> asio::awaitable<void> {
    beast::flat_buffer buffer;
    std::string req;
    asio::steady_timer timer{c.sock.get_executor()};
    for (;;) {
      auto i = next.fetch_add(1, std::memory_order_relaxed);
      steady::time_point due;
      if (o.total) {
        if (i >= o.total)
          break;
      } else if (o.rate > 0) {
        due = start + std::chrono::duration_cast<steady::duration>(interval * static_cast<double>(i));
        if (due >= measure_to || stop.load(std::memory_order_relaxed))
          break;
        if (steady::now() < due) {
          timer.expires_at(due);
          co_await timer.async_wait(use_nothrow);
        }
      } else if (stop.load(std::memory_order_relaxed) || steady::now() >= measure_to) {
        break;
      }
      req.clear();
      o.make_request(i, req);
      auto sent = steady::now();
      if (o.rate <= 0)
        due = sent;
      auto [wec, n_written] = co_await asio::async_write(c.sock, asio::buffer(req), use_nothrow);
      (void)n_written;
      if (wec) {
        fail("write: " + wec.message());
        break;
      }
      http::response_parser<http::string_body> parser;
      parser.body_limit(1 << 20);
      auto [rec, n_read] = co_await http::async_read(c.sock, buffer, parser, use_nothrow);
      (void)n_read;
      auto done = steady::now();
      if (rec) {
        fail("read: " + rec.message());
        break;
      }
      auto& res = parser.get();
      if (res.result_int() != o.expect_status) {
        fail("status " + std::to_string(res.result_int()) + " for request " + std::to_string(i)
             + ": " + res.body().substr(0, 300));
        continue;
      }
      if (!res.keep_alive()) {
        fail("the server closed the connection after request " + std::to_string(i));
        break;
      }
      all_completed.fetch_add(1, std::memory_order_relaxed);
      // Closed loop: responses completed inside the region. Open loop: every
      // request due inside it (they are due before measure_to by construction).
      bool measured = o.total ? true
                      : o.rate > 0 ? due >= measure_from
                                   : done >= measure_from && done <= measure_to;
      if (!measured)
        continue;
      auto n = completed.fetch_add(1, std::memory_order_relaxed) + 1;
      if (o.max_measured && n > o.max_measured)
        continue;
      c.latencies_us.push_back(micros_between(due, done));
      c.last_done = std::max(c.last_done, done);
      if (o.max_measured && n == o.max_measured) {
        count_reached_at = done.time_since_epoch().count();
        stop = true;
      }
    }
  };

  // A watchdog closes every connection if the run overstays its time by far.
  auto limit = o.total ? std::chrono::duration<double>(60.0 + 0.01 * static_cast<double>(o.total))
                       : o.warmup + o.measure + std::chrono::duration<double>(60.0);
  auto watchdog_ex = asio::make_strand(io);
  asio::steady_timer watchdog{watchdog_ex};
  watchdog.expires_after(std::chrono::duration_cast<steady::duration>(limit));
  watchdog.async_wait([&](boost::system::error_code ec) {
    if (ec)
      return;
    fail("the run did not finish within " + std::to_string(limit.count()) + " s");
    for (auto& c : conns)
      asio::post(c->sock.get_executor(), [&c = *c] {
        boost::system::error_code ignored;
        c.sock.close(ignored);
      });
  });
  std::atomic<std::size_t> live{conns.size()};
  for (auto& c : conns)
    asio::co_spawn(c->sock.get_executor(), loop(*c), [&](std::exception_ptr e) {
      if (e)
        fail("client coroutine threw");
      if (--live == 0)
        asio::post(watchdog_ex, [&] { watchdog.cancel(); });
    });
  std::vector<std::thread> extra;
  for (std::size_t i = 1; i < o.threads; ++i)
    extra.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : extra)
    t.join();
  auto finished = steady::now();

  load_result r;
  r.errors = errors;
  r.first_error = first_error;
  r.completed = completed;
  r.all_completed = all_completed;
  if (o.max_measured && r.completed > o.max_measured)
    r.completed = o.max_measured;
  if (o.total)
    r.seconds = seconds_between(start, finished);
  else if (o.rate > 0) {
    // Until the last due request was answered: the offered rate if the
    // server kept up, less if requests piled up.
    auto last = measure_to;
    for (auto& c : conns)
      last = std::max(last, c->last_done);
    r.seconds = seconds_between(measure_from, last);
  } else if (count_reached_at.load())
    r.seconds = seconds_between(measure_from,
                                steady::time_point{steady::duration{count_reached_at.load()}});
  else
    r.seconds = o.measure.count();
  for (auto& c : conns)
    r.latencies_us.insert(r.latencies_us.end(), c->latencies_us.begin(), c->latencies_us.end());
  return r;
}

// -- the workloads ----------------------------------------------------------------

std::string post_request(const std::string& target, std::string_view body) {
  return "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + admin_token
         + "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size())
         + "\r\n\r\n" + std::string{body};
}

/// POST /a/{id}/ with an empty body, round-robin over `agents` agents.
std::function<void(std::uint64_t, std::string&)> counter_posts(std::size_t agents) {
  std::vector<std::string> reqs;
  for (std::size_t i = 0; i < agents; ++i)
    reqs.push_back(post_request("/a/" + agent_name(i) + "/", ""));
  return [reqs = std::move(reqs)](std::uint64_t i, std::string& out) {
    out += reqs[i % reqs.size()];
  };
}

// -- the server's own view of a run: its request-duration histogram -----------

/// GET `target` from 127.0.0.1:`port` with the admin token; the body of a 200.
std::string get_body(std::uint16_t port, const std::string& target) {
  asio::io_context io;
  beast::tcp_stream stream{io};
  stream.expires_after(10s);
  beast::error_code ec;
  stream.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port}, ec);
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::authorization, "Bearer " + admin_token);
  if (!ec)
    http::write(stream, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec)
    http::read(stream, buf, res, ec);
  if (ec || res.result() != http::status::ok)
    throw bench_error{"GET " + target + ": "
                      + (ec ? ec.message() : std::to_string(res.result_int()))};
  return std::move(res.body());
}

/// Cumulative counts of ticktockd's ticktock_http_request_duration_seconds
/// for one route, by upper bound in microseconds (+Inf as infinity).
using histogram = std::map<double, double>;

histogram route_histogram(std::uint16_t port, const std::string& route) {
  auto text = get_body(port, "/metrics");
  auto prefix = "ticktock_http_request_duration_seconds_bucket{route=\"" + route + "\",le=\"";
  histogram h;
  std::istringstream lines{text};
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0)
      continue;
    auto le_end = line.find('"', prefix.size());
    auto le = line.substr(prefix.size(), le_end - prefix.size());
    auto bound = le == "+Inf" ? HUGE_VAL : std::round(std::stod(le) * 1e6);
    h[bound] = std::stod(line.substr(line.rfind(' ') + 1));
  }
  return h;
}

/// What the server counted between two readings: the fraction answered
/// within `within_us`, and the bound of the bucket holding the 99th percentile.
struct server_view {
  double within = 0;
  double p99_le_us = 0;
};

server_view difference(const histogram& before, const histogram& after, double within_us) {
  server_view v;
  auto count = [](const histogram& h, double bound) {
    auto i = h.find(bound);
    return i == h.end() ? 0.0 : i->second;
  };
  auto total = count(after, HUGE_VAL) - count(before, HUGE_VAL);
  if (total <= 0)
    return v;
  v.within = (count(after, within_us) - count(before, within_us)) / total;
  // Replies time out after 30 s, before the last finite bound (60 s).
  for (auto& [bound, n] : after)
    if (std::isfinite(bound)) {
      v.p99_le_us = bound;
      if (n - count(before, bound) >= 0.99 * total)
        break;
    }
  return v;
}

struct measurement {
  double ops_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  std::uint64_t requests = 0;
  /// Server CPU time and context switches per response over the whole run.
  double cpu_us_per_req = 0;
  double switches_per_req = 0;
};

measurement measure(const load_options& o, const std::function<cpu_counters()>& server,
                    const std::string& what, const config& cfg) {
  auto before = server();
  auto r = drive(o);
  auto after = server();
  if (r.errors)
    throw bench_error{what + ": " + std::to_string(r.errors) + " requests failed; first: "
                      + r.first_error};
  if (r.latencies_us.empty())
    throw bench_error{what + ": no request completed in the measured region"};
  auto all = static_cast<double>(r.all_completed);
  measurement m{r.ops_per_s(),
                percentile(r.latencies_us, 0.50),
                percentile(r.latencies_us, 0.99),
                r.completed,
                (after.cpu_s - before.cpu_s) * 1e6 / all,
                (after.context_switches - before.context_switches) / all};
  progress(cfg, what + ": " + std::to_string(std::llround(m.ops_per_s)) + " req/s, p50/p99 "
                  + std::to_string(std::llround(m.p50_us)) + "/"
                  + std::to_string(std::llround(m.p99_us)) + " us, " + std::to_string(m.requests)
                  + " requests, server " + std::to_string(std::llround(m.cpu_us_per_req))
                  + " us CPU and " + std::to_string(m.switches_per_req)
                  + " context switches per request");
  return m;
}

struct series {
  std::vector<double> ops, p50, p99, requests, cpu, switches;
  void add(const measurement& m) {
    ops.push_back(m.ops_per_s);
    p50.push_back(m.p50_us);
    p99.push_back(m.p99_us);
    requests.push_back(static_cast<double>(m.requests));
    cpu.push_back(m.cpu_us_per_req);
    switches.push_back(m.switches_per_req);
  }
};

// CPU microseconds of one trajectory signature (identity::sign over the
// signing bytes of a 256-byte record), on this thread, now: what every tick
// over many agents pays, each being the only tick of its write.
double trajectory_sign_us() {
  auto keys = identity::agent_keys::generate();
  std::string record(256, 'r');
  constexpr int n = 2000;
  timespec a{}, b{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
  for (int i = 0; i < n; ++i) {
    record[0] = static_cast<char>(i);
    auto sig = identity::sign(keys, identity::trajectory_signing_bytes("a0000000", record));
    record[1] = static_cast<char>(sig[0]);
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
  return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n;
}

}  // namespace

bool ticktockd_available(const config& cfg) { return !find_ticktockd(cfg).empty(); }

std::vector<row> run_http(const config& cfg) {
  auto exe = find_ticktockd(cfg);
  if (exe.empty())
    throw bench_error{"http: ticktockd not found; build it or pass --ticktockd PATH"};
  auto agents = std::min(cfg.http_agents, cfg.agents);
  // ticktockd's default: one event loop per CPU it may use, serving
  // connections and agents (--shared-threads); the baseline gets as many I/O
  // threads.
  auto io_threads = ticktock::detail::usable_cpus();
  auto seconds = std::chrono::duration<double>(cfg.seconds);
  auto warmup = std::min(std::chrono::duration<double>(1.0), seconds / 5);

  temp_dir dir{cfg.dir};
  ticktockd_process daemon{exe, dir.path() / "data", cfg.ticktockd_args};
  progress(cfg, "http: ticktockd " + exe.string() + " listening on port "
                  + std::to_string(daemon.port()));
  // Pinned as ticktockd's loops are: the same CPUs, or none.
  auto cpus = ticktockd_pins(cfg.ticktockd_args) ? ticktock::drivers::io_loops::cpus_for(io_threads)
                                                 : std::vector<int>{};
  auto pinned = !cpus.empty();
  bare_server bare{io_threads, cpus};
  auto daemon_cpu = [&] { return read_cpu(daemon.pid()); };
  auto bare_cpu = [&] { return read_cpu(getpid(), bare.tids()); };

  // Setup, not timed: the counter agents, created over HTTP.
  load_options create;
  create.port = daemon.port();
  create.connections = std::min<std::size_t>(cfg.connections, agents);
  create.threads = cfg.client_threads;
  create.total = agents;
  create.expect_status = 201;
  create.make_request = [](std::uint64_t i, std::string& out) {
    out += post_request("/v1/agents", "{\"id\":\"" + agent_name(i) + "\",\"type\":\"counter\"}");
  };
  auto created = drive(create);
  if (created.errors)
    throw bench_error{"http: creating " + std::to_string(agents) + " agents: "
                      + std::to_string(created.errors) + " failed; first: " + created.first_error};
  progress(cfg, "http: created " + std::to_string(agents) + " counter agents in "
                  + std::to_string(created.seconds) + " s");

  auto closed_loop = [&](std::uint16_t port,
                         std::function<void(std::uint64_t, std::string&)> requests) {
    load_options o;
    o.port = port;
    o.connections = cfg.connections;
    o.threads = cfg.client_threads;
    o.make_request = std::move(requests);
    o.warmup = warmup;
    o.measure = seconds;
    o.max_measured = cfg.requests;
    return o;
  };
  auto healthz = [](std::uint64_t, std::string& out) {
    out += "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  };

  const std::string many = "http-" + std::to_string(agents) + "-agents";
  series one_ours, one_base, many_ours, many_base, half_ours, half_base, hz_ours, hz_base;
  std::vector<double> sign_us;
  for (std::size_t run = 0; run < cfg.runs; ++run) {
    auto tag = " run " + std::to_string(run + 1);
    one_ours.add(measure(closed_loop(daemon.port(), counter_posts(1)), daemon_cpu,
                         "http-1-agent" + tag, cfg));
    one_base.add(measure(closed_loop(bare.port(), counter_posts(1)), bare_cpu, "bare-beast" + tag,
                         cfg));
    many_ours.add(measure(closed_loop(daemon.port(), counter_posts(agents)), daemon_cpu,
                          many + tag, cfg));
    many_base.add(measure(closed_loop(bare.port(), counter_posts(agents)), bare_cpu,
                          "bare-beast" + tag, cfg));
    sign_us.push_back(trajectory_sign_us());
    hz_ours.add(measure(closed_loop(daemon.port(), healthz), daemon_cpu, "http-healthz" + tag, cfg));
    hz_base.add(measure(closed_loop(bare.port(), healthz), bare_cpu, "bare-beast" + tag, cfg));
  }
  // Open loop at half the rate ticktockd reached over the many agents, and
  // the baseline at the same offered rate.
  // ticktockd's own histogram tells its share of the latency (read to
  // answer) from the rest (client, kernel, scheduling).
  auto rate = summarize(many_ours.ops).median / 2;
  constexpr double server_target_us = 2000;
  std::vector<double> server_within, server_p99_le;
  for (std::size_t run = 0; run < cfg.runs; ++run) {
    auto tag = " run " + std::to_string(run + 1);
    auto o = closed_loop(daemon.port(), counter_posts(agents));
    o.rate = rate;
    o.max_measured = 0;
    auto before = route_histogram(daemon.port(), "/a/{id}");
    half_ours.add(measure(o, daemon_cpu, "http-half-rate" + tag, cfg));
    auto server = difference(before, route_histogram(daemon.port(), "/a/{id}"), server_target_us);
    server_within.push_back(server.within * 100);
    server_p99_le.push_back(server.p99_le_us);
    progress(cfg, "http-half-rate" + tag + ": the server answered " + std::to_string(server.within * 100)
                    + " % of its requests within 2 ms of reading them; their p99 is at most "
                    + std::to_string(std::llround(server.p99_le_us)) + " us");
    o.port = bare.port();
    half_base.add(measure(o, bare_cpu, "bare-beast half-rate" + tag, cfg));
  }
  if (auto status = daemon.stop(); !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw bench_error{"http: ticktockd did not exit cleanly (wait status " + std::to_string(status)
                      + ")"};

  auto client = std::to_string(cfg.connections) + " keep-alive connections, closed loop per "
                "connection, " + std::to_string(cfg.client_threads) + " client thread(s); "
                "latency from writing the request to the complete response";
  std::string extra;
  for (auto& a : cfg.ticktockd_args)
    extra += " " + a;
  auto daemon_what = "a ticktockd child process (--durability async, --quiet" + extra + ", "
                     + std::to_string(io_threads)
                     + " event-loop threads serving both connections and agents"
                     + (pinned ? ", each on a CPU of its own)" : ")");
  auto workload = [&](std::size_t n_agents) {
    return "POST /a/{id}/ (empty body, admin token) round-robin over " + std::to_string(n_agents)
           + " counter agent(s) of " + daemon_what + ", " + client
           + "; each response is the counter's reply from its committed tick";
  };
  auto baseline_what = "an in-process Beast server with " + std::to_string(io_threads)
                       + " I/O threads, one io_context each"
                       + (pinned ? ", each on a CPU of its own" : "")
                       + " (as ticktockd's event loops), the "
                         "same parser limits and Beast stream timeouts per connection, answering every "
                         "request with the constant 200 {\"count\":1}; same client, same "
                         "requests, measured in the same run";
  auto make_row = [&](const std::string& name, const series& ours, const series& base) {
    row r;
    r.scenario = name;
    r.baseline = "bare-beast";
    r.baseline_what = baseline_what;
    r.ops_per_s = summarize(ours.ops);
    r.p50_us = summarize(ours.p50);
    r.p99_us = summarize(ours.p99);
    r.baseline_ops_per_s = summarize(base.ops);
    r.baseline_p50_us = summarize(base.p50);
    r.baseline_p99_us = summarize(base.p99);
    r.ratio = r.ops_per_s->median / r.baseline_ops_per_s->median;
    r.ratio_kind = "ours/baseline ops_per_s (higher is better)";
    r.runs = cfg.runs;
    r.extra["connections"] = summarize({static_cast<double>(cfg.connections)});
    r.extra["requests"] = summarize(ours.requests);
    r.extra["baseline_requests"] = summarize(base.requests);
    r.extra["server_cpu_us_per_req"] = summarize(ours.cpu);
    r.extra["baseline_server_cpu_us_per_req"] = summarize(base.cpu);
    r.extra["server_switches_per_req"] = summarize(ours.switches);
    r.extra["baseline_server_switches_per_req"] = summarize(base.switches);
    r.notes["server_cpu"] = "server_*: CPU time (user + system) and context switches "
                            "(voluntary + involuntary) of the server's threads per response, over "
                            "the whole load run: every ticktockd thread, or the bare server's I/O "
                            "threads";
    return r;
  };
  std::vector<row> rows;
  rows.push_back(make_row("http-1-agent", one_ours, one_base));
  rows.back().extra["agents"] = summarize({1.0});
  rows.back().notes["workload"] = workload(1);
  rows.push_back(make_row(many, many_ours, many_base));
  rows.back().extra["agents"] = summarize({static_cast<double>(agents)});
  rows.back().notes["workload"] = workload(agents);
  rows.back().extra["trajectory_sign_us"] = summarize(sign_us);
  rows.back().notes["trajectory_sign"] =
    "trajectory_sign_us: CPU time of one Ed25519 signature of a trajectory record (identity::sign "
    "over a 256-byte record, 2,000 in a row on one thread of the bench, after each run of this "
    "row): every request here is its agent's only tick in its write, so each pays one, inside "
    "server_cpu_us_per_req";
  auto half = make_row("http-half-rate", half_ours, half_base);
  half.ratio = half.baseline_p99_us->median / half.p99_us->median;
  half.ratio_kind = "baseline_p99/ours_p99 at the same offered rate (higher is better; 1 would "
                    "mean no overhead)";
  half.extra["agents"] = summarize({static_cast<double>(agents)});
  half.extra["offered_rate_per_s"] = summarize({rate});
  half.extra["server_within_2ms_pct"] = summarize(server_within);
  half.extra["server_p99_le_us"] = summarize(server_p99_le);
  half.notes["server_latency"] =
    "server_within_2ms_pct, server_p99_le_us: from ticktockd's own "
    "ticktock_http_request_duration_seconds{route=\"/a/{id}\"} (GET /metrics before and after "
    "each run, warm-up included): the percentage of requests answered within 2 ms of the server "
    "having read them, and the upper bound of the histogram bucket (0.1, 0.25, 0.5, 1, 2, 5, "
    "10, 25, 100 ms, ...) that holds their 99th percentile. The rest of the client's latency is "
    "the client, the kernel and the wait for a CPU before the read and after the answer";
  half.notes["workload"] = "open loop: the " + many + " workload offered at a fixed rate of "
                           + std::to_string(std::llround(rate)) + " req/s (half the median "
                           "closed-loop rate of " + many + "), request i due at start + i/rate "
                           "on the next free connection; latency from the due time to the "
                           "complete response, so waiting for a connection counts";
  half.baseline_what = baseline_what + ", offered the same rate";
  rows.push_back(std::move(half));
  auto hz = make_row("http-healthz", hz_ours, hz_base);
  hz.notes["workload"] = "GET /healthz (no tick, no token) on " + daemon_what + ", " + client
                         + "; what the HTTP driver costs without a tick (parsing, the router "
                           "and the response, answered on the I/O thread)";
  rows.push_back(std::move(hz));
  return rows;
}

}  // namespace ticktock::bench
