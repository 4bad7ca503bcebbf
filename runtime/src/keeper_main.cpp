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
#include <cstdlib>
#include <cstring>
#include <string_view>

extern char** environ;

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
  char** args = nullptr;
};

bool parse(int argc, char** argv, plan& p) {
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
  p.args = argv + 12;
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
  ::execve(p.program, p.args, environ);
  fail(k::step_exec);
}

// Kills the command's process group and every child of the keeper (the
// command itself and the orphans it has adopted; their own children come to
// the keeper in turn as they die).
void kill_session_tree(pid_t command) {
  ::kill(-command, SIGKILL);
  int fd = ::open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  char buf[4096];
  pid_t pid = 0;
  bool in_number = false;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] >= '0' && buf[i] <= '9') {
        pid = pid * 10 + (buf[i] - '0');
        in_number = true;
      } else if (in_number) {
        ::kill(pid, SIGKILL);
        pid = 0;
        in_number = false;
      }
    }
  }
  if (in_number)
    ::kill(pid, SIGKILL);
  ::close(fd);
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
  if (!parse(argc, argv, p)) {
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
  // /proc) must not hold the session open; it goes to init.
  int rounds_left = 500;
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
      if (none_left || (command_done && --rounds_left < 0))
        end_like(command_done ? command_status : W_EXITCODE(0, SIGKILL));
      kill_session_tree(command);
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
