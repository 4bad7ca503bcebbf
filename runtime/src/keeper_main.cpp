// ticktock-keeper: the process a container session runs under (see
// keeper_protocol.hpp for how the server starts it).
//
// - It is a child subreaper: a process of the session whose parent ends (a
//   daemon that forked twice, bwrap's init when bwrap's monitor exits)
//   becomes its child, and it reaps them all. wait4 on the keeper then
//   reports the CPU time of the whole tree, which the session is charged.
// - It holds the read end of the control pipe, whose only write end is the
//   server's session. When that closes (a kill, a timeout, or the server's
//   own end, kill -9 included) it kills the session's processes.
// - When the command ends it kills what is left, reaps it, and ends the way
//   the command ended (the same exit code, or the same signal).
//
// A program of its own, not a fork of the server that stays: such a fork
// would keep a copy-on-write image of the server's memory for the whole
// session, and every page the server writes meanwhile would be copied.

#include "keeper_protocol.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace k = ticktock::sandbox::keeper;

[[noreturn]] void fail(int step) {
  k::failure f{step, errno};
  [[maybe_unused]] auto n = ::write(k::report_fd, &f, sizeof f);
  ::_exit(127);
}

bool number(const char* s, unsigned long long& out) {
  if (!s || !*s)
    return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(s, &end, 10);
  return errno == 0 && *end == '\0' && s[0] != '-';
}

struct plan {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
  rlimit cpu{}, as{}, fsize{}, nproc{};
  const char* program = nullptr;
  std::vector<char*> args;  // null-terminated
  std::vector<char*> env;   // null-terminated
};

bool parse(int argc, char** argv, plan& p, std::string& env_block) {
  if (argc < 13 || std::string_view{argv[1]} != k::protocol || std::string_view{argv[11]} != "--")
    return false;
  unsigned long long v[8];
  for (int i = 0; i < 8; ++i)
    if (!number(argv[2 + i], v[i]))
      return false;
  p.drop = v[0] != 0;
  p.uid = static_cast<uid_t>(v[1]);
  p.gid = static_cast<gid_t>(v[2]);
  p.cpu = {static_cast<rlim_t>(v[3]), static_cast<rlim_t>(v[4])};
  p.as = {static_cast<rlim_t>(v[5]), static_cast<rlim_t>(v[5])};
  p.fsize = {static_cast<rlim_t>(v[6]), static_cast<rlim_t>(v[6])};
  p.nproc = {static_cast<rlim_t>(v[7]), static_cast<rlim_t>(v[7])};
  p.program = argv[10];
  p.args.assign(argv + 12, argv + argc);
  p.args.push_back(nullptr);
  // The environment: read whole from its descriptor, then closed.
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(k::env_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return false;
    if (n == 0)
      break;
    env_block.append(buf, static_cast<std::size_t>(n));
  }
  ::close(k::env_fd);
  if (!env_block.empty() && env_block.back() != '\0')
    return false;
  for (std::size_t at = 0; at < env_block.size(); at = env_block.find('\0', at) + 1)
    p.env.push_back(env_block.data() + at);
  p.env.push_back(nullptr);
  return true;
}

// The command: its own process group (in the keeper's session), the
// session's limits and uid, then exec.
[[noreturn]] void run_command(const plan& p) {
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);  // the server ignores it; exec keeps that
  rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CPU, &p.cpu) != 0 || ::setrlimit(RLIMIT_AS, &p.as) != 0 ||
      ::setrlimit(RLIMIT_FSIZE, &p.fsize) != 0 || ::setrlimit(RLIMIT_NPROC, &p.nproc) != 0 ||
      ::setrlimit(RLIMIT_CORE, &no_core) != 0)
    fail(k::step_rlimit);
  if (p.drop) {
    // Empty the bounding set (needs CAP_SETPCAP, which root has): even a
    // setuid-root program could not regain a capability.
    for (int cap = 0; cap < 64; ++cap)
      if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
        fail(k::step_caps);
    if (::setgroups(0, nullptr) != 0)
      fail(k::step_groups);
    if (::setresgid(p.gid, p.gid, p.gid) != 0)
      fail(k::step_gid);
    // Leaving uid 0 clears the permitted, effective and ambient sets.
    if (::setresuid(p.uid, p.uid, p.uid) != 0)
      fail(k::step_uid);
  }
  // No setuid or file-capability program gains privileges from here on.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    fail(k::step_caps);
  ::execve(p.program, p.args.data(), p.env.data());
  fail(k::step_exec);
}

// The children of process `pid` (of its main thread: where a process forks
// as a rule; a child of another thread is found once it is adopted).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return out;
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  pid_t child = 0;
  bool in_number = false;
  for (char c : text + " ") {
    if (c >= '0' && c <= '9') {
      child = child * 10 + (c - '0');
      in_number = true;
    } else if (in_number) {
      out.push_back(child);
      child = 0;
      in_number = false;
    }
  }
  return out;
}

bool zombie(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return true;  // gone
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0)
    return true;
  std::string_view stat{buf, static_cast<std::size_t>(n)};
  auto paren = stat.rfind(')');
  return paren == std::string_view::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z';
}

// One round of killing the session. The processes below the keeper's own
// children go first, so that their parents reap them: a pid namespace's
// init (bwrap's) that dies with children unreaped has them reaped by the
// kernel without their CPU time reaching anyone. The keeper's children (the
// command, bwrap's init, adopted orphans) and the command's process group go
// once nothing is left below them (zombies too: their parents reap them in
// a moment), or at once with `force`; their own orphans come to the keeper.
void kill_round(pid_t command, bool force) {
  auto top = children_of(::getpid());
  std::vector<pid_t> below;
  for (auto frontier = top; !frontier.empty() && below.size() < 65536;) {
    std::vector<pid_t> next;
    for (pid_t p : frontier)
      for (pid_t c : children_of(p))
        next.push_back(c);
    below.insert(below.end(), next.begin(), next.end());
    frontier = std::move(next);
  }
  for (pid_t p : below)
    if (!zombie(p))
      ::kill(p, SIGKILL);
  if (!below.empty() && !force)
    return;
  ::kill(-command, SIGKILL);
  for (pid_t p : top)
    ::kill(p, SIGKILL);
}

// Ends the keeper as `status` (a wait status) says the command ended.
[[noreturn]] void end_like(int status) {
  if (WIFEXITED(status))
    ::_exit(WEXITSTATUS(status));
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  // no core file of the keeper
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(sig, &dfl, nullptr);
  sigset_t just;
  sigemptyset(&just);
  sigaddset(&just, sig);
  ::sigprocmask(SIG_UNBLOCK, &just, nullptr);
  ::kill(::getpid(), sig);
  ::_exit(128 + sig);
}

}  // namespace

int main(int argc, char** argv) {
  plan p;
  std::string env_block;
  if (!parse(argc, argv, p, env_block)) {
    errno = EINVAL;
    fail(k::step_keeper);
  }
  // Neither pipe reaches the command past its exec (bwrap's status pipe does).
  if (::fcntl(k::report_fd, F_SETFD, FD_CLOEXEC) != 0 ||
      ::fcntl(k::control_fd, F_SETFD, FD_CLOEXEC) != 0)
    fail(k::step_fds);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 ||
      ::sigprocmask(SIG_BLOCK, &chld, nullptr) != 0)
    fail(k::step_keeper);
  int signals = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0)
    fail(k::step_keeper);
  pid_t command = ::fork();
  if (command < 0)
    fail(k::step_keeper);
  if (command == 0)
    run_command(p);
  // The keeper keeps the control pipe and its signalfd only: the server sees
  // the pipes end when the command's copies do.
  for (int fd : {0, 1, 2, k::report_fd, k::status_fd})
    ::close(fd);

  bool killing = false, command_done = false;
  int command_status = 0;
  // Killing rounds are bounded (5 s): a process the keeper cannot find (no
  // /proc) must not hold the session open; it goes to init. After 0.5 s the
  // keeper's children go even with zombies below them.
  int rounds = 0;
  for (;;) {
    // Reap whatever has ended; ECHILD means nothing of the session is left.
    bool none_left = false;
    for (;;) {
      int st = 0;
      pid_t pid = ::waitpid(-1, &st, WNOHANG | __WALL);
      if (pid > 0) {
        if (pid == command) {
          command_done = true;
          command_status = st;
        }
        continue;
      }
      if (pid < 0 && errno == EINTR)
        continue;
      none_left = pid < 0 && errno == ECHILD;
      break;
    }
    if (command_done)
      killing = true;
    if (killing) {
      if (none_left || (command_done && rounds > 500))
        end_like(command_done ? command_status : W_EXITCODE(0, SIGKILL));
      kill_round(command, ++rounds > 50);
    }
    // While killing, look again every 10 ms: an orphan of a process just
    // killed comes to the keeper and is killed on the next round.
    pollfd fds[2] = {{signals, POLLIN, 0}, {k::control_fd, POLLIN, 0}};
    int r = ::poll(fds, killing ? 1 : 2, killing ? 10 : -1);
    if (r < 0 && errno != EINTR)
      killing = true;
    if (!killing && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
      killing = true;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info[8];
      while (::read(signals, info, sizeof info) > 0) {
      }
    }
  }
}
