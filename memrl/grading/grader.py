"""Grade completions against gold answers, in parallel and under a hard time limit per answer.

Extraction and the exact numeric comparison run in the calling process: a batch of plain numbers
never starts a worker. Only answers that need math-verify go to worker processes, in chunks (one
message carries many answers; the worker sends each verdict back as soon as it has it). Each worker
limits each answer with an interval timer (SIGALRM, which works only in a main thread), and some
LaTeX can hang sympy in C code that no signal interrupts; so the parent also holds a wall-clock
deadline per answer, counted from when the worker finished the one before: it kills the worker that
passes it, marks that answer "timeout", keeps the chunk's verdicts already received and sends the
rest of the chunk again, to a fresh worker if need be.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Self

from memrl.data.problem import DOMAINS
from memrl.errors import UserError
from memrl.grading.choice import _letter, choice_equal, extract_choice
from memrl.grading.code import CodeGrader
from memrl.grading.extract import _format_names, extract_answers, final_boxes
from memrl.grading.math import fast_math_equal, is_tuple, join_answers, judge_math
from memrl.sandbox.pool import SandboxPool

STATUSES = ("ok", "no_answer", "timeout", "error")
# A code completion's status is its sandbox verdict (memrl.sandbox.runner.STATUSES), or "no_answer".
CODE_STATUSES = ("passed", "failed", "error", "timeout", "resource_limit", "no_answer")
# Seconds past `timeout_s` before the parent kills a worker: the worker's own timer fires at
# `timeout_s`, and its "timeout" verdict must still travel back (a kill costs a worker restart).
HARD_MARGIN_S = 0.5
# At most this many answers per message to a worker; fewer near the end of a batch, so that the
# workers finish together.
MAX_CHUNK = 64
# A fresh worker imports sympy and math-verify; on a loaded machine that can take a while.
STARTUP_LIMIT_S = 120.0
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What a fresh worker judges before it says "ready": an expression, an unequal pair, and a set.
_WARM_UP = (("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("\\sqrt{2}", "2"), ("(1, 2), (3, 4)", "(3, 4), (1, 2)"))


@dataclass
class GradeResult:
    """The verdict on one completion.

    Attributes:
        correct: whether the extracted answer equals the gold one.
        extracted: the answer found in the completion (None when nothing was found).
        status: "ok"; "no_answer" (nothing extracted); "timeout" (the time limit was hit);
            "error" (the grader failed on this answer). Only "ok" can be correct. For code, the
            sandbox verdict instead (`CODE_STATUSES`): only "passed" is correct.
        detail: code only: the first failing assert, the exception, or why there was no verdict.
    """

    correct: bool
    extracted: str | None
    status: str
    detail: str = ""


@dataclass
class GradeItem:
    """One completion to grade: its domain ("math", "choice", "code"), text, gold answer and metadata.

    For "choice", `metadata` may hold "letters" (e.g. "ABCD") or "choices"/"options" (a list whose
    length gives the letters); otherwise the letters are A-E, widened to reach the gold letter.
    """

    domain: str
    response: str
    gold: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _worker_main(conn: Any, fn: Callable[[str, str, float], tuple[bool, str]]) -> None:
    """A worker process: import math-verify, say "ready", then judge chunks until told to stop.

    A chunk is (timeout_s, [(index, answer, gold), ...]); each verdict goes back at once as
    ("result", index, correct, status, finished_at), `finished_at` on the monotonic clock that the
    parent shares (CLOCK_MONOTONIC is system-wide): the next answer's time starts there.
    """
    # Ctrl-C is the parent's to handle; it stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # warm up here, so that the first tasks do not pay inside their time limit for sympy's import
        # and the first use of math-verify's parser and sympy's simplification (about a second)
        from math_verify.errors import TimeoutException  # heavy (sympy, ~1 s): in the worker, not at import

        for pred, gold in _WARM_UP:
            judge_math(pred, gold, STARTUP_LIMIT_S)
    except Exception as e:  # noqa: BLE001  # pragma: no cover - a broken install, reported to the parent
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if msg is None:
            return
        timeout_s, chunk = msg
        for index, pred, gold in chunk:
            try:
                correct, status = fn(pred, gold, timeout_s)
                correct = bool(correct) and status == "ok"
            except TimeoutException:
                correct, status = False, "timeout"
            except Exception:  # noqa: BLE001 - one bad answer must not end the worker
                correct, status = False, "error"
            try:
                conn.send(("result", index, correct, status, time.monotonic()))
            except (EOFError, OSError):
                return


class _Worker:
    """One worker process, its pipe, the chunk it holds (index, answer, gold), and when the first
    of those started."""

    def __init__(self, ctx: Any, fn: Callable) -> None:
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child_end, fn), daemon=True, name="memrl-grader")
        try:
            self.proc.start()
        finally:
            # the child holds its own copy: closing ours lets it see EOF if the parent dies
            child_end.close()
        self.conn = parent_end
        self.ready = False
        self.ready_by = time.monotonic() + STARTUP_LIMIT_S
        self.tasks: deque[tuple[int, str, str]] = deque()
        self.started = 0.0

    def kill(self) -> None:
        """Kill the process now and reap it."""
        with contextlib.suppress(OSError, ValueError):  # already gone or closed
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the process to exit; kill it if it has not within a second."""
        with contextlib.suppress(OSError, ValueError):  # a dead worker cannot read the request
            self.conn.send(None)
            self.proc.join(timeout=1)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Stop every worker and empty the list (also run at garbage collection and exit)."""
    while workers:
        workers.pop().stop()


@dataclass(frozen=True)
class _CodeItem:
    """A code completion waiting for the sandbox."""

    response: str
    metadata: dict[str, Any]


class Grader:
    """Grades completions of the "math", "choice" and "code" domains.

    Args:
        num_workers: worker processes for the answers that need math-verify; 0 grades in the
            calling process, where the time limit holds only in the main thread (an interval
            timer, SIGALRM) and nothing can stop a hang in C code.
        timeout_s: time limit per answer, in seconds (fractions count). With workers it is hard: an
            answer still running `timeout_s` + 0.5 s after its worker started it is marked "timeout"
            and its worker killed; the other answers of its chunk are graded all the same.
        answer_formats: where to look for a math answer, in order ("boxed", "hash"; str-Enum
            members are accepted).
        sandbox: the pool that runs code completions against their tests (default: a `SandboxPool`
            with default limits, made on the first code item).

    The workers use the "spawn" start method (safe next to torch and CUDA), start on the first
    answer that needs them and live until `close()`: use the Grader as a context manager.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        answer_formats: Sequence = ("boxed", "hash"),
        sandbox: SandboxPool | None = None,
        _worker_fn: Callable[[str, str, float], tuple[bool, str]] | None = None,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"grading.num_workers must be an integer >= 0, got {num_workers!r}")
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not math.isfinite(timeout_s)
            or timeout_s <= 0
        ):
            raise UserError(f"grading.timeout_s must be a positive number of seconds, got {timeout_s!r}")
        try:
            self.answer_formats = tuple(_format_names(answer_formats))
        except (ValueError, TypeError) as e:
            raise UserError(f"grading.answer_formats: {e}") from e
        if not self.answer_formats:
            raise UserError("grading.answer_formats is empty: use e.g. [boxed, hash]")
        fn = judge_math if _worker_fn is None else _worker_fn
        if not callable(fn):
            raise TypeError(f"_worker_fn must be callable, got {fn!r}")
        if num_workers > 0:
            try:
                pickle.dumps(fn)
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise ValueError(f"_worker_fn must be a module-level function (workers import it): {e}") from e
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self._fn = fn
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._starts = 0
        self._sandbox = sandbox
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    @property
    def worker_starts(self) -> int:
        """How many worker processes this Grader has started so far (restarts after a kill count)."""
        return self._starts

    def grade(self, domain: str, response: str, gold: str | None, metadata: dict | None = None) -> GradeResult:
        """Grade one completion; see `grade_batch`."""
        return self.grade_batch([GradeItem(domain, response, gold, metadata or {})])[0]

    def grade_batch(self, items: Sequence[GradeItem]) -> list[GradeResult]:
        """Grade `items`; the results are in the same order.

        Code items run in the sandbox pool, all of the batch at once.

        Raises:
            UserError: an unknown domain, a math/choice item without a gold answer, a code item
                without tests in its metadata.
            RuntimeError: worker processes could not start (memrl.sandbox.SandboxError for code).
        """
        items = list(items)
        prepared = [self._prepare(item) for item in items]
        results: list[GradeResult | None] = [None] * len(items)
        jobs = []
        code = []
        for i, p in enumerate(prepared):
            if isinstance(p, GradeResult):
                results[i] = p
            elif isinstance(p, _CodeItem):
                code.append((i, p))
            else:
                jobs.append((i, *p))
        if code:
            for (i, _), result in zip(code, self._grade_code([p for _, p in code])):
                results[i] = result
        if jobs:
            with self._lock:
                if self.num_workers == 0:
                    for i, pred, gold in jobs:
                        results[i] = self._judge_here(pred, gold)
                else:
                    try:
                        self._run_pool(jobs, results)
                    except BaseException:
                        # Ctrl-C or a failed start: workers may still hold this batch's tasks
                        _stop_all(self._workers)
                        raise
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the worker processes; a later grade starts new ones."""
        with self._lock:
            _stop_all(self._workers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- in the calling process -------------------------------------------------------------------

    def _prepare(self, item: GradeItem) -> GradeResult | tuple[str, str]:
        """The result when it is cheap to reach here, else (answer, gold) for math-verify."""
        domain = getattr(item.domain, "value", item.domain)
        if domain not in DOMAINS:
            raise UserError(f"unknown grading domain {domain!r}: expected one of {', '.join(DOMAINS)}")
        if domain == "code":
            response = item.response if item.response is not None else ""
            if not isinstance(response, str):
                raise UserError(f"a response must be a string, got {type(response).__name__}")
            return _CodeItem(response, dict(item.metadata or {}))
        gold = item.gold
        if gold is None:
            raise UserError(f"a {domain} item has no gold answer: every math and choice problem needs one")
        if isinstance(gold, (int, float)) and not isinstance(gold, bool):
            gold = str(gold)  # a loader that kept 18 as a number
        if not isinstance(gold, str):
            raise UserError(f"a gold answer must be a string, got {type(gold).__name__}: {gold!r}")
        response = item.response
        if response is None:
            response = ""
        if not isinstance(response, str):
            raise UserError(f"a response must be a string, got {type(response).__name__}")
        if domain == "choice":
            return self._prepare_choice(response, gold, item.metadata or {})
        answers = extract_answers(response, self.answer_formats)
        if answers is None:
            return GradeResult(False, None, "no_answer")
        # a gold that is a whole solution carries its answer in its final box(es)
        golds = final_boxes(gold) or [gold.strip()]
        gold = join_answers(golds)
        # several final answers compare as a set; in order when the gold is one tuple ("(2, 3)")
        pred = join_answers(answers, ordered=len(golds) == 1 and is_tuple(gold))
        fast = fast_math_equal(pred, gold)
        if fast is not None:
            return GradeResult(fast, pred, "ok")
        return pred, gold

    @staticmethod
    def _prepare_choice(response: str, gold: str, metadata: dict) -> GradeResult:
        """Grade a multiple-choice completion (always cheap)."""
        gold_letter = _letter(gold)
        if gold_letter is None:
            raise UserError(f"a choice gold answer must be one letter such as 'B', got {gold!r}")
        letters = metadata.get("letters")
        if not isinstance(letters, str) or not letters:
            options = metadata.get("choices", metadata.get("options"))
            if isinstance(options, (list, tuple)) and 0 < len(options) <= len(_LETTERS):
                letters = _LETTERS[: len(options)]
            else:
                letters = _LETTERS[: max(5, _LETTERS.index(gold_letter) + 1)]
        try:
            pred = extract_choice(response, letters)
        except ValueError as e:
            raise UserError(f"choice metadata 'letters': {e}") from e
        if pred is None:
            return GradeResult(False, None, "no_answer")
        return GradeResult(choice_equal(pred, gold_letter), pred, "ok")

    def _grade_code(self, items: list[_CodeItem]) -> list[GradeResult]:
        """Run code completions against their tests in the sandbox pool (its own processes, not the workers)."""
        if self._sandbox is None:
            self._sandbox = SandboxPool()
        out = []
        for program, verdict in CodeGrader(self._sandbox).grade([(it.response, it.metadata) for it in items]):
            if verdict is None:
                out.append(GradeResult(False, None, "no_answer"))
            else:
                out.append(GradeResult(verdict.passed, program, verdict.status, verdict.detail))
        return out

    def _judge_here(self, pred: str, gold: str) -> GradeResult:
        """Judge in this process (num_workers=0)."""
        try:
            correct, status = self._fn(pred, gold, self.timeout_s)
        except Exception:  # noqa: BLE001 - as in a worker: one bad answer is an "error", not a crash
            return GradeResult(False, pred, "error")
        return GradeResult(bool(correct) and status == "ok", pred, status)

    # -- worker processes ----------------------------------------------------------------------

    def _start_worker(self) -> None:
        try:
            self._workers.append(_Worker(self._ctx, self._fn))
        except Exception as e:
            raise RuntimeError(f"could not start a grading worker process: {e}") from e
        self._starts += 1

    def _startup_failed(self, why: str) -> RuntimeError:
        _stop_all(self._workers)
        return RuntimeError(
            f"a grading worker process {why}. If a script of yours creates the Grader, guard its entry "
            "point with `if __name__ == '__main__':` (workers start with 'spawn'); or set grading.num_workers=0"
        )

    def _chunk_size(self, pending: int) -> int:
        """How many of `pending` answers go to a worker in one message: a quarter of each worker's
        share, at most `MAX_CHUNK`, so that round trips are rare and the workers finish together."""
        return max(1, min(MAX_CHUNK, math.ceil(pending / (4 * max(1, self.num_workers)))))

    def _run_pool(self, jobs: list[tuple[int, str, str]], results: list[GradeResult | None]) -> None:
        """Judge `jobs` (index, answer, gold) in the workers; fill `results` at those indices."""
        pending = deque(jobs)
        hard_limit = self.timeout_s + HARD_MARGIN_S
        workers = self._workers

        def drop(w: _Worker, head_status: str) -> None:
            """Remove `w`: its current answer gets `head_status`, the rest of its chunk is sent again."""
            if w.tasks:
                index, pred, _ = w.tasks.popleft()
                results[index] = GradeResult(False, pred, head_status)
                pending.extendleft(reversed(w.tasks))
                w.tasks.clear()
            w.kill()
            workers.remove(w)

        while True:
            busy = sum(bool(w.tasks) for w in workers)
            if not pending and busy == 0:
                return
            # start (or restart) only as many workers as there is work for
            while len(workers) < min(self.num_workers, len(pending) + busy):
                self._start_worker()
            for w in workers:
                if w.ready and not w.tasks and pending:
                    # only an idle worker gets a chunk: it is reading, so this send cannot block
                    chunk = [pending.popleft() for _ in range(min(len(pending), self._chunk_size(len(pending))))]
                    w.started = time.monotonic()
                    try:
                        w.conn.send((self.timeout_s, chunk))
                    except (EOFError, OSError):
                        pending.extendleft(reversed(chunk))  # found dead below, then replaced
                        continue
                    w.tasks.extend(chunk)
            deadlines = [w.started + hard_limit for w in workers if w.tasks]
            deadlines += [w.ready_by for w in workers if not w.ready]
            waitables = [o for w in workers for o in (w.conn, w.proc.sentinel)]
            wait(waitables, timeout=max(0.0, min(deadlines, default=time.monotonic() + 1.0) - time.monotonic()))
            now = time.monotonic()
            for w in list(workers):
                dead = False
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if msg[0] == "result":
                            _, index, correct, status, finished_at = msg
                            head, pred, _ = w.tasks.popleft()
                            if head != index:  # pragma: no cover - the protocol keeps the order
                                raise RuntimeError(f"grading worker answered {index}, expected {head}")
                            results[index] = GradeResult(correct, pred, status)
                            # the next answer started when this one finished
                            w.started = min(finished_at, now)
                        elif msg[0] == "ready":
                            w.ready = True
                        elif msg[0] == "failed":
                            raise self._startup_failed(f"could not import math-verify ({msg[1]})")
                except (EOFError, OSError):
                    dead = True
                if not dead and not w.proc.is_alive():
                    dead = True
                if dead:
                    if not w.ready:
                        w.proc.join(timeout=1)
                        code = w.proc.exitcode
                        w.kill()
                        workers.remove(w)
                        raise self._startup_failed(f"died while starting (exit code {code})")
                    drop(w, "error")
                elif w.tasks and now >= w.started + hard_limit:
                    # stuck past the hard limit: only a kill stops C code that ignores signals
                    drop(w, "timeout")
                elif not w.ready and now >= w.ready_by:
                    raise self._startup_failed(f"did not start within {STARTUP_LIMIT_S:.0f} s")
