"""The pipeline's console: what a person watching ``scripts/run.py`` sees, and where the rest goes.

Each running job (a run of the plan) has one line: its stage, step/total, loss, tokens/s and ETA,
redrawn in place on a terminal (rich), or, on anything else (a log file, CI), printed as a plain
line every tenth of a stage's steps or every 30 s, so that ``tail -f`` follows it. Messages (a stage
building, reused, done with its summary) print above the lines. The stage cache and the training
loop report to whatever listens (``reporting``, a ``Board`` in this process or a queue to it from a
worker); with no one listening (a script run alone) reporting costs nothing. While a stage builds,
``captured_output`` sends its stdout and stderr (library banners, warnings, progress bars),
file descriptors included, to ``log.txt`` in the stage folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "log.txt"  # a stage's captured output, beside its outputs (never one of them)
PLAIN_FRACTION = 0.1  # off a terminal, a job's line every tenth of its stage's steps...
PLAIN_SECONDS = 30.0  # ...or every 30 s, whichever comes first
REPORT_SECONDS = 0.5  # a training loop reports every step; at most this often reaches the board
REFRESH_PER_SECOND = 4
RUN_WIDTH = 40  # characters of a run's name on its line and before its messages (names run to 120)


class _Sink:
    def __init__(self, send: Callable[[dict], None]):
        self.send, self.last = send, -math.inf


_sink: ContextVar[_Sink | None] = ContextVar("biolab_console_sink", default=None)
_capturing: ContextVar[bool] = ContextVar("biolab_console_capturing", default=False)


@contextlib.contextmanager
def reporting(send: Callable[[dict], None]) -> Iterator[None]:
    """Send what ``report`` and ``report_progress`` say in this context to ``send`` (one dict each)."""
    token = _sink.set(_Sink(send))
    try:
        yield
    finally:
        _sink.reset(token)


def report(**fields) -> None:
    """A change of the current job's state, sent at once: ``stage=`` (a kind) with ``state=``
    (building | waiting)."""
    sink = _sink.get()
    if sink is not None:
        sink.last = -math.inf  # the new stage's first progress goes through
        sink.send(fields)


def report_progress(step: int, total: int, loss: float | None = None, tokens_per_s: float | None = None):
    """A training step of the current job; called every step, it reaches the board at most every
    ``REPORT_SECONDS`` (and at the last step)."""
    sink = _sink.get()
    if sink is None:
        return
    now = time.monotonic()
    if step < total and now - sink.last < REPORT_SECONDS:
        return
    sink.last = now
    sink.send({"step": step, "total": total, "loss": loss, "tokens_per_s": tokens_per_s})


def output_captured() -> bool:
    """Whether this code runs inside ``captured_output``: libraries may then be asked to be quiet,
    their output goes to a log nobody watches live."""
    return _capturing.get()


@contextlib.contextmanager
def captured_output(path: str | Path, enabled: bool = True) -> Iterator[None]:
    """While enabled, stdout and stderr, the Python streams and file descriptors 1 and 2 (C code,
    subprocesses), are appended to ``path``, under a line with the time; transformers' progress
    bars are off (a bar redrawn a hundred times is noise in a file)."""
    if not enabled:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _flush_std()
    token = _capturing.set(True)
    bars_back = _transformers_bars_off()
    try:
        with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()})\n")
            with _descriptors_to(log.fileno()):
                try:
                    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                        yield
                finally:
                    _flush_std()  # what was written through the original streams belongs to this log
    finally:
        bars_back()
        _capturing.reset(token)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


@contextlib.contextmanager
def _descriptors_to(target: int) -> Iterator[None]:
    saved = []
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
            except OSError:  # closed (a daemon): nothing of it to capture
                continue
            os.dup2(target, fd)
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _transformers_bars_off() -> Callable[[], None]:
    """Turn transformers' (and the hub's) progress bars off; return what turns them back on."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return lambda: None
    if not hf_logging.is_progress_bar_enabled():
        return lambda: None
    hf_logging.disable_progress_bar()
    return hf_logging.enable_progress_bar


def short(name: str, width: int = RUN_WIDTH) -> str:
    """``name`` cut in the middle to ``width`` characters: a run's name starts with its dataset and
    ends with what tells it from its neighbours (a grid point, the hash of a long name)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[len(name) - (width - 1 - head) :]}"


def duration(seconds: float | None) -> str:
    """A stage's wall time as a person says it: 42 s, 6 min, 1 h 05 min (``?`` when not a number)."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def clock(seconds: float) -> str:
    """m:ss or h:mm:ss, for an ETA or the time a stage has run."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def tenth(done: int | None, total: int | None) -> int:
    """How many whole tenths (PLAIN_FRACTION) of ``total`` are done."""
    if done is None or not total:
        return 0
    return int(done / total / PLAIN_FRACTION + 1e-9)


def plain_due(tenth_now: int, tenth_printed: int, now: float, printed: float) -> bool:
    """Whether a plain progress line is due: a new tenth of the work, or PLAIN_SECONDS since the last
    (the rule of every long job's lines off a terminal: the board's, the LLM bio writer's)."""
    return tenth_now > tenth_printed or now - printed >= PLAIN_SECONDS


@dataclass
class Line:
    """One job's line: its stage and the stage's last reported progress."""

    run: str
    stage: str = "starting"
    state: str = ""
    started: float = 0.0
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    origin: tuple[float, int] | None = None  # (time, step) of the stage's first report: its rate's start
    updated: float = 0.0
    printed: float = 0.0  # when its last plain line went out
    printed_tenth: int = 0

    def restart(self, stage: str, state: str, now: float) -> None:
        self.stage, self.state, self.started = stage, state, now
        self.step = self.total = self.loss = self.tokens_per_s = self.origin = None
        self.updated = self.printed = now
        self.printed_tenth = 0

    def progress(self, fields: dict, now: float) -> None:
        self.step, self.total = fields["step"], fields["total"]
        if fields.get("loss") is not None:
            self.loss = fields["loss"]
        if fields.get("tokens_per_s") is not None:
            self.tokens_per_s = fields["tokens_per_s"]
        self.state, self.updated = "", now
        if self.origin is None:
            self.origin = (now, self.step)

    def eta(self, now: float) -> float | None:
        if self.origin is None or self.step is None or not self.total or self.step <= self.origin[1]:
            return None
        rate = (self.step - self.origin[1]) / max(self.updated - self.origin[0], 1e-9)
        return max(0.0, (self.total - self.step) / rate - (now - self.updated))

    def fields(self, now: float) -> dict[str, str]:
        """run, stage, count, loss, speed, time: each a short string ("" when unknown)."""
        counted = self.step is not None and bool(self.total)
        if counted and self.step >= self.total:
            when = "finishing"
        elif counted and (eta := self.eta(now)) is not None:
            when = f"ETA {clock(eta)}"
        else:
            when = f"{clock(now - self.started)} elapsed"
        stage = f"{self.stage} (waiting for another job)" if self.state == "waiting" else self.stage
        return {
            "run": short(self.run),
            "stage": stage,
            "count": f"{self.step:,}/{self.total:,}" if counted else "",
            "loss": f"loss {self.loss:.3f}" if self.loss is not None else "",
            "speed": f"{self.tokens_per_s:,.0f} tok/s" if self.tokens_per_s is not None else "",
            "time": when,
        }

    def plain(self, now: float) -> str:
        """The line as text: ``[run] pretrain 1,200/4,000 (30%): loss 2.310, 5,210 tok/s, ETA 7:12``."""
        f = self.fields(now)
        head = f"[{f['run']}] {f['stage']}"
        if f["count"]:
            head += f" {f['count']} ({100 * self.step / self.total:.0f}%)"
        rest = [f[k] for k in ("loss", "speed", "time") if f[k]]
        return f"{head}: {', '.join(rest)}"

    def due(self, now: float) -> bool:
        return plain_due(self.tenth(), self.printed_tenth, now, self.printed)

    def tenth(self) -> int:
        return tenth(self.step, self.total)


class Board:
    """The console of one command: messages as lines, and a line per running job, live on a
    terminal, plain every tenth or 30 s elsewhere (``live``: None decides by the stream).

    Everything arrives through ``handle(event)``: ``{"run", "message"}`` prints a message (to ``log``
    when given, prefixed with ``[run]`` when ``prefix``); ``{"run", "stage", "state"}`` starts a stage
    on the run's line; ``{"run", "step", "total", "loss", "tokens_per_s"}`` is its progress;
    ``{"run", "end": True}`` removes the line. Safe to call from several threads."""

    def __init__(
        self, progress: bool = True, live: bool | None = None, log: Callable[[str], None] | None = None,
        prefix: bool = False, stream=None, timer: Callable[[], float] = time.monotonic,
    ):  # fmt: skip
        self.progress, self.want_live, self.log, self.prefix = progress, live, log, prefix
        self.stream, self.clock = stream, timer
        self.lines: dict[str, Line] = {}
        self.lock = threading.Lock()  # the lines
        self._out_lock = threading.Lock()  # plain output: one line at a time from several threads
        self.live = None
        self._own_stream = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Board:
        if self.stream is None:
            self.stream, self._own_stream = _stdout_of_its_own()
        live = self.want_live if self.want_live is not None else _isatty(self.stream)
        if self.progress and live:
            self.live = _start_live(self.stream, self.table)
        elif self.progress:
            self._ticker = threading.Thread(target=self._tick, name="biolab-board", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.live is not None:
            self.live.stop()
        self.stream.flush()
        if self._own_stream:
            self.stream.close()

    def handle(self, event: dict) -> None:
        run, now = event.get("run", ""), self.clock()
        with self.lock:
            if "message" in event:
                out = [f"[{short(run)}] {event['message']}" if self.prefix else event["message"]]
            elif event.get("end"):
                self.lines.pop(run, None)
                out = []
            else:
                out = self._update(run, event, now)
        for text in out:  # outside the lock: rich's refresh takes its own lock, then ours
            self.say(text)

    def _update(self, run: str, event: dict, now: float) -> list[str]:
        line = self.lines.setdefault(run, Line(run, started=now, updated=now, printed=now))
        if "stage" in event:
            line.restart(event["stage"], event.get("state", ""), now)
        if "step" in event:
            line.progress(event, now)
        return [self._plain_line(line, now)] if self._ticker is not None and line.due(now) else []

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)
        elif self.live is not None:
            from rich.text import Text

            self.live.console.print(Text(text))
        else:
            with self._out_lock:
                print(text, file=self.stream, flush=True)

    def table(self):
        """The live lines as a rich grid: run, stage, bar, count, loss, tokens/s, ETA."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(width=20)
        for justify in ("right", "left", "right", "left"):
            grid.add_column(no_wrap=True, justify=justify)
        with self.lock:
            now = self.clock()
            for line in self.lines.values():
                f = line.fields(now)
                counted = bool(f["count"])
                bar = ProgressBar(total=line.total if counted else None, completed=line.step or 0, width=20)
                grid.add_row(f["run"], f["stage"], bar, f["count"], f["loss"], f["speed"], f["time"])
        return grid

    def _plain_line(self, line: Line, now: float) -> str:
        line.printed, line.printed_tenth = now, line.tenth()
        return line.plain(now)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                now = self.clock()
                out = [self._plain_line(line, now) for line in self.lines.values() if line.due(now)]
            for text in out:
                self.say(text)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stdout_of_its_own():
    """(stream, owned): a file of its own on stdout's descriptor, so that the output of a stage
    built in this process (descriptor 1 sent to its log) does not swallow the board's; stdout
    itself when it has no descriptor (a notebook)."""
    sys.stdout.flush()
    try:
        fd = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return sys.stdout, False
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return os.fdopen(fd, "w", buffering=1, encoding=encoding, errors="replace"), True


def _start_live(stream, render: Callable):
    from rich.console import Console
    from rich.live import Live

    # The streams stay as they are: a stage's output goes to its log, not above the lines.
    live = Live(
        get_renderable=render, console=Console(file=stream), refresh_per_second=REFRESH_PER_SECOND,
        transient=True, redirect_stdout=False, redirect_stderr=False,
    )  # fmt: skip
    live.start()
    return live
