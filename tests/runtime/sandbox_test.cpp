// The containers sandbox, in both isolation modes, against a real helper
// (sandbox_probe) copied into each session's working directory.
//
// Runs as root here (the sandbox then switches the command to uid 65534);
// the checks that need root say so. With TICKTOCK_SANDBOX_NO_BWRAP=1 the
// bubblewrap half is skipped on machines without working user namespaces.

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "../temp_dir.hpp"
#include "ticktock/runtime/sandbox.hpp"

using namespace ticktock;
using namespace ticktock::sandbox;
namespace fs = std::filesystem;

namespace {

bool am_root() { return ::geteuid() == 0; }

// A session's working directory with sandbox_probe in it, under a base
// directory that also holds a sibling directory with files the command must
// not read.
struct sandbox_dirs {
  test::temp_dir base;
  fs::path work;
  fs::path secret;

  sandbox_dirs() {
    // The sandbox uid must be able to reach the working directory.
    fs::permissions(base.path(), fs::perms::owner_all | fs::perms::group_exec |
                                     fs::perms::others_exec | fs::perms::group_read |
                                     fs::perms::others_read);
    work = base.path() / "work";
    secret = base.path() / "secret";
    fs::create_directories(work);
    fs::create_directories(secret);
    fs::copy_file(SANDBOX_PROBE_PATH, work / "sandbox_probe");
    fs::permissions(work / "sandbox_probe", fs::perms::owner_all | fs::perms::group_read |
                                                fs::perms::group_exec | fs::perms::others_read |
                                                fs::perms::others_exec);
    write(secret / "public.txt", "public sibling\n", 0644);
    write(secret / "private.txt", "server secret\n", 0600);
  }

  static void write(const fs::path& p, const std::string& text, int mode) {
    std::ofstream{p} << text;
    ::chmod(p.c_str(), static_cast<mode_t>(mode));
  }
};

struct result {
  outcome out;
  std::string out_text;
  std::string err_text;
};

spec probe_spec(const sandbox_dirs& d, isolation iso, std::vector<std::string> args) {
  spec s;
  s.argv = {"./sandbox_probe"};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  s.workdir = d.work;
  s.iso = iso;
  return s;
}

result run(spec s) {
  auto r = std::make_shared<result>();
  auto m = std::make_shared<std::mutex>();
  callbacks cb;
  cb.on_output = [r, m](stream which, std::string_view data) {
    std::lock_guard lk{*m};
    (which == stream::stdout_stream ? r->out_text : r->err_text).append(data);
  };
  session sess{std::move(s), std::move(cb)};
  auto out = sess.wait();
  std::lock_guard lk{*m};
  r->out = out;
  return *r;
}

std::string describe(const result& r) {
  return to_json(r.out) + "\nstdout: " + r.out_text.substr(0, 2000) +
         "\nstderr: " + r.err_text.substr(0, 2000);
}

// Both modes; bubblewrap is required unless TICKTOCK_SANDBOX_NO_BWRAP is set.
isolation mode_or_skip(isolation iso, bool& skip) {
  skip = false;
  if (iso == isolation::bubblewrap && !bubblewrap_available()) {
    if (std::getenv("TICKTOCK_SANDBOX_NO_BWRAP")) {
      WARN("bubblewrap does not work here: its half is skipped");
      skip = true;
    } else {
      FAIL("bubblewrap does not work on this machine (install bubblewrap, or set "
           "TICKTOCK_SANDBOX_NO_BWRAP=1 to skip)");
    }
  }
  return iso;
}

#define SANDBOX_MODE(var)                                                        \
  bool var##_skip = false;                                                       \
  const isolation var = mode_or_skip(GENERATE(isolation::process, isolation::bubblewrap), \
                                     var##_skip);                                \
  CAPTURE(to_string(var));                                                       \
  if (var##_skip)                                                                \
  return

std::string unique_token() {
  std::random_device rd;
  return "ttsbx" + std::to_string(rd()) + std::to_string(::getpid());
}

// The contents of a /proc file; empty if its process is gone meanwhile
// (reading then fails with ESRCH, which libstdc++'s filebuf throws).
std::string read_proc_file(const fs::path& path) {
  try {
    std::ifstream in{path, std::ios::binary};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  } catch (const std::exception&) {
    return {};
  }
}

// Calls fn(cmdline, stat) for each process until it returns true.
template <class Fn>
void each_process(Fn fn) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator{"/proc", ec}) {
    auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    auto line = read_proc_file(entry.path() / "cmdline");
    auto stat = read_proc_file(entry.path() / "stat");
    if (fn(line, stat))
      return;
  }
}

// The fields of /proc/PID/stat after the command's name: state, ppid, ...
std::istringstream stat_fields(const std::string& stat) {
  auto paren = stat.rfind(')');
  return std::istringstream{paren == std::string::npos ? std::string{} : stat.substr(paren + 2)};
}

// Live (not zombie) processes whose command line contains `token`.
int live_processes_with(const std::string& token) {
  int found = 0;
  each_process([&](const std::string& cmdline, const std::string& stat) {
    std::string state;
    stat_fields(stat) >> state;
    found += cmdline.find(token) != std::string::npos && !state.empty() && state != "Z";
    return false;
  });
  return found;
}

// The executable of the parent of the process whose command line is
// `./sandbox_probe grandchild TOKEN ...` (empty if none).
std::string parent_exe_of(const std::string& token) {
  std::string exe;
  each_process([&](const std::string& cmdline, const std::string& stat) {
    if (!cmdline.starts_with(std::string{"./sandbox_probe\0grandchild\0", 27} + token))
      return false;
    std::string state;
    long ppid = 0;
    stat_fields(stat) >> state >> ppid;
    std::error_code ec;
    exe = fs::read_symlink(fs::path{"/proc"} / std::to_string(ppid) / "exe", ec).filename().string();
    return true;
  });
  return exe;
}

// SIGKILLed processes vanish asynchronously: look again, for at most 10 s.
int live_processes_after_settling(const std::string& token) {
  int n = live_processes_with(token);
  for (int i = 0; i < 200 && n > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
    n = live_processes_with(token);
  }
  return n;
}

}  // namespace

// -- requests ----------------------------------------------------------------

TEST_CASE("a session request is parsed with its limits defaulted and clamped to the maxima") {
  limits maxima;
  maxima.wall_timeout = std::chrono::seconds{60};
  maxima.cpu_seconds = 20;
  maxima.memory_bytes = 1ull << 30;
  maxima.processes = 32;
  auto s = parse_request(R"({"command":["sh","-c","make test"],"env":{"CI":"1","Name_2":""},
                              "limits":{"wall_timeout_ms":90000,"cpu_seconds":5,"processes":1000}})",
                         maxima);
  REQUIRE(s);
  CHECK(s->argv == std::vector<std::string>{"sh", "-c", "make test"});
  CHECK(s->env == std::map<std::string, std::string>{{"CI", "1"}, {"Name_2", ""}});
  CHECK(s->lim.wall_timeout == std::chrono::seconds{60});  // clamped
  CHECK(s->lim.cpu_seconds == 5);                           // as asked
  CHECK(s->lim.processes == 32);                            // clamped
  CHECK(s->lim.memory_bytes == limits{}.memory_bytes);      // default, under the maximum
  CHECK(s->lim.file_bytes == limits{}.file_bytes);
  CHECK(s->iso == isolation::automatic);
  CHECK(s->workdir.empty());

  limits small;
  small.memory_bytes = 1 << 20;
  auto d = parse_request(R"({"command":["true"]})", small);
  REQUIRE(d);
  CHECK(d->lim.memory_bytes == 1 << 20);  // the default is clamped too

  auto j = boost::json::parse(to_json(s->lim)).as_object();
  CHECK(j.at("wall_timeout_ms").to_number<std::int64_t>() == 60000);
  CHECK(j.at("processes").to_number<std::int64_t>() == 32);
}

TEST_CASE("a malformed session request is refused with a message naming the field") {
  struct bad_case {
    const char* body;
    const char* says;
  };
  const bad_case cases[] = {
      {"not json", "not valid JSON"},
      {"[1]", "must be a JSON object"},
      {R"({})", "\"command\" is required"},
      {R"({"command":"ls"})", "array of strings"},
      {R"({"command":[]})", "must not be empty"},
      {R"({"command":["ls",1]})", "\"command\"[1] must be a string"},
      {R"({"command":[""]})", "must not be empty"},
      {R"({"command":["ls"],"cmd":1})", "unknown field \"cmd\""},
      {R"({"command":["ls"],"env":[]})", "\"env\" must be an object"},
      {R"({"command":["ls"],"env":{"1X":"a"}})", "invalid variable name \"1X\""},
      {R"({"command":["ls"],"env":{"A=B":"a"}})", "invalid variable name"},
      {R"({"command":["ls"],"env":{"PATH":"/tmp"}})", "PATH is set by the sandbox"},
      {R"({"command":["ls"],"env":{"A":1}})", "\"env\".A must be a string"},
      {R"({"command":["ls"],"limits":{"cpu_seconds":0}})", "cpu_seconds must be a positive integer"},
      {R"({"command":["ls"],"limits":{"cpu_seconds":-5}})", "positive integer"},
      {R"({"command":["ls"],"limits":{"memory_bytes":1.5}})", "positive integer"},
      {R"({"command":["ls"],"limits":{"memory_bytes":"1G"}})", "positive integer"},
      {R"({"command":["ls"],"limits":{"network":1}})", "unknown limit \"network\""},
      {R"({"command":["ls"],"limits":[]})", "\"limits\" must be an object"},
      {R"({"command":["echo"],"command":["ls"]})", "names 'command' twice"},
      {R"({"command":["ls"],"env":{"A":"1","A":"2"}})", "twice"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    auto s = parse_request(c.body, limits{});
    REQUIRE_FALSE(s);
    CHECK(s.code() == errc::invalid_argument);
    CHECK_THAT(s.error_value().message(), Catch::Contains(c.says));
  }
  std::string nul_arg = std::string{R"({"command":["a)"} + "\\u0000" + R"("]})";
  CHECK_FALSE(parse_request(nul_arg, limits{}));
}

TEST_CASE("an outcome and the names of modes and pool states have stable spellings") {
  outcome o;
  o.status = "exited";
  o.exit_code = 3;
  o.used = isolation::bubblewrap;
  o.output_truncated = true;
  auto j = boost::json::parse(to_json(o)).as_object();
  CHECK(j.at("status").as_string() == "exited");
  CHECK(j.at("exit_code").to_number<int>() == 3);
  CHECK(j.at("isolation").as_string() == "bubblewrap");
  CHECK(j.at("output_truncated").as_bool());
  for (const char* key : {"signal", "wall_us", "cpu_us", "output_bytes", "error"})
    CHECK(j.contains(key));
  CHECK(isolation_from_string("process") == isolation::process);
  CHECK(isolation_from_string("automatic") == isolation::automatic);
  CHECK_FALSE(isolation_from_string("docker").has_value());
  CHECK(to_string(pool::state::queued) == "queued");
}

// -- a session, in both modes -----------------------------------------------

TEST_CASE("a command's exit code, stdout and stderr are captured") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {});
  s.argv = {"sh", "-c", "echo out; echo err >&2; exit 7"};
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "exited");
  CHECK(r.out.exit_code == 7);
  CHECK(r.out.signal == 0);
  CHECK(r.out.used == iso);
  CHECK(r.out_text == "out\n");
  CHECK(r.err_text == "err\n");
  CHECK(r.out.output_bytes == 8);
  CHECK_FALSE(r.out.output_truncated);

  auto p = run(probe_spec(d, iso, {"exit", "0"}));
  CHECK(p.out.status == "exited");
  CHECK(p.out.exit_code == 0);
}

TEST_CASE("output past the limit is dropped and flagged") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {"out", "300000"});
  s.lim.output_bytes = 1000;
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "exited");
  CHECK(r.out.exit_code == 0);  // the command was not stopped, only its output
  CHECK(r.out_text == std::string(1000, 'x'));
  CHECK(r.out.output_bytes == 1000);
  CHECK(r.out.output_truncated);
}

TEST_CASE("the command sees only its own environment") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  ::setenv("TICKTOCK_SANDBOX_PARENT_SECRET", "do-not-leak", 1);
  auto s = probe_spec(d, iso, {"env"});
  s.env = {{"GREETING", "hello world"}};
  auto r = run(s);
  INFO(describe(r));
  REQUIRE(r.out.status == "exited");
  CHECK(r.out_text.find("TICKTOCK_SANDBOX_PARENT_SECRET") == std::string::npos);
  CHECK(r.out_text.find("do-not-leak") == std::string::npos);
  CHECK(r.out_text.find("GREETING=hello world\n") != std::string::npos);
  CHECK(r.out_text.find("PATH=/usr/local/bin:/usr/bin:/bin\n") != std::string::npos);
  CHECK(r.out_text.find("LANG=C.UTF-8\n") != std::string::npos);
  std::string home = iso == isolation::bubblewrap ? "/work" : fs::canonical(d.work).string();
  CHECK(r.out_text.find("HOME=" + home + "\n") != std::string::npos);
  CHECK(r.out_text.find("PWD=" + home + "\n") != std::string::npos);
  auto lines = std::count(r.out_text.begin(), r.out_text.end(), '\n');
  CHECK(lines == 5);
}

TEST_CASE("the command runs in its working directory, created when missing") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {});
  s.workdir = d.base.path() / "new" / "dir";
  s.argv = {"sh", "-c", "pwd; echo made > here.txt"};
  auto r = run(s);
  INFO(describe(r));
  REQUIRE(r.out.status == "exited");
  CHECK(r.out.exit_code == 0);
  std::string want = iso == isolation::bubblewrap ? "/work" : fs::canonical(s.workdir).string();
  CHECK(r.out_text == want + "\n");
  CHECK(fs::exists(s.workdir / "here.txt"));
  if (am_root()) {
    struct stat st {};
    REQUIRE(::stat(s.workdir.c_str(), &st) == 0);
    CHECK(st.st_uid == 65534);
    CHECK((st.st_mode & 0777) == 0700);
    auto id = run(probe_spec(d, iso, {"id"}));
    CHECK(id.out_text == "65534 65534\n");
  }
}

TEST_CASE("a command over its CPU limit ends as cpu_limit") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {"spin"});
  s.lim.cpu_seconds = 1;
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "cpu_limit");
  CHECK(r.out.signal == SIGXCPU);
}

TEST_CASE("a command over its memory limit ends as memory_limit") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {"alloc", std::to_string(512ull << 20)});
  s.lim.memory_bytes = 64ull << 20;
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "memory_limit");
  CHECK(r.out.exit_code == 3);
  CHECK_THAT(r.err_text, Catch::Contains("Cannot allocate memory"));

  // The same allocation under a larger limit succeeds.
  auto ok = probe_spec(d, iso, {"alloc", std::to_string(16ull << 20)});
  ok.lim.memory_bytes = 256ull << 20;
  auto r2 = run(ok);
  INFO(describe(r2));
  CHECK(r2.out.status == "exited");
  CHECK(r2.out.exit_code == 0);
}

TEST_CASE("a command writing past its file size limit ends as file_size_limit") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {"write", std::to_string(4 << 20), "big.bin"});
  s.lim.file_bytes = 1 << 20;
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "file_size_limit");
  CHECK(r.out.signal == SIGXFSZ);
  REQUIRE(fs::exists(d.work / "big.bin"));
  CHECK(fs::file_size(d.work / "big.bin") <= (1u << 20));
}

TEST_CASE("a command forking past its process limit is refused more processes") {
  SANDBOX_MODE(iso);
  if (!am_root())
    WARN("not root: the process limit counts all of this user's processes");
  sandbox_dirs d;
  auto s = probe_spec(d, iso, {"fork", "40"});
  s.lim.processes = 8;
  // A uid of its own: processes of other sessions under the shared default
  // uid (still ending, or run by a parallel test) would count against the
  // limit and make bwrap's own fork fail.
  s.uid = s.gid = 60000 + static_cast<std::uint32_t>(::getpid() % 5000);
  s.exclusive_uid = true;
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "exited");
  CHECK(r.out.exit_code == 4);
  CHECK_THAT(r.err_text, Catch::Contains("fork failed"));

  // Under a larger limit the same command forks all 40.
  auto ok = probe_spec(d, iso, {"fork", "40"});
  ok.lim.processes = 64;
  auto r2 = run(ok);
  INFO(describe(r2));
  CHECK(r2.out.exit_code == 0);
  CHECK(r2.out_text == "forked 40\n");
}

TEST_CASE("the wall-clock timeout kills the command's whole process group") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto token = unique_token();
  auto s = probe_spec(d, iso, {"grandchild", token, "stay"});
  s.lim.wall_timeout = std::chrono::milliseconds{1500};
  std::atomic<int> seen_alive{-1};
  callbacks cb;
  cb.on_output = [&](stream, std::string_view data) {
    if (data.find("spawned") != std::string_view::npos)
      seen_alive = live_processes_with(token);
  };
  session sess{s, cb};
  auto out = sess.wait();
  INFO(to_json(out));
  CHECK(out.status == "timeout");
  CHECK(out.signal == SIGKILL);
  CHECK(seen_alive >= 2);  // the probe and its grandchild were running
  CHECK(live_processes_after_settling(token) == 0);
}

TEST_CASE("a background process left behind by a finished command is killed") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto token = unique_token();
  std::atomic<int> seen_alive{-1};
  callbacks cb;
  cb.on_output = [&](stream, std::string_view data) {
    if (data.find("spawned") != std::string_view::npos) {
      seen_alive = live_processes_with(token);
      std::ofstream{d.work / "go"};  // now the probe may exit
    }
  };
  session sess{probe_spec(d, iso, {"grandchild", token, "leave"}), cb};
  auto out = sess.wait();
  INFO(to_json(out));
  CHECK(out.status == "exited");
  CHECK(out.exit_code == 0);
  CHECK(seen_alive >= 1);
  CHECK(live_processes_after_settling(token) == 0);
}

TEST_CASE("kill() ends a running session as killed, with its process group") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto token = unique_token();
  std::mutex m;
  std::condition_variable cv;
  bool spawned = false;
  callbacks cb;
  cb.on_output = [&](stream, std::string_view data) {
    if (data.find("spawned") != std::string_view::npos) {
      std::lock_guard lk{m};
      spawned = true;
      cv.notify_all();
    }
  };
  session sess{probe_spec(d, iso, {"grandchild", token, "stay"}), cb};
  {
    std::unique_lock lk{m};
    REQUIRE(cv.wait_for(lk, std::chrono::seconds{30}, [&] { return spawned; }));
  }
  CHECK_FALSE(sess.done());
  sess.kill();
  auto out = sess.wait();
  INFO(to_json(out));
  CHECK(out.status == "killed");
  CHECK(sess.done());
  CHECK(live_processes_after_settling(token) == 0);
  sess.kill();  // harmless once ended
  CHECK(sess.wait().status == "killed");
}

TEST_CASE("a session is charged the CPU time of its whole process tree, orphans included") {
  // In bubblewrap the command runs under bwrap's init in a pid namespace;
  // orphan-burn's burner loses its parent and is reaped by whoever adopts it.
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  using std::chrono::milliseconds;
  for (const char* action : {"burn", "orphan-burn"}) {
    CAPTURE(action);
    auto r = run(probe_spec(d, iso, {action, "400"}));
    INFO(describe(r));
    CHECK(r.out.status == "exited");
    CHECK(r.out.exit_code == 0);
    CHECK(r.out.cpu >= milliseconds{380});
  }
}

TEST_CASE("a session's processes end when the server is killed") {
  // The "server" is a child of this test that runs a session and is then
  // killed with SIGKILL: nothing of the session may outlive it.
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto token = unique_token();
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t server = ::fork();
  REQUIRE(server >= 0);
  if (server == 0) {
    ::close(ready[0]);
    auto spec = probe_spec(d, iso, {"grandchild", token, "stay"});
    spec.lim.wall_timeout = std::chrono::milliseconds{120'000};
    callbacks cb;
    cb.on_output = [fd = ready[1]](stream, std::string_view data) {
      if (data.find("spawned") != std::string_view::npos)
        [[maybe_unused]] auto n = ::write(fd, "s", 1);
    };
    session sess{spec, cb};
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  auto n = ::read(ready[0], &c, 1);
  ::close(ready[0]);
  int before = live_processes_with(token);
  // The command's parent is the keeper program, not a fork of the server
  // holding a copy-on-write image of its memory (in bubblewrap, bwrap is).
  auto parent = parent_exe_of(token);
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);
  REQUIRE(n == 1);
  CHECK(before >= 2);  // the probe and its grandchild were running
  if (iso == isolation::process)
    CHECK(parent == "ticktock-keeper");
  CHECK(live_processes_after_settling(token) == 0);
}

TEST_CASE("in bubblewrap the command cannot create user namespaces") {
  bool skip = false;
  mode_or_skip(isolation::bubblewrap, skip);
  if (skip)
    return;
  sandbox_dirs d;
  auto r = run(probe_spec(d, isolation::bubblewrap, {"userns"}));
  INFO(describe(r));
  CHECK(r.out.status == "exited");
  CHECK(r.out_text.find("userns refused") != std::string::npos);
}

TEST_CASE("a command cannot read files outside its directory") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  auto sibling_public = (d.secret / "public.txt").string();
  auto server_private = (d.secret / "private.txt").string();
  if (iso == isolation::bubblewrap) {
    // Nothing of the host is visible but /usr (read-only) and the working
    // directory: not a 0644 file next to it, by relative or absolute path.
    for (const std::string& path :
         {std::string{"../secret/public.txt"}, sibling_public, server_private,
          std::string{"/etc/hostname"}, fs::absolute(d.work / "sandbox_probe").string()}) {
      CAPTURE(path);
      auto r = run(probe_spec(d, iso, {"read", path}));
      INFO(describe(r));
      CHECK(r.out.exit_code == 5);
      CHECK_THAT(r.err_text, Catch::Contains("No such file or directory"));
    }
    // /usr is read-only.
    auto w = run(probe_spec(d, iso, {"write", "10", "/usr/ttsbx-written"}));
    CHECK(w.out.exit_code == 6);
    CHECK_FALSE(fs::exists("/usr/ttsbx-written"));
  } else {
    if (!am_root()) {
      WARN("not root: process mode cannot switch uid, the 0600 check is skipped");
      return;
    }
    // An unprivileged uid: the server's 0600 files are unreadable...
    auto r = run(probe_spec(d, iso, {"read", server_private}));
    INFO(describe(r));
    CHECK(r.out.exit_code == 5);
    CHECK_THAT(r.err_text, Catch::Contains("Permission denied"));
    auto shadow = run(probe_spec(d, iso, {"read", "/etc/shadow"}));
    CHECK(shadow.out.exit_code == 5);
    // ...but process mode hides nothing: a world-readable file is readable
    // (docs/containers.md says so).
    auto pub = run(probe_spec(d, iso, {"read", sibling_public}));
    CHECK(pub.out.exit_code == 0);
    CHECK(pub.out_text == "public sibling\n");
  }
  // Its own files it reads in either mode.
  auto own = run(probe_spec(d, iso, {"read", "sandbox_probe"}));
  CHECK(own.out.exit_code == 0);
}

TEST_CASE("a missing program fails to start with a clear error") {
  SANDBOX_MODE(iso);
  sandbox_dirs d;
  for (const std::string& program :
       {std::string{"no-such-program-ttsbx"}, std::string{"./missing-ttsbx"},
        std::string{"/opt/ttsbx/tool"}}) {
    CAPTURE(program);
    auto s = probe_spec(d, iso, {});
    s.argv = {program, "arg"};
    auto r = run(s);
    INFO(describe(r));
    CHECK(r.out.status == "failed_to_start");
    CHECK_THAT(r.out.error, Catch::Contains("program not found") && Catch::Contains(program));
    CHECK(r.out.used == iso);
  }
  // A file that exists but is not executable.
  sandbox_dirs::write(d.work / "notes.txt", "text\n", 0644);
  auto s = probe_spec(d, iso, {});
  s.argv = {"./notes.txt"};
  auto r = run(s);
  CHECK(r.out.status == "failed_to_start");
  CHECK_THAT(r.out.error, Catch::Contains("not executable"));
}

TEST_CASE("without its keeper a session fails to start, naming it") {
  sandbox_dirs d;
  ::setenv("TICKTOCK_KEEPER", (d.base.path() / "no-keeper").c_str(), 1);
  auto r = run(probe_spec(d, isolation::process, {"exit", "0"}));
  ::unsetenv("TICKTOCK_KEEPER");
  INFO(describe(r));
  CHECK(r.out.status == "failed_to_start");
  CHECK_THAT(r.out.error, Catch::Contains("keeper") && Catch::Contains("No such file"));
  // And with it (found beside the build), the same session runs.
  CHECK(run(probe_spec(d, isolation::process, {"exit", "0"})).out.status == "exited");
}

TEST_CASE("bubblewrap reports its own setup failure as failed_to_start") {
  if (!bubblewrap_available() || !am_root()) {
    WARN("needs root and bubblewrap");
    return;
  }
  // The sandbox uid cannot reach a working directory under a 0700 directory.
  sandbox_dirs d;
  fs::permissions(d.base.path(), fs::perms::owner_all);
  auto s = probe_spec(d, isolation::bubblewrap, {"exit", "0"});
  auto r = run(s);
  INFO(describe(r));
  CHECK(r.out.status == "failed_to_start");
  CHECK_THAT(r.out.error, Catch::Contains("bwrap") && Catch::Contains("Permission denied"));
  // Process mode enters it all the same (the directory is opened as root).
  auto p = run(probe_spec(d, isolation::process, {"exit", "0"}));
  INFO(describe(p));
  CHECK(p.out.status == "exited");
  // Bug: automatic chose bubblewrap here too, so every session of a server
  // whose data directory sits under a 0700 directory (root's home) failed to
  // start; it now runs them as confined processes.
  auto a = run(probe_spec(d, isolation::automatic, {"exit", "0"}));
  INFO(describe(a));
  CHECK(a.out.status == "exited");
  CHECK(a.out.used == isolation::process);
}

TEST_CASE("automatic isolation uses bubblewrap where it works") {
  sandbox_dirs d;
  auto r = run(probe_spec(d, isolation::automatic, {"exit", "0"}));
  CHECK(r.out.status == "exited");
  CHECK(r.out.used == (bubblewrap_available() ? isolation::bubblewrap : isolation::process));
}

// -- the pool ---------------------------------------------------------------

namespace {

// Records, in order, the sessions that start (print) and end.
struct recorder {
  std::mutex m;
  std::condition_variable cv;
  std::vector<int> started, ended;
  std::vector<std::string> statuses;
  int live = 0, max_live = 0;

  callbacks for_session(int n) {
    callbacks cb;
    cb.on_output = [this, n, first = std::make_shared<bool>(true)](stream, std::string_view) {
      std::lock_guard lk{m};
      if (!*first)
        return;
      *first = false;
      started.push_back(n);
      max_live = std::max(max_live, ++live);
      cv.notify_all();
    };
    cb.on_exit = [this, n](const outcome& o) {
      std::lock_guard lk{m};
      ended.push_back(n);
      statuses.push_back(o.status);
      if (std::find(started.begin(), started.end(), n) != started.end())
        --live;
      cv.notify_all();
    };
    return cb;
  }

  template <class Pred>
  bool wait_until(Pred pred) {
    std::unique_lock lk{m};
    return cv.wait_for(lk, std::chrono::seconds{60}, [&] { return pred(); });
  }
};

}  // namespace

TEST_CASE("the pool runs at most its cap at once and starts queued sessions in FIFO order") {
  sandbox_dirs d;
  recorder rec;
  pool p{1};
  std::vector<std::uint64_t> ids;
  for (int n = 0; n < 4; ++n) {
    auto s = probe_spec(d, isolation::process, {"echo", std::to_string(n)});
    ids.push_back(p.submit(s, rec.for_session(n)));
  }
  REQUIRE(rec.wait_until([&] { return rec.ended.size() == 4; }));
  CHECK(rec.started == std::vector<int>{0, 1, 2, 3});
  CHECK(rec.ended == std::vector<int>{0, 1, 2, 3});
  CHECK(rec.max_live == 1);
  // on_exit runs before the pool marks its session done: wait for that.
  auto all_done = [&] {
    return std::all_of(ids.begin(), ids.end(), [&](auto id) { return p.status(id) == pool::state::done; });
  };
  for (int i = 0; i < 1000 && !all_done(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  CHECK(all_done());
  CHECK_FALSE(p.status(9999).has_value());

  recorder wide;
  pool p2{2};
  for (int n = 0; n < 6; ++n)
    p2.submit(probe_spec(d, isolation::process, {"echo", std::to_string(n)}), wide.for_session(n));
  REQUIRE(wide.wait_until([&] { return wide.ended.size() == 6; }));
  CHECK(wide.max_live <= 2);
  CHECK(std::count(wide.statuses.begin(), wide.statuses.end(), "exited") == 6);
}

TEST_CASE("the pool cancels a queued and a running session") {
  sandbox_dirs d;
  recorder rec;
  pool p{2};
  std::vector<std::uint64_t> id;
  for (int n = 0; n < 4; ++n)
    id.push_back(p.submit(probe_spec(d, isolation::process, {"sleep", "600000"}), rec.for_session(n)));
  REQUIRE(rec.wait_until([&] { return rec.started.size() == 2; }));
  CHECK(p.status(id[0]) == pool::state::running);
  CHECK(p.status(id[1]) == pool::state::running);
  CHECK(p.status(id[2]) == pool::state::queued);
  CHECK(p.status(id[3]) == pool::state::queued);
  CHECK(p.running() == 2);
  CHECK(p.queued() == 2);

  // A queued session ends at once, without running.
  CHECK(p.cancel(id[3]));
  CHECK(p.status(id[3]) == pool::state::done);
  {
    std::lock_guard lk{rec.m};
    REQUIRE(rec.ended == std::vector<int>{3});
    CHECK(rec.statuses.back() == "killed");
  }
  CHECK_FALSE(p.cancel(id[3]));

  // A running one is killed, and the next queued one takes its place.
  CHECK(p.cancel(id[0]));
  REQUIRE(rec.wait_until([&] { return rec.started.size() == 3; }));
  {
    // 0 and 1 start together, in either order; 2 only after 0 was cancelled.
    std::lock_guard lk{rec.m};
    auto first_two = std::vector<int>{rec.started[0], rec.started[1]};
    std::sort(first_two.begin(), first_two.end());
    CHECK(first_two == std::vector<int>{0, 1});
    CHECK(rec.started[2] == 2);
  }
  CHECK(p.status(id[0]) == pool::state::done);
  CHECK(p.status(id[2]) == pool::state::running);
  {
    std::lock_guard lk{rec.m};
    CHECK(rec.ended == std::vector<int>{3, 0});
    CHECK(rec.statuses == std::vector<std::string>{"killed", "killed"});
  }

  // Shutdown kills the rest, and later submits end at once.
  p.shutdown();
  CHECK(rec.ended.size() == 4);
  CHECK(std::count(rec.statuses.begin(), rec.statuses.end(), "killed") == 4);
  CHECK(p.running() == 0);
  recorder late;
  p.submit(probe_spec(d, isolation::process, {"echo", "x"}), late.for_session(9));
  CHECK(late.ended == std::vector<int>{9});
  CHECK(late.statuses == std::vector<std::string>{"killed"});
  CHECK(late.started.empty());
}

TEST_CASE("a pool with a uid range runs each concurrent session as its own uid") {
  if (!am_root()) {
    WARN("needs root");
    return;
  }
  sandbox_dirs d;
  pool::options opts;
  opts.uid_base = 61000;
  pool p{2, opts};
  std::mutex m;
  std::vector<std::string> ids, statuses;
  std::vector<fs::path> dirs;
  std::condition_variable cv;
  int ended = 0;
  for (int n = 0; n < 2; ++n) {
    // Separate working directories: each is handed to its session's uid.
    auto s = probe_spec(d, isolation::process, {});
    s.workdir = d.base.path() / ("w" + std::to_string(n));
    fs::create_directories(s.workdir);
    fs::copy_file(d.work / "sandbox_probe", s.workdir / "sandbox_probe");
    // Each waits for a file the test writes once both have printed their
    // ids, so the two run at the same time (the wall timeout bounds it).
    s.argv = {"sh", "-c", "./sandbox_probe id; while [ ! -e go ]; do sleep 0.05; done"};
    s.lim.wall_timeout = std::chrono::seconds{60};
    dirs.push_back(s.workdir);
    callbacks cb;
    cb.on_output = [&](stream, std::string_view data) {
      std::lock_guard lk{m};
      ids.emplace_back(data);
      cv.notify_all();
    };
    cb.on_exit = [&](const outcome& o) {
      std::lock_guard lk{m};
      statuses.push_back(o.status);
      ++ended;
      cv.notify_all();
    };
    p.submit(s, cb);
  }
  std::unique_lock lk{m};
  REQUIRE(cv.wait_for(lk, std::chrono::seconds{60}, [&] { return ids.size() == 2 || ended > 0; }));
  for (const auto& dir : dirs)
    std::ofstream{dir / "go"} << "go\n";
  REQUIRE(cv.wait_for(lk, std::chrono::seconds{60}, [&] { return ended == 2; }));
  CHECK(statuses == std::vector<std::string>{"exited", "exited"});
  std::sort(ids.begin(), ids.end());
  CHECK(ids == std::vector<std::string>{"61000 61000\n", "61001 61001\n"});
}
