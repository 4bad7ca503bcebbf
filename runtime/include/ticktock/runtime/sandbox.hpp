#pragma once

// The containers sandbox: runs one command confined, streams its output and
// classifies how it ended; and a pool that runs at most N such sessions at a
// time with a FIFO queue behind them. The containers service (containers/new,
// containers/sessions/{id}/...) is built on top of this; docs/containers.md
// says what each isolation mode guarantees.
//
// Linux only. The server is expected to run as root: the command then runs as
// an unprivileged uid without capabilities (RLIMIT_NPROC is not enforced for
// uid 0). Run as another user, the command keeps that user's uid, and its
// process limit counts every process and thread of that user.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::sandbox {

/// Resource limits of one session. Every field has a default; a request
/// parsed with parse_request is clamped to the server's maxima.
struct limits {
  /// Wall-clock time from start; then the whole process group is SIGKILLed
  /// and the session ends as `timeout`.
  std::chrono::milliseconds wall_timeout{30'000};
  /// RLIMIT_CPU (soft; the hard limit is one second more): SIGXCPU, then
  /// SIGKILL. Counts per process, not for the whole session.
  std::uint64_t cpu_seconds = 10;
  /// RLIMIT_AS: the address space of each process, in bytes.
  std::uint64_t memory_bytes = 512ull << 20;
  /// RLIMIT_FSIZE: the largest file a process may write, in bytes (SIGXFSZ).
  std::uint64_t file_bytes = 64ull << 20;
  /// RLIMIT_NPROC: processes (and threads) of the sandbox uid. In bubblewrap
  /// mode two more are allowed for bwrap's own processes.
  std::uint64_t processes = 64;
  /// stdout and stderr together; later output is read and dropped, and the
  /// outcome says output_truncated.
  std::size_t output_bytes = 1 << 20;
};

/// How a session is confined.
enum class isolation : std::uint8_t {
  automatic,   ///< bubblewrap if a probe shows it works here, else process
  bubblewrap,  ///< bwrap: own mount, pid, ipc, net, uts, user namespaces
  process,     ///< a confined child process (own uid, rlimits, cwd, env)
};

/// "automatic", "bubblewrap" or "process".
std::string_view to_string(isolation iso) noexcept;
/// The inverse of to_string; nullopt for anything else.
std::optional<isolation> isolation_from_string(std::string_view name) noexcept;

/// True when bubblewrap works on this machine: bwrap is installed and a
/// trivial sandbox (with the options a session uses) runs. Probed once per
/// process, then cached. Thread-safe.
bool bubblewrap_available();

/// What `automatic` isolation chooses for a session whose working directory
/// is `workdir` (or is below it) and whose command runs as `uid`/`gid`:
/// bubblewrap where it works here and, run as root, where that uid may
/// search every directory above `workdir` (bwrap binds it as that uid);
/// process otherwise.
isolation automatic_isolation(const std::filesystem::path& workdir, std::uint32_t uid,
                              std::uint32_t gid);

/// What to run.
struct spec {
  /// The command and its arguments; argv[0] is looked up in the sandbox's
  /// PATH (/usr/local/bin:/usr/bin:/bin) unless it contains a '/', when it
  /// is relative to the working directory (or, in bubblewrap mode, a path
  /// inside the sandbox, where the working directory is /work).
  std::vector<std::string> argv;
  /// The session's working directory on the host, created if missing. Its
  /// owner becomes the sandbox uid (the directory itself, not its contents).
  /// In bubblewrap mode every parent must be searchable by that uid.
  std::filesystem::path workdir;
  /// The only variables the command sees besides PATH, HOME (the working
  /// directory) and LANG=C.UTF-8, which are fixed and win over these.
  std::map<std::string, std::string> env;
  limits lim;
  isolation iso = isolation::automatic;
  /// The uid and gid the command runs as when the server is root (ignored
  /// otherwise). The default is nobody.
  std::uint32_t uid = 65534;
  std::uint32_t gid = 65534;
  /// True when no other process uses `uid` (the pool gives each running
  /// session its own uid when configured with one). At the end every process
  /// of that uid is killed, which also catches those that left the process
  /// group with setsid().
  bool exclusive_uid = false;
};

/// Parses a session request, the body of containers/new:
///
///     {"command": ["sh", "-c", "make test"],
///      "env": {"NAME": "value"},
///      "limits": {"wall_timeout_ms": 60000, "cpu_seconds": 20,
///                 "memory_bytes": 1073741824, "file_bytes": 67108864,
///                 "processes": 64, "output_bytes": 1048576}}
///
/// `command` is required (1 to 4096 strings, the first non-empty, no NUL
/// bytes, 256 KiB in all); `env` and `limits` and each limit are optional.
/// Unknown keys are rejected. Missing limits take `defaults`; every limit is
/// then clamped to `maxima` (a value above the maximum is lowered, not
/// refused); a limit must be a positive integer. Environment names match
/// [A-Za-z_][A-Za-z0-9_]*, at most 256 of them, and PATH, HOME and LANG are
/// refused (the sandbox sets them). The returned spec has no workdir: the
/// caller sets it, and its isolation is `automatic`.
/// Fails with errc::invalid_argument and a message naming the bad field.
expected<spec> parse_request(std::string_view body, const limits& maxima,
                             const limits& defaults = limits{});

/// `limits` as a JSON object with the field names of parse_request.
std::string to_json(const limits& lim);

/// How a session ended.
struct outcome {
  /// exited | signaled | timeout | cpu_limit | memory_limit |
  /// file_size_limit | killed | failed_to_start. How each is decided is in
  /// docs/containers.md ("How a session's end is classified").
  std::string status;
  int exit_code = -1;  ///< when the command exited, its code; else -1
  int signal = 0;      ///< when a signal ended it, the signal; else 0
  std::chrono::microseconds wall{0};  ///< from start to the end of the reap
  std::chrono::microseconds cpu{0};   ///< user + system of the command and its reaped children
  std::uint64_t output_bytes = 0;     ///< stdout + stderr bytes delivered to on_output
  bool output_truncated = false;      ///< output past lim.output_bytes was dropped
  isolation used = isolation::process;
  std::string error;  ///< for failed_to_start (and a short note for other ends)
};

/// `outcome` as a JSON object: status, exit_code, signal, wall_us, cpu_us,
/// output_bytes, output_truncated, isolation, error.
std::string to_json(const outcome& out);

/// Which pipe a chunk of output came from.
enum class stream : std::uint8_t { stdout_stream = 1, stderr_stream = 2 };

/// What a session calls back. Both run on the session's own thread, never
/// concurrently for one session; on_exit runs exactly once, last. They must
/// not call wait() or the destructor of their own session.
struct callbacks {
  std::function<void(stream, std::string_view)> on_output;
  std::function<void(const outcome&)> on_exit;
};

/// One command running in the sandbox. Starting never fails: a command that
/// cannot start ends as `failed_to_start` through on_exit with the reason in
/// outcome::error. All members are thread-safe.
class session {
public:
  /// Starts the command on a thread of its own and returns at once.
  session(spec s, callbacks cb);
  /// Kills the command (if still running) and waits for its end.
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// SIGKILLs the command's whole process group; the session ends as
  /// `killed` (unless it had ended already). Returns at once.
  void kill();
  /// Blocks until the session has ended and on_exit has returned.
  outcome wait();
  /// True once on_exit has returned.
  bool done() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

/// Runs at most `max_concurrent` sessions at a time; more wait in a FIFO
/// queue. Thread-safe. Its own dispatcher thread starts sessions; callbacks
/// run on the sessions' threads.
class pool {
public:
  enum class state : std::uint8_t { queued, running, done };

  struct options {
    /// When set and the server runs as root, the session in slot k (0 to
    /// max_concurrent-1) runs as uid and gid uid_base + k, with
    /// spec::exclusive_uid set: concurrent sessions cannot signal each other
    /// and nothing of theirs outlives them. Else specs keep their uid.
    std::optional<std::uint32_t> uid_base;
    /// How many ended sessions status() still knows (oldest forgotten first).
    std::size_t retain_done = 4096;
  };

  explicit pool(std::size_t max_concurrent);
  pool(std::size_t max_concurrent, options opts);
  /// shutdown().
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// Queues a session; returns its id (1, 2, ...). After shutdown() the
  /// session ends at once as `killed` through on_exit (on the caller's
  /// thread) and the id is still returned.
  std::uint64_t submit(spec s, callbacks cb);
  /// queued, running or done; nullopt for an unknown (or forgotten) id.
  std::optional<state> status(std::uint64_t id) const;
  /// A queued session leaves the queue and ends as `killed` (on_exit runs on
  /// the caller's thread); a running one is killed. False if the id is
  /// unknown or already done.
  bool cancel(std::uint64_t id);
  /// Sessions queued and running now.
  std::size_t queued() const;
  std::size_t running() const;
  /// Kills every running session, ends every queued one as `killed`, waits
  /// for them and stops the dispatcher. Later submits end at once. Idempotent.
  void shutdown();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The name of a pool state: "queued", "running", "done".
std::string_view to_string(pool::state s) noexcept;

}  // namespace ticktock::sandbox
