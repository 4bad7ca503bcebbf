#include "ticktock/runtime/sandbox.hpp"
#include "ticktock/runtime/detail/json_check.hpp"
#include "ticktock/runtime/text.hpp"
#include "ticktock/runtime/detail/unique_fd.hpp"

#include "keeper_protocol.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/json.hpp>

namespace ticktock::sandbox {

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

constexpr const char* sandbox_path = "/usr/local/bin:/usr/bin:/bin";
constexpr const char* inside_workdir = "/work";
// The directories of the host a bubblewrap sandbox sees besides /usr: as the
// symlinks they are on a merged-/usr system, else read-only.
constexpr std::array<const char*, 6> usr_companions{"/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                                    "/libx32"};
// How long the end of a session waits for output still in the pipes after
// the command and its process group are gone (a process that escaped the
// group with setsid may hold them open forever).
constexpr std::chrono::milliseconds drain_grace{1000};
// How much of stderr is kept to recognise an out-of-memory report and to
// explain a bwrap setup failure.
constexpr std::size_t stderr_tail_bytes = 4096;

std::string errno_text(int err) { return std::strerror(err); }

// -- file descriptors --------------------------------------------------------

using ticktock::detail::unique_fd;

bool make_pipe(unique_fd& r, unique_fd& w) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return false;
  r = unique_fd{fds[0]};
  w = unique_fd{fds[1]};
  return true;
}

// -- programs ----------------------------------------------------------------

bool is_executable_file(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0;
}

std::optional<fs::path> search_path(const std::string& name) {
  for (const char* dir : {"/usr/local/bin", "/usr/bin", "/bin"}) {
    fs::path p = fs::path{dir} / name;
    if (is_executable_file(p))
      return p;
  }
  return std::nullopt;
}

std::optional<fs::path> find_bwrap() {
  for (const char* p : {"/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"})
    if (is_executable_file(p))
      return fs::path{p};
  return std::nullopt;
}

// The host file that argv[0] names, in the mode's view of the file system;
// or an error message saying why it cannot run.
expected<fs::path> resolve_program(const std::string& argv0, const fs::path& workdir,
                                   isolation iso) {
  auto not_found = [&](const std::string& why) {
    return error{errc::not_found, "program not found: " + argv0 + " (" + why + ")"};
  };
  fs::path candidate;
  if (argv0.find('/') == std::string::npos) {
    auto p = search_path(argv0);
    if (!p)
      return not_found(std::string{"not in PATH="} + sandbox_path);
    return *p;
  }
  fs::path given{argv0};
  if (given.is_relative()) {
    candidate = (workdir / given).lexically_normal();
    // "../x" must not leave the working directory (it does not in bubblewrap
    // mode, where the working directory is the sandbox's /work).
    auto rel = candidate.lexically_relative(workdir);
    if (rel.empty() || *rel.begin() == "..")
      return not_found("outside the working directory");
  } else if (iso == isolation::bubblewrap) {
    fs::path norm = given.lexically_normal();
    auto rel = norm.lexically_relative(inside_workdir);
    if (!rel.empty() && *rel.begin() != ".." && rel != ".") {
      candidate = workdir / rel;
    } else {
      fs::path top;
      if (auto it = norm.begin(); it != norm.end() && ++it != norm.end())
        top = *it;
      bool visible = top == "usr";
      for (const char* c : usr_companions)
        visible = visible || fs::path{c}.filename() == top;
      if (!visible)
        return not_found("only /usr, /bin, /sbin, /lib* and /work are visible in the sandbox");
      candidate = norm;
    }
  } else {
    candidate = given;
  }
  struct stat st {};
  if (::stat(candidate.c_str(), &st) != 0)
    return not_found(errno_text(errno));
  if (!S_ISREG(st.st_mode))
    return error{errc::invalid_argument, "not a regular file: " + argv0};
  if ((st.st_mode & 0111) == 0)
    return error{errc::invalid_argument, "not executable: " + argv0};
  return candidate;
}

bool reserved_env(std::string_view name) {
  return name == "PATH" || name == "HOME" || name == "LANG" || name == "PWD";
}

bool valid_env_name(std::string_view name) {
  if (name.empty() || name.size() > 256)
    return false;
  auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!alpha(name[0]))
    return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

// -- the child ---------------------------------------------------------------

namespace k = keeper;

// Everything the child needs, prepared before fork(): after it only
// async-signal-safe calls are allowed (the server is multithreaded).
struct launch_plan {
  std::string exec_path;  // the command (or bwrap), run by the keeper
  std::vector<std::string> args;
  std::vector<std::string> envs;
  bool drop_privileges = false;
  uid_t uid = 0;
  gid_t gid = 0;
  bool chdir_to_workdir = false;  // process mode: fchdir(workdir_fd)
  struct rlimit cpu {}, as {}, fsize {}, nproc {};

  // The keeper's command line (keeper_protocol.hpp).
  std::vector<std::string> keeper_args() const {
    std::vector<std::string> a{"ticktock-keeper",
                               k::protocol,
                               drop_privileges ? "1" : "0",
                               std::to_string(uid),
                               std::to_string(gid),
                               std::to_string(cpu.rlim_cur),
                               std::to_string(cpu.rlim_max),
                               std::to_string(as.rlim_cur),
                               std::to_string(fsize.rlim_cur),
                               std::to_string(nproc.rlim_cur),
                               exec_path,
                               "--"};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }

  // The command's environment for the keeper's env_fd: a sealed memfd.
  unique_fd environment() const {
    unique_fd fd{::memfd_create("ticktock-env", MFD_CLOEXEC)};
    std::string block;
    for (auto& e : envs)
      block.append(e).push_back('\0');
    for (std::size_t done = 0; fd && done < block.size();) {
      auto n = ::write(fd.get(), block.data() + done, block.size() - done);
      if (n < 0 && errno != EINTR)
        return unique_fd{};
      done += n > 0 ? static_cast<std::size_t>(n) : 0;
    }
    if (fd && ::lseek(fd.get(), 0, SEEK_SET) != 0)
      return unique_fd{};
    return fd;
  }
};

// The keeper (ticktock-keeper): TICKTOCK_KEEPER if set; else beside the
// program as installed (BIN/../libexec/ticktock), where this library was
// configured to install it, or where it was built.
std::optional<fs::path> find_keeper() {
  if (const char* env = std::getenv("TICKTOCK_KEEPER"); env && *env)
    return fs::path{env};
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> places;
  if (!ec)
    places.push_back(exe.parent_path().parent_path() / "libexec/ticktock/ticktock-keeper");
  places.emplace_back(TICKTOCK_KEEPER_INSTALL_PATH);
  places.emplace_back(TICKTOCK_KEEPER_BUILD_PATH);
  for (auto& p : places)
    if (::access(p.c_str(), X_OK) == 0)
      return p;
  return std::nullopt;
}

[[noreturn]] void child_fail(int report_fd, int step) {
  k::failure f{step, errno};
  [[maybe_unused]] auto n = ::write(report_fd, &f, sizeof f);
  ::_exit(127);
}

// The forked child: its own session, the keeper's descriptors and working
// directory, then the keeper (which starts the command).
[[noreturn]] void exec_keeper(const launch_plan& plan, const char* keeper_path, char* const* argv,
                              char* const* envp, int devnull, int out_w, int err_w, int report_w,
                              int status_w, int control_r, int env_r, int workdir_fd) {
  ::setsid();
  // Move every descriptor we keep above the fixed numbers first, so that no
  // dup2 below overwrites one still needed.
  int src[] = {devnull, out_w, err_w, report_w, status_w, control_r, workdir_fd, env_r};
  for (int& fd : src)
    if (fd >= 0 && (fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 16)) < 0)
      ::_exit(127);
  report_w = src[3];
  // dup2 leaves the copies without close-on-exec: they reach the keeper.
  if (::dup2(src[3], k::report_fd) < 0)
    child_fail(report_w, k::step_fds);
  report_w = k::report_fd;
  if (::dup2(src[0], 0) < 0 || ::dup2(src[1], 1) < 0 || ::dup2(src[2], 2) < 0 ||
      ::dup2(src[5], k::control_fd) < 0 || ::dup2(src[7], k::env_fd) < 0)
    child_fail(report_w, k::step_fds);
  if (src[4] >= 0 ? ::dup2(src[4], k::status_fd) < 0 : (::close(k::status_fd), false))
    child_fail(report_w, k::step_fds);
  if (plan.chdir_to_workdir ? ::fchdir(src[6]) != 0 : ::chdir("/") != 0)
    child_fail(report_w, k::step_chdir);
  // Nothing else of the server's descriptors reaches the keeper.
  if (::syscall(SYS_close_range, k::env_fd + 1, ~0u, 0) != 0)
    child_fail(report_w, k::step_fds);
  ::execve(keeper_path, argv, envp);
  child_fail(report_w, k::step_keeper);
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v)
    out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
  }
  return "a signal";
}

bool mentions_out_of_memory(std::string_view text) {
  for (std::string_view phrase : {"Cannot allocate memory", "out of memory", "Out of memory",
                                  "MemoryError", "std::bad_alloc", "ENOMEM"})
    if (text.find(phrase) != std::string_view::npos)
      return true;
  return false;
}

std::chrono::microseconds to_us(const timeval& tv) {
  return std::chrono::seconds{tv.tv_sec} + std::chrono::microseconds{tv.tv_usec};
}

// Whether a process of `uid`/`gid` may search every directory above `dir`:
// bubblewrap binds the working directory after it has become that uid, so
// a parent it cannot search makes its setup fail.
bool parents_searchable_by(const fs::path& dir, uid_t uid, gid_t gid) {
  std::error_code ec;
  auto abs = fs::absolute(dir, ec);
  if (ec)
    return false;
  for (auto p = abs.parent_path(); !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0)
      return false;
    bool ok = (st.st_uid == uid && (st.st_mode & S_IXUSR)) || (st.st_gid == gid && (st.st_mode & S_IXGRP))
              || (st.st_mode & S_IXOTH);
    if (!ok)
      return false;
    if (p == p.root_path())
      break;
  }
  return true;
}

}  // namespace

isolation automatic_isolation(const fs::path& workdir, std::uint32_t uid, std::uint32_t gid) {
  // Run as root, the command gets the sandbox uid, which must reach the
  // working directory.
  bool reachable = ::geteuid() != 0 || workdir.empty() || parents_searchable_by(workdir, uid, gid);
  return bubblewrap_available() && reachable ? isolation::bubblewrap : isolation::process;
}

// -- names -------------------------------------------------------------------

std::string_view to_string(isolation iso) noexcept {
  switch (iso) {
    case isolation::automatic: return "automatic";
    case isolation::bubblewrap: return "bubblewrap";
    case isolation::process: return "process";
  }
  return "automatic";
}

std::optional<isolation> isolation_from_string(std::string_view name) noexcept {
  for (auto iso : {isolation::automatic, isolation::bubblewrap, isolation::process})
    if (name == to_string(iso))
      return iso;
  return std::nullopt;
}

std::string_view to_string(pool::state s) noexcept {
  switch (s) {
    case pool::state::queued: return "queued";
    case pool::state::running: return "running";
    case pool::state::done: return "done";
  }
  return "done";
}

// -- requests ----------------------------------------------------------------

expected<spec> parse_request(std::string_view body, const limits& maxima, const limits& defaults) {
  auto bad = [](std::string msg) { return error{errc::invalid_argument, std::move(msg)}; };
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec)
    return bad("the session request is not valid JSON: " + ec.message());
  if (auto scan = detail::scan_json(body); !scan.duplicate.empty())
    return bad("the session request names '" + scan.duplicate + "' twice");
  if (!v.is_object())
    return bad("the session request must be a JSON object");
  const auto& obj = v.get_object();
  for (const auto& kv : obj)
    if (kv.key() != "command" && kv.key() != "env" && kv.key() != "limits")
      return bad("unknown field \"" + std::string{kv.key()} +
                 "\" (expected command, env, limits)");

  spec s;
  auto cmd = obj.find("command");
  if (cmd == obj.end())
    return bad("\"command\" is required: an array of strings, e.g. [\"sh\",\"-c\",\"ls\"]");
  if (!cmd->value().is_array())
    return bad("\"command\" must be an array of strings");
  const auto& arr = cmd->value().get_array();
  if (arr.empty())
    return bad("\"command\" must not be empty");
  if (arr.size() > 4096)
    return bad("\"command\" has more than 4096 arguments");
  std::size_t total = 0;
  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_string())
      return bad("\"command\"[" + std::to_string(i) + "] must be a string");
    std::string arg{arr[i].get_string()};
    if (arg.find('\0') != std::string::npos)
      return bad("\"command\"[" + std::to_string(i) + "] contains a NUL byte");
    total += arg.size() + 1;
    s.argv.push_back(std::move(arg));
  }
  if (s.argv[0].empty())
    return bad("\"command\"[0], the program, must not be empty");
  if (total > 256 * 1024)
    return bad("\"command\" is larger than 256 KiB");

  if (auto env = obj.find("env"); env != obj.end()) {
    if (!env->value().is_object())
      return bad("\"env\" must be an object of strings");
    const auto& e = env->value().get_object();
    if (e.size() > 256)
      return bad("\"env\" has more than 256 variables");
    for (const auto& kv : e) {
      std::string name{kv.key()};
      if (!valid_env_name(name))
        return bad("\"env\": invalid variable name \"" + name + "\" (want [A-Za-z_][A-Za-z0-9_]*)");
      if (reserved_env(name))
        return bad("\"env\": " + name + " is set by the sandbox and cannot be given");
      if (!kv.value().is_string())
        return bad("\"env\"." + name + " must be a string");
      std::string value{kv.value().get_string()};
      if (value.find('\0') != std::string::npos)
        return bad("\"env\"." + name + " contains a NUL byte");
      if (value.size() > 64 * 1024)
        return bad("\"env\"." + name + " is longer than 64 KiB");
      s.env.emplace(std::move(name), std::move(value));
    }
  }

  limits lim = defaults;
  if (auto l = obj.find("limits"); l != obj.end()) {
    if (!l->value().is_object())
      return bad("\"limits\" must be an object");
    for (const auto& kv : l->value().get_object()) {
      std::string name{kv.key()};
      std::uint64_t n = 0;
      if (kv.value().is_uint64())
        n = kv.value().get_uint64();
      else if (kv.value().is_int64() && kv.value().get_int64() > 0)
        n = static_cast<std::uint64_t>(kv.value().get_int64());
      if (n == 0)
        return bad("\"limits\"." + name + " must be a positive integer");
      if (name == "wall_timeout_ms")
        lim.wall_timeout = std::chrono::milliseconds{
            static_cast<std::int64_t>(std::min<std::uint64_t>(n, 1ull << 62))};
      else if (name == "cpu_seconds")
        lim.cpu_seconds = n;
      else if (name == "memory_bytes")
        lim.memory_bytes = n;
      else if (name == "file_bytes")
        lim.file_bytes = n;
      else if (name == "processes")
        lim.processes = n;
      else if (name == "output_bytes")
        lim.output_bytes = static_cast<std::size_t>(n);
      else
        return bad("\"limits\": unknown limit \"" + name +
                   "\" (expected wall_timeout_ms, cpu_seconds, memory_bytes, file_bytes, "
                   "processes, output_bytes)");
    }
  }
  lim.wall_timeout = std::min(lim.wall_timeout, maxima.wall_timeout);
  lim.cpu_seconds = std::min(lim.cpu_seconds, maxima.cpu_seconds);
  lim.memory_bytes = std::min(lim.memory_bytes, maxima.memory_bytes);
  lim.file_bytes = std::min(lim.file_bytes, maxima.file_bytes);
  lim.processes = std::min(lim.processes, maxima.processes);
  lim.output_bytes = std::min(lim.output_bytes, maxima.output_bytes);
  s.lim = lim;
  return s;
}

std::string to_json(const limits& lim) {
  json::object o;
  o["wall_timeout_ms"] = lim.wall_timeout.count();
  o["cpu_seconds"] = lim.cpu_seconds;
  o["memory_bytes"] = lim.memory_bytes;
  o["file_bytes"] = lim.file_bytes;
  o["processes"] = lim.processes;
  o["output_bytes"] = lim.output_bytes;
  return json_text(o);
}

std::string to_json(const outcome& out) {
  json::object o;
  o["status"] = out.status;
  o["exit_code"] = out.exit_code;
  o["signal"] = out.signal;
  o["wall_us"] = out.wall.count();
  o["cpu_us"] = out.cpu.count();
  o["output_bytes"] = out.output_bytes;
  o["output_truncated"] = out.output_truncated;
  o["isolation"] = to_string(out.used);
  o["error"] = out.error;
  return json_text(o);
}

// -- session -----------------------------------------------------------------

struct session::impl {
  spec spec_;
  callbacks cb_;
  unique_fd kill_fd_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  bool done_ = false;
  outcome result_;
  std::thread thread_;

  // -- the session thread, start to end --

  void run() {
    auto start = clock_type::now();
    outcome out = execute(start);
    out.wall = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - start);
    if (cb_.on_exit)
      cb_.on_exit(out);
    std::lock_guard lk{mtx_};
    result_ = std::move(out);
    done_ = true;
    cv_.notify_all();
  }

  outcome failed(isolation used, std::string why) {
    outcome o;
    o.status = "failed_to_start";
    o.used = used;
    o.error = std::move(why);
    return o;
  }

  outcome execute(clock_type::time_point start) {
    isolation used = spec_.iso;
    if (used == isolation::automatic)
      used = automatic_isolation(spec_.workdir, spec_.uid, spec_.gid);
    if (spec_.argv.empty() || spec_.argv[0].empty())
      return failed(used, "empty command");
    if (spec_.workdir.empty())
      return failed(used, "no working directory given");
    if (!kill_fd_)
      return failed(used, "eventfd: " + errno_text(errno));

    bool root = ::geteuid() == 0;
    std::error_code ec;
    fs::path workdir = fs::absolute(spec_.workdir, ec);
    if (ec)
      return failed(used, "working directory " + spec_.workdir.string() + ": " + ec.message());
    workdir = workdir.lexically_normal();
    if (workdir.has_filename() == false && workdir.has_parent_path())
      workdir = workdir.parent_path();
    fs::create_directories(workdir, ec);
    if (ec)
      return failed(used, "cannot create working directory " + workdir.string() + ": " +
                              ec.message());
    unique_fd wd{::open(workdir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
    if (!wd)
      return failed(used, "cannot open working directory " + workdir.string() + ": " +
                              errno_text(errno));
    if (root) {
      // The sandbox uid owns its directory, and no other uid may enter it.
      if (::fchown(wd.get(), spec_.uid, spec_.gid) != 0 || ::fchmod(wd.get(), 0700) != 0)
        return failed(used, "cannot hand the working directory to uid " +
                                std::to_string(spec_.uid) + ": " + errno_text(errno));
    }

    auto program = resolve_program(spec_.argv[0], workdir, used);
    if (!program)
      return failed(used, program.error_value().message());

    launch_plan plan;
    plan.drop_privileges = root;
    plan.uid = root ? spec_.uid : ::getuid();
    plan.gid = root ? spec_.gid : ::getgid();
    const auto& lim = spec_.lim;
    auto cpu = static_cast<rlim_t>(std::max<std::uint64_t>(lim.cpu_seconds, 1));
    plan.cpu = {cpu, cpu + 1};
    plan.as = {static_cast<rlim_t>(lim.memory_bytes), static_cast<rlim_t>(lim.memory_bytes)};
    plan.fsize = {static_cast<rlim_t>(lim.file_bytes), static_cast<rlim_t>(lim.file_bytes)};
    rlim_t nproc = static_cast<rlim_t>(lim.processes) + (used == isolation::bubblewrap ? 2 : 0);
    plan.nproc = {nproc, nproc};

    std::vector<std::pair<std::string, std::string>> env;
    for (const auto& [k, v] : spec_.env)
      if (!reserved_env(k) && valid_env_name(k))
        env.emplace_back(k, v);

    if (used == isolation::bubblewrap) {
      auto bwrap = find_bwrap();
      if (!bwrap)
        return failed(used, "bubblewrap is not installed (no bwrap in /usr/bin)");
      plan.exec_path = bwrap->string();
      auto& a = plan.args;
      // --disable-userns: the command cannot make user namespaces of its own
      // (and with them mount or network namespaces) inside the sandbox. No
      // --die-with-parent: bwrap's monitor exits as soon as the command has,
      // and its init would die then with children unreaped, whose CPU time
      // the kernel drops; the keeper ends the sandbox (keeper_main.cpp).
      a = {"bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--new-session",
           "--clearenv"};
      for (const auto& [k, v] : env)
        a.insert(a.end(), {"--setenv", k, v});
      a.insert(a.end(), {"--setenv", "PATH", sandbox_path, "--setenv", "HOME", inside_workdir,
                         "--setenv", "LANG", "C.UTF-8", "--setenv", "PWD", inside_workdir,
                         "--ro-bind", "/usr", "/usr"});
      for (const char* dir : usr_companions) {
        std::error_code lec;
        auto st = fs::symlink_status(dir, lec);
        if (lec)
          continue;
        if (fs::is_symlink(st))
          a.insert(a.end(), {"--symlink", fs::read_symlink(dir, lec).string(), dir});
        else if (fs::is_directory(st))
          a.insert(a.end(), {"--ro-bind", dir, dir});
      }
      a.insert(a.end(), {"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind",
                         workdir.string(), inside_workdir, "--chdir", inside_workdir, "--uid",
                         std::to_string(plan.uid), "--gid", std::to_string(plan.gid),
                         "--json-status-fd", std::to_string(k::status_fd), "--"});
      a.insert(a.end(), spec_.argv.begin(), spec_.argv.end());
      plan.chdir_to_workdir = false;
    } else {
      plan.exec_path = program->string();
      // A program inside the working directory is executed relative to it
      // (the child has entered it): the sandbox uid may not be allowed to
      // search the directories above it.
      if (auto rel = program->lexically_relative(workdir); !rel.empty() && *rel.begin() != "..")
        plan.exec_path = (fs::path{"."} / rel).string();
      plan.args = spec_.argv;
      plan.envs.push_back(std::string{"PATH="} + sandbox_path);
      plan.envs.push_back("HOME=" + workdir.string());
      plan.envs.push_back("LANG=C.UTF-8");
      plan.envs.push_back("PWD=" + workdir.string());  // as bwrap's --chdir sets it
      for (const auto& [k, v] : env)
        plan.envs.push_back(k + "=" + v);
      plan.chdir_to_workdir = true;
    }

    unique_fd devnull{::open("/dev/null", O_RDONLY | O_CLOEXEC)};
    unique_fd out_r, out_w, err_r, err_w, rep_r, rep_w, st_r, st_w, ctl_r, ctl_w;
    if (!devnull || !make_pipe(out_r, out_w) || !make_pipe(err_r, err_w) ||
        !make_pipe(rep_r, rep_w) || !make_pipe(ctl_r, ctl_w) ||
        (used == isolation::bubblewrap && !make_pipe(st_r, st_w)))
      return failed(used, "cannot create pipes: " + errno_text(errno));

    auto keeper = find_keeper();
    if (!keeper)
      return failed(used, "the session keeper (ticktock-keeper) is not installed: set "
                          "TICKTOCK_KEEPER to its path");
    auto env_fd = plan.environment();
    if (!env_fd)
      return failed(used, "cannot pass the environment: " + errno_text(errno));
    auto keeper_args = plan.keeper_args();
    auto argv = c_strings(keeper_args);
    std::vector<std::string> no_env;  // the command's goes on env_fd
    auto envp = c_strings(no_env);
    pid_t pid = ::fork();
    if (pid < 0)
      return failed(used, "fork: " + errno_text(errno));
    if (pid == 0)
      exec_keeper(plan, keeper->c_str(), argv.data(), envp.data(), devnull.get(), out_w.get(),
                  err_w.get(), rep_w.get(), st_w ? st_w.get() : -1, ctl_r.get(), env_fd.get(),
                  wd.get());

    ctl_r.reset();
    out_w.reset();
    err_w.reset();
    rep_w.reset();
    st_w.reset();
    devnull.reset();
    wd.reset();

    // The command either execs (the pipe closes) or the keeper or the
    // command reports why it could not.
    k::failure cf{};
    ssize_t n;
    do
      n = ::read(rep_r.get(), &cf, sizeof cf);
    while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof cf)) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      std::string what = cf.step == k::step_exec ? "cannot execute " + spec_.argv[0]
                                                 : std::string{k::step_name(cf.step)} + " failed";
      return failed(used, what + ": " + errno_text(cf.err));
    }
    rep_r.reset();
    return supervise(pid, used, std::move(out_r), std::move(err_r), std::move(st_r),
                     std::move(ctl_w), start);
  }

  // `pid` is the keeper (keeper_main.cpp), which ends when the whole session has:
  // closing `control` has it kill the session.
  outcome supervise(pid_t pid, isolation used, unique_fd out_r, unique_fd err_r, unique_fd st_r,
                    unique_fd control, clock_type::time_point start) {
    const auto& lim = spec_.lim;
    outcome out;
    out.used = used;
    unique_fd pidfd{static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};

    enum class reason { none, timeout, killed } kill_reason = reason::none;
    auto kill_group = [&] { control.reset(); };

    // bwrap writes {"exit-code": N} to the status pipe when the command ran
    // and ended; without it (and not killed by us) the sandbox could not be
    // set up or the command not executed, and stderr holds bwrap's reason.
    std::string status_text;
    std::string stderr_tail;

    auto deliver = [&](stream which, std::string_view data) {
      if (which == stream::stderr_stream) {
        stderr_tail.append(data);
        if (stderr_tail.size() > stderr_tail_bytes)
          stderr_tail.erase(0, stderr_tail.size() - stderr_tail_bytes);
      }
      std::size_t room = lim.output_bytes > out.output_bytes ? lim.output_bytes - out.output_bytes : 0;
      if (data.size() > room) {
        out.output_truncated = true;
        data = data.substr(0, room);
      }
      if (data.empty())
        return;
      out.output_bytes += data.size();
      if (cb_.on_output)
        cb_.on_output(which, data);
    };

    auto deadline = start + lim.wall_timeout;
    bool exited = false;
    std::optional<clock_type::time_point> drain_deadline;
    std::array<char, 65536> buf;

    while (true) {
      if (exited && !out_r && !err_r && !st_r)
        break;
      auto now = clock_type::now();
      if (!exited && kill_reason == reason::none && now >= deadline) {
        kill_reason = reason::timeout;
        kill_group();
      }
      if (drain_deadline && now >= *drain_deadline)
        break;

      std::array<pollfd, 5> fds{};
      std::size_t nfds = 0;
      auto add = [&](int fd) {
        fds[nfds] = pollfd{fd, POLLIN, 0};
        return nfds++;
      };
      std::size_t i_out = out_r ? add(out_r.get()) : SIZE_MAX;
      std::size_t i_err = err_r ? add(err_r.get()) : SIZE_MAX;
      std::size_t i_st = st_r ? add(st_r.get()) : SIZE_MAX;
      std::size_t i_pid = (!exited && pidfd) ? add(pidfd.get()) : SIZE_MAX;
      std::size_t i_kill = !exited ? add(kill_fd_.get()) : SIZE_MAX;

      auto until = drain_deadline ? *drain_deadline
                                  : (kill_reason == reason::none ? deadline : now + drain_grace);
      auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1;
      int r = ::poll(fds.data(), nfds, static_cast<int>(std::clamp<long long>(wait_ms, 0, 60'000)));
      if (r < 0 && errno != EINTR)
        break;

      auto read_into = [&](unique_fd& fd, std::size_t idx, stream which) {
        if (idx == SIZE_MAX || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR)))
          return;
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n > 0)
          deliver(which, std::string_view{buf.data(), static_cast<std::size_t>(n)});
        else if (n == 0 || (errno != EINTR && errno != EAGAIN))
          fd.reset();
      };
      if (i_st != SIZE_MAX && (fds[i_st].revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = ::read(st_r.get(), buf.data(), buf.size());
        if (n > 0 && status_text.size() < 65536)
          status_text.append(buf.data(), static_cast<std::size_t>(n));
        else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
          st_r.reset();
      }
      read_into(out_r, i_out, stream::stdout_stream);
      read_into(err_r, i_err, stream::stderr_stream);
      if (i_kill != SIZE_MAX && (fds[i_kill].revents & POLLIN)) {
        std::uint64_t v;
        [[maybe_unused]] auto n = ::read(kill_fd_.get(), &v, sizeof v);
        if (kill_reason == reason::none) {
          kill_reason = reason::killed;
          kill_group();
        }
      }
      bool child_gone = false;
      if (i_pid != SIZE_MAX && (fds[i_pid].revents & POLLIN))
        child_gone = true;
      if (!pidfd && !exited) {
        // No pidfd (very old kernel): look without blocking.
        siginfo_t si{};
        child_gone = ::waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
      }
      if (child_gone) {
        exited = true;
        // The keeper ends only when the session's process tree has. A uid of
        // its own is swept as well, in case something of it slipped past
        // (the keeper finds orphans through /proc).
        kill_group();
        if (spec_.exclusive_uid && ::geteuid() == 0)
          kill_all_of_uid(spec_.uid);
        int status = 0;
        struct rusage ru {};
        while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
        }
        out.cpu = to_us(ru.ru_utime) + to_us(ru.ru_stime);
        classify(out, status, used, kill_reason == reason::timeout,
                 kill_reason == reason::killed, stderr_tail);
        drain_deadline = clock_type::now() + drain_grace;
      }
    }
    if (!exited) {
      // Only reached if poll failed: do not leave the session behind.
      kill_group();
      int status = 0;
      struct rusage ru {};
      ::wait4(pid, &status, 0, &ru);
      out.cpu = to_us(ru.ru_utime) + to_us(ru.ru_stime);
      classify(out, status, used, kill_reason == reason::timeout, true, stderr_tail);
    }
    if (used == isolation::bubblewrap && kill_reason == reason::none &&
        status_text.find("\"exit-code\"") == std::string::npos) {
      std::string why = stderr_tail;
      while (!why.empty() && (why.back() == '\n' || why.back() == '\r'))
        why.pop_back();
      if (auto nl = why.rfind('\n'); nl != std::string::npos)
        why.erase(0, nl + 1);
      auto code = out.exit_code;
      auto bytes = out.output_bytes;
      auto truncated = out.output_truncated;
      auto cpu = out.cpu;
      out = failed(used, why.empty() ? "bwrap could not start the command (exit " +
                                           std::to_string(code) + ")"
                                     : why);
      out.output_bytes = bytes;
      out.output_truncated = truncated;
      out.cpu = cpu;
    }
    return out;
  }

  // Kills every process of `uid` from a helper running as that uid:
  // kill(-1) then reaches all of them and nothing else.
  static void kill_all_of_uid(std::uint32_t uid) {
    pid_t helper = ::fork();
    if (helper == 0) {
      if (::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0)
        ::kill(-1, SIGKILL);
      ::_exit(0);
    }
    if (helper > 0)
      while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
      }
  }

  void classify(outcome& out, int status, isolation used, bool timed_out, bool killed,
                const std::string& stderr_tail) {
    int code = -1, sig = 0;
    if (WIFEXITED(status))
      code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
      sig = WTERMSIG(status);
    // bwrap reports a command killed by signal N as exit code 128 + N.
    if (used == isolation::bubblewrap && code > 128 && code - 128 < NSIG) {
      sig = code - 128;
      code = -1;
    }
    out.exit_code = code;
    out.signal = sig;
    auto cpu_limit = std::chrono::seconds{static_cast<std::int64_t>(spec_.lim.cpu_seconds)};
    if (timed_out) {
      out.status = "timeout";
      out.error = "wall-clock timeout of " + std::to_string(spec_.lim.wall_timeout.count()) +
                  " ms: the process group was killed";
    } else if (killed) {
      out.status = "killed";
    } else if (sig == SIGXCPU || (sig == SIGKILL && out.cpu >= cpu_limit)) {
      out.status = "cpu_limit";
      out.error = "CPU time limit of " + std::to_string(spec_.lim.cpu_seconds) + " s";
    } else if (sig == SIGXFSZ) {
      out.status = "file_size_limit";
      out.error = "file size limit of " + std::to_string(spec_.lim.file_bytes) + " bytes";
    } else if (sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT || sig == SIGKILL) {
      out.status = "memory_limit";
      out.error = std::string{"ended by "} + signal_name(sig) +
                  " under the memory limit (a failed allocation cannot be told from a crash)";
    } else if (sig != 0) {
      out.status = "signaled";
    } else if (code != 0 && mentions_out_of_memory(stderr_tail)) {
      out.status = "memory_limit";
      out.error = "exited with code " + std::to_string(code) + " reporting out of memory";
    } else {
      out.status = "exited";
    }
  }
};

session::session(spec s, callbacks cb) : impl_(std::make_shared<impl>()) {
  impl_->spec_ = std::move(s);
  impl_->cb_ = std::move(cb);
  impl_->thread_ = std::thread([i = impl_.get()] { i->run(); });
}

session::~session() {
  kill();
  if (impl_->thread_.joinable())
    impl_->thread_.join();
}

void session::kill() {
  std::uint64_t one = 1;
  if (impl_->kill_fd_)
    [[maybe_unused]] auto n = ::write(impl_->kill_fd_.get(), &one, sizeof one);
}

outcome session::wait() {
  std::unique_lock lk{impl_->mtx_};
  impl_->cv_.wait(lk, [&] { return impl_->done_; });
  return impl_->result_;
}

bool session::done() const {
  std::lock_guard lk{impl_->mtx_};
  return impl_->done_;
}

// -- the bubblewrap probe ----------------------------------------------------

bool bubblewrap_available() {
  static const bool works = [] {
    if (!find_bwrap())
      return false;
    auto tmpl = (fs::temp_directory_path() / "ticktock-bwrap-probe-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
      return false;
    spec s;
    s.argv = {"true"};
    s.workdir = tmpl;
    s.iso = isolation::bubblewrap;
    s.lim.wall_timeout = std::chrono::seconds{20};
    bool ok = false;
    {
      session probe{std::move(s), {}};
      auto out = probe.wait();
      ok = out.status == "exited" && out.exit_code == 0;
    }
    std::error_code ec;
    fs::remove_all(tmpl, ec);
    return ok;
  }();
  return works;
}

// -- pool --------------------------------------------------------------------

struct pool::impl {
  struct entry {
    spec s;
    callbacks cb;
    state st = state::queued;
    std::unique_ptr<session> running;
    std::size_t slot = 0;
  };

  std::size_t max_;
  options opts_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, entry> entries_;
  std::deque<std::uint64_t> queue_;
  std::deque<std::uint64_t> done_order_;
  std::vector<bool> slot_used_;
  std::vector<std::unique_ptr<session>> finished_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  std::thread dispatcher_;

  impl(std::size_t max, options opts)
      : max_(std::max<std::size_t>(max, 1)), opts_(opts), slot_used_(max_, false) {
    dispatcher_ = std::thread([this] { dispatch(); });
  }

  static outcome cancelled_outcome(const spec& s) {
    outcome o;
    o.status = "killed";
    o.used = s.iso == isolation::automatic ? isolation::process : s.iso;
    o.error = "cancelled before it started";
    return o;
  }

  void mark_done_locked(std::uint64_t id) {
    done_order_.push_back(id);
    while (done_order_.size() > opts_.retain_done) {
      auto it = entries_.find(done_order_.front());
      if (it != entries_.end() && it->second.st == state::done && !it->second.running)
        entries_.erase(it);
      done_order_.pop_front();
    }
  }

  void dispatch() {
    std::unique_lock lk{mtx_};
    while (true) {
      cv_.wait(lk, [&] {
        return !finished_.empty() || (stopping_ && running_ == 0) ||
               (!stopping_ && !queue_.empty() && running_ < max_);
      });
      if (!finished_.empty()) {
        auto done = std::move(finished_);
        finished_.clear();
        lk.unlock();
        done.clear();  // joins the sessions' threads, whose on_exit has returned
        lk.lock();
        continue;
      }
      if (stopping_ && running_ == 0)
        return;
      while (!stopping_ && !queue_.empty() && running_ < max_) {
        auto id = queue_.front();
        queue_.pop_front();
        auto& e = entries_.at(id);
        std::size_t slot = 0;
        while (slot_used_[slot])
          ++slot;
        slot_used_[slot] = true;
        e.slot = slot;
        e.st = state::running;
        ++running_;
        if (opts_.uid_base && ::geteuid() == 0) {
          e.s.uid = e.s.gid = *opts_.uid_base + static_cast<std::uint32_t>(slot);
          e.s.exclusive_uid = true;
        }
        callbacks cb;
        cb.on_output = std::move(e.cb.on_output);
        cb.on_exit = [this, id, user = std::move(e.cb.on_exit)](const outcome& o) {
          if (user)
            user(o);
          finish(id);
        };
        // Under the lock: a session that ends at once waits in finish() until
        // its entry holds it.
        e.running = std::make_unique<session>(std::move(e.s), std::move(cb));
      }
    }
  }

  void finish(std::uint64_t id) {
    std::lock_guard lk{mtx_};
    auto& e = entries_.at(id);
    e.st = state::done;
    slot_used_[e.slot] = false;
    --running_;
    finished_.push_back(std::move(e.running));
    mark_done_locked(id);
    cv_.notify_all();
  }

  std::uint64_t submit(spec s, callbacks cb) {
    std::unique_lock lk{mtx_};
    auto id = next_id_++;
    if (stopping_) {
      auto o = cancelled_outcome(s);
      o.error = "the pool is shut down";
      lk.unlock();
      if (cb.on_exit)
        cb.on_exit(o);
      return id;
    }
    auto& e = entries_[id];
    e.s = std::move(s);
    e.cb = std::move(cb);
    queue_.push_back(id);
    cv_.notify_all();
    return id;
  }

  bool cancel(std::uint64_t id) {
    std::unique_lock lk{mtx_};
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.st == state::done)
      return false;
    if (it->second.st == state::running) {
      it->second.running->kill();
      return true;
    }
    queue_.erase(std::find(queue_.begin(), queue_.end(), id));
    it->second.st = state::done;
    auto on_exit = std::move(it->second.cb.on_exit);
    auto o = cancelled_outcome(it->second.s);
    mark_done_locked(id);
    lk.unlock();
    if (on_exit)
      on_exit(o);
    return true;
  }

  void shutdown() {
    std::vector<std::pair<std::function<void(const outcome&)>, outcome>> to_call;
    {
      std::lock_guard lk{mtx_};
      if (stopping_ && !dispatcher_.joinable())
        return;
      stopping_ = true;
      for (auto id : queue_) {
        auto& e = entries_.at(id);
        e.st = state::done;
        auto o = cancelled_outcome(e.s);
        o.error = "the pool shut down before it started";
        to_call.emplace_back(std::move(e.cb.on_exit), o);
        mark_done_locked(id);
      }
      queue_.clear();
      for (auto& [id, e] : entries_)
        if (e.st == state::running && e.running)
          e.running->kill();
      cv_.notify_all();
    }
    for (auto& [fn, o] : to_call)
      if (fn)
        fn(o);
    if (dispatcher_.joinable())
      dispatcher_.join();
    std::lock_guard lk{mtx_};
    finished_.clear();
  }
};

pool::pool(std::size_t max_concurrent) : pool(max_concurrent, options{}) {}

pool::pool(std::size_t max_concurrent, options opts)
    : impl_(std::make_unique<impl>(max_concurrent, opts)) {}

pool::~pool() { shutdown(); }

std::uint64_t pool::submit(spec s, callbacks cb) { return impl_->submit(std::move(s), std::move(cb)); }

std::optional<pool::state> pool::status(std::uint64_t id) const {
  std::lock_guard lk{impl_->mtx_};
  auto it = impl_->entries_.find(id);
  if (it == impl_->entries_.end())
    return std::nullopt;
  return it->second.st;
}

bool pool::cancel(std::uint64_t id) { return impl_->cancel(id); }

std::size_t pool::queued() const {
  std::lock_guard lk{impl_->mtx_};
  return impl_->queue_.size();
}

std::size_t pool::running() const {
  std::lock_guard lk{impl_->mtx_};
  return impl_->running_;
}

void pool::shutdown() { impl_->shutdown(); }

}  // namespace ticktock::sandbox
