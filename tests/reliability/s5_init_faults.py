"""Scenario 5: scripted failures at open and at initialisation, against a model of the breaker.

Every trial picks a threshold and a cooldown, then runs a random script of
attempts, each with a scripted outcome: success, an I/O error at open (twice,
so the one retry fails too), CANTOPEN, a failure inside the schema step, a
refused pragma, or lock contention from another process (neutral).  A fake
clock moves forward between attempts.  A reference model of the breaker
(docs/recovery.md) predicts each outcome: passed through (and how), or refused.
The file accesses of each attempt are counted by a Python audit hook (open,
sqlite3.connect, mkdir, rename, ...) and by ``FileHandle.opens``: a refusal
must cost none.  Then, with the breaker open and the cooldown over, 8 threads
arrive at once: exactly one trial goes through.  Finally 1000 refused
checkouts: no file access at all.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tinycortex_sa
from tinycortex_sa import db_path_for
from tinycortex_sa.connection import registry
from tinycortex_sa.errors import PragmaError
from tinycortex_sa.sqlite import driver

from .common import Context, Result, forget

# -- counting file access ----------------------------------------------------------------------

_EVENTS = frozenset(
    {
        "open",
        "sqlite3.connect",
        "os.mkdir",
        "os.rename",
        "os.remove",
        "os.listdir",
        "os.scandir",
        "os.chmod",
        "shutil.rmtree",
    }
)


class _Audit:
    """One process-wide audit hook (they cannot be removed), counting events under a path prefix."""

    installed = False
    prefix: str | None = None
    count = 0
    lock = threading.Lock()

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        prefix = cls.prefix
        if prefix is None or event not in _EVENTS:
            return
        for arg in args:
            if isinstance(arg, bytes):
                arg = arg.decode(errors="replace")
            if isinstance(arg, str) and arg.startswith(prefix):
                with cls.lock:
                    cls.count += 1
                return

    @classmethod
    def watch(cls, prefix: Path) -> None:
        if not cls.installed:
            sys.addaudithook(cls.hook)
            cls.installed = True
        cls.prefix, cls.count = str(prefix), 0

    @classmethod
    def stop(cls) -> None:
        cls.prefix = None


# -- scripted faults ---------------------------------------------------------------------------


def _error(code: int, message: str) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


class Script:
    """Replaces driver.connect and registry.initialise; fails as told for the next attempt."""

    def __init__(self) -> None:
        self.outcome = "ok"
        self.connects = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._real_connect = driver.connect
        self._real_initialise = registry.initialise

    def connect(self, *args: Any, **kw: Any) -> sqlite3.Connection:
        self.connects += 1
        if self.gate is not None:
            self.entered.set()
            self.gate.wait(30)
        if self.outcome == "io":
            raise _error(5386, "disk I/O error")  # IOERR_SHMMAP: retried once, fails again
        if self.outcome == "cantopen":
            raise _error(14, "unable to open database file")
        if self.outcome == "busy":
            raise _error(5, "database is locked")
        return self._real_connect(*args, **kw)

    def initialise(self, conn: sqlite3.Connection, path: Path, options: Any) -> None:
        if self.outcome == "init":
            raise _error(1, "no such table: mem_tree_chunks")
        if self.outcome == "pragma":
            raise PragmaError(
                f"{path}: scripted refusal", path=path, pragma="journal_mode", asked="truncate", got="delete"
            )
        self._real_initialise(conn, path, options)

    def install(self) -> None:
        driver.connect = self.connect  # type: ignore[assignment]
        registry.initialise = self.initialise  # type: ignore[assignment]

    def uninstall(self) -> None:
        driver.connect = self._real_connect  # type: ignore[assignment]
        registry.initialise = self._real_initialise  # type: ignore[assignment]


FAILURES = ("io", "cantopen", "init", "pragma")


@dataclass
class Model:
    """The breaker as docs/recovery.md describes it."""

    threshold: int
    cooldown: float
    state: str = "closed"
    failures: int = 0
    last: float = 0.0

    def attempt(self, now: float, outcome: str) -> str:
        """What a checkout does now with this scripted outcome: 'refused', 'ok', 'failed' or 'busy'."""
        if self.state == "open":
            if now - self.last < self.cooldown:
                return "refused"
            self.state = "half_open"
        trial = self.state == "half_open"
        if outcome == "ok":
            self.state, self.failures = "closed", 0
            return "ok"
        if outcome == "busy":
            if trial:
                self.state, self.last = "open", now - self.cooldown
            return "busy"
        self.failures += 1
        self.last = now
        if trial or self.failures >= self.threshold:
            self.state = "open"
        return "failed"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _classify(fn: Callable[[], Any]) -> tuple[str, BaseException | None]:
    try:
        fn()
    except tinycortex_sa.CircuitOpenError as err:
        return "refused", err
    except tinycortex_sa.DatabaseBusyError as err:
        return "busy", err
    except tinycortex_sa.OpenError as err:
        return "failed", err
    except Exception as err:
        return f"unexpected {type(err).__name__}", err
    return "ok", None


def run(ctx: Context) -> Result:
    result = Result("init-faults", "5. Init faults and the circuit breaker")
    trials, steps = ctx.n(6, 60), ctx.n(30, 60)
    rng = ctx.rng("init-faults")
    script = Script()
    script.install()
    try:
        for t in range(trials):
            ws = ctx.tmp / f"breaker-{t}"
            threshold, cooldown = rng.randint(1, 5), rng.choice((0.5, 5.0, 30.0))
            _one_trial(ctx, result, script, ws, threshold, cooldown, steps, rng)
        _race_at_cooldown(ctx, result, script)
        _thousand_refusals(ctx, result, script)
    finally:
        script.uninstall()
        _Audit.stop()
    return result


def _one_trial(
    ctx: Context,
    result: Result,
    script: Script,
    ws: Path,
    threshold: int,
    cooldown: float,
    steps: int,
    rng: Any,
) -> None:
    tinycortex_sa.with_connection(ws, lambda c: None, breaker_threshold=threshold, breaker_cooldown=cooldown)
    handle = registry.existing_handle(db_path_for(ws))
    assert handle is not None
    handle.close()
    clock = Clock()
    handle.breaker.clock = clock
    engine = tinycortex_sa.create_engine(ws)
    model = Model(threshold, cooldown)
    for step in range(steps):
        clock.now += rng.choice((0.0, 0.0, cooldown * 0.3, cooldown * 0.6, cooldown * 1.01, cooldown * 2))
        outcome = rng.choice(("ok", "io", "cantopen", "init", "pragma", "busy", "io", "init"))
        script.outcome = outcome
        expected = model.attempt(clock.now, outcome)
        opens, connects = handle.opens, script.connects
        _Audit.watch(ws)
        use = rng.choice(("with_connection", "engine"))
        if use == "engine":
            got, err = _classify(lambda: engine.connect().close())
        else:
            got, err = _classify(lambda: tinycortex_sa.with_connection(ws, lambda c: None))
        accesses = _Audit.count
        _Audit.stop()
        result.trials += 1
        result.faults += outcome in FAILURES or outcome == "busy"
        where = f"trial threshold={threshold} cooldown={cooldown} step {step} ({outcome} via {use})"
        if not result.check(got == expected, f"{where}: expected {expected}, got {got}: {err}"):
            break
        if got == "refused":
            result.check(accesses == 0, f"{where}: a refused checkout touched the file {accesses} times")
            result.check(
                (handle.opens, script.connects) == (opens, connects), f"{where}: a refusal opened the file"
            )
            assert isinstance(err, tinycortex_sa.CircuitOpenError)
            result.check(
                str(handle.path) in str(err) and err.retry_in > 0, f"{where}: refusal message: {err}"
            )
        else:
            result.check(handle.opens == opens + 1, f"{where}: {handle.opens - opens} opens for one attempt")
        if err is not None and got != "refused":
            result.check(str(handle.path) in str(err), f"{where}: the error does not name the path: {err}")
        state = tinycortex_sa.breaker_state(ws)
        want_state = "open" if model.state == "half_open" else model.state
        result.check(state.state == want_state, f"{where}: breaker {state.state}, model {want_state}")
        if got == "ok":
            handle.close()  # the next attempt opens the file again
    script.outcome = "ok"
    engine.dispose()
    forget(ws)


def _race_at_cooldown(ctx: Context, result: Result, script: Script) -> None:
    """Breaker open, cooldown over: of 8 threads arriving at once exactly one is the trial."""
    for r in range(ctx.n(3, 20)):
        _race(ctx, result, script, r)


def _race(ctx: Context, result: Result, script: Script, r: int) -> None:
    if True:
        ws = ctx.tmp / f"race-{r}"
        tinycortex_sa.with_connection(ws, lambda c: None, breaker_threshold=1, breaker_cooldown=10)
        handle = registry.existing_handle(db_path_for(ws))
        assert handle is not None
        handle.close()
        clock = Clock()
        handle.breaker.clock = clock
        script.outcome = "cantopen"
        _classify(lambda: tinycortex_sa.with_connection(ws, lambda c: None))
        result.faults += 1
        clock.now += 10.5
        script.outcome = "ok"
        script.gate, script.entered = threading.Event(), threading.Event()
        connects, opens = script.connects, handle.opens
        outcomes: list[str] = []
        barrier = threading.Barrier(8)

        def arrive() -> None:
            barrier.wait(10)
            outcomes.append(_classify(lambda: tinycortex_sa.with_connection(ws, lambda c: None))[0])

        threads = [threading.Thread(target=arrive, daemon=True) for _ in range(8)]
        for th in threads:
            th.start()
        script.entered.wait(10)
        time.sleep(0.05)  # everyone else has arrived while the trial is inside connect()
        script.gate.set()
        for th in threads:
            th.join(30)
        script.gate = None
        result.trials += 8
        result.check(
            script.connects - connects == 1, f"race {r}: {script.connects - connects} trials went through"
        )
        # the trial opens the file; a caller that passed the breaker just before it went half-open
        # waits for the lock and then uses the connection the trial opened; everyone else is refused
        result.check(
            len(outcomes) == 8 and set(outcomes) <= {"ok", "refused"} and "ok" in outcomes,
            f"race {r}: outcomes {sorted(outcomes)}",
        )
        result.check(handle.opens == opens + 1, f"race {r}: {handle.opens - opens} opens")
        result.check(
            tinycortex_sa.breaker_state(ws).state == "closed",
            f"race {r}: the trial's success did not close it",
        )
        forget(ws)


def _thousand_refusals(ctx: Context, result: Result, script: Script) -> None:
    ws = ctx.tmp / "refusals"
    tinycortex_sa.with_connection(ws, lambda c: None, breaker_threshold=1, breaker_cooldown=3600)
    handle = registry.existing_handle(db_path_for(ws))
    assert handle is not None
    handle.close()
    script.outcome = "io"
    _classify(lambda: tinycortex_sa.with_connection(ws, lambda c: None))
    result.faults += 1
    script.outcome = "ok"
    engine = tinycortex_sa.create_engine(ws)
    n = ctx.n(1000, 10000)
    opens, connects = handle.opens, script.connects
    _Audit.watch(ws)
    start = time.perf_counter()
    refused = 0
    for i in range(n):
        got, _ = _classify(
            (lambda: engine.connect().close())
            if i % 2
            else (lambda: tinycortex_sa.with_connection(ws, lambda c: None))
        )
        refused += got == "refused"
    elapsed = time.perf_counter() - start
    accesses = _Audit.count
    _Audit.stop()
    result.trials += n
    result.check(refused == n, f"{n - refused} of {n} checkouts were not refused")
    result.check(accesses == 0, f"{n} refused checkouts touched the file {accesses} times")
    result.check(
        (handle.opens, script.connects) == (opens, connects), f"{n} refused checkouts opened the file"
    )
    result.notes.append(
        f"{n} refused checkouts (half engine.connect(), half with_connection): 0 file accesses, "
        f"{elapsed / n * 1e6:.1f} µs each"
    )
    engine.dispose()
    forget(ws)
