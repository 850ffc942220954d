"""A process killed (SIGKILL, power loss) while it writes its exports: the next run takes the half-written set back.

Before, an earlier model's graph stayed replaced beside its own labels, its originals hidden beside them under
temporary names that the next run of the new model deleted, and a rerun of the earlier model was refused
(probe Y). Here real processes are killed at every file-system step of an export set (those sweeps, and the
real killed runs, under the integration marker: `.ci/run` runs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import flags, retrain_cli as retrain

# A child process that writes an export set over `base`'s earlier files, the way the exporters do: files in two
# folders (a link among them, a file with nothing earlier, one in folders the set makes) and a SavedModel-like
# folder. It logs each os.replace and os.unlink, and kills itself with SIGKILL just before or after the N-th.
CHILD = """
import os, signal, sys
from pathlib import Path

import pytest
from retrain.outputs import atomic_write_bytes, export_set, make_folder, replace_folder

base, at, when, log = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], open(sys.argv[4], "w")
calls = []

def watched(name, real):
    def call(*args, **kwargs):
        calls.append(name)
        log.write(f"{name} {args[-1] if name == 'replace' else args[0]}\\n")
        log.flush()
        if len(calls) == at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            return real(*args, **kwargs)
        finally:
            if len(calls) == at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
    return call

os.replace, os.unlink = watched("replace", os.replace), watched("unlink", os.unlink)
with export_set():
    for path in (base / "graph.pb", base / "labels.txt", base / "other" / "report.json", base / "new.tflite"):
        atomic_write_bytes(path, b"new " + path.name.encode(), flag="--output_graph")
    replace_folder(base / "saved", lambda tmp: (tmp.mkdir(), (tmp / "saved_model.pb").write_bytes(b"new")),
                   flag="--saved_model_dir")
    make_folder(base / "made" / "deep", flag="--output_tflite")
    atomic_write_bytes(base / "made" / "deep" / "model.tflite", b"new", flag="--output_tflite")
"""


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root`, hidden ones too: a file's bytes, a link's target, a folder."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        entries[key] = (f"-> {os.readlink(path)}" if path.is_symlink() else "folder" if path.is_dir()
                        else path.read_bytes().decode(errors="backslashreplace"))
    return entries


def visible(entries: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in entries.items() if "/." not in f"/{name}"}


def earlier_model(base: Path) -> None:
    from retrain.outputs import replace_folder

    (base / "other").mkdir(parents=True)
    (base / "graph.pb").write_text("earlier graph")
    (base / "real_labels.txt").write_text("earlier labels")
    (base / "labels.txt").symlink_to("real_labels.txt")  # an output that is a link: the link is put back
    (base / "other" / "report.json").write_text("earlier report")
    replace_folder(base / "saved", lambda tmp: (tmp.mkdir(), (tmp / "saved_model.pb").write_bytes(b"earlier")),
                   flag="--saved_model_dir")


def the_outputs(base: Path) -> list:
    from retrain.outputs import Output

    return [Output("--output_graph", base / "graph.pb"), Output("--output_labels", base / "labels.txt"),
            Output("--output_graph", base / "other" / "report.json"), Output("--output_graph", base / "new.tflite"),
            Output("--saved_model_dir", base / "saved", kind="folder"),
            Output("--output_tflite", base / "made" / "deep" / "model.tflite")]


def write_set(base: Path, log: Path, at: int = 0, when: str = "before") -> int:
    child = subprocess.run([sys.executable, "-c", CHILD, str(base), str(at), when, str(log)], capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == (-signal.SIGKILL if at else 0), child.stderr
    return child.returncode


def the_next_run_writes(base: Path, outputs: list) -> None:
    """What the next run does before and while writing these outputs: takes back killed sets, removes temporary
    files of dead processes beside each output."""
    from retrain.outputs import remove_stale_temps, take_back_killed

    take_back_killed(outputs)
    for output in outputs:
        remove_stale_temps(output.path)


@pytest.mark.integration  # dozens of fresh processes, or a killed retrain run
def test_a_set_killed_at_any_step_is_taken_back_whole_or_stands_whole(tmp_path: Path, caplog) -> None:
    """Killed just before or just after each rename or delete of the set (the journal's own included), the next
    run leaves the folders exactly as before the set (earlier files put back, new ones removed, made folders
    gone) or, once the journal is marked kept, exactly as after it; nothing hidden is left."""
    from retrain.outputs import take_back_killed

    earlier_model(tmp_path / "base")
    before = snapshot(tmp_path / "base")
    finished = tmp_path / "finished"
    shutil.copytree(tmp_path / "base", finished, symlinks=True)
    write_set(finished, tmp_path / "steps.log")
    after = snapshot(finished)
    steps = (tmp_path / "steps.log").read_text().splitlines()
    first_unlink = next(i for i, step in enumerate(steps, 1) if step.startswith("unlink "))
    kept_at = max(i for i, step in enumerate(steps[:first_unlink], 1)  # the journal marked kept
                  if step.startswith("replace ") and Path(step[8:]).name.startswith(".retrain-exports-"))
    hidden = [name for name in after if "/." in f"/{name}" and name != "saved/.retrain-export.json"]
    assert before != after and len(steps) > 20 and not hidden, after
    for at in range(1, len(steps) + 1):
        for when in ("before", "after"):
            work = tmp_path / f"{at}-{when}"
            shutil.copytree(tmp_path / "base", work, symlinks=True)
            write_set(work, tmp_path / "killed.log", at, when)
            caplog.clear()
            expected = after if at > kept_at or at == kept_at and when == "after" else before
            with caplog.at_level("WARNING", logger="retrain"):
                if expected is after:  # killed while deleting what the set replaced: finished by a run writing
                    take_back_killed(the_outputs(work)[2:3])  # any one of its folders, the whole SavedModel too
                else:
                    the_next_run_writes(work, the_outputs(work))
            assert snapshot(work) == expected, (at, when, steps[at - 1])
            if expected is before and at > 3:  # by then a write has happened: the warning says what came back
                assert "was killed while writing its outputs; its writes are taken back" in caplog.text, (at, when)
            shutil.rmtree(work)


def test_a_run_writing_one_folder_of_the_set_takes_the_whole_set_back(tmp_path: Path, caplog) -> None:
    """A later run writing only the report (in the set's second folder, where a pointer to the journal is) takes
    back the set's writes in the first folder too."""
    base = tmp_path / "base"
    earlier_model(base)
    before = snapshot(base)
    shutil.rmtree(base)
    killed_after(base, tmp_path, "other/report.json")
    with caplog.at_level("WARNING", logger="retrain"):
        the_next_run_writes(base, the_outputs(base)[2:3])
    assert visible(snapshot(base)) == visible(before)
    assert (f"its writes are taken back: put back the earlier {base / 'other' / 'report.json'}, "
            f"{base / 'labels.txt'}, {base / 'graph.pb'}") in caplog.text


def test_a_write_changed_after_the_kill_is_left_and_the_earlier_file_kept_beside_it(tmp_path: Path,
                                                                                      caplog) -> None:
    """The user (or another program) wrote over an output after the kill: theirs stays, and the earlier file is
    kept beside it as `<name>.earlier`, which no run removes, and the error line says so."""
    base = tmp_path / "base"
    killed_after(base, tmp_path, "labels.txt")
    (base / "graph.pb").write_text("the user's own graph")
    with caplog.at_level("WARNING", logger="retrain"):
        the_next_run_writes(base, the_outputs(base))
    assert (base / "graph.pb").read_text() == "the user's own graph"
    assert (base / "graph.pb.earlier").read_text() == "earlier graph"
    assert os.readlink(base / "labels.txt") == "real_labels.txt"  # the rest is taken back
    assert f"could not take back {base / 'graph.pb'} (it is no longer what this run wrote there; the earlier one " \
           f"is {base / 'graph.pb.earlier'})" in caplog.text
    assert [path.name for path in base.rglob(".*")] == [".retrain-export.json"]  # the SavedModel's marker


def test_a_live_runs_journal_is_left_alone(tmp_path: Path) -> None:
    """A journal whose process still runs (this one) is not taken back, nor are its kept-aside files removed."""
    from retrain.outputs import atomic_write_bytes, export_set, take_back_killed

    (tmp_path / "graph.pb").write_text("earlier")
    with export_set():
        atomic_write_bytes(tmp_path / "graph.pb", b"new", flag="--output_graph")
        held = snapshot(tmp_path)
        take_back_killed(the_outputs(tmp_path))
        assert snapshot(tmp_path) == held and len(held) == 3  # the graph, the earlier one aside, the journal
    assert snapshot(tmp_path) == {"graph.pb": "new"}


@pytest.mark.parametrize(("cut", "error"), [(1, KeyboardInterrupt), (2, KeyboardInterrupt), (3, KeyboardInterrupt),
                                             (4, OSError)])
def test_a_journal_write_cut_short_takes_the_set_back_and_leaves_no_journal_file(tmp_path: Path, monkeypatch,
                                                                                 cut: int, error: type) -> None:
    """Ctrl-C or SIGTERM as the journal (or its pointer) was being written: the set was taken back, and the
    journal's `.journal.tmp` stayed in the output folder until the next run (probe FF). A full disk as the journal
    was marked kept: the run failed with the new files in place, the earlier ones aside and the journal saying
    "not kept", so that the next run took the set back; now it is taken back at once."""
    from retrain import journal
    from retrain.errors import RetrainError
    from retrain.outputs import atomic_write_bytes, export_set

    (tmp_path / "graph.pb").write_text("earlier")
    (tmp_path / "sub").mkdir()
    real, calls = journal.json.dump, []

    def dump(data, handle) -> None:  # the temporary file is open: the interrupt lands before its rename
        calls.append(1)
        real(data, handle)
        if len(calls) == cut:
            raise error(28, "No space left on device", handle.name) if error is OSError else error

    monkeypatch.setattr(journal.json, "dump", dump)
    with pytest.raises(error if error is KeyboardInterrupt else RetrainError) as raised, export_set():
        atomic_write_bytes(tmp_path / "graph.pb", b"new", flag="--output_graph")
        atomic_write_bytes(tmp_path / "sub" / "labels.txt", b"a\nb\n", flag="--output_labels")
    monkeypatch.undo()
    assert len(calls) == cut  # the journal twice, the pointer in sub/, the "kept" mark
    if error is OSError:  # the output folder named, not "finished files are kept" (probe GG)
        assert str(raised.value) == (f"cannot finish writing the outputs in {tmp_path} (No space left on device); "
                                     "the run's files are taken back, the earlier outputs are kept")
    assert snapshot(tmp_path) == {"graph.pb": "earlier", "sub": "folder"}


def test_a_stop_signal_as_a_temporary_file_is_made_leaves_none(tmp_path: Path, monkeypatch) -> None:
    """SIGINT just as mkstemp had made the report's temporary file, before its name was returned: the file stayed
    (`.report.json.retrain-…tmp`, once in 20 tries, probe GG). The signal now waits until the file is named."""
    import signal
    import tempfile

    from retrain.errors import Terminated
    from retrain.outputs import atomic_write_bytes

    real = tempfile.mkstemp

    def made_then_stopped(*args, **kwargs):
        made = real(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, before the caller has the name
        return made

    def stop(signum, _frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        monkeypatch.setattr(tempfile, "mkstemp", made_then_stopped)
        with pytest.raises(Terminated):
            atomic_write_bytes(tmp_path / "report.json", b"{}", flag="--output_labels")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def retrain_killed_after(destination: Path, args: list[str]) -> None:
    """The `retrain` console command with `args`, killed (SIGKILL) just after it renamed a file to `destination`."""
    kill = (f"import os, signal, sys; real = os.replace\n"
            f"def replace(source, destination):\n"
            f"    real(source, destination)\n"
            f"    if str(destination) == {str(destination)!r}: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"os.replace = replace\n"
            f"from retrain.entry import retrain_command\n"
            f"sys.argv[0] = 'retrain'; retrain_command()\n")
    child = subprocess.run([sys.executable, "-c", kill, *args], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr


@pytest.mark.integration  # dozens of fresh processes, or a killed retrain run
def test_rerunning_the_earlier_model_after_a_killed_export_works(colour_tree: Path, tiny_module: Path, outputs,
                                                                 tmp_path: Path) -> None:
    """Probe Y's case, with the real command: model A (three colours) written; model B (two colours) killed just
    after replacing A's graph and labels, leaving them beside A's report. Before, rerunning A was refused ('not a
    labels file retrain can tell it wrote'); now the rerun takes B's writes back first, says so, and writes A
    again."""
    first = retrain(colour_tree, tiny_module, outputs)
    assert "Wrote" in first.stdout
    earlier = {name: (outputs["output_graph"].parent / name).read_bytes() for name in ("graph.pb", "labels.txt",
                                                                                        "report.json")}
    two = tmp_path / "two"
    shutil.copytree(colour_tree, two)
    shutil.rmtree(next(p for p in sorted(two.iterdir()) if p.is_dir()))
    retrain_killed_after(outputs["output_labels"], flags(image_dir=two, tfhub_module=tiny_module,
                                                         how_many_training_steps=20, **outputs))
    folder = outputs["output_graph"].parent
    assert outputs["output_graph"].read_bytes() != earlier["graph.pb"]  # B's graph and labels beside A's report
    assert (folder / "labels.txt").read_bytes() != earlier["labels.txt"]
    assert (folder / "report.json").read_bytes() == earlier["report.json"]
    assert [p for p in folder.iterdir() if p.name.startswith(".retrain-exports-")]

    again = retrain(colour_tree, tiny_module, outputs)
    assert (f"its writes are taken back: put back the earlier {outputs['output_labels']}, {outputs['output_graph']}"
            in again.stderr)
    report = json.loads((folder / "report.json").read_text())
    assert report["labels"] == json.loads(earlier["report.json"])["labels"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_another_users_journal_is_not_followed(tmp_path: Path, monkeypatch, caplog) -> None:
    """A journal names files to move and delete: in a shared folder such as /tmp (the classic outputs' folder)
    another user could leave one naming this user's files. Only journals of the user running retrain count."""
    base = tmp_path / "base"
    killed_after(base, tmp_path, "labels.txt")
    left = snapshot(base)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(base).st_uid + 1)  # the journal is now another user's
    from retrain.outputs import take_back_killed

    with caplog.at_level("WARNING", logger="retrain"):
        take_back_killed(the_outputs(base))
    assert snapshot(base) == left and "killed" not in caplog.text
    monkeypatch.undo()
    the_next_run_writes(base, the_outputs(base)[:2])
    assert visible(snapshot(base)) != visible(left)  # this user's journal is followed


def test_a_pipe_named_as_a_journal_does_not_stall_the_run(tmp_path: Path) -> None:
    """Reading a journal-named pipe (another user's, or anyone's in /tmp) would wait for ever: it is passed by."""
    import threading

    from retrain.journal import HOST
    from retrain.outputs import take_back_killed

    os.mkfifo(tmp_path / f".retrain-exports-{HOST}-999999999-1a2b3c4d.journal")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (take_back_killed(the_outputs(tmp_path)), done.set()), daemon=True)
    thread.start()
    thread.join(timeout=10)
    if not done.is_set():  # unblock the thread: a writer opening the pipe lets its reader through
        with open(tmp_path / f".retrain-exports-{HOST}-999999999-1a2b3c4d.journal", "w"):
            pass
    assert done.is_set(), "reading the pipe stalled"


@pytest.mark.integration  # dozens of fresh processes, or a killed retrain run
def test_label_image_warns_of_a_model_a_killed_run_replaced_half(colour_tree: Path, tiny_module: Path, outputs,
                                                                 tmp_path: Path) -> None:
    """Until the next retrain run takes a killed set back, label-image says the graph and labels may belong to two
    models (it changes nothing itself); on a model whose set was kept, it says nothing of the kind."""
    from retrain.cli import label_image_command
    from tests.conftest import invoke

    retrain(colour_tree, tiny_module, outputs)
    photo = next(colour_tree.rglob("*.jpg"))
    args = ["--graph", str(outputs["output_graph"]), "--image", str(photo)]
    assert "was killed" not in invoke(label_image_command, args).stderr
    retrain_killed_after(outputs["output_graph"], flags(image_dir=colour_tree, tfhub_module=tiny_module,
                                                        how_many_training_steps=30, **outputs))
    left = snapshot(outputs["output_graph"].parent)
    # Its labels not given: the graph is not the one the report lists (refused since the report records its bytes).
    refused = invoke(label_image_command, args, expect=2)
    assert "holds other bytes than that run wrote there (a retrain run (process " in refused.stderr, refused.stderr
    assert "was killed while it replaced it; the next retrain run writing there puts the earlier files back)" \
        in refused.stderr
    (tmp_path / "link.pb").symlink_to(outputs["output_graph"])  # through a link: named too (probe YY)
    linked = invoke(label_image_command, ["--graph", str(tmp_path / "link.pb"), "--image", str(photo)], expect=2)
    assert "was killed while it replaced it" in linked.stderr, linked.stderr
    result = invoke(label_image_command, [*args, "--labels", str(outputs["output_labels"])])
    assert result.stderr.count(f"was killed while it replaced --graph {outputs['output_graph']} or its labels "
                               f"{outputs['output_labels']}: they may belong to two models") == 1, result.stderr
    assert snapshot(outputs["output_graph"].parent) == left  # label-image takes nothing back


def killed_after(base: Path, tmp_path: Path, target: str | int) -> int:
    """Write the earlier model in `base`, then kill a set just after it replaced `target` (a path under base), or
    after its `target`-th step; returns the killed process's id."""
    earlier_model(base)
    steps = tmp_path / "steps.log"
    if not steps.exists():
        write_set(base, steps)
        shutil.rmtree(base)
        earlier_model(base)
    at = [target] if isinstance(target, int) else [i for i, step in enumerate(steps.read_text().splitlines(), 1)
                                                    if step.endswith(f"/{target}") and step.startswith("replace ")]
    write_set(base, tmp_path / "killed.log", at[0], "after")
    journal = next(base.glob(".retrain-exports-*.journal"))
    return int(journal.name.split("-")[3])


def test_a_folder_written_again_after_the_kill_is_left(tmp_path: Path, caplog, monkeypatch) -> None:
    """The killed set's SavedModel was replaced again later (by a run that could not tell the set's process was
    dead: another host's within a day): that one stays, the earlier one is kept beside it. A folder was taken
    back whenever it held any folder retrain wrote, deleting or replacing a good model (probe CC)."""
    from retrain.outputs import replace_folder, take_back_killed, writing

    base = tmp_path / "base"
    killed_after(base, tmp_path, "base/saved")
    monkeypatch.setattr(writing, "remove_stale_temps", lambda path: None)  # a run that took the process for live
    replace_folder(base / "saved", lambda tmp: (tmp.mkdir(), (tmp / "saved_model.pb").write_bytes(b"later")),
                   flag="--saved_model_dir")
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="retrain"):
        take_back_killed(the_outputs(base))
    assert (base / "saved" / "saved_model.pb").read_text() == "later"
    assert (base / "saved.earlier" / "saved_model.pb").read_text() == "earlier"
    assert f"could not take back {base / 'saved'} (it is no longer what this run wrote there; the earlier one is " \
           f"{base / 'saved.earlier'})" in caplog.text
    assert (base / "graph.pb").read_text() == "earlier graph"  # the rest is taken back


@pytest.mark.parametrize("now", ["another process", "this process"])
def test_a_killed_process_whose_number_is_taken_again_is_known_dead(tmp_path: Path, now: str) -> None:
    """In a container every run may be process 1 or 2, and numbers are reused: a journal whose process number
    belongs to a live process now (another one, or this run itself) was never taken back, and probe Y's refusal
    came back. The journal records when its process started, which tells them apart."""
    from retrain.outputs import take_back_killed

    base = tmp_path / "base"
    pid = killed_after(base, tmp_path, "base/labels.txt")
    live = subprocess.Popen(["sleep", "60"]) if now == "another process" else None
    try:
        reused = str(live.pid if live else os.getpid())
        for path in base.rglob(f"*-{pid}-*"):  # as if the killed process had had that number
            if ".retrain-exports-" in path.name:
                path.write_text(path.read_text().replace(f"-{pid}-", f"-{reused}-"))
            path.rename(path.with_name(path.name.replace(f"-{pid}-", f"-{reused}-")))
        take_back_killed(the_outputs(base))
    finally:
        if live:
            live.kill()
            live.wait()
    assert os.readlink(base / "labels.txt") == "real_labels.txt" and (base / "graph.pb").read_text() == "earlier graph"
    assert [p.name for p in base.rglob(".*")] == [".retrain-export.json"]


def test_a_folder_moved_after_the_kill_is_taken_back_where_it_is(tmp_path: Path) -> None:
    """The journal names the set's files relative to its folder: moved (or mounted elsewhere) after the kill,
    the set was dropped unseen and the earlier graph deleted as a temporary file (probe CC)."""
    base = tmp_path / "base"
    killed_after(base, tmp_path, "other/report.json")
    moved = tmp_path / "moved"
    base.rename(moved)
    the_next_run_writes(moved, the_outputs(moved))
    assert (moved / "graph.pb").read_text() == "earlier graph"
    assert (moved / "other" / "report.json").read_text() == "earlier report"
    assert [p.name for p in moved.rglob(".*")] == [".retrain-export.json"]


@pytest.mark.parametrize("damage", [
    {"writes": [{"path": None}]}, {"writes": [{}]}, {"writes": [{"path": "/x", "written": 5}]},
    {"writes": [{"path": "/x", "aside": 5}]}, {"writes": [7]}, {"writes": [{"path": "/x", "made": "yes"}]},
    {"copies": {"a": 1}}, {"copies": 7}, {"copies": "xkeep.txt"}, {"kept": "yes"},
])
def test_a_damaged_journal_is_reported_and_nothing_crashes(tmp_path: Path, caplog, damage: dict) -> None:
    """A journal damaged (or edited): every later run stopped with a traceback (probe CC). Now a journal whose
    writes are not what retrain records is left, with its files, and named in a warning."""
    from retrain.journal import HOST
    from retrain.outputs import take_back_killed

    journal = tmp_path / f".retrain-exports-{HOST}-999999999-0123abcd.journal"
    journal.write_text(json.dumps({"journal": str(journal), "writes": [], **damage}))
    for name in ("k", "e", "p", "keep.txt"):
        (tmp_path / name).write_text("mine")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with caplog.at_level("WARNING", logger="retrain"):
            take_back_killed(the_outputs(tmp_path))
    finally:
        os.chdir(cwd)
    assert all((tmp_path / name).read_text() == "mine" for name in ("k", "e", "p", "keep.txt"))
    if damage.get("writes"):
        assert journal.exists() and f"the journal {journal} of a killed retrain run (process 999999999) is not " \
            "one retrain can read" in caplog.text


def test_a_made_up_journal_moves_nothing_of_the_users(tmp_path: Path, caplog) -> None:
    """A journal names files to move and delete: one naming the user's files as what retrain kept aside or as its
    copies moves and deletes nothing of theirs (probe CC deleted them). (A folder recorded as made is removed
    only if it is empty and in the journal's folder, as the folders a set makes are.)"""
    from retrain.journal import HOST
    from retrain.outputs import take_back_killed

    mine, folder, empty = tmp_path / "thesis.tex", tmp_path / "chapters", tmp_path.parent / "empty"
    elsewhere = tmp_path.parent / f".graph.pb.retrain-{HOST}-1-0123abcd.old"  # named as retrain's, elsewhere
    elsewhere.write_text("mine")
    mine.write_text("mine")
    folder.mkdir()
    (folder / "one.tex").write_text("mine")
    empty.mkdir()
    journal = tmp_path / f".retrain-exports-{HOST}-999999999-0123abcd.journal"
    for writes in ([{"path": str(tmp_path / "graph.pb"), "aside": str(mine)}],
                   [{"path": str(mine), "aside": str(mine)}],
                   [{"path": str(folder), "aside": str(folder), "folder": "--saved_model_dir"}],
                   [{"path": str(empty), "made": True}],
                   [{"path": str(tmp_path / "graph.pb"), "aside": str(elsewhere)}],
                   [{"path": str(tmp_path / "graph.pb")}]):
        journal.write_text(json.dumps({"journal": str(journal), "copies": [str(journal), str(mine)],
                                       "writes": writes}))
        take_back_killed(the_outputs(tmp_path))
    assert mine.read_text() == "mine" and (folder / "one.tex").read_text() == "mine" and empty.is_dir()
    assert elsewhere.read_text() == "mine" and not (tmp_path / "graph.pb").exists()


TAKE_BACK = """
import os, signal, sys
from pathlib import Path

import pytest
from retrain.outputs import take_back_killed
sys.path.insert(0, sys.argv[3])
from tests.test_killed_exports import the_outputs

base, at, calls = Path(sys.argv[1]), int(sys.argv[2]), []

def watched(real):
    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

os.replace, os.unlink, os.symlink, os.rmdir = (watched(f) for f in (os.replace, os.unlink, os.symlink, os.rmdir))
take_back_killed(the_outputs(base))
print(len(calls))
"""


@pytest.mark.integration  # dozens of fresh processes, or a killed retrain run
def test_a_take_back_killed_half_way_is_finished_by_the_next_run(tmp_path: Path, caplog) -> None:
    """The take-back itself killed at each of its steps: the next run finishes it, without calling what was put
    back already a file it could not take back. A link output was unlinked before its link was made again, so a
    kill between lost it (probe CC)."""
    base = tmp_path / "base"
    earlier_model(base)
    before = snapshot(base)
    steps = tmp_path / "steps.log"
    write_set(base, steps)
    last_write = max(i for i, step in enumerate(steps.read_text().splitlines(), 1)
                     if step.startswith("replace ") and ".retrain-" not in step)
    root = str(Path(__file__).resolve().parents[1])
    count = None
    for at in range(1, 1000):
        work = tmp_path / f"at-{at}"
        earlier_model(work)
        write_set(work, tmp_path / "killed.log", last_write, "after")
        child = subprocess.run([sys.executable, "-c", TAKE_BACK, str(work), str(at), root], capture_output=True,
                               text=True, timeout=60)
        if child.returncode == 0:
            count = int(child.stdout)
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        caplog.clear()
        with caplog.at_level("WARNING", logger="retrain"):
            the_next_run_writes(work, the_outputs(work))
        assert snapshot(work) == before, at
        assert "could not take back" not in caplog.text, at
        shutil.rmtree(work)
    assert count and count > 10, count


def test_label_image_says_nothing_of_a_set_killed_before_it_replaced_anything(tmp_path: Path) -> None:
    """Killed after its first journal entry but before the graph was replaced, the set left the model whole:
    label-image's warning was a false alarm (probe DD). Once the graph is replaced, it is named, also when the
    folder is given as a relative path (the journal was not found then)."""
    from retrain.outputs import half_written

    base = tmp_path / "base"
    killed_after(base, tmp_path, 1)  # the journal written, nothing replaced yet
    assert [paths for _, paths in half_written([base])] == [[]]
    replaced = tmp_path / "replaced"
    killed_after(replaced, tmp_path, "graph.pb")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert [paths for _, paths in half_written([Path("replaced")])] == [[str(replaced / "graph.pb")]]
    finally:
        os.chdir(cwd)


def test_a_set_is_taken_back_however_its_folders_are_spelt(tmp_path: Path) -> None:
    """Outputs given as relative paths: the folders were scanned as given, the journal's paths made relative to
    them, and a good journal called unreadable (probe DD). A folder moved with its pointer's folder is found
    from the pointer too (the pointer keeps where the journal is from it)."""
    base = tmp_path / "base"
    killed_after(base, tmp_path, "other/report.json")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        the_next_run_writes(Path("base"), the_outputs(Path("base")))
    finally:
        os.chdir(cwd)
    assert (base / "graph.pb").read_text() == "earlier graph"
    assert [p.name for p in base.rglob(".*")] == [".retrain-export.json"]
    shutil.rmtree(base)
    killed_after(base, tmp_path, "other/report.json")
    moved = tmp_path / "moved"
    base.rename(moved)
    the_next_run_writes(moved, the_outputs(moved)[2:3])  # only the report: the pointer's folder
    assert (moved / "graph.pb").read_text() == "earlier graph"
    assert (moved / "other" / "report.json").read_text() == "earlier report"


def test_a_set_whose_outputs_another_run_holds_is_left_to_it(tmp_path: Path, caplog) -> None:
    """A run going on in another container (another process namespace, the same /tmp) looks dead from here:
    its set was taken back under it, and it then failed (probe DD). Its outputs' locks tell it is alive."""
    from retrain.outputs import Output, hold_outputs, release_outputs, take_back_killed

    base = tmp_path / "base"
    killed_after(base, tmp_path, "labels.txt")
    left = snapshot(base)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from retrain.outputs import Output, hold_outputs\n"
                               "hold_outputs([Output('--output_graph', Path(sys.argv[1]))])\n"
                               "print('held', flush=True); time.sleep(60)", str(base / "graph.pb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        hold_outputs([Output("--output_graph", tmp_path / "mine.pb")])  # this run is held, as prepare has it
        with caplog.at_level("INFO", logger="retrain"):
            take_back_killed(the_outputs(base))
        release_outputs()
        assert snapshot(base) == left and "going on: left to it" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    take_back_killed(the_outputs(base))  # its holder gone: taken back
    assert (base / "graph.pb").read_text() == "earlier graph"


def test_a_journal_nested_too_deep_for_json_is_passed_by(tmp_path: Path) -> None:
    """'[[[[…' two hundred thousand deep stopped every run there with a RecursionError traceback (probe DD)."""
    from retrain.journal import HOST
    from retrain.outputs import take_back_killed

    (tmp_path / f".retrain-exports-{HOST}-999999999-0123abcd.journal").write_text("[" * 200_000)
    take_back_killed(the_outputs(tmp_path))


def test_an_earlier_file_kept_aside_must_be_of_its_outputs_kind(tmp_path: Path, caplog) -> None:
    """A made-up journal, marked kept, naming a folder of the user's (under retrain's name for what it keeps aside)
    as a file output's earlier file: the next run deleted it (probe DD). It is not what retrain keeps aside."""
    from retrain.journal import HOST
    from retrain.outputs import take_back_killed

    folder = tmp_path / f".graph.pb.retrain-{HOST}-999999997-deadbeef.old"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    journal = tmp_path / f".retrain-exports-{HOST}-999999999-0123abcd.journal"
    journal.write_text(json.dumps({"journal": str(journal), "kept": True,
                                   "writes": [{"path": str(tmp_path / "graph.pb"), "aside": str(folder)}]}))
    with caplog.at_level("WARNING", logger="retrain"):
        take_back_killed(the_outputs(tmp_path))
    assert (folder / "thesis.tex").read_text() == "mine" and "is not what retrain keeps aside there" in caplog.text


@pytest.mark.parametrize("how", ["moved", "removed"])
def test_a_folder_moved_while_the_set_is_written_stops_it_and_is_taken_back_where_it_is(tmp_path: Path, how: str,
                                                                                       caplog) -> None:
    """Probe YYY: `mv out out_moved` (or `rm -rf out`) after the graph and labels were written and before the
    SavedModel: the next writes made a new `out` holding the rest, exit 0; the new graph stood in out_moved
    beside the earlier SavedModel, the earlier graph only as a hidden `.old` file. Now the next write stops the
    set, and what it wrote is taken back where the folder is now."""
    from retrain.errors import RetrainError
    from retrain.outputs import atomic_write_bytes, export_set, make_folder

    out, moved = tmp_path / "out", tmp_path / "out_moved"
    out.mkdir()
    (out / "graph.pb").write_text("earlier graph")
    (out / "labels.txt").write_text("earlier labels")
    with pytest.raises(RetrainError) as raised, export_set():
        atomic_write_bytes(out / "graph.pb", b"new graph", flag="--output_graph")
        atomic_write_bytes(out / "labels.txt", b"new labels", flag="--output_labels")
        if how == "moved":
            out.rename(moved)
        else:
            shutil.rmtree(out)
        make_folder(out / "sm", flag="--saved_model_dir")
    said = f"{out}, where the run was writing its outputs, was moved, renamed or removed meanwhile; nothing more is " \
           "written"
    assert str(raised.value) == said + (f", and what the run wrote there is taken back in {moved}, where it is now"
                                        if how == "moved" else "")  # (not claimed for a folder gone: probe ZZZ)
    assert not out.exists()  # no new folder of that name
    if how == "moved":  # the earlier files back, nothing hidden left (journal, files kept aside)
        assert snapshot(tmp_path) == {"out_moved": "folder", "out_moved/graph.pb": "earlier graph",
                                      "out_moved/labels.txt": "earlier labels"}
    else:  # said, with where a copy would hold the earlier files (probe ZZB: said only for a mount over it)
        assert snapshot(tmp_path) == {}
        assert (f"cannot follow {out}, where the run wrote outputs: it was removed, moved to another disk or "
                "mounted over, so what the run wrote there (graph.pb, labels.txt) is not taken back; in a copy of "
                "it, the earlier files are kept as .graph.pb.retrain-") in caplog.text


def test_a_folder_moved_after_the_last_write_keeps_the_set_where_it_is(tmp_path: Path) -> None:
    """The whole set is in the folder the user moved: it stands, with nothing hidden left behind."""
    from retrain.outputs import atomic_write_bytes, export_set

    out, moved = tmp_path / "out", tmp_path / "out_moved"
    out.mkdir()
    (out / "graph.pb").write_text("earlier graph")
    with export_set():
        atomic_write_bytes(out / "graph.pb", b"new graph", flag="--output_graph")
        atomic_write_bytes(out / "labels.txt", b"new labels", flag="--output_labels")
        out.rename(moved)
    assert snapshot(tmp_path) == {"out_moved": "folder", "out_moved/graph.pb": "new graph",
                                  "out_moved/labels.txt": "new labels"}


def test_the_earlier_runs_intermediate_graphs_are_put_back_where_their_folder_moved(tmp_path: Path) -> None:
    """Probe ZZZ: the intermediate graphs' folder moved during training, then the run failed: the earlier run's
    graph stayed hidden as a `.old` file beside this run's (which the next run deleted), and an empty folder was
    made again at the old path."""
    from retrain.outputs import Writes, atomic_write_bytes, recording

    folder, moved = tmp_path / "ig", tmp_path / "ig_moved"
    folder.mkdir()
    (folder / "intermediate_5.pb").write_text("earlier run's")
    stored = Writes()
    with recording(stored):
        atomic_write_bytes(folder / "intermediate_5.pb", b"this run's 5", flag="--intermediate_output_graphs_dir")
        atomic_write_bytes(folder / "intermediate_10.pb", b"this run's 10", flag="--intermediate_output_graphs_dir")
    folder.rename(moved)
    assert stored.put_back_earlier() == [moved / "intermediate_5.pb"]
    assert snapshot(tmp_path) == {"ig_moved": "folder", "ig_moved/intermediate_10.pb": "this run's 10",
                                  "ig_moved/intermediate_5.pb": "earlier run's"}


def test_an_intermediate_graph_after_its_folder_moved_stops_the_run_and_makes_no_new_folder(tmp_path: Path) -> None:
    """Probe ZZZ: the next graph made an empty folder again at the old path before the move was seen."""
    from types import SimpleNamespace

    from retrain.errors import RetrainError
    from retrain.exporters.graph import IntermediateGraphs
    from retrain.outputs import Writes

    folder, moved = tmp_path / "ig", tmp_path / "ig_moved"
    config, stored = SimpleNamespace(intermediate_output_graphs_dir=folder), Writes()
    IntermediateGraphs.store(SimpleNamespace(graph_bytes=b"graph 5"), config, step=5, writes=stored)
    folder.rename(moved)
    with pytest.raises(RetrainError, match="was moved, renamed or removed meanwhile"):
        IntermediateGraphs.store(SimpleNamespace(graph_bytes=b"graph 10"), config, step=10, writes=stored)
    assert not folder.exists()
    stored.keep()
    assert snapshot(tmp_path) == {"ig_moved": "folder", "ig_moved/intermediate_5.pb": "graph 5"}
