// sandbox_probe: what sandbox_tests run inside the sandbox. Statically
// linked, copied into each session's working directory. One action per run:
//
//   echo TEXT...      TEXT on stdout          err TEXT...  TEXT on stderr
//   exit N            exits with code N       out N        N bytes of 'x' on stdout
//   spin              burns CPU forever       sleep MS     prints "sleeping", sleeps
//   alloc N           allocates and touches N bytes (exit 3 on failure)
//   write N FILE      writes N bytes to FILE (exit 6 on failure)
//   fork N            forks N children that wait for it (exit 4 when fork fails)
//   grandchild TOKEN stay|leave
//                     starts "hold TOKEN" in the background, prints "spawned",
//                     then sleeps (stay) or exits 0 once ./go exists (leave)
//   hold TOKEN        sleeps forever (TOKEN marks it in /proc/PID/cmdline)
//   env               prints the environment     cwd   prints the working directory
//   read PATH         prints the file (exit 5 on failure)   id  prints "uid gid"
//   burn MS           uses MS ms of CPU time, then exits 0
//   orphan-burn MS    a grandchild whose parent has exited (an orphan) uses
//                     MS ms of CPU time; exits 0 when it has
//   userns            tries to create a user namespace: prints "userns ok"
//                     or "userns refused: REASON"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

extern char** environ;

namespace {

[[noreturn]] void sleep_forever() {
  while (true)
    ::pause();
}

unsigned long long number(const char* s) { return std::strtoull(s, nullptr, 10); }

void burn_cpu_ms(unsigned long long ms) {
  auto cpu_ms = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<unsigned long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
  };
  auto until = cpu_ms() + ms;
  volatile unsigned long long x = 0;
  while (cpu_ms() < until)
    for (int i = 0; i < 100000; ++i)
      x = x + 1;
}

int usage() {
  std::fprintf(stderr, "sandbox_probe: unknown or incomplete action\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string action = argv[1];
  std::setvbuf(stdout, nullptr, _IONBF, 0);

  if (action == "echo" || action == "err") {
    FILE* f = action == "echo" ? stdout : stderr;
    for (int i = 2; i < argc; ++i)
      std::fprintf(f, "%s%s", i > 2 ? " " : "", argv[i]);
    std::fprintf(f, "\n");
    return 0;
  }
  if (action == "exit" && argc > 2)
    return static_cast<int>(number(argv[2]));
  if (action == "out" && argc > 2) {
    std::string chunk(4096, 'x');
    for (auto left = number(argv[2]); left > 0;) {
      auto n = left < chunk.size() ? left : chunk.size();
      if (std::fwrite(chunk.data(), 1, n, stdout) != n)
        return 1;
      left -= n;
    }
    return 0;
  }
  if (action == "spin") {
    volatile unsigned long long x = 0;
    while (true)
      x = x + 1;
  }
  if (action == "sleep" && argc > 2) {
    std::printf("sleeping\n");
    ::usleep(static_cast<useconds_t>(number(argv[2]) * 1000));
    return 0;
  }
  if (action == "alloc" && argc > 2) {
    auto n = number(argv[2]);
    auto* p = static_cast<char*>(std::malloc(n));
    if (!p) {
      std::fprintf(stderr, "sandbox_probe: alloc %llu: %s\n", n, std::strerror(ENOMEM));
      return 3;
    }
    for (unsigned long long i = 0; i < n; i += 4096)
      p[i] = 1;
    std::printf("allocated %llu\n", n);
    return 0;
  }
  if (action == "write" && argc > 3) {
    FILE* f = std::fopen(argv[3], "wb");
    if (!f) {
      std::fprintf(stderr, "sandbox_probe: open %s: %s\n", argv[3], std::strerror(errno));
      return 6;
    }
    std::setvbuf(f, nullptr, _IONBF, 0);
    std::string chunk(65536, 'y');
    for (auto left = number(argv[2]); left > 0;) {
      auto n = left < chunk.size() ? left : chunk.size();
      if (std::fwrite(chunk.data(), 1, n, f) != n) {
        std::fprintf(stderr, "sandbox_probe: write: %s\n", std::strerror(errno));
        return 6;
      }
      left -= n;
    }
    std::fclose(f);
    std::printf("wrote %s\n", argv[2]);
    return 0;
  }
  if (action == "fork" && argc > 2) {
    int gate[2];
    if (::pipe(gate) != 0)
      return 1;
    auto n = number(argv[2]);
    unsigned long long made = 0;
    int rc = 0;
    for (; made < n; ++made) {
      pid_t pid = ::fork();
      if (pid < 0) {
        std::fprintf(stderr, "sandbox_probe: fork failed after %llu: %s\n", made,
                     std::strerror(errno));
        rc = 4;
        break;
      }
      if (pid == 0) {
        ::close(gate[1]);
        char c;
        [[maybe_unused]] auto r = ::read(gate[0], &c, 1);  // until the parent closes it
        ::_exit(0);
      }
    }
    ::close(gate[1]);
    while (::wait(nullptr) > 0) {
    }
    if (rc == 0)
      std::printf("forked %llu\n", made);
    return rc;
  }
  if (action == "grandchild" && argc > 3) {
    // The pipe closes when the grandchild has exec'd: "spawned" is printed
    // only once a process with TOKEN in its command line exists.
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0)
      return 1;
    pid_t pid = ::fork();
    if (pid < 0)
      return 1;
    if (pid == 0) {
      char hold[] = "hold";
      char* args[] = {argv[0], hold, argv[2], nullptr};
      ::execv("/proc/self/exe", args);
      ::_exit(127);
    }
    ::close(gate[1]);
    char c;
    [[maybe_unused]] auto r = ::read(gate[0], &c, 1);
    std::printf("spawned\n");
    std::fflush(stdout);
    if (std::string{argv[3]} == "leave") {
      // Exit once the test has seen the grandchild (it creates ./go), or
      // after 5 s: in bubblewrap the grandchild dies with the namespace.
      for (int i = 0; i < 500 && ::access("go", F_OK) != 0; ++i)
        ::usleep(10'000);
      return 0;
    }
    sleep_forever();
  }
  if (action == "hold")
    sleep_forever();
  if (action == "env") {
    for (char** e = environ; *e; ++e)
      std::printf("%s\n", *e);
    return 0;
  }
  if (action == "cwd") {
    char buf[4096];
    if (!::getcwd(buf, sizeof buf))
      return 1;
    std::printf("%s\n", buf);
    return 0;
  }
  if (action == "read" && argc > 2) {
    FILE* f = std::fopen(argv[2], "rb");
    if (!f) {
      std::fprintf(stderr, "sandbox_probe: read %s: %s\n", argv[2], std::strerror(errno));
      return 5;
    }
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
      std::fwrite(buf, 1, n, stdout);
    std::fclose(f);
    return 0;
  }
  if (action == "burn" && argc > 2) {
    burn_cpu_ms(number(argv[2]));
    return 0;
  }
  if (action == "orphan-burn" && argc > 2) {
    // The grandchild holds the pipe's write end: EOF here means it is done.
    int done[2];
    if (::pipe(done) != 0)
      return 1;
    pid_t child = ::fork();
    if (child < 0)
      return 1;
    if (child == 0) {
      if (::fork() == 0) {
        ::close(done[0]);
        ::setsid();
        burn_cpu_ms(number(argv[2]));
        ::_exit(0);
      }
      ::_exit(0);
    }
    ::close(done[1]);
    ::waitpid(child, nullptr, 0);
    char c;
    while (::read(done[0], &c, 1) > 0) {
    }
    std::printf("orphan done\n");
    return 0;
  }
  if (action == "userns") {
    if (::unshare(CLONE_NEWUSER) == 0)
      std::printf("userns ok\n");
    else
      std::printf("userns refused: %s\n", std::strerror(errno));
    return 0;
  }
  if (action == "id") {
    std::printf("%u %u\n", ::getuid(), ::getgid());
    return 0;
  }
  return usage();
}
