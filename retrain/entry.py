"""The console scripts, `retrain` and `label-image`, and `python -m retrain`.

A Ctrl-C while Python still loads the command line (click and retrain's flags, about a tenth of a second)
ends with the one line a later one gives, not a traceback; from then on the command handles signals itself.
Once it has returned, the process exits at once (`_exit_now`): Python's finalization and TensorFlow's
teardown took a second or two more, during which a signal killed the process without a word (Python puts the
default handlers back before that teardown).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn


def retrain_command() -> None:
    _run("retrain", "retrain_command", again=lambda: _console_script(sys.argv[0]))


def label_image_command() -> None:
    _run("label-image", "label_image_command", again=lambda: _console_script(sys.argv[0]))


def retrain_module() -> None:
    """`python -m retrain`: the same command, which exits the same way (it went through Python's finalization and
    TensorFlow's teardown, where a SIGTERM or Ctrl-C killed it without a word). Run inside another program
    (IPython's `%run -m retrain`, `runpy` in a script: probe ZZF, the host ended with it), it neither exits nor
    starts the host again in UTF-8 mode: it ends as a function does, by SystemExit."""
    if _started_as(getattr(sys, "orig_argv", []), "retrain") and not sys.flags.inspect:  # (-i: its prompt after)
        _run("retrain", "retrain_command", again=lambda: True, prog_name="retrain")  # (exits)
        return
    try:
        in_utf8_mode(again=lambda: False)
    except KeyboardInterrupt:
        stopped_early("retrain")
    from retrain.cli import retrain_command as command

    command(prog_name="retrain")


def _started_as(argv: Sequence[str], module: str) -> bool:
    """Whether the command line that started this process (`sys.orig_argv`) is `python [options] -m module`."""
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--check-hash-based-pycs":  # Python's one long option with a value (probe ZZH)
            index += 2
            continue
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            return False  # a script, stdin, or another long option (--help, --version: no module runs)
        for position, flag in enumerate(arg[1:], 2):
            if flag in "mcWX":  # an option with a value: the rest of this argument, or the next one
                value = arg[position:] or (argv[index + 1] if index + 1 < len(argv) else "")
                if flag in "mc":
                    return flag == "m" and value == module
                index += 0 if arg[position:] else 1
                break
        index += 1
    return False


def in_utf8_mode(*, again: Callable[[], bool]) -> None:
    """Run the command again in Python's UTF-8 mode when the locale's encoding is another (a Latin-1 locale, or
    C with PYTHONUTF8=0): file names were decoded in that encoding, so a class folder `café` became the label
    `cafÃ©`, `猫` was refused for a control character it does not hold, and outputs went to a garbled sibling
    folder (probe PPP). TensorFlow takes UTF-8 paths only, and the labels file is UTF-8. The arguments are
    passed on as the bytes they came as. `again`: the command line is one of retrain's own (its console
    scripts, `python -m retrain`), which may run twice; a script of the user's may not (probes QQQ, SSS, TTT: one
    read from stdin or `<(...)` ran empty, a wrapper's own work ran twice), and goes on as it is, with a warning
    (`logs.warn_if_names_not_utf8`). In UTF-8 mode, stdout and stderr then speak the terminal's encoding."""
    from retrain.names import is_utf8, terminal_encoding

    if not (sys.flags.utf8_mode or is_utf8(sys.getfilesystemencoding())):
        if os.environ.get("PYTHONUTF8") == "1" or not sys.executable or len(getattr(sys, "orig_argv", ())) < 2 \
                or not again():
            return  # (-E, -I, -X utf8=0 keep it off even when asked)
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "PYTHONUTF8": "1"})
    encoding = terminal_encoding()
    if encoding is not None:
        for stream in (sys.stdout, sys.stderr):  # what a character lacks there, escaped
            try:
                stream.reconfigure(encoding=encoding, errors="backslashreplace")
            except (AttributeError, LookupError, ValueError, OSError):
                pass


# The lines of the console scripts installers write for retrain: pip's and distlib's (with the `/bin/sh`
# trampoline they put first for a long or spaced interpreter path), uv's (probe UUU: both taken for a user's).
_CONSOLE_SCRIPT_LINE = re.compile("|".join((
    r"#.*", r"import (re|sys)", r"from retrain\.entry import (retrain|label_image)_command",
    r"if __name__ == .__main__.:",
    r"sys\.argv\[0\] = re\.sub\(r.\(-script\\\.pyw\|\\\.exe\)\?\$., .., sys\.argv\[0\]\)",
    r"(el)?if sys\.argv\[0\]\.endswith\(.(-script\.pyw|\.exe).\):", r"sys\.argv\[0\] = sys\.argv\[0\]\[:-\d+\]",
    r"sys\.exit\((retrain|label_image)_command\(\)\)", r"'''exec' .* \"\$0\" \"\$@\"", r"' '''")))


def _console_script(path: str) -> bool:
    """Whether the file that started this process is a console script an installer wrote for retrain, whatever
    its name (probe TTT: a link to it named otherwise was taken for a user's script; a user's wrapper named
    `retrain`, which does work of its own, for retrain's): its every line one of theirs, the call among them.
    Only a regular file is read (probe UUU: a FIFO hung; an emptied `<(...)` passed)."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as handle:
            text = handle.read(4097)
        lines = [line.strip() for line in text.decode("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return len(text) <= 4096 and any(line.startswith("sys.exit(") for line in lines) \
        and all(_CONSOLE_SCRIPT_LINE.fullmatch(line) for line in lines)


def stopped_early(prog: str) -> NoReturn:
    """A Ctrl-C before the command's own handlers are in place (the re-exec's first moments, the imports: probe
    QQQ, a traceback): one line, as the command says it, and its exit status."""
    print(f"\n{prog}: interrupted", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)


def _run(prog: str, name: str, *, again: Callable[[], bool], **options: Any) -> None:
    try:
        in_utf8_mode(again=again)
    except KeyboardInterrupt:
        stopped_early(prog)
    if hasattr(sys.stdout, "reconfigure"):  # a label stdout's encoding lacks is written escaped (\u732b), as the
        sys.stdout.reconfigure(errors="backslashreplace")  # log lines are, not a traceback (probe PPP)
    try:
        from retrain import cli  # the command installs its own handlers when it starts
        command = getattr(cli, name)
    except KeyboardInterrupt:
        stopped_early(prog)
    try:
        command(**options)
        code: object = 0
    except SystemExit as exit:
        code = exit.code
    _on_the_way_out(prog)
    _exit_now(code)


def _exit_now(code: object) -> None:
    """Exit with the command's status without Python's finalization: every file the command writes is closed
    by then, and what is buffered is flushed here (its summaries' writers close themselves). The exit functions
    registered with atexit still run (TensorFlow's delete the modules AutoGraph wrote to the temporary folder:
    a dozen files a run were left there)."""
    atexit._run_exitfuncs()
    if not isinstance(code, int):  # sys.exit's rules: None is 0, anything else is printed and is 1
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: what the command printed is all it could
            pass
    logging.shutdown()
    os._exit(code)


def _on_the_way_out(prog: str) -> None:
    """A signal while the last output is flushed: one line, the signal's status (everything is written by then,
    complete or not at all), not a traceback."""
    from retrain.errors import STOP_SIGNALS

    def stop(signum: int, _frame: Any) -> None:
        with_line = f"\n{prog}: {STOP_SIGNALS[signum]} as it was exiting; what it wrote is complete\n"
        try:
            os.write(2, with_line.encode())
        except OSError:
            pass
        os._exit(128 + signum)

    for signum, handled in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                            (getattr(signal, "SIGHUP", None), signal.SIG_DFL)):
        if signum is not None and signal.getsignal(signum) == handled:  # not one ignored (a background job, nohup)
            signal.signal(signum, stop)
