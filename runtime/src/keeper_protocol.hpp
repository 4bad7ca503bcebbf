#pragma once

// What the server's sandbox (sandbox.cpp) and the session keeper
// (ticktock-keeper, keeper_main.cpp) agree on. Private to the runtime.
//
// The server forks, sets up the descriptors below and the working directory,
// and executes the keeper with
//
//   ticktock-keeper v1 DROP UID GID CPU_SOFT CPU_HARD AS FSIZE NPROC PROGRAM -- ARG...
//
// (DROP is 1 when the command is to leave root for UID/GID; the limits are
// rlimit values) and an empty environment of its own: nothing of the
// command's (GLIBC_TUNABLES, say) reaches the keeper, which runs as the
// server's uid. The command's environment comes on env_fd instead, not on
// the command line, which every user can read in /proc. The keeper starts
// PROGRAM with ARG... and that environment as its child, under those limits
// and that uid, and stays until every process of the session has ended; see
// keeper_main.cpp.

namespace ticktock::sandbox::keeper {

inline constexpr const char* protocol = "v1";

// Descriptors of the keeper (0, 1, 2: the command's stdin, stdout, stderr).
inline constexpr int report_fd = 3;   // the exec-error pipe: a failure, or EOF at the command's exec
inline constexpr int status_fd = 4;   // bwrap --json-status-fd (bubblewrap mode only)
inline constexpr int control_fd = 5;  // read end of the control pipe: EOF means kill the session
inline constexpr int env_fd = 6;      // the command's environment: NAME=VALUE entries, each ended by a NUL

// What the report pipe carries when a step fails.
struct failure {
  int step;
  int err;
};

enum step : int {
  step_keeper = 1,
  step_fds,
  step_rlimit,
  step_caps,
  step_groups,
  step_gid,
  step_uid,
  step_chdir,
  step_exec,
};

inline const char* step_name(int s) {
  switch (s) {
    case step_keeper: return "starting the session's keeper";
    case step_fds: return "setting up file descriptors";
    case step_rlimit: return "setting resource limits";
    case step_caps: return "dropping capabilities";
    case step_groups: return "dropping supplementary groups";
    case step_gid: return "switching gid";
    case step_uid: return "switching uid";
    case step_chdir: return "entering the working directory";
    case step_exec: return "exec";
  }
  return "starting";
}

}  // namespace ticktock::sandbox::keeper
