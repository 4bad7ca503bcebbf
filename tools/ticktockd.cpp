// ticktockd: the self-hosted ticktock server. Hosts the built-in agent types
// on an embedded RocksDB and serves the HTTP API. Every flag can also come
// from a JSON config file (--config) or a TICKTOCK_* environment variable;
// the command line wins over the environment, which wins over the file.

#include <boost/asio/ip/address.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <sodium.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <set>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <typeinfo>

#include <ticktock/drivers/http_server.hpp>
#include <ticktock/drivers/io_loops.hpp>
#include <ticktock/drivers/nostr_driver.hpp>
#include <ticktock/drivers/http_fetch.hpp>
#include <ticktock/drivers/openai_provider.hpp>
#include <ticktock/runtime/detail/json_check.hpp>
#include <ticktock/runtime/plugin.hpp>
#include <ticktock/runtime/text.hpp>
#include <ticktock/ticktock.hpp>

#include "builtin_agents.hpp"

namespace po = boost::program_options;

namespace {

// The log, one line per event on stdout, is written by a thread of its own:
// a reader that stops reading (a pipe that fills) must not hold up requests,
// ticks or the stop, which would all wait on the write. Lines wait in memory
// up to max_bytes (besides the batch being written); beyond that they are
// dropped, counted, and the next batch written says how many first
// (event=log_dropped lines=N). At exit the queue gets
// up to 1 s to drain. Never destroyed: the writer may still be in write(2)
// when the process exits.
class logger {
public:
  static logger& get() {
    static auto* l = new logger;
    return *l;
  }

  void line(std::string l) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (bytes_ + l.size() + 1 > max_bytes) {
      ++dropped_;
      return;
    }
    bytes_ += l.size() + 1;
    queue_.push_back(std::move(l));
    cv_.notify_one();
  }

  // True if every line was written within `most`.
  bool flush(std::chrono::milliseconds most) {
    std::unique_lock<std::mutex> lock{mtx_};
    return idle_.wait_for(lock, most, [&] { return queue_.empty() && !writing_; });
  }

private:
  static constexpr std::size_t max_bytes = std::size_t{16} << 20;

  logger() {
    std::thread{[this] { run(); }}.detach();
    std::atexit([] { get().flush(std::chrono::seconds{1}); });
  }

  void run() {
    std::unique_lock<std::mutex> lock{mtx_};
    for (;;) {
      cv_.wait(lock, [&] { return !queue_.empty(); });
      auto lines = std::exchange(queue_, {});
      auto dropped = std::exchange(dropped_, 0);
      bytes_ = 0;
      writing_ = true;
      lock.unlock();
      std::string out;
      if (dropped != 0)
        out = "event=log_dropped lines=" + std::to_string(dropped) + "\n";
      for (auto& l : lines)
        out += l + "\n";
      // A reader that went away (EPIPE: SIGPIPE is handled) loses the lines.
      for (std::string_view rest{out}; !rest.empty();) {
        auto n = ::write(STDOUT_FILENO, rest.data(), rest.size());
        if (n < 0 && errno == EINTR)
          continue;
        if (n <= 0)
          break;
        rest.remove_prefix(static_cast<std::size_t>(n));
      }
      lock.lock();
      writing_ = false;
      if (queue_.empty())
        idle_.notify_all();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_, idle_;
  std::deque<std::string> queue_;
  std::size_t bytes_ = 0;
  std::uint64_t dropped_ = 0;
  bool writing_ = false;
};

void log_line(const std::string& line) { logger::get().line(line); }

void create_demo(ticktock::node& n) {
  auto make = [&](const std::string& id, const std::string& type, std::string config) {
    auto err = n.create(id, type, std::move(config));
    if (err && err.code() != ticktock::errc::already_exists)
      log_line("event=demo_error agent=" + id + " error=" + ticktock::log_value(err.to_string()));
    return !err;
  };
  make("demo-counter", "counter", "");
  make("demo-echo", "echo", "");
  make("demo-heartbeat", "heartbeat", "5");
  bool fresh = make("demo-ping", "player", "5");
  make("demo-pong", "player", "5");
  // Answers through the deterministic local compute provider, within a budget.
  make("demo-chat", "llm-chat", R"({"system":"You are the ticktock demo assistant."})");
  if (fresh) {
    ticktock::send_options from_pong;
    from_pong.from = "demo-pong";
    n.send("demo-ping", "serve", from_pong);
  }
  n.send("demo-counter", "{\"hello\":true}");
}

// What a JSON value is, for error messages.
const char* json_kind(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64: return "an integer";
    case boost::json::kind::double_: return "a fractional number";
    case boost::json::kind::string: return "a string";
    case boost::json::kind::array: return "an array";
    case boost::json::kind::object: return "an object";
  }
  return "a value";
}

// Reads a JSON config file {"data": "...", "listen": "...", ...} into
// program_options' parsed form, so it merges like the other sources. Each
// value must have its option's JSON type: a string for text options (an
// array of strings for --plugin), an integer for numbers, true/false for
// switches.
po::parsed_options parse_config_file(const std::string& path, const po::options_description& desc) {
  std::error_code dir_ec;
  if (std::filesystem::is_directory(path, dir_ec))
    throw std::runtime_error("cannot read config file " + path + ": it is a directory");
  // A regular file, and a small one: /dev/zero would be read forever.
  constexpr std::uintmax_t max_config_bytes = 1 << 20;
  if (auto st = std::filesystem::status(path, dir_ec);
      !dir_ec && st.type() != std::filesystem::file_type::regular)
    throw std::runtime_error("cannot read config file " + path + ": not a regular file");
  if (auto size = std::filesystem::file_size(path, dir_ec); !dir_ec && size > max_config_bytes)
    throw std::runtime_error("config file " + path + " is over 1 MiB");
  errno = 0;
  std::ifstream in{path};
  if (!in)
    throw std::runtime_error("cannot read config file " + path
                             + (errno ? std::string{": "} + std::strerror(errno) : std::string{}));
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  auto v = boost::json::parse(ss.str(), ec);
  if (ec)
    throw std::runtime_error("config file " + path + " is not valid JSON: " + ec.message());
  if (!v.is_object())
    throw std::runtime_error("config file " + path + " is not a JSON object");
  // Boost.JSON keeps the last of two equal keys: one would be dropped unseen.
  if (auto scan = ticktock::detail::scan_json(ss.str()); !scan.duplicate.empty())
    throw std::runtime_error("config file " + path + " names '" + scan.duplicate + "' twice");
  po::parsed_options parsed{&desc};
  for (auto& [k, val] : v.as_object()) {
    std::string key{k};
    const auto* opt = desc.find_nothrow(key, false);
    if (!opt || key == "config" || key == "help" || key == "version")
      throw std::runtime_error("config file " + path + ": unknown option '" + key + "'");
    const auto* typed = dynamic_cast<const po::typed_value_base*>(opt->semantic().get());
    const auto& type = typed ? typed->value_type() : typeid(std::string);
    auto wrong = [&](const char* wanted, const boost::json::value& got) {
      return std::runtime_error("config file " + path + ": option '" + key + "' takes " + wanted
                                + ", not " + json_kind(got));
    };
    auto add = [&](std::string value) {
      po::option o;
      o.string_key = key;
      o.value.push_back(std::move(value));
      parsed.options.push_back(std::move(o));
    };
    if (type == typeid(std::vector<std::string>)) {
      if (val.is_string()) {
        add(std::string{val.as_string()});
      } else if (val.is_array()) {
        for (auto& e : val.as_array()) {
          if (!e.is_string())
            throw wrong("strings", e);
          add(std::string{e.as_string()});
        }
      } else {
        throw wrong("a string or an array of strings", val);
      }
    } else if (type == typeid(std::string)) {
      if (!val.is_string())
        throw wrong("a string", val);
      add(std::string{val.as_string()});
    } else if (type == typeid(bool)) {
      if (!val.is_bool())
        throw wrong("true or false", val);
      add(val.as_bool() ? "true" : "false");
    } else {
      if (!val.is_int64() && !val.is_uint64())
        throw wrong("an integer", val);
      add(boost::json::serialize(val));
    }
  }
  return parsed;
}

// The token goes in a header, a cookie or a query: visible ASCII, no blanks
// (a client's trailing space is dropped: nobody could log in).
bool valid_admin_token(std::string_view t) {
  return std::all_of(t.begin(), t.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// A secret file of the data directory (admin.token, node.key): its bytes,
// or nullopt if there is none. Only a regular file of the server's own user
// with one link: never what a symbolic or hard link there points at (its
// contents would be trusted as a key, and its mode changed). Made 0600 if
// it is not (a token written by hand).
std::optional<std::string> read_private(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return std::nullopt;
    if (errno == ELOOP)
      throw std::runtime_error(path + " is a symbolic link: the server reads and writes only a file "
                                      "of its own there (replace the link by the file)");
    throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  std::string refusal;
  if (::fstat(fd, &st) != 0)
    refusal = std::string{"cannot read it: "} + std::strerror(errno);
  else if (!S_ISREG(st.st_mode))
    refusal = "it is not a regular file";
  else if (st.st_uid != ::geteuid() || st.st_nlink != 1)
    refusal = "it is not a file of the server's own user with a single link";
  else if ((st.st_mode & 077) != 0 && ::fchmod(fd, 0600) != 0)
    refusal = std::string{"cannot make it private (mode 0600): "} + std::strerror(errno);
  std::string bytes;
  while (refusal.empty() && bytes.size() <= (1u << 20)) {
    char buf[4096];
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      refusal = std::string{"cannot read it: "} + std::strerror(errno);
    if (n <= 0)
      break;
    bytes.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (!refusal.empty())
    throw std::runtime_error(path + ": " + refusal);
  return bytes;
}

// Writes a secret file of the data directory, mode 0600, whole or not at
// all: a new file beside it, synced, then renamed over it (a rename
// replaces a link there, never what it points at).
void write_private(const std::string& path, std::string_view bytes) {
  auto tmp = path + ".new";
  ::unlink(tmp.c_str());  // one a start that died left (a link is removed, not followed)
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  while (ok && !bytes.empty()) {
    auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR)
      continue;
    ok = n > 0;
    if (ok)
      bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  ok = ok && ::fsync(fd) == 0;
  auto err = errno;
  if (fd >= 0)
    ::close(fd);
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
  }
  // The rename itself survives a crash once the directory is synced.
  auto dir = std::filesystem::path{path}.parent_path();
  if (int d = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    ::fsync(d);
    ::close(d);
  }
}

// The admin token: given, or read from DIR/admin.token, or generated there
// (mode 0600) at first start.
std::string admin_token(const std::string& given, const std::string& data, bool& generated) {
  generated = false;
  if (!given.empty())
    return given;
  auto path = data + "/admin.token";
  auto file = read_private(path);
  // The first line, without surrounding blanks: a file written by hand may
  // end its line with CRLF or carry spaces no client sends. A token is what
  // --admin-token takes; a file that holds something else is the operator's
  // to mend, not to be replaced (only an empty one is: a first start that
  // died while writing it).
  if (file && !file->empty()) {
    auto token = file->substr(0, file->find('\n'));
    auto first = token.find_first_not_of(" \t\r");
    auto last = token.find_last_not_of(" \t\r");
    token = first == std::string::npos ? std::string{} : token.substr(first, last - first + 1);
    if (token.empty() || !valid_admin_token(token))
      throw std::runtime_error(path + ": its first line is not a token (visible ASCII characters "
                                      "without blanks): mend or remove the file");
    return token;
  }
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
  std::string token = hex;
  write_private(path, token + "\n");
  generated = true;
  return token;
}

// The node's Ed25519 key, which signs capability tokens: DATA/node.key
// (mode 0600), created at first start (or when the file is empty: a start
// that died while creating it). A file of another size is an error, as for
// master.key: replacing it would void every token issued, silently.
std::string node_key(const std::string& data) {
  auto path = data + "/node.key";
  auto file = read_private(path);
  if (file && file->size() == crypto_sign_SECRETKEYBYTES)
    return *file;
  if (file && !file->empty())
    throw std::runtime_error(path + " must hold exactly " + std::to_string(crypto_sign_SECRETKEYBYTES)
                             + " bytes, it holds " + std::to_string(file->size())
                             + "; move it away to create a new key (capability tokens signed "
                               "with the old one then stop working)");
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  std::string key(crypto_sign_SECRETKEYBYTES, '\0');
  crypto_sign_keypair(pk, reinterpret_cast<unsigned char*>(key.data()));
  write_private(path, key);
  return key;
}

// HOST:PORT: HOST an IPv4 address, or an IPv6 address in brackets
// ([::1]:7070; a bare one would leave its last group and the port
// ambiguous), PORT digits only, at most 65535 (0: any free port). Nothing
// else: no trailing bytes, no sign.
std::optional<std::pair<std::string, std::uint16_t>> parse_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos)
    return std::nullopt;
  auto host = listen.substr(0, colon);
  auto port_text = std::string_view{listen}.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5
      || !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  unsigned port = 0;
  std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port > 65535)
    return std::nullopt;
  bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed)
    host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  if (ec || address.is_v6() != bracketed)
    return std::nullopt;
  return std::pair{host, static_cast<std::uint16_t>(port)};
}

// Binds HOST:PORT once and lets it go, so that a port in use or an address
// not on this host stops ticktockd before the data directory is touched (the
// server binds it for good once the store is open). Returns why not, or "".
std::string probe_listen(const std::string& host, std::uint16_t port) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  if (ec)
    return ec.message();
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (address.is_v4()) {
    auto& in = reinterpret_cast<sockaddr_in&>(ss);
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    auto bytes = address.to_v4().to_bytes();
    std::memcpy(&in.sin_addr, bytes.data(), bytes.size());
    len = sizeof in;
  } else {
    auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    auto bytes = address.to_v6().to_bytes();
    std::memcpy(&in6.sin6_addr, bytes.data(), bytes.size());
    in6.sin6_scope_id = address.to_v6().scope_id();
    len = sizeof in6;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return std::strerror(errno);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as the server does
  std::string why;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
    why = std::strerror(errno);
  ::close(fd);
  return why;
}

// One ticktockd per data directory: an flock on DATA/ticktockd.lock (holding
// the pid), kept until the process exits. It is taken before RocksDB opens
// the directory: RocksDB rotates the info LOG before it tries its own LOCK,
// so a second server would otherwise rename the running server's log.
// Returns the open descriptor, or throws with the reason.
int lock_data_dir(const std::string& data) {
  std::error_code ec;
  // Created 0711 whatever the umask: no other user may list it or write in
  // it (it holds the keys and the admin token, 0600 themselves), but the
  // container sandbox's uid may pass through to its sessions' directories
  // (bubblewrap binds them as that uid).
  bool created = std::filesystem::create_directories(data, ec);
  if (ec)
    throw std::runtime_error("cannot create data directory " + data + ": " + ec.message());
  if (created && ::chmod(data.c_str(), 0711) != 0)
    throw std::runtime_error("cannot make data directory " + data + " 0711: " + std::strerror(errno));
  auto path = data + "/ticktockd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char pid[32] = {};
    auto n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? std::string{pid, static_cast<std::size_t>(n)} : std::string{};
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
      holder.pop_back();
    if (err == EWOULDBLOCK)
      throw std::runtime_error("data directory " + data + " is in use by another ticktockd"
                               + (holder.empty() ? std::string{} : " (pid " + holder + ")"));
    throw std::runtime_error("cannot lock " + path + ": " + std::strerror(err));
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid in it; only the message is poorer.
  }
  return fd;
}

// gperftools' tcmalloc, when linked (TICKTOCK_TCMALLOC), defines it.
extern "C" const char* tc_version(int* major, int* minor, const char** patch)
  __attribute__((weak));

// Which malloc serves this process, for the start line.
std::string allocator() { return tc_version ? "tcmalloc" : "libc"; }

}  // namespace

// /proc/PID/cmdline is readable by every user of the machine (a container
// session in process mode too): an admin token given on the command line is
// overwritten in place once read, so that only its first moments show it.
static void hide_secret_arguments(int argc, char** argv) {
  auto blank = [](char* s) { std::memset(s, 'x', std::strlen(s)); };
  for (int i = 1; i < argc; ++i) {
    std::string_view a{argv[i]};
    if (a == "--admin-token" && i + 1 < argc)
      blank(argv[++i]);
    else if (a.starts_with("--admin-token="))
      blank(argv[i] + std::strlen("--admin-token="));
  }
}

int main(int argc, char** argv) {
  // The stop signals are blocked from the first instruction, so that one
  // arriving during start-up drains and exits 0 like any other (their
  // default action would end the process with 128 + N); see below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);  // a closed terminal: drain, as for the others
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  if (sodium_init() < 0)
    return 1;
  // A log reader that goes away (stdout a pipe whose reader closed) must not
  // kill the server at its next log line: SIGPIPE gets a handler that does
  // nothing, so the write fails with EPIPE instead. A handler rather than
  // SIG_IGN, because a handler is reset to the default in the programs the
  // container service executes, and SIG_IGN would be inherited.
  {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, nullptr);
  }
  po::options_description desc{"ticktockd options (also TICKTOCK_<NAME> and --config FILE)"};
  desc.add_options()
    ("help,h", "show this help")
    ("version", "print the version and exit")
    ("config", po::value<std::string>(), "JSON file with any of these options")
    ("data", po::value<std::string>()->default_value("./ticktock-data"), "data directory")
    ("listen", po::value<std::string>()->default_value("127.0.0.1:7070"), "HOST:PORT to serve HTTP on")
    ("admin-token", po::value<std::string>()->default_value(""),
     "admin token (default: DATA/admin.token, generated at first start)")
    ("durability", po::value<std::string>()->default_value("async"), "sync | async")
    ("idle-timeout", po::value<std::int64_t>()->default_value(60'000), "idle timeout in ms")
    ("max-resident", po::value<std::size_t>()->default_value(100'000), "most resident agents")
    ("threads", po::value<std::size_t>()->default_value(0),
     "threads running agents (and, with --shared-threads, connections) (0: one per CPU the "
     "process may use)")
    ("shared-threads", po::value<bool>()->default_value(true)->implicit_value(true),
     "run connections and agents on the same event-loop threads; false: CAF's work-stealing "
     "scheduler for agents and --http-threads threads for connections")
    ("pin-threads", po::value<bool>()->default_value(true)->implicit_value(true),
     "with --shared-threads: each event loop on a CPU of its own (if there are as many CPUs "
     "as loops)")
    ("http-threads", po::value<std::size_t>()->default_value(2),
     "HTTP/WebSocket I/O threads with --shared-threads=false")
    ("missed-alarms", po::value<std::string>()->default_value("fire_once"), "fire_once | fire_all | skip")
    ("max-body", po::value<std::size_t>()->default_value(std::size_t{1} << 20), "largest HTTP body in bytes")
    ("max-bundle", po::value<std::size_t>()->default_value(std::size_t{256} << 20),
     "largest agent bundle the admin imports (POST /v1/agents/import), in bytes")
    ("inbox-limit", po::value<std::uint64_t>()->default_value(10'000),
     "inbox depth per agent; more gets 429 INBOX_FULL (0: unlimited)")
    ("ticks-per-minute", po::value<std::uint32_t>()->default_value(0),
     "ticks per minute per agent; further triggers wait and the status says throttled (0: no limit)")
    ("tick-wall-ms", po::value<std::uint64_t>()->default_value(1000),
     "a tick running longer is flagged in its trajectory record and the metrics (0: never)")
    ("max-state-bytes", po::value<std::uint64_t>()->default_value(std::uint64_t{16} << 20),
     "largest agent state; a tick growing past it fails and commits nothing (0: no limit)")
    ("outbox-retention", po::value<std::uint64_t>()->default_value(0),
     "outbox events kept per agent, older ones deleted (0: keep all)")
    ("idempotency-ttl", po::value<std::uint64_t>()->default_value(86'400),
     "seconds a client's Idempotency-Key is remembered; a write with it after that is a new "
     "message (0: for the agent's life)")
    ("max-attempts", po::value<std::uint32_t>()->default_value(3),
     "attempts of a trigger before it goes to the deadletter")
    ("read-timeout", po::value<std::int64_t>()->default_value(10'000),
     "ms a request may take to arrive; slower clients get 408")
    ("write-timeout", po::value<std::int64_t>()->default_value(30'000),
     "ms a response or WebSocket frame may take to be written (an SSE stream: "
     "without progress); slower clients are cut")
    ("max-connections", po::value<std::size_t>()->default_value(1024),
     "open HTTP connections; more get 503")
    // Not composing: the list comes from the first source that gives one
    // (command line, environment, config file), like every other option.
    ("plugin", po::value<std::vector<std::string>>(),
     "shared library with agent types (repeatable; see ticktock/runtime/plugin.hpp)")
    ("cors-origin", po::value<std::vector<std::string>>(),
     "origin whose web pages may call the API (CORS), e.g. https://ui.example:8443, or * "
     "for any (repeatable; /a/{id}/... is the agent's: its preflights reach it, and need the "
     "token like any request there, in ?token=)")
    ("quiet", po::value<bool>()->default_value(false)->implicit_value(true),
     "no per-request and per-tick log lines (start, stop and token lines stay)")
    ("master-key-file", po::value<std::string>()->default_value(""),
     "32-byte key sealing agents' secret keys (default DATA/master.key, created 0600)")
    ("rotate-master-key", po::value<bool>()->default_value(false)->implicit_value(true),
     "re-seal every agent's keys with a new master key, replace the key file, and exit")
    ("openai-base-url", po::value<std::string>()->default_value(""),
     "base URL of an OpenAI-compatible API (e.g. https://api.openai.com/v1); registers the "
     "compute provider \"openai\" (default: OPENAI_BASE_URL; the key comes from OPENAI_API_KEY)")
    ("http-fetch-price", po::value<std::uint64_t>()->default_value(0),
     "micro-USD an outbound HTTP fetch (ctx.fetch, fs/http/new) reserves and costs")
    ("http-fetch-ca-file", po::value<std::string>()->default_value(""),
     "PEM file of CAs trusted for https fetches besides the system ones")
    ("http-fetch-private", po::value<bool>()->default_value(false)->implicit_value(true),
     "let fetches connect to loopback, private, link-local and other non-public addresses "
     "(refused by default: address_not_allowed)")
    ("container-concurrency", po::value<std::size_t>()->default_value(2),
     "container sessions running at once; more wait in a queue")
    ("container-isolation", po::value<std::string>()->default_value("automatic"),
     "automatic | bubblewrap | process")
    ("container-price", po::value<std::uint64_t>()->default_value(100),
     "price of a container session's CPU second, in micro-USD")
    ("container-uid-base", po::value<std::uint32_t>(),
     "as root: the session in slot k runs as uid/gid BASE+k (else all as nobody)")
    ("demo", po::value<bool>()->default_value(false)->implicit_value(true), "create the demo agents if missing")
    ("exit-after-ms", po::value<std::int64_t>(), "stop after this long (tests)");
  po::variables_map vm;
  // Where each option's value came from, for the messages that refuse it:
  // --name, TICKTOCK_NAME or 'name' of the config file.
  std::map<std::string, std::string> origin;
  auto named = [&](const std::string& name) {
    auto i = origin.find(name);
    return i == origin.end() ? "--" + name : i->second;
  };
  // Boost converts "-1" into the largest value of an unsigned option: refuse
  // a sign on those, wherever the value comes from.
  auto store = [&](const po::parsed_options& parsed, auto&& label) {
    // Options a source of higher precedence already set: this source's
    // values for them are not used, so they are not checked either (as
    // Boost does not convert them).
    std::set<std::string> overridden;
    for (auto& [name, value] : vm)
      if (!value.defaulted())
        overridden.insert(name);
    po::store(parsed, vm);
    for (auto& o : parsed.options) {
      if (!vm.count(o.string_key) || o.value.empty() || overridden.count(o.string_key))
        continue;
      auto from = origin.emplace(o.string_key, label(o.string_key)).first->second;
      auto& type = vm[o.string_key].value().type();
      auto v = o.value.front();
      v.erase(0, v.find_first_not_of(" \t"));
      if ((type == typeid(std::uint64_t) || type == typeid(std::uint32_t)
           || type == typeid(std::size_t) || type == typeid(std::int64_t))
          && !v.empty() && (v.front() == '-' || v.front() == '+'))
        throw std::invalid_argument("option '" + o.string_key + "' takes a number without a sign, not '"
                                    + o.value.front() + "'"
                                    + (from.starts_with("--") ? "" : " (from " + from + ")"));
    }
  };
  try {
    // Whole option names only: a prefix (`--rot`) is not taken for an option
    // (`--rotate-master-key`), as the config file and environment take none.
    auto cli = po::command_line_parser(argc, argv)
                 .options(desc)
                 .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
                 .run();
    // ticktockd takes no positional arguments: a stray word ('--quiet true',
    // a second directory after --data) is a mistake, not something to drop.
    for (auto& o : cli.options)
      if (o.string_key.empty() || o.position_key >= 0)
        throw std::invalid_argument(
          "unexpected argument '" + (o.original_tokens.empty() ? std::string{} : o.original_tokens.front())
          + "'");
    store(cli, [](const std::string& name) { return "--" + name; });
    hide_secret_arguments(argc, argv);
    auto env_name = [](const std::string& name) {
      std::string v = "TICKTOCK_";
      for (char c : name)
        v += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return v;
    };
    store(po::parse_environment(desc,
                                    [&](const std::string& env) -> std::string {
                                      // An empty TICKTOCK_X= is unset, not a
                                      // switch turned on (TICKTOCK_DEMO=).
                                      auto* value = std::getenv(env.c_str());
                                      if (env.rfind("TICKTOCK_", 0) != 0 || !value || !*value)
                                        return {};
                                      auto name = env.substr(9);
                                      for (auto& c : name)
                                        c = c == '_' ? '-' : static_cast<char>(std::tolower(c));
                                      return desc.find_nothrow(name, false) && name != "help"
                                                 && name != "version"
                                               ? name
                                               : std::string{};
                                    }),
          env_name);
    if (vm.count("config")) {
      auto file = vm["config"].as<std::string>();
      store(parse_config_file(file, desc),
            [&](const std::string& name) { return "'" + name + "' of the config file " + file; });
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ticktockd: %s (see --help)\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "ticktockd " << TICKTOCK_VERSION << "\n";
    return 0;
  }
  auto data = vm["data"].as<std::string>();
  if (data.empty()) {
    std::fprintf(stderr, "ticktockd: --data is empty (default ./ticktock-data)\n");
    return 2;
  }
  auto durability = vm["durability"].as<std::string>();
  auto missed = vm["missed-alarms"].as<std::string>();
  auto listen = vm["listen"].as<std::string>();

  ticktock::node_options opts;
  opts.data_dir = data;
  if (durability == "sync")
    opts.durability = ticktock::durability::sync;
  else if (durability != "async") {
    std::fprintf(stderr, "ticktockd: --durability must be sync or async\n");
    return 2;
  }
  if (missed == "fire_all")
    opts.missed_alarms = ticktock::missed_alarm_policy::fire_all;
  else if (missed == "skip")
    opts.missed_alarms = ticktock::missed_alarm_policy::skip;
  else if (missed != "fire_once") {
    std::fprintf(stderr, "ticktockd: --missed-alarms must be fire_once, fire_all or skip\n");
    return 2;
  }
  // Durations are added to clock readings in nanoseconds: beyond about 31
  // years of ms they would overflow (and 9.2e12 ms wraps to "at once").
  constexpr std::int64_t max_ms = 1'000'000'000'000;
  for (auto [name, min_ms] : {std::pair{"idle-timeout", 0}, std::pair{"exit-after-ms", 0},
                              std::pair{"read-timeout", 1}, std::pair{"write-timeout", 1}})
    if (vm.count(name)
        && (vm[name].as<std::int64_t>() < min_ms || vm[name].as<std::int64_t>() > max_ms)) {
      std::fprintf(stderr, "ticktockd: %s takes a number of ms from %d to %lld\n",
                   named(name).c_str(), min_ms, static_cast<long long>(max_ms));
      return 2;
    }
  // The per-agent defaults take what fs/limits takes: a node default an
  // admin could not write back for one agent would be a limit of its own.
  auto longest_wall = ticktock::tick_limits::longest_tick_wall_time.count();
  if (vm["tick-wall-ms"].as<std::uint64_t>() > static_cast<std::uint64_t>(longest_wall)) {
    std::fprintf(stderr, "ticktockd: --tick-wall-ms takes a number of ms from 0 to %lld (one day)\n",
                 static_cast<long long>(longest_wall));
    return 2;
  }
  if (vm["ticks-per-minute"].as<std::uint32_t>() > ticktock::tick_limits::most_ticks_per_minute) {
    std::fprintf(stderr, "ticktockd: --ticks-per-minute: 0 to %u\n",
                 ticktock::tick_limits::most_ticks_per_minute);
    return 2;
  }
  for (auto* name : {"threads", "http-threads"})
    if (vm[name].as<std::size_t>() > 1024) {
      std::fprintf(stderr, "ticktockd: %s is at most 1024\n", named(name).c_str());
      return 2;
    }
  if (!valid_admin_token(vm["admin-token"].as<std::string>())) {
    std::fprintf(stderr, "ticktockd: --admin-token is visible ASCII characters without blanks "
                         "(or empty: DATA/admin.token)\n");
    return 2;
  }
  opts.idle_timeout = std::chrono::milliseconds{vm["idle-timeout"].as<std::int64_t>()};
  opts.max_resident = vm["max-resident"].as<std::size_t>();
  if (opts.max_resident == 0) {
    std::fprintf(stderr, "ticktockd: --max-resident: at least 1 agent\n");
    return 2;
  }
  opts.threads = vm["threads"].as<std::size_t>();
  opts.limits.max_message_bytes = vm["max-body"].as<std::size_t>();
  if (opts.limits.max_message_bytes == 0 || vm["max-bundle"].as<std::size_t>() == 0) {
    // Not "no limit", as 0 is for the limits below: every body would be refused.
    std::fprintf(stderr, "ticktockd: --max-body and --max-bundle: at least 1 byte\n");
    return 2;
  }
  opts.limits.inbox_limit = vm["inbox-limit"].as<std::uint64_t>();
  // Defaults for every agent; an admin overrides them per agent in fs/limits.
  opts.limits.ticks_per_minute = vm["ticks-per-minute"].as<std::uint32_t>();
  opts.limits.tick_wall_time = std::chrono::milliseconds{vm["tick-wall-ms"].as<std::uint64_t>()};
  opts.limits.max_state_bytes = vm["max-state-bytes"].as<std::uint64_t>();
  opts.limits.outbox_retention = vm["outbox-retention"].as<std::uint64_t>();
  opts.limits.max_attempts = vm["max-attempts"].as<std::uint32_t>();
  if (opts.limits.max_attempts == 0 || opts.limits.max_attempts > ticktock::tick_limits::most_attempts) {
    std::fprintf(stderr, "ticktockd: --max-attempts: 1 to %u\n", ticktock::tick_limits::most_attempts);
    return 2;
  }
  // Ten years at most: longer is what 0 says, and would overflow a time.
  if (auto ttl = vm["idempotency-ttl"].as<std::uint64_t>(); ttl <= 315'360'000)
    opts.idempotency_ttl = std::chrono::seconds{ttl};
  else {
    std::fprintf(stderr, "ticktockd: %s: at most 315360000 seconds (ten years; 0 keeps keys "
                         "for the agent's life)\n", named("idempotency-ttl").c_str());
    return 2;
  }
  opts.services.container_concurrency = vm["container-concurrency"].as<std::size_t>();
  if (opts.services.container_concurrency == 0 || opts.services.container_concurrency > 1024) {
    std::fprintf(stderr, "ticktockd: --container-concurrency: 1 to 1024\n");
    return 2;
  }
  if (auto iso = ticktock::sandbox::isolation_from_string(vm["container-isolation"].as<std::string>()))
    opts.services.isolation = *iso;
  else {
    std::fprintf(stderr, "ticktockd: --container-isolation must be automatic, bubblewrap or process\n");
    return 2;
  }
  opts.services.container_price_per_cpu_second = vm["container-price"].as<std::uint64_t>();
  if (vm.count("container-uid-base")) {
    auto base = vm["container-uid-base"].as<std::uint32_t>();
    if (base == 0 || base > 0xFFFF'FFFEu - opts.services.container_concurrency) {
      std::fprintf(stderr, "ticktockd: --container-uid-base: a uid above 0 with room for "
                           "--container-concurrency uids below 4294967295\n");
      return 2;
    }
    opts.services.container_uid_base = base;
  }
  opts.master_key_file = vm["master-key-file"].as<std::string>();
  // The OpenAI-compatible provider, when a base URL is configured: the flag
  // (or TICKTOCK_OPENAI_BASE_URL, or the config file) over OPENAI_BASE_URL.
  auto openai = ticktock::drivers::openai_options::from_env();
  bool openai_set = std::getenv("OPENAI_BASE_URL") && *std::getenv("OPENAI_BASE_URL");
  if (auto url = vm["openai-base-url"].as<std::string>(); !url.empty()) {
    openai.base_url = url;
    openai_set = true;
  }
  if (openai_set) {
    auto p = ticktock::drivers::openai_provider::make(openai);
    if (!p) {
      std::fprintf(stderr, "ticktockd: --openai-base-url: %s\n",
                   p.error_value().message().c_str());
      return 2;
    }
    opts.services.providers["openai"] = std::shared_ptr<ticktock::compute::provider>(std::move(*p));
  }
  // Outbound HTTP (the http service): the Beast client of ticktock::drivers.
  {
    ticktock::drivers::http_fetch_options fo;
    fo.ca_file = vm["http-fetch-ca-file"].as<std::string>();
    fo.allow_private = vm["http-fetch-private"].as<bool>();
    auto ex = ticktock::drivers::make_http_fetch(fo);
    if (!ex) {
      std::fprintf(stderr, "ticktockd: --http-fetch-ca-file: %s\n", ex.error_value().message().c_str());
      return 2;
    }
    opts.services.http_executor = std::move(*ex);
    opts.services.http_price_per_request = vm["http-fetch-price"].as<std::uint64_t>();
  }
  ticktock::drivers::http_options http;
  if (auto where = parse_listen(listen)) {
    http.host = where->first;
    http.port = where->second;
  } else {
    std::fprintf(stderr,
                 "ticktockd: --listen must be HOST:PORT with HOST an IP address (IPv6 in "
                 "brackets: [::1]:7070) and PORT 0 to 65535, got '%s'\n",
                 listen.c_str());
    return 2;
  }

  http.max_body_bytes = opts.limits.max_message_bytes;
  http.max_bundle_bytes = vm["max-bundle"].as<std::size_t>();
  http.read_timeout = std::chrono::milliseconds{vm["read-timeout"].as<std::int64_t>()};
  http.write_timeout = std::chrono::milliseconds{vm["write-timeout"].as<std::int64_t>()};
  http.max_connections = vm["max-connections"].as<std::size_t>();
  http.threads = vm["http-threads"].as<std::size_t>();
  if (http.max_connections == 0 || http.threads == 0) {
    std::fprintf(stderr, "ticktockd: --max-connections and --http-threads must be positive\n");
    return 2;
  }
  if (vm.count("cors-origin"))
    http.cors_origins = vm["cors-origin"].as<std::vector<std::string>>();
  if (auto err = ticktock::drivers::check_cors_origins(http.cors_origins)) {
    std::fprintf(stderr, "ticktockd: --cors-origin: %s\n", err.message().c_str());
    return 2;
  }
  bool serving = !vm["rotate-master-key"].as<bool>();
  // Block the stop signals in every thread (a plugin's too); the main thread
  // waits for them. (--rotate-master-key is not a server: it loads no
  // plugin, and Ctrl-C stops it as any command.)
  if (!serving)
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);

  // Plugins are options too: one that does not load stops ticktockd
  // before the data directory is touched.
  auto registry = ticktock::builtin::registry();
  std::vector<std::string> plugin_lines;
  if (serving && vm.count("plugin"))
    for (auto& path : vm["plugin"].as<std::vector<std::string>>()) {
      if (path.empty()) {  // dlopen("") would open ticktockd itself
        std::fprintf(stderr, "ticktockd: --plugin: the path is empty\n");
        return 2;
      }
      auto before = registry.names();
      if (auto err = ticktock::load_plugin(path, registry)) {
        std::fprintf(stderr, "ticktockd: %s\n", err.to_string().c_str());
        return 2;
      }
      std::string added;
      for (auto& name : registry.names())
        if (std::find(before.begin(), before.end(), name) == before.end())
          added += (added.empty() ? "" : ",") + name;
      plugin_lines.push_back("event=plugin path=" + ticktock::log_value(path)
                             + " types=" + ticktock::log_value(added));
    }
  if (serving && http.port != 0)
    if (auto why = probe_listen(http.host, http.port); !why.empty()) {
      std::fprintf(stderr, "ticktockd: cannot listen on %s: %s\n", listen.c_str(), why.c_str());
      return 1;
    }
  // A master key file given is 32 bytes, or is created where a directory is.
  if (auto& key = opts.master_key_file; !key.empty()) {
    std::error_code ec;
    auto kind = std::filesystem::status(key, ec).type();
    if (!ec && kind != std::filesystem::file_type::regular) {
      std::fprintf(stderr, "ticktockd: --master-key-file %s is not a regular file\n", key.c_str());
      return 2;
    }
    auto size = std::filesystem::file_size(key, ec);
    auto parent = std::filesystem::path{key}.parent_path();
    if (!ec && size != 32) {
      std::fprintf(stderr, "ticktockd: --master-key-file %s holds %llu bytes, not 32\n", key.c_str(),
                   static_cast<unsigned long long>(size));
      return 2;
    }
    if (ec && !parent.empty() && !std::filesystem::is_directory(parent)) {
      std::fprintf(stderr, "ticktockd: --master-key-file %s: no directory %s to create it in\n",
                   key.c_str(), parent.c_str());
      return 2;
    }
  }
  // Held until exit (the descriptor is never closed).
  try {
    lock_data_dir(data);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ticktockd: %s\n", e.what());
    return 1;
  }
  if (!serving) {
    auto n = ticktock::node::rotate_master_key(opts);
    if (!n) {
      std::fprintf(stderr, "ticktockd: rotate-master-key: %s\n", n.error_value().to_string().c_str());
      return 1;
    }
    log_line("event=master_key_rotated agents=" + std::to_string(*n));
    return 0;
  }
  bool quiet = vm["quiet"].as<bool>();
  if (!quiet)
    http.log = log_line;
  for (auto& line : plugin_lines)
    log_line(line);

  if (vm["shared-threads"].as<bool>()) {
    http.loops = ticktock::drivers::io_loops::create(opts.threads, vm["pin-threads"].as<bool>());
    opts.configure_caf = http.loops->scheduler();
  }
  auto node = ticktock::node::open(opts, std::move(registry));
  if (!node) {
    std::fprintf(stderr, "ticktockd: %s\n", node.error_value().to_string().c_str());
    return 1;
  }
  auto& n = **node;
  bool generated = false;
  try {
    http.admin_token = admin_token(vm["admin-token"].as<std::string>(), data, generated);
    http.node_key = node_key(data);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ticktockd: %s\n", e.what());
    return 1;
  }
  if (!quiet)
    n.set_tick_observer([](const ticktock::tick_event& ev) {
      std::string line = "event=tick agent=" + ev.agent + " tick=" + std::to_string(ev.tick)
                         + " trigger=" + std::string{ticktock::to_string(ev.kind)}
                         + " seq=" + std::to_string(ev.trigger_seq)
                         + " outcome=" + std::string{ticktock::storage::to_string(ev.outcome)};
      if (!ev.request_id.empty())
        line += " request_id=" + ticktock::log_value(ev.request_id);
      if (!ev.error.empty())
        line += " error=" + ticktock::log_value(ev.error);
      log_line(line);
    });
  auto nostr = ticktock::drivers::nostr_driver::start(n);
  if (!nostr) {
    std::fprintf(stderr, "ticktockd: nostr: %s\n", nostr.error_value().to_string().c_str());
    return 1;
  }
  http.nostr = nostr->get();
  auto server = ticktock::drivers::http_server::start(n, http);
  if (!server) {
    std::fprintf(stderr, "ticktockd: %s\n", server.error_value().to_string().c_str());
    return 1;
  }
  if (openai_set)
    log_line("event=provider name=openai base_url=" + ticktock::log_value(openai.base_url)
             + (openai.api_key.empty() ? " key=none" : " key=set"));
  log_line("event=start data=" + ticktock::log_value(data) + " agents=" + std::to_string(n.agent_count())
           + " durability=" + durability + " listen="
           + (http.host.find(':') == std::string::npos ? http.host : "[" + http.host + "]") + ":"
           + std::to_string((*server)->port()) + " allocator=" + allocator());
  if (generated || vm["admin-token"].as<std::string>().empty())
    log_line("event=admin_token path=" + ticktock::log_value(data + "/admin.token")
             + (generated ? " generated=true" : ""));
  if (vm["demo"].as<bool>())
    create_demo(n);

  int sig = 0;
  if (vm.count("exit-after-ms")) {
    timespec ts{};
    auto ms = vm["exit-after-ms"].as<std::int64_t>();
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1'000'000;
    sig = sigtimedwait(&stop_signals, nullptr, &ts);
    if (sig < 0)
      sig = 0;
  } else {
    sigwait(&stop_signals, &sig);
  }
  log_line("event=stop signal=" + std::to_string(sig));
  (*server)->stop_accepting();
  nostr->reset();  // no relay delivers into the node from here on
  // Drain: the ticks running commit, and no new one starts (bounded; the
  // triggers not yet ticked stay in the durable inboxes for the next start).
  // An /a/ request whose tick commits here gets its reply; one still
  // waiting gets 503 from stop(), saying whether it was applied.
  bool drained = n.drain(std::chrono::seconds{5});
  (*server)->stop(drained);
  log_line(std::string{"event=drain complete="} + (drained ? "true" : "false"));
  n.shutdown();
  log_line("event=stopped");
  return 0;
}
