"""Nothing the user owns is lost, no broken model looks right: the hostile families of issue 9.

Each test is a family, tried on real runs (the CLI, the home-made module, real files): outputs that clash
with each other or with the inputs, folders the tool replaces, non-finite numbers, names, flags that pass
a check but cannot work, a full or read-only disk, and truncated graphs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import tempfile
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.cli import label_image_command, retrain_command
from tests.conftest import (retrain_cli as retrain, COLOURS, EARLIER_GRAPH, FOREIGN_GRAPH, PHOTOS, graph_node,
                            colour_photo, flags, invoke, make_colour_tree, run_script)


def in_own_mounts(script: str, *, timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a shell script in a mount namespace of its own (its mounts vanish with it), output captured."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def digest(root: Path) -> dict[str, str]:
    """Every file under `root` (or `root` itself) with the SHA-1 of its bytes: to prove nothing changed."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


# --- 1. outputs that clash with each other or with the inputs -------------------------------------

def clash_cases(tree: Path, module: Path, out: Path) -> dict[str, tuple[dict, str]]:
    photo = tree / "red" / "red_000.jpg"
    return {
        "labels_is_graph": ({"output_labels": out / "graph.pb"}, "--output_labels"),
        "graph_is_a_photo": ({"output_graph": photo}, "--image_dir"),
        "labels_inside_the_tree": ({"output_labels": tree / "red" / "labels.txt"}, "--image_dir"),
        "saved_model_is_the_module": ({"saved_model_dir": module}, "--tfhub_module"),
        "saved_model_holds_the_tree": ({"saved_model_dir": tree.parent},  # not "would write into" it: replaced whole
                                       f"--saved_model_dir {tree.parent} holds --image_dir {tree}, which the run reads; "
                                       "retrain replaces that folder whole, so give a new sub-folder, such as "
                                       f"{tree.parent / 'model'}"),
        "tflite_is_labels": ({"output_tflite": out / "labels.txt"}, "--output_tflite"),
        "graph_is_the_checkpoint": ({"output_graph": out / "checkpoint" / "ckpt.index"}, "--checkpoint_path"),
        "graph_is_an_intermediate_graph": ({"output_graph": out / "intermediate" / "intermediate_10.pb",
                                            "intermediate_store_frequency": 10}, "--intermediate_output_graphs_dir"),
        "graph_is_the_file_index": ({"output_graph": out / "bottlenecks" / "file_keys.json"}, "--bottleneck_dir"),
        "graph_in_a_cache_folder": ({"output_graph": out / "bottlenecks" / ("0a" * 12) / "graph.pb"},
                                    "--bottleneck_dir"),
        # a float16 cache's folder is named `<key>-float16` (probe ZZJ: its pattern did not cover that)
        "graph_in_a_float16_cache_folder": ({"output_graph": out / "bottlenecks" / f"{'0a' * 12}-float16" / "g.pb",
                                             "bottleneck_dtype": "float16"}, "--bottleneck_dir"),
        "graph_inside_the_saved_model": ({"output_graph": out / "saved" / "graph.pb",
                                          "saved_model_dir": out / "saved"}, "--saved_model_dir"),
        "labels_named_as_the_report": ({"output_labels": out / "report.json"},  # (the flag first too: probe UU)
                                       f"error: --output_labels {out / 'report.json'} is also {out / 'report.json'}"
                                       " (the report beside --output_labels)"),
        # the labels there too: the clash was named by the report beside them, a file no flag names (probe TT)
        "graph_and_labels_inside_the_saved_model": ({"output_graph": out / "saved" / "graph.pb",
                                                     "output_labels": out / "saved" / "labels.txt",
                                                     "saved_model_dir": out / "saved"},
                                                    f"overlaps --output_graph {out / 'saved' / 'graph.pb'};"),
        # the checkpoint is named by the prefix given, not by the folder its files go in
        "checkpoint_inside_the_tree": ({"checkpoint_path": tree / "red" / "ckpt"},
                                       f"--checkpoint_path {tree / 'red' / 'ckpt'} would write into --image_dir"),
        # the folder exists (the test makes it): said as it is, not as a clash with the checkpoint inside it
        "tflite_is_the_checkpoint_folder": ({"output_tflite": out / "checkpoint"},
                                            f"--output_tflite {out / 'checkpoint'} is a folder; expected a file path"),
    }


@pytest.mark.parametrize("case", ["labels_is_graph", "graph_is_a_photo", "labels_inside_the_tree",
                                  "saved_model_is_the_module", "saved_model_holds_the_tree", "tflite_is_labels",
                                  "graph_is_the_checkpoint", "graph_is_an_intermediate_graph",
                                  "graph_is_the_file_index", "graph_in_a_cache_folder",
                                  "graph_in_a_float16_cache_folder", "graph_inside_the_saved_model",
                                  "graph_and_labels_inside_the_saved_model", "labels_named_as_the_report",
                                  "checkpoint_inside_the_tree", "tflite_is_the_checkpoint_folder"])
def test_outputs_that_clash_are_refused_before_any_work(colour_tree: Path, tmp_path: Path, outputs, case: str,
                                                        tiny_module: Path) -> None:
    module = tmp_path / "module"
    shutil.copytree(tiny_module, module)
    (outputs["checkpoint_path"].parent).mkdir(parents=True, exist_ok=True)
    (outputs["output_graph"].parent / "saved").mkdir(exist_ok=True)
    changes, flag = clash_cases(colour_tree, module, outputs["output_graph"].parent)[case]
    before = {**digest(colour_tree), **digest(module)}
    error = retrain(colour_tree, module, {**outputs, **changes}, expect=2)
    assert flag in error, error
    assert {**digest(colour_tree), **digest(module)} == before
    assert not outputs["bottleneck_dir"].exists() or not list(outputs["bottleneck_dir"].rglob("shard-*"))


def test_a_folder_in_the_cache_that_only_looks_like_the_caches_own_may_hold_an_output(
        colour_tree: Path, tiny_module: Path, outputs) -> None:
    """Probe ZZK: any `<24 hex digits>-<suffix>` folder was taken for the cache's; it writes `<key>` and
    `<key>-float16` only."""
    mine = outputs["bottleneck_dir"] / f"{'0a' * 12}-mine"
    mine.mkdir(parents=True)
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": mine / "graph.pb"})
    assert (mine / "graph.pb").is_file()


def test_an_output_reached_through_a_link_into_the_tree_is_refused(colour_tree: Path, tmp_path: Path, outputs,
                                                                   tiny_module: Path) -> None:
    (tmp_path / "innocent").symlink_to(colour_tree / "red")
    photo = colour_tree / "red" / "red_003.jpg"
    before = digest(photo)
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": tmp_path / "innocent" / photo.name},
                    expect=2)
    assert "--output_graph" in error and "--image_dir" in error
    assert digest(photo) == before


def test_a_bind_mount_does_not_hide_an_output_in_the_tree_or_two_outputs_on_one_file(colour_tree: Path,
                                                                                     tmp_path: Path, outputs,
                                                                                     tiny_module: Path) -> None:
    """Probe GGG: paths were compared with links resolved, and a bind mount shows a folder at a second path no
    link resolves (a container's `-v ~/photos:/data -v ~/photos/models:/models`): a graph written into the tree
    through one (the next run trained on the TensorBoard sprite as a red photo), two outputs on one file (found
    only after training, called another program's), two runs' locks on one folder two locks. Probe III: a file
    system mounted at two places (each showing its root), /proc bound elsewhere, a CSV's spelling through a bind
    (another split). Run in a mount namespace of its own (root, as the machines running these tests are), each
    refused before any work."""
    bound, alias, one, two, proc, wide, shown, saved = (tmp_path / name for name in (
        "bound", "alias", "one", "two", "proc", "wide", "shown", "saved"))
    for folder in (bound, alias, one, two, proc, wide, shown, saved, tmp_path / "elsewhere"):
        folder.mkdir()
    (tmp_path / "labels_there.txt").write_text("")
    out = outputs["output_graph"].parent
    (tmp_path / "stdout").symlink_to(proc / "self" / "fd" / "1")
    table = tmp_path / "labels.csv"
    table.write_text(f"path,labels\n{bound / 'red' / 'red_000.jpg'},red\nblue/blue_000.jpg,blue\n")
    cases = [[sys.executable, "-m", "retrain", *flags(image_dir=colour_tree, tfhub_module=tiny_module,
                                                      how_many_training_steps=5, **{**outputs, **change})]
             for change in ({"output_graph": bound / "red" / "g.pb"}, {"summaries_dir": bound / "red" / "logs"},
                            {"output_tflite": alias / "graph.pb"},
                            {"output_graph": one / "g.pb", "output_labels": two / "g.pb"},
                            {"output_graph": tmp_path / "stdout"},
                            {"saved_model_dir": saved}, {"output_labels": out / "labels_mounted.txt"},
                            {"saved_model_dir": tmp_path / "linked"})]
    csv_name = (f"from pathlib import Path; from retrain.labels.csv import read_labels_csv; print(read_labels_csv("
                f"Path({str(table)!r}), image_dir=Path({str(colour_tree)!r})).rows[0].name)")
    # A folder and a file bound over others of the same disk (mount points os.path.ismount does not see: probe
    # III, refused only after training), and a link to a folder of a read-only wide mount's writable part (the
    # SavedModel was written through the wide mount's spelling, and failed).
    (out / "labels_mounted.txt").write_text("")
    (tmp_path / "linked").symlink_to(shown / "sm")
    script = (f"mount --bind {colour_tree} {bound} && mount --bind {out} {alias} && mount -t tmpfs tmpfs {one} && "
              f"mount --bind {one} {two} && mount --bind /proc {proc} && mount --bind {tmp_path / 'elsewhere'} {saved}"
              f" && mount --bind {tmp_path / 'labels_there.txt'} {out / 'labels_mounted.txt'} && "
              f"mount -t tmpfs tmpfs {wide} && mkdir -p {wide / 'rw' / 'sm'} && mount --bind {wide / 'rw'} {shown} && "
              f"mount -o remount,bind,ro {wide} && " + " ; ".join(
                  f"{' '.join(map(shlex.quote, case))} 2>&1 >/dev/null | grep 'retrain: error' || echo done"
                  for case in cases) +
              f" ; {sys.executable} -c " + shlex.quote(f"from retrain.outputs import real; print(real("
                                                         f"{str(alias / 'x')!r}))") +
              f" ; {sys.executable} -c " + shlex.quote(csv_name) + " 2>/dev/null")
    before = digest(colour_tree)
    done = in_own_mounts(script, timeout=300, cwd=tmp_path)
    assert re.sub(rf"{proc}/\d+/", f"{proc}/PID/", done.stdout).splitlines() == [
        f"retrain: error: --output_graph {bound / 'red' / 'g.pb'} would write into --image_dir {colour_tree}, which "
        "the run reads; choose a --output_graph outside it",
        f"retrain: error: --summaries_dir {bound / 'red' / 'logs'} would write into --image_dir {colour_tree}, "
        "which the run reads; choose a --summaries_dir outside it",
        f"retrain: error: --output_tflite {alias / 'graph.pb'} is also --output_graph {outputs['output_graph']}; "
        "give each output its own path",
        f"retrain: error: --output_labels {two / 'g.pb'} is also --output_graph {one / 'g.pb'}; give each output "
        "its own path",
        f"retrain: error: --output_graph {tmp_path / 'stdout'} leads to {proc}/PID/fd/1, which the kernel makes up "
        "(a process's open files, its settings), not a place for files; choose a path on a disk for --output_graph "
        "(to see it on stdout, write it to a file, then cat that)",
        f"retrain: error: --saved_model_dir {saved} is a mount point; retrain replaces that folder whole, so give a "
        f"new sub-folder, such as {saved / 'model'}",
        f"retrain: error: --output_labels {out / 'labels_mounted.txt'} is a mount point (a file mounted there); "
        "retrain writes a new file and renames it there, which a mount point refuses, so choose another path for "
        "--output_labels",
        "done",  # the SavedModel written through the link, beside the read-only wide mount
        str(out / "x"),  # the place the locks are named after: the output folder's, either way
        "red/red_000.jpg"], done.stderr  # as the CSV names it without the bind: the same split
    assert digest(colour_tree) == before and (tmp_path / "stdout").is_symlink()


def test_one_spelling_of_a_place_is_found_through_the_mounts_that_show_it(tmp_path: Path) -> None:
    """Probe KKK, in a mount namespace of its own: the disk's own view of a folder hidden under another mount (as
    systemd's ProtectHome=tmpfs with two BindPaths does) made the two binds of it two places again; a proc file
    system moved (`mount --move`) over a folder with a tmpfs under it, and one hidden under a later mount, were
    taken the wrong way round; a bind of / gave the relative path '.'. Probe LLL: a bind moved onto a point where
    a hidden mount lies (under a later mount above it) was dropped from the table."""
    home, ns, stage, moved, hid, root_bind = (tmp_path / name for name in ("home", "ns", "stage", "moved", "hid",
                                                                           "root"))
    for folder in (home / "photos" / "red", ns, stage, moved, hid, root_bind, tmp_path / "w"):
        folder.mkdir(parents=True)
    check = ("from retrain import mounts; "
             f"print(mounts.canonical({str(ns / 'models' / 'g.pb')!r}) == "
             f"mounts.canonical({str(ns / 'photos' / 'red' / 'g.pb')!r})); "
             f"print(mounts.filesystem_type({str(moved / 'self')!r}), mounts.filesystem_type({str(hid / 'x')!r}), "
             f"mounts.is_mount_point({str(hid / 'proc')!r})); "
             f"print(mounts.canonical({str(root_bind)!r}), mounts.canonical({str(root_bind / 'work')!r})); "
             f"print(mounts.canonical({str(stage / 'a' / 'g.pb')!r}) == "
             f"mounts.canonical({str(ns / 'photos' / 'red' / 'g.pb')!r}))")
    script = (f"mount -t tmpfs ns {ns} && mkdir {ns / 'photos'} {ns / 'models'} && "
              f"mount --bind {home / 'photos'} {ns / 'photos'} && mount --bind {home / 'photos' / 'red'} "
              f"{ns / 'models'} && mount --bind {home / 'photos' / 'red'} {tmp_path / 'w'} && "
              f"mount -t tmpfs protecthome {home} && "
              f"mount -t proc proc {stage} && mount -t tmpfs under {moved} && mount --move {stage} {moved} && "
              f"mkdir {hid / 'proc'} && mount -t proc proc {hid / 'proc'} && mount -t tmpfs over {hid} && "
              f"mount --bind / {root_bind} && mkdir {stage / 'a'} && mount -t tmpfs y {stage / 'a'} && "
              f"mount -t tmpfs z {stage} && mkdir {stage / 'a'} && mount --move {tmp_path / 'w'} {stage / 'a'} && "
              f"cd / && {sys.executable} -c {shlex.quote(check)}")
    done = in_own_mounts(script, timeout=60)
    assert done.stdout.splitlines() == ["True", "proc tmpfs False", "/ /work", "True"], done.stderr


def test_the_image_tree_moved_onto_the_output_folder_while_the_run_goes_on_is_not_written_into(
        tmp_path: Path) -> None:
    """Probe QQQ: `rmdir out; mv photos out` (or `mount --move` of the photos' file system onto the output
    folder) during a run put the graph among the photos, exit 0: the tree was judged by its path, now gone."""
    from retrain.errors import RetrainError
    from retrain.outputs import Input, Output, atomic_write_bytes, check_clashes, release_outputs

    tree, out = make_colour_tree(tmp_path / "photos", per_class=2), tmp_path / "out"
    out.mkdir()
    check_clashes([Output("--output_graph", out / "g.pb")], [Input("--image_dir", tree)])
    try:
        out.rmdir()
        tree.rename(out)
        with pytest.raises(RetrainError, match=rf"^--output_graph {out / 'g.pb'} now lies inside --image_dir {tree}"):
            atomic_write_bytes(out / "g.pb", b"graph", flag="--output_graph")
    finally:
        release_outputs()
    assert not (out / "g.pb").exists()


def test_a_relative_output_from_a_current_folder_in_another_mount_namespace_is_refused(
        colour_tree: Path, tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Probe QQQ: from `cd /proc/N/cwd` into another namespace's folder, a relative output was judged by the
    current folder's path here, and the run failed after training ('Invalid cross-device link')."""
    there = tmp_path / "there"
    there.mkdir()
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              f"mount -t tmpfs t {there} && cd {there} && exec sleep 120"])
    try:
        for _ in range(100):
            if os.path.ismount(f"/proc/{other.pid}/cwd") or os.stat(f"/proc/{other.pid}/cwd").st_dev != \
                    there.stat().st_dev:
                break
            time.sleep(0.1)
        done = subprocess.run([sys.executable, "-m", "retrain", *flags(
            image_dir=colour_tree, tfhub_module=tiny_module, **{**outputs, "output_graph": "g.pb"})],
            cwd=f"/proc/{other.pid}/cwd", capture_output=True, text=True, timeout=120)
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 2 and done.stderr.splitlines()[-1].startswith(
        "retrain: error: --output_graph g.pb leads into another view of the files than this process's"), done.stderr


def test_an_output_in_an_overlays_upper_or_lower_folder_is_taken_as_the_overlay_shows_it(
        tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Probe OOO: with the photos in an overlay, an output in its upper or its lower folder landed among them,
    exit 0; two runs, one through the overlay, one through its upper folder, wrote one folder unlocked. A mount
    below a lower folder, which the overlay does not show, is not taken for it."""
    low, up, work, merged = (tmp_path / name for name in ("low", "up", "work", "merged"))
    for folder in (up / "red", work, merged, low / "sub"):
        folder.mkdir(parents=True)
    make_colour_tree(low, per_class=6)
    check = ("from pathlib import Path; from retrain.outputs import real; "
             f"print(real(Path({str(up / 'red' / 'g.pb')!r})), real(Path({str(low / 'blue' / 'g.pb')!r})), "
             f"real(Path({str(low / 'sub' / 'g.pb')!r})))")
    command = [sys.executable, "-m", "retrain", *flags(image_dir=merged, tfhub_module=tiny_module,
                                                       how_many_training_steps=5,
                                                       **{**outputs, "output_graph": up / "red" / "g.pb"})]
    script = (f"mount -t overlay overlay -o lowerdir={low},upperdir={up},workdir={work} {merged} && "
              f"mount -t tmpfs sub {low / 'sub'} && {sys.executable} -c {shlex.quote(check)} && "
              f"{' '.join(map(shlex.quote, command))} 2>&1 >/dev/null | grep 'retrain: error'")
    # Probe SSS: an overlay over that overlay (nested), one whose lower folder is a bind mount, one whose lower
    # folder's name holds ':', ',' and a space (escaped in its options) were not followed.
    # Probe TTT: an upper folder's ':' taken for a separator (an output in it reached the tree, and a folder
    # named as its first half was refused), a lower folder whose name ends in '\' hid the one after it.
    nested, bound, odd = (tmp_path / name for name in ("nested", "bound", "odd"))
    for root in (nested, bound, odd):
        for name in ("up", "work", "merged", "real"):
            (root / name).mkdir(parents=True)
    (bound / "low").mkdir()
    upper_name = "u:v,w\\x"
    for name in ("a:b, c", upper_name, "u", "x\\", "y"):
        (odd / name).mkdir()
    later = ("from pathlib import Path; from retrain.outputs import real; "
             f"print(real(Path({str(low / 'blue' / 'x')!r})), real(Path({str(bound / 'real' / 'x')!r})), "
             f"real(Path({str(odd / 'a:b, c' / 'x')!r})), real(Path({str(odd / upper_name / 'x')!r})), "
             f"real(Path({str(odd / 'u' / 'x')!r})), real(Path({str(odd / 'y' / 'x')!r})))")
    lowers = ":".join(str(odd / name).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")
                      for name in ("a:b, c", "x\\", "y"))
    upper = str(odd / upper_name).replace("\\", "\\\\").replace(",", "\\,")  # (probe UUU: its escapes kept)
    options = f"lowerdir={lowers},upperdir={upper},workdir={odd / 'work'}"
    # Probe TTT: an overlay of one class folder whose upper folder lies in the tree overlay's upper folder: the
    # path is shown by both, and checked as each shows it.
    inner, one = up / "inner", tmp_path / "one"
    for folder in (inner, one / "up", one / "work", one / "merged", one / "merged2", one / "work2"):
        folder.mkdir(parents=True)
    # Probe UUU: 70 overlays sharing one lower folder (a Docker image's layer) filled the 64 spellings looked
    # at, and one over the 70th hid an output in its lower folder; an overlay shown only through a bind of one
    # of its folders was placed at the bind as if at the overlay's root.
    shared, solo = tmp_path / "shared", tmp_path / "solo"
    for folder in (shared / "L" / "tree", shared / "E", shared / "n", solo / "L" / "tree", solo / "U" / "tree",
                   solo / "W", solo / "m", solo / "b", *(shared / f"m{i}" for i in range(70))):
        folder.mkdir(parents=True)
    later += ("; from retrain.outputs.declared import in_a_view; "
              f"print(in_a_view(Path({str(inner / 'g.pb')!r}), Path({str(merged)!r})), "
              f"in_a_view(Path({str(low / 'red' / 'g.pb')!r}), Path({str(one / 'merged')!r})), "
              f"in_a_view(Path({str(tmp_path / 'elsewhere.pb')!r}), Path({str(merged)!r})), "
              f"in_a_view(Path({str(shared / 'L' / 'tree' / 'g.pb')!r}), Path({str(shared / 'n' / 'tree')!r})), "
              f"real(Path({str(solo / 'U' / 'tree' / 'x')!r})))")
    script += (f" ; mount -t overlay c -o lowerdir={low / 'red'},upperdir={one / 'up'},workdir={one / 'work'} "
               f"{one / 'merged'} && mount -t overlay d -o lowerdir={one / 'up'},upperdir={inner},"
               f"workdir={one / 'work2'} {one / 'merged2'} && for i in $(seq 0 69); do mount -t overlay s$i -o "
               f"lowerdir={shared / 'L'}:{shared / 'E'} {shared}/m$i; done && mount -t overlay n -o "
               f"lowerdir={shared / 'm69'}:{shared / 'E'} {shared / 'n'} && mount -t overlay solo -o "
               f"lowerdir={solo / 'L'},upperdir={solo / 'U'},workdir={solo / 'W'} {solo / 'm'} && "
               f"mount --bind {solo / 'm' / 'tree'} {solo / 'b'} && umount {solo / 'm'}")
    script += (f" ; mount -t overlay n -o lowerdir={merged},upperdir={nested / 'up'},workdir={nested / 'work'} "
               f"{nested / 'merged'} && mount --bind {bound / 'real'} {bound / 'low'} && mount -t overlay b -o "
               f"lowerdir={bound / 'low'},upperdir={bound / 'up'},workdir={bound / 'work'} {bound / 'merged'} && "
               f"mount -t overlay o -o {shlex.quote(options)} {odd / 'merged'} && "
               f"{sys.executable} -c {shlex.quote(later)}")
    done = in_own_mounts(script, timeout=120)
    assert done.stdout.splitlines() == [
        f"{merged / 'red' / 'g.pb'} {merged / 'blue' / 'g.pb'} {low / 'sub' / 'g.pb'}",
        f"retrain: error: --output_graph {up / 'red' / 'g.pb'} would write into --image_dir {merged}, which the run "
        "reads; choose a --output_graph outside it",
        f"{nested / 'merged' / 'blue' / 'x'} {bound / 'merged' / 'x'} {odd / 'merged' / 'x'} {odd / 'merged' / 'x'} "
        f"{odd / 'u' / 'x'} {odd / 'merged' / 'x'}", f"True True False True {solo / 'b' / 'x'}"], \
        done.stdout + done.stderr
    assert not (up / "red" / "g.pb").exists()


def test_an_output_that_leads_into_proc_is_refused(colour_tree: Path, tmp_path: Path, outputs,
                                                  tiny_module: Path) -> None:
    """Probe GGG: `--output_graph /dev/stdout` (a link to /proc/self/fd/1) with stdout sent to a new, empty file
    was taken for a link to that file and replaced by the graph: /dev/stdout became a regular file, exit 0. Here
    a link of the test's own to /proc/self/fd/1; and `--saved_model_dir /proc/self` failed only after training."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    with open(tmp_path / "printed.txt", "w") as printed:
        done = subprocess.run([sys.executable, "-m", "retrain", *flags(
            image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=5,
            **{**outputs, "output_graph": link})], stdout=printed, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 2 and re.sub(r"/proc/\d+/", "/proc/PID/", done.stderr.splitlines()[-1]) == (
        f"retrain: error: --output_graph {link} leads to /proc/PID/fd/1, which the kernel makes up (a process's open "
        "files, its settings), not a place for files; choose a path on a disk for --output_graph (to see it on "
        "stdout, write it to a file, then cat that)"), done.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    error = retrain(colour_tree, tiny_module, {**outputs, "saved_model_dir": "/proc/self"}, expect=2)
    assert error.startswith("retrain: error: --saved_model_dir /proc/self leads to /proc/self, which the kernel")


def test_an_output_folder_replaced_by_a_link_into_the_tree_while_the_run_goes_on_is_not_written(
        tmp_path: Path) -> None:
    """Probe GGG: the output folder swapped for a link into the image tree after the run's checks (at `Step 0`)
    put the graph, labels, report and SavedModel among the red photos, exit 0. Each write checks again."""
    from retrain.errors import RetrainError
    from retrain.outputs import (Input, Output, atomic_write_bytes, check_clashes, check_replaceable_files,
                                 release_outputs, replace_folder)

    tree, out = make_colour_tree(tmp_path / "photos", per_class=2), tmp_path / "out"
    out.mkdir()
    outputs = [Output("--output_graph", out / "g.pb", content="graph"),
               Output("--saved_model_dir", out / "sm", kind="folder")]
    check_clashes(outputs, [Input("--image_dir", tree)])
    check_replaceable_files(outputs)
    before = digest(tree)
    out.rmdir()
    out.symlink_to(tree / "red")
    try:
        with pytest.raises(RetrainError, match=rf"^--output_graph {out / 'g.pb'} now lies inside --image_dir {tree}, "
                                               r"which the run reads \(a folder on its way was moved, replaced"):
            atomic_write_bytes(out / "g.pb", b"graph", flag="--output_graph")
        with pytest.raises(RetrainError, match=rf"^--saved_model_dir {out / 'sm'} now lies inside --image_dir"):
            replace_folder(out / "sm", lambda folder: folder.mkdir(), flag="--saved_model_dir")
    finally:
        release_outputs()
    assert digest(tree) == before
    out.unlink()  # once the run is over, the trees it read are no longer held against writes
    out.mkdir()
    atomic_write_bytes(tree / "red" / "written.txt", b"x", flag="--output_labels")


def test_an_output_folder_mounted_over_with_a_folder_of_the_tree_while_the_run_goes_on_is_not_written(
        tmp_path: Path) -> None:
    """Probe OOO: a bind mount of a class folder made over the output folder after the run's checks put the
    graph among the photos, exit 0: each write's check read the mount table of the run's start."""
    tree, out = make_colour_tree(tmp_path / "photos", per_class=2), tmp_path / "out"
    out.mkdir()
    script = (f"from pathlib import Path; import subprocess; from retrain.errors import RetrainError; "
              f"from retrain.outputs import Input, Output, atomic_write_bytes, check_clashes; "
              f"out, tree = Path({str(out)!r}), Path({str(tree)!r}); "
              f"check_clashes([Output('--output_graph', out / 'g.pb')], [Input('--image_dir', tree)]); "
              f"subprocess.run(['mount', '--bind', str(tree / 'red'), str(out)], check=True)\n"
              f"try: atomic_write_bytes(out / 'g.pb', b'graph', flag='--output_graph')\n"
              f"except RetrainError as error: print(error)")
    before = digest(tree)
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith(f"--output_graph {out / 'g.pb'} now lies inside --image_dir {tree}, which the run "
                                  "reads (a folder on its way was moved, replaced by a link or mounted over while "
                                  "the run went on); nothing was written there"), done.stdout + done.stderr
    assert digest(tree) == before


def test_a_path_through_another_processs_view_of_the_files_is_refused(colour_tree: Path, tmp_path: Path, outputs,
                                                                      tiny_module: Path) -> None:
    """Probe OOO: /proc/N/root of a process in another mount namespace (a container's, seen from the host)
    reads as a path of ours: the checks judged a harmless folder here, and the graph went into that process's
    view of the photos, exit 0; two runs wrote one folder, one through such a path, unlocked."""
    seen = tmp_path / "data"
    (seen / "red").mkdir(parents=True)  # here, an empty folder; there, the photos' red folder
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              f"mount --bind {colour_tree} {seen} && exec sleep 120"])
    try:
        through = Path(f"/proc/{other.pid}/root") / str(seen).lstrip("/")
        for _ in range(100):
            if (through / "red" / "red_000.jpg").exists():
                break
            time.sleep(0.1)
        before = digest(colour_tree)
        for change in ({"output_graph": through / "red" / "g.pb"}, {"image_dir": through}):
            error = retrain(colour_tree, tiny_module, {**outputs, **change}, expect=2)
            flag, path = next(iter(change.items()))
            assert error == (f"retrain: error: --{flag} {path} leads into another view of the files than this "
                             "process's, through a link the kernel makes up (/proc/N/root or /proc/N/cwd of a process "
                             "in another mount namespace, such as a container's) or a current folder that a mount "
                             "now covers, where its place cannot be checked against the run's other files; give that "
                             "place's path as this system sees it")
        assert digest(colour_tree) == before and not any(seen.rglob("*.pb"))
        retrain(colour_tree, tiny_module, {**outputs, "output_graph": Path("/proc/self/root") / str(
            outputs["output_graph"]).lstrip("/")})  # this process's own view: the place itself
    finally:
        other.kill()
        other.wait()


def test_an_output_that_is_a_link_in_the_tree_to_a_file_outside_is_refused(colour_tree: Path, tmp_path: Path,
                                                                          outputs, tiny_module: Path) -> None:
    """The check judged the link by the file it points to (outside the tree), but the write replaces the link: a
    graph landed in a class folder, and with a .jpg name the next run took it for a photo of that class."""
    earlier = tmp_path / "old.pb"
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": earlier})
    for name in ("g.pb", "zz.jpg"):
        link = colour_tree / "red" / name
        link.symlink_to(earlier if name == "g.pb" else tmp_path / "nowhere.jpg")
        error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": link}, expect=2)
        assert f"--output_graph {link} would write into --image_dir" in error, error
        assert link.is_symlink()
        link.unlink()


def test_an_output_onto_a_photo_that_a_class_folder_links_to_is_refused(colour_tree: Path, tmp_path: Path,
                                                                        outputs, tiny_module: Path) -> None:
    elsewhere = tmp_path / "my_photos"
    for i in range(4):
        colour_photo(elsewhere / f"yellow_{i}.jpg", (220, 220, 40), seed=90 + i)
    (colour_tree / "yellow").symlink_to(elsewhere)
    before = digest(elsewhere)
    error = retrain(colour_tree, tiny_module, {**outputs, "output_labels": elsewhere / "yellow_0.jpg"}, expect=2)
    assert "--output_labels" in error
    # New files there are refused too: the next run would read them as yellow photos (retrain's own pictures).
    (elsewhere / "nested").mkdir()
    colour_photo(elsewhere / "nested" / "yellow_9.jpg", (220, 220, 40), seed=99)
    before = digest(elsewhere)
    for flag, value in (("summaries_dir", elsewhere / "logs"), ("saved_model_dir", elsewhere / "nested" / "model"),
                        ("output_graph", elsewhere / "graph.pb"), ("checkpoint_path", elsewhere / "ckpt")):
        error = retrain(colour_tree, tiny_module, {**outputs, flag: value}, expect=2)
        assert re.search(rf"--{flag} .* would write into {re.escape(str(elsewhere))}.*, which --image_dir reads "
                         r"through a link or a mount in it; choose a", error), error
    assert digest(elsewhere) == before and sorted(p.name for p in elsewhere.iterdir()) == [
        "nested", "yellow_0.jpg", "yellow_1.jpg", "yellow_2.jpg", "yellow_3.jpg"]



def test_an_output_into_an_empty_folder_that_the_tree_links_to_is_refused(colour_tree: Path, tmp_path: Path,
                                                                           outputs, tiny_module: Path) -> None:
    """A linked folder with no image yet (a class still empty, or an empty folder linked inside a class) was not
    protected: the run wrote its TensorBoard pictures there, and the next run trained on the sprite as a photo."""
    empty_class, empty_inside = tmp_path / "sf", tmp_path / "ext"
    empty_class.mkdir()
    empty_inside.mkdir()
    (colour_tree / "sunflowers").symlink_to(empty_class)
    (colour_tree / "red" / "ext").symlink_to(empty_inside)
    for folder in (empty_class, empty_inside):
        error = retrain(colour_tree, tiny_module, {**outputs, "summaries_dir": folder / "logs"}, expect=2)
        assert re.fullmatch(rf"retrain: error: --summaries_dir {re.escape(str(folder / 'logs'))}\S* would write into "
                            rf"{re.escape(str(folder))}, which --image_dir reads through a link or a mount in it; "
                            r"choose a --summaries_dir outside it", error), error
        assert list(folder.iterdir()) == []


def test_other_labels_beside_an_earlier_models_files_that_stay_are_refused(colour_tree: Path, tmp_path: Path,
                                                                          outputs, tiny_module: Path) -> None:
    """The labels of model A (with the report listing A's files) given as --output_labels of model B, whose graph
    goes elsewhere, were replaced silently: A's graph then met B's labels. So did a rerun with new classes that
    dropped --output_tflite (the earlier TFLite model stayed beside the new labels, and label-image named its
    scores with them, exit 0), and B's graph written over A's with A's labels left. The same labels again are
    fine: an older model that names its classes rightly; so is a TF.js folder, which holds its own labels."""
    a = tmp_path / "a"
    a.mkdir()
    model_a = {**outputs, "output_graph": a / "g.pb", "output_labels": a / "l.txt"}
    retrain(colour_tree, tiny_module, model_a, output_tflite=a / "m.tflite", output_tfjs=tmp_path / "web")
    labels_a = (a / "l.txt").read_bytes()
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    b_graph, b_labels = tmp_path / "b.pb", tmp_path / "b.txt"
    error = retrain(other_tree, tiny_module, {**model_a, "output_graph": b_graph}, expect=2)
    assert error == (f"retrain: error: this run replaces {a / 'l.txt'} of the earlier model that {a / 'report.json'} "
                     f"describes ({len(COLOURS)} labels) but leaves its {a / 'g.pb'}, {a / 'm.tflite'}: with other "
                     "labels they would not match, and that model would name its classes wrongly. Write those "
                     "outputs again in this run, move them away with a copy of that model's labels file and "
                     "report.json (label-image finds their labels there), or choose other paths")
    error = retrain(other_tree, tiny_module, model_a, expect=2)  # the graph again, but not the TFLite model
    assert f"but leaves its {a / 'm.tflite'}: with other labels" in error
    error = retrain(other_tree, tiny_module, {**model_a, "output_labels": b_labels}, expect=2)  # A's labels left
    assert f"this run replaces {a / 'g.pb'} of the earlier model" in error and f"leaves its {a / 'l.txt'}," in error
    # Renamed beside them: refused without first saying that the run replaces that model's report (probe TT).
    result = invoke(retrain_command, flags(image_dir=other_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           **{**model_a, "output_labels": a / "classes.txt"}), expect=2)
    assert "this run replaces" in result.stderr and "holds the report of the model" not in result.stderr
    moved = tmp_path / "moved"  # the folder moved: its report still names a/; the files are beside it
    a.rename(moved)
    error = retrain(other_tree, tiny_module, {**model_a, "output_graph": b_graph, "output_labels": moved / "l.txt"},
                    expect=2)
    assert f"this run replaces {moved / 'l.txt'} of the earlier model" in error and str(moved / "g.pb") in error
    moved.rename(a)
    assert (a / "l.txt").read_bytes() == labels_a and not b_graph.exists() and not b_labels.exists()
    retrain(colour_tree, tiny_module, model_a)  # the same labels: the TFLite model is an older one of them
    # That rerun's report lists the TFLite model it left (probe JJJ: it forgot it, and a rerun with new classes
    # then left it beside other labels, exit 0), so that rerun is refused as before.
    run = json.loads((a / "report.json").read_text())["run"]
    assert run["kept_files"] == [str(a / "m.tflite")] and run["files"][-1] == str(a / "m.tflite")
    assert f"but leaves its {a / 'm.tflite'}: with other labels" in retrain(other_tree, tiny_module, model_a, expect=2)
    retrain(other_tree, tiny_module, model_a, output_tflite=a / "m.tflite")  # the whole set again (not TF.js)
    assert (a / "l.txt").read_bytes() != labels_a


def test_an_earlier_models_saved_model_or_web_folder_is_not_replaced_while_its_graph_stays(
        colour_tree: Path, tmp_path: Path, outputs, tiny_module: Path) -> None:
    """Model B's --saved_model_dir (or --output_tfjs) over model A's, with A's graph and labels elsewhere left:
    exit 0, A lost its SavedModel, and A's report listed B's as A's own, so label-image warned that B's right
    labels were wrong (probe Y). Such a folder holds its labels, so it may stay when the rest is replaced."""
    a = tmp_path / "a"
    a.mkdir()
    model_a = {**outputs, "output_graph": a / "g.pb", "output_labels": a / "l.txt"}
    retrain(colour_tree, tiny_module, model_a, saved_model_dir=a / "sm", output_tfjs=a / "web")
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    model_b = {**outputs, "output_graph": tmp_path / "b.pb", "output_labels": tmp_path / "b.txt"}
    for flag, folder in (("saved_model_dir", a / "sm"), ("output_tfjs", a / "web")):
        before = sorted(path.read_bytes() for path in folder.rglob("*") if path.is_file())
        error = retrain(other_tree, tiny_module, model_b, expect=2, **{flag: folder})
        assert error == (f"retrain: error: this run replaces {folder} of the earlier model that {a / 'report.json'} "
                         f"describes ({len(COLOURS)} labels) but leaves its {a / 'g.pb'}, {a / 'l.txt'}: that model "
                         "would lose it, and its report would list another model's as its own. Write those outputs "
                         "again in this run, move them away with a copy of that model's labels file and report.json "
                         "(label-image finds their labels there), or choose other paths")
        assert sorted(path.read_bytes() for path in folder.rglob("*") if path.is_file()) == before
    retrain(other_tree, tiny_module, model_a)  # its graph and labels replaced: the folders stay, whole models


def test_an_output_that_is_a_link_to_an_earlier_models_file_is_not_taken_for_it(colour_tree: Path, tmp_path: Path,
                                                                                  outputs, tiny_module: Path) -> None:
    """--output_graph elsewhere/g.pb, a link to model A's graph, with A's labels file as --output_labels and other
    classes: the check took the link for A's graph, so the run passed, replaced the link with a new file (as it
    does with a link) and left A's graph beside the new labels, exit 0. The file itself may be given."""
    a = tmp_path / "a"
    a.mkdir()
    model_a = {**outputs, "output_graph": a / "g.pb", "output_labels": a / "l.txt"}
    retrain(colour_tree, tiny_module, model_a)
    labels_a = (a / "l.txt").read_bytes()
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    link = tmp_path / "elsewhere" / "g.pb"
    link.parent.mkdir()
    link.symlink_to("../a/g.pb")
    error = retrain(other_tree, tiny_module, {**model_a, "output_graph": link}, expect=2)
    assert f"this run replaces {a / 'l.txt'} of the earlier model that {a / 'report.json'} describes " \
           f"({len(COLOURS)} labels) but leaves its {a / 'g.pb'}: with other labels" in error, error
    assert error.endswith(f"choose other paths ({link} is a link to {a / 'g.pb'}; a run replaces such a link with a "
                          "new file, not the file it points to: give that file's own path to write it)"), error
    assert (a / "l.txt").read_bytes() == labels_a and link.is_symlink()
    retrain(other_tree, tiny_module, model_a)  # the graph itself: the whole model again, read through the link too
    assert (a / "l.txt").read_bytes() != labels_a and link.read_bytes() == (a / "g.pb").read_bytes()
    # A labels output that is a link to model A's labels is judged as A's labels (its report is beside them, not
    # beside the link: it was refused as "not a labels file"); the link is replaced, A's labels are left.
    b = tmp_path / "b"
    b.mkdir()
    (b / "l.txt").symlink_to("../a/l.txt")
    labels_a = (a / "l.txt").read_bytes()
    retrain(colour_tree, tiny_module, {**model_a, "output_graph": b / "g.pb", "output_labels": b / "l.txt"})
    assert not (b / "l.txt").is_symlink() and (a / "l.txt").read_bytes() == labels_a
    # An earlier model's file that is itself a link (a/g.pb -> a store): the same outputs again rewrite it.
    store = tmp_path / "store.pb"
    (a / "g.pb").rename(store)
    (a / "g.pb").symlink_to(store)
    retrain(colour_tree, tiny_module, model_a)
    assert not (a / "g.pb").is_symlink() and (a / "l.txt").read_bytes() != labels_a
    # A model whose graph is a link to another file (c/g.pb -> d/g.pb): a run writing d/g.pb and c/l.txt rewrites
    # the whole model, read through the link.
    c, d = tmp_path / "c", tmp_path / "d"
    c.mkdir()
    d.mkdir()
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": c / "g.pb", "output_labels": c / "l.txt"})
    (c / "g.pb").rename(d / "g.pb")
    (c / "g.pb").symlink_to(d / "g.pb")
    retrain(other_tree, tiny_module, {**outputs, "output_graph": d / "g.pb", "output_labels": c / "l.txt"})
    assert (c / "g.pb").is_symlink() and (c / "l.txt").read_text().count("\n") == len(COLOURS) - 1


def test_an_earlier_model_whose_report_is_above_a_folder_the_run_writes_is_seen(colour_tree: Path, tmp_path: Path,
                                                                               outputs, tiny_module: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The check read only the report beside each file or folder output: a graph in a sub-folder of its labels'
    folder (out/sub/g.pb, out/l.txt) was replaced by a run with other classes and other labels, and intermediate
    graphs stored into a model's folder replaced its graph of that name, exit 0: label-image then named the new
    scores with the old labels, without a warning. label-image finds the labels of such a graph too."""
    from retrain.inference.labels import labels_for

    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    model_a = {**outputs, "output_graph": a / "sub" / "g.pb", "output_labels": a / "l.txt"}
    retrain(colour_tree, tiny_module, model_a)
    assert labels_for(a / "sub" / "g.pb") == a / "l.txt"
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    b = tmp_path / "b"
    b.mkdir()
    error = retrain(other_tree, tiny_module, {**model_a, "output_labels": b / "l.txt"}, expect=2)
    assert error.startswith(f"retrain: error: this run replaces {a / 'sub' / 'g.pb'} of the earlier model that "
                            f"{a / 'report.json'} describes ({len(COLOURS)} labels) but leaves its "
                            f"{a / 'l.txt'}"), error
    with monkeypatch.context() as patch:  # a relative path from inside the sub-folder: its folder is "."
        patch.chdir(a / "sub")
        error = retrain(other_tree, tiny_module, {**model_a, "output_graph": Path("g.pb"),
                                                  "output_labels": b / "l.txt"}, expect=2)
        assert f"of the earlier model that {a / 'report.json'} describes" in error, error
    (tmp_path / "proj").symlink_to(a / "sub")  # the folders above a link's target count too (probe W)
    error = retrain(other_tree, tiny_module, {**model_a, "output_graph": tmp_path / "proj" / "g.pb",
                                              "output_labels": b / "l.txt"}, expect=2)
    assert f"of the earlier model that {a / 'report.json'} describes" in error, error
    with monkeypatch.context() as patch:  # a report above written by another user (anyone may write into /tmp)
        patch.setattr(os, "getuid", lambda: os.stat(a / "report.json").st_uid + 1)
        assert labels_for(a / "sub" / "g.pb") != a / "l.txt"
    (a / "sub" / "g.pb").rename(a / "intermediate_10.pb")  # a final graph named like an intermediate one
    retrain(colour_tree, tiny_module, {**model_a, "output_graph": a / "intermediate_10.pb"})
    graph_a = (a / "intermediate_10.pb").read_bytes()
    error = retrain(other_tree, tiny_module, {**model_a, "output_graph": b / "g.pb", "output_labels": b / "l.txt",
                                              "intermediate_output_graphs_dir": a}, intermediate_store_frequency=10,
                    expect=2)
    assert f"this run replaces {a / 'intermediate_10.pb'} of the earlier model that {a / 'report.json'}" in error
    assert (a / "intermediate_10.pb").read_bytes() == graph_a and not (b / "g.pb").exists()


@pytest.mark.integration  # two retrain processes at once
def test_a_run_is_refused_the_outputs_another_run_is_writing(colour_tree: Path, tmp_path: Path, outputs,
                                                              tiny_module: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs with the same outputs (the classic /tmp defaults, two terminals) each passed the checks at their
    start, then replaced each other's files: one model's graph beside the other's labels, exit 0 for both. While a
    run goes on, another that writes one of its outputs is refused; the cache, the TensorBoard folder (also when
    both plan the same run folder) and the checkpoint are shared as before, and a killed run holds nothing."""
    from retrain import pipeline

    outputs["output_graph"].symlink_to(tmp_path / "target.pb")  # a link output: the run writes the link, not this
    args = flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=10**8,
                 logging_verbosity="INFO", **outputs)
    log = tmp_path / "first.err"
    (tmp_path / "job_tmp").mkdir()  # a scheduler's job has a TMPDIR of its own: runs must see each other anyway
    with open(log, "w") as stderr:
        first = subprocess.Popen([sys.executable, "-m", "retrain", *args], stdout=subprocess.DEVNULL, stderr=stderr,
                                 env={**os.environ, "TMPDIR": str(tmp_path / "job_tmp")})
    try:
        deadline = time.monotonic() + 120
        while "Step 0:" not in log.read_text():  # training: the run holds its outputs
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        error = retrain(colour_tree, tiny_module, outputs, expect=2)
        assert error == (f"retrain: error: another retrain run (process {first.pid}) is writing --output_graph "
                         f"{outputs['output_graph']} now: two runs would replace each other's files; wait for it to "
                         "end, or choose another path for --output_graph")
        labels = outputs["output_labels"]
        error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": tmp_path / "g.pb",
                                                   "output_labels": labels.with_name("other.txt")}, expect=2)
        assert f"is writing {labels.with_name('report.json')} (the report beside --output_labels) now" in error
        assert error.endswith("or choose another folder for --output_labels"), error
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (planned,) = outputs["summaries_dir"].iterdir()  # the first run's: as if both started in the same second
        with monkeypatch.context() as patch:
            patch.setattr(pipeline, "run_dir", lambda _: planned)
            retrain(colour_tree, tiny_module, {**outputs, "output_graph": elsewhere / "g.pb",
                                               "output_labels": elsewhere / "l.txt"})  # same cache, logs, checkpoint
        assert planned.with_name(f"{planned.name}-2").is_dir()
        retrain(colour_tree, tiny_module, {**outputs, "output_graph": tmp_path / "target.pb",
                                           "output_labels": elsewhere / "l.txt"})  # what the first run's link names
        assert outputs["output_graph"].is_symlink()
    finally:
        first.kill()
        first.wait()
    retrain(colour_tree, tiny_module, outputs)
    assert outputs["output_graph"].is_file()
    from retrain.outputs.holding import LOCK_ROOT

    locks = Path(LOCK_ROOT) / f"retrain-locks-{os.getuid()}"  # a run removes its lock files as it lets go

    def holder(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except FileNotFoundError:  # another run (the other test worker's) let go of it meanwhile
            return None

    assert not [path for path in locks.iterdir() if holder(path) == str(os.getpid())]


def test_a_run_lets_go_of_its_outputs_when_it_ends_or_is_refused(colour_tree: Path, tmp_path: Path, outputs,
                                                                  tiny_module: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In a long-lived process (a notebook) a run's outputs stay held until its next run: a run in a terminal
    with the same outputs would be refused, naming the notebook. Let go when the run ends, and when it is refused
    after taking them (here: a photo where the graph goes)."""
    from retrain import api
    from retrain.outputs import holding as written

    api.retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=5, log_level=None, **outputs)
    assert written._HELD == []
    shutil.copyfile(next((colour_tree / "red").iterdir()), tmp_path / "photo.jpg")
    with pytest.raises(api.RetrainError, match="is not a frozen graph"):
        api.retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=5, log_level=None,
                    **{**outputs, "output_graph": tmp_path / "photo.jpg"})
    assert written._HELD == []
    monkeypatch.setattr(written, "LOCK_ROOT", str(tmp_path))
    saved = os.umask(0)
    try:  # the lock folder is private whatever the umask: no other user can hold a run's outputs against it
        written.hold_outputs([written.Output("--output_graph", tmp_path / "x.pb")])
        written.release_outputs()
    finally:
        os.umask(saved)
    assert stat.S_IMODE(os.stat(tmp_path / f"retrain-locks-{os.getuid()}").st_mode) == 0o700


def test_a_process_forked_during_a_run_does_not_keep_its_outputs_held(tmp_path: Path) -> None:
    """A multiprocessing worker forked while a run went on shares its lock files' descriptions: after the run was
    killed, the worker still held them, and the next run was refused as if the dead one were going on (probe W)."""
    script = f"""
import os, sys, time
from pathlib import Path
from retrain.outputs import Output, hold_outputs
hold_outputs([Output("--output_graph", Path({str(tmp_path / 'g.pb')!r}))])
worker = os.fork()
if worker == 0:  # the worker outlives the run
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(1, 2)
    time.sleep(60)
    os._exit(0)
print(worker, flush=True)
os._exit(0)  # the run ends as a killed one would: no release
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    worker = int(result.stdout)
    from retrain.outputs import Output, hold_outputs, release_outputs

    try:
        hold_outputs([Output("--output_graph", tmp_path / "g.pb")])
        release_outputs()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_refusal_names_the_run_holding_the_output_over_a_killed_runs_lock_file(tmp_path: Path) -> None:
    """A killed run leaves its lock file behind (the system only lets go of the lock); the next run to hold it
    writes its own process id over the old one, so a refusal names the run going on, not a number from both."""
    from retrain.errors import UsageError
    from retrain.outputs import Output, hold_outputs

    hold = f"""
import sys, time
from pathlib import Path
from retrain.outputs import holding as outputs
outputs.LOCK_ROOT = {str(tmp_path)!r}
outputs.hold_outputs([outputs.Output("--output_graph", Path({str(tmp_path / 'g.pb')!r}))])
print("held", flush=True)
time.sleep(float(sys.argv[1]))
outputs.os._exit(0)  # as a killed run: no release
"""
    subprocess.run([sys.executable, "-c", hold, "0"], check=True, capture_output=True, timeout=60)
    (stale,) = (tmp_path / f"retrain-locks-{os.getuid()}").iterdir()
    stale.write_text("4000000000\n")  # a longer process id than any the next run can have
    running = subprocess.Popen([sys.executable, "-c", hold, "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert running.stdout.readline() == "held\n"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("retrain.outputs.holding.LOCK_ROOT", str(tmp_path))
            with pytest.raises(UsageError, match=rf"another retrain run \(process {running.pid}\) is writing"):
                hold_outputs([Output("--output_graph", tmp_path / "g.pb")])
    finally:
        running.kill()
        running.wait()


def test_a_run_writing_inside_or_around_another_runs_output_is_refused(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The locks held exact paths only: a second run whose --summaries_dir (or graph) lay inside a running run's
    --saved_model_dir was accepted, and the first run, after all its training, found files it had not written in
    its SavedModel folder and failed, its other exports taken back (probe FF). Each lock file now says what it
    holds, and a run inside or around one that another run holds is refused before any work. What runs share (the
    cache, a TensorBoard run folder) was held by no lock file, so a SavedModel folder around it was accepted, and
    failed at the end (probe II)."""
    from retrain.errors import UsageError
    from retrain.outputs import Output, hold_outputs, release_outputs

    hold = f"""
import time
from pathlib import Path
from retrain.outputs import holding as outputs
outputs.LOCK_ROOT = {str(tmp_path)!r}
outputs.hold_outputs([outputs.Output("--saved_model_dir", Path({str(tmp_path / 'sm')!r}), kind="folder"),
                      outputs.Output("--output_graph", Path({str(tmp_path / 'a' / 'g.pb')!r})),
                      outputs.Output("--bottleneck_dir", Path({str(tmp_path / 'x' / 'cache')!r}), kind="tree",
                                     exclusive=False),
                      outputs.Output("--checkpoint_path", Path({str(tmp_path / 'ck')!r}), kind="entries",
                                     pattern=r"c\\.(index|data-\\d+-of-\\d+)",
                                     given=Path({str(tmp_path / 'ck' / 'c')!r}), exclusive=False)])
print("held", flush=True)
time.sleep(60)
"""
    running = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    monkeypatch.setattr("retrain.outputs.holding.LOCK_ROOT", str(tmp_path))
    try:
        assert running.stdout.readline() == "held\n"
        for output, where in [(Output("--summaries_dir", tmp_path / "sm" / "logs", kind="tree", exclusive=False),
                               "inside"),
                              (Output("--output_graph", tmp_path / "sm" / "g.pb"), "inside"),
                              (Output("--output_tfjs", tmp_path / "a", kind="folder"), "around")]:
            with pytest.raises(UsageError) as refused:
                hold_outputs([Output("--output_labels", tmp_path / "b" / "labels.txt"), output])
            theirs = f"--saved_model_dir {tmp_path / 'sm'}" if where == "inside" else \
                f"--output_graph {tmp_path / 'a' / 'g.pb'}"
            assert str(refused.value) == (
                f"another retrain run (process {running.pid}) is writing {theirs} now, and this run's "
                f"{output.named()} lies {where} it: two runs would replace each other's files; wait for it to end, "
                f"or choose another path for {output.flag}")
        # Beside them, and sharing the cache, which runs share: held.
        hold_outputs([Output("--output_graph", tmp_path / "b" / "g.pb"),
                      Output("--bottleneck_dir", tmp_path / "x" / "cache", kind="tree", exclusive=False)])
        release_outputs()
        around = Output("--saved_model_dir", tmp_path / "x", kind="folder")  # around that run's cache
        with pytest.raises(UsageError) as refused:
            hold_outputs([around])
        assert str(refused.value).startswith(
            f"another retrain run (process {running.pid}) is writing --bottleneck_dir {tmp_path / 'x' / 'cache'} "
            f"now, and this run's --saved_model_dir {tmp_path / 'x'} lies around it")
        with pytest.raises(UsageError) as refused:  # the folder of that run's checkpoint ("inside", probe OO)
            hold_outputs([Output("--saved_model_dir", tmp_path / "ck", kind="folder")])
        assert str(refused.value).startswith(
            f"another retrain run (process {running.pid}) is writing --checkpoint_path {tmp_path / 'ck' / 'c'} "
            f"now, and this run's --saved_model_dir {tmp_path / 'ck'} lies around it")
        (tmp_path / "sm").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "sm")  # the same folder, spelt otherwise: both named
        with pytest.raises(UsageError) as refused:
            hold_outputs([Output("--saved_model_dir", tmp_path / "link", kind="folder")])
        assert str(refused.value).startswith(
            f"another retrain run (process {running.pid}) is writing --saved_model_dir {tmp_path / 'sm'}, which is "
            f"this run's --saved_model_dir {tmp_path / 'link'}, now: two runs")
    finally:
        running.kill()
        running.wait()


def test_lock_files_killed_runs_left_are_removed_and_none_go_into_the_users_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A killed run's lock files stayed for ever (7,808 in /tmp/retrain-locks-0 here); a run removes those no run
    holds, and keeps those of runs going on. Where /tmp cannot be written, tempfile's last resort is the current
    folder: the lock folder went there, among the user's files (probe Y)."""
    import tempfile

    from retrain.outputs import Output, hold_outputs, release_outputs

    hold = f"""
import sys, time
from pathlib import Path
from retrain.outputs import holding as outputs
outputs.LOCK_ROOT = {str(tmp_path)!r}
outputs.hold_outputs([outputs.Output("--output_graph", Path({str(tmp_path)!r}) / name) for name in sys.argv[2:]])
print("held", flush=True)
time.sleep(float(sys.argv[1]))
outputs.os._exit(0)  # as a killed run: no release
"""
    subprocess.run([sys.executable, "-c", hold, "0", "a.pb", "b.pb", "c.pb"], check=True, capture_output=True,
                   timeout=60)
    locks = tmp_path / f"retrain-locks-{os.getuid()}"
    assert len(list(locks.iterdir())) == 3
    running = subprocess.Popen([sys.executable, "-c", hold, "60", "d.pb"], stdout=subprocess.PIPE, text=True)
    try:
        assert running.stdout.readline() == "held\n"
        (live,) = [path for path in locks.iterdir() if path.read_text().startswith(f"{running.pid}\n")]
        monkeypatch.setattr("retrain.outputs.holding.LOCK_ROOT", str(tmp_path))
        hold_outputs([Output("--output_graph", tmp_path / "e.pb")])
        release_outputs()
        assert list(locks.iterdir()) == [live]
    finally:
        running.kill()
        running.wait()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr("retrain.outputs.holding.LOCK_ROOT", str(tmp_path / "no such folder"))
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # what gettempdir gives when no temporary folder is writable
    hold_outputs([Output("--output_graph", tmp_path / "e.pb")])
    release_outputs()
    assert list(work.iterdir()) == []
    assert f"neither {tmp_path / 'no such folder'} nor another temporary folder can be written" in caplog.text


def test_a_stop_while_tensorflow_loads_lets_go_of_the_outputs(colour_tree: Path, tiny_module: Path, outputs,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM while TensorFlow was imported, after the checks had held the outputs, left the run's lock files
    behind (3 to 7 a stop, probe II): only the run let go of them, and it had not started."""
    import signal

    import retrain.features.module  # noqa: F401 - it binds import_hub as it is first imported: not to the patch
    import retrain.pipeline  # noqa: F401
    import retrain.tfenv

    real = retrain.tfenv.import_hub

    def signalled(**kwargs: object) -> object:
        assert list(locks.iterdir()), "the outputs are held by now"
        os.kill(os.getpid(), signal.SIGTERM)
        return real(**kwargs)

    locks = tmp_path / f"retrain-locks-{os.getuid()}"
    monkeypatch.setattr("retrain.outputs.holding.LOCK_ROOT", str(tmp_path))
    monkeypatch.setattr(retrain.tfenv, "import_hub", signalled)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, **outputs), expect=143)
    assert result.stderr.strip().splitlines()[-1].startswith("retrain: terminated;")
    assert list(locks.iterdir()) == []


def test_an_intermediate_graph_is_not_saved_over_a_file_another_run_is_writing(colour_tree: Path, tmp_path: Path,
                                                                               outputs, tiny_module: Path) -> None:
    """Run A's --output_graph D/intermediate_10.pb, run B's intermediate graphs in D, at once: B's intermediate
    graph of step 10 replaced A's model, both exit 0 (probe Y). No lock covered that one file of B's "entries"."""
    folder = tmp_path / "D"
    folder.mkdir()
    hold = f"""
import time
from pathlib import Path
from retrain.outputs import Output, hold_outputs
hold_outputs([Output("--output_graph", Path({str(folder / 'intermediate_10.pb')!r}))])
print("held", flush=True)
time.sleep(60)
"""
    other = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "held\n"
        result = retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10,
                         intermediate_output_graphs_dir=folder, how_many_training_steps=25)
    finally:
        other.kill()
        other.wait()
    assert (f"intermediate graph {folder / 'intermediate_10.pb'} not saved: another retrain run (process "
            f"{other.pid}) is writing that file") in result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["intermediate_20.pb"]


def test_a_lock_file_another_run_looks_at_for_a_moment_does_not_refuse_a_run(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run's pruning or held_elsewhere locks a file no run holds for a moment to look at it: a run taking
    that file just then was refused, naming a process long gone (probe AA, from reading the code)."""
    import errno
    import fcntl

    from retrain.outputs import holding as written

    monkeypatch.setattr(written, "LOCK_ROOT", str(tmp_path))
    real_flock, looked = fcntl.flock, []

    def busy_once(fd: int, operation: int) -> None:  # the other run holds it for the first attempt only
        if operation & fcntl.LOCK_EX and not looked:
            looked.append(fd)
            raise OSError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        real_flock(fd, operation)

    monkeypatch.setattr(written.fcntl, "flock", busy_once)
    written.hold_outputs([written.Output("--output_graph", tmp_path / "g.pb")])
    assert len(written._HELD) == 1 and looked
    written.release_outputs()


def test_a_run_whose_outputs_cannot_be_held_says_so(colour_tree: Path, tmp_path: Path, outputs, tiny_module: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file (or another user's folder) where the lock folder goes: the run went on unheld without a word."""
    from retrain.outputs import holding as written

    monkeypatch.setattr(written, "LOCK_ROOT", str(tmp_path))
    (tmp_path / f"retrain-locks-{os.getuid()}").write_text("")
    result = retrain(colour_tree, tiny_module, outputs)
    assert ("this run's outputs are not held against other runs on this machine: "
            f"{tmp_path / f'retrain-locks-{os.getuid()}'} is not a folder of this user's") in result.stderr


def test_a_model_written_from_a_linked_folder_is_found_after_its_folder_moves(colour_tree: Path, tiny_module: Path,
                                                                             tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """In a folder reached through a link (cd ~/link/proj), the report records the run's folder without the link,
    while `$PWD/out/graph.pb` keeps it: the graph seemed outside the labels' folder, so after `mv out out_v1`
    label-image found no labels for it, and the next run replaced its labels without a word (probe P). Following
    the link when the report was read failed once the link led elsewhere (probe R)."""
    from retrain.config import RetrainConfig

    (tmp_path / "real" / "proj" / "out").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    project = tmp_path / "link" / "proj"
    monkeypatch.chdir(project)
    monkeypatch.setattr(RetrainConfig, "output_labels", tmp_path / "output_labels.txt")  # not the machine's /tmp
    model = {"output_graph": project / "out" / "graph.pb", "output_labels": Path("out/labels.txt"),
             "summaries_dir": tmp_path / "logs", "bottleneck_dir": tmp_path / "bn",
             "checkpoint_path": tmp_path / "ck" / "ck"}
    retrain(colour_tree, tiny_module, model)
    Path("out").rename("out_v1")
    (tmp_path / "link").unlink()  # and the link now leads elsewhere (current -> v2): it decided at write time
    (tmp_path / "v2" / "proj" / "out").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "v2")
    photo = next(path for path in sorted((colour_tree / "blue").iterdir()) if path.is_file())
    printed = invoke(label_image_command, ["--graph", "out_v1/graph.pb", "--image", str(photo), "--top_k", "1"])
    assert printed.stdout.split()[0] in COLOURS and "WARNING" not in printed.stderr
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    error = retrain(other_tree, tiny_module, {**model, "output_graph": Path("out_v1/new.pb"),
                                              "output_labels": Path("out_v1/labels.txt")}, expect=2)
    assert error.startswith("retrain: error: this run replaces out_v1/labels.txt of the earlier model that "
                            "out_v1/report.json describes") and "but leaves its out_v1/graph.pb" in error


def test_outputs_through_a_link_and_dot_dot_are_written_where_that_leads(colour_tree: Path, tiny_module: Path,
                                                                         tmp_path: Path) -> None:
    """`--output_graph $PWD/../out/g.pb` in a folder reached through a link: `..` leads out of the link's target,
    but tempfile and TensorFlow clean paths as text (link/../out as ./out): the run failed after training
    ('cannot write --output_graph ...: No such file or directory'; probe R), and TensorFlow's files would have gone
    to another folder."""
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "elsewhere" / "out").mkdir()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "link").symlink_to(tmp_path / "elsewhere" / "deep")
    via = tmp_path / "w" / "link" / ".."
    retrain(colour_tree, tiny_module, {"output_graph": via / "out" / "g.pb", "output_labels": via / "out" / "l.txt",
                                       "summaries_dir": via / "logs", "bottleneck_dir": via / "bn",
                                       "checkpoint_path": via / "ck" / "ck"})
    assert sorted(p.name for p in (tmp_path / "elsewhere" / "out").iterdir()) == ["g.pb", "l.txt", "report.json"]
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["bn", "ck", "deep", "logs", "out"]
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["link"]
    # Where the system cannot follow the path, it is refused as before, never redirected: a link to nothing before
    # the `..` led (followed as text) to the folder beside its missing target, and replaced a model there (probe S).
    (tmp_path / "w" / "dangling").symlink_to(tmp_path / "elsewhere" / "nothing")
    (tmp_path / "w" / "out").mkdir()
    (tmp_path / "w" / "out" / "file.pb").write_bytes(b"")  # a file before `..`: realpath alone would pass it
    for bad in (tmp_path / "w" / "dangling" / ".." / "out", tmp_path / "w" / "out" / "g.pb" / ".." / "out",
                tmp_path / "w" / "out" / "file.pb" / ".." / "out"):
        error = retrain(colour_tree, tiny_module, {"output_graph": bad / "g.pb", "output_labels": bad / "l.txt",
                                                   "summaries_dir": via / "logs", "bottleneck_dir": via / "bn",
                                                   "checkpoint_path": via / "ck" / "ck"}, expect=2)
        assert f"{bad} does not exist" in error or f"{bad} is a file" in error, error
    assert sorted(p.name for p in (tmp_path / "elsewhere" / "out").iterdir()) == ["g.pb", "l.txt", "report.json"]
    assert sorted(p.name for p in (tmp_path / "w" / "out").iterdir()) == ["file.pb"]


def test_a_saved_model_in_a_folder_of_its_own_keeps_its_labels_when_the_next_run_has_new_classes(
        colour_tree: Path, tmp_path: Path, outputs, tiny_module: Path) -> None:
    """TF Hub's tutorial gives each run its own --saved_model_dir (saved_models/$(date +%s)) and keeps the default
    graph and labels: the run after it with new classes was refused, as the earlier SavedModel was left beside
    labels that are no longer its own. A SavedModel holds its labels now (assets.extra/labels.txt), which
    label-image reads without --labels; one without them (an earlier version's) is still protected."""
    first, second = tmp_path / "saved_models" / "1", tmp_path / "saved_models" / "2"
    retrain(colour_tree, tiny_module, outputs, saved_model_dir=first)
    assert (first / "assets.extra" / "labels.txt").read_text() == "".join(f"{c}\n" for c in sorted(COLOURS))
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    retrain(other_tree, tiny_module, outputs, saved_model_dir=second)
    assert outputs["output_labels"].read_text() == "".join(f"{c}\n" for c in sorted(COLOURS)[1:])
    photo = next(path for path in sorted((colour_tree / "blue").iterdir()) if path.is_file())
    printed = invoke(label_image_command, ["--graph", str(first), "--image", str(photo)])
    assert sorted(line.split()[0] for line in printed.stdout.splitlines()) == sorted(COLOURS)
    assert "WARNING" not in printed.stderr  # the labels file now holds two labels: those would not do
    (tmp_path / "l.txt").write_text("cyan\nmagenta\nyellow\n")
    warned = invoke(label_image_command, ["--graph", str(first), "--labels", str(tmp_path / "l.txt"),
                                          "--image", str(photo)])
    assert f"--labels {tmp_path / 'l.txt'} are not the labels --graph {first} holds" in warned.stderr
    # The classic habit, --labels /tmp/output_labels.txt: another run's labels file (its report says so) named
    # the scores, exit 0, with that warning only (probe VV). Refused; a file of other names by hand still warns.
    third = {**outputs, "output_graph": tmp_path / "c" / "g.pb", "output_labels": tmp_path / "c" / "l.txt",
             "checkpoint_path": tmp_path / "c" / "ck"}
    (tmp_path / "c").mkdir()
    retrain(make_colour_tree(tmp_path / "cmy", per_class=8, classes={
        "cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)}), tiny_module, third)
    refused = invoke(label_image_command, ["--graph", str(first), "--labels", str(third["output_labels"]),
                                           "--image", str(photo)], expect=2)
    assert refused.stderr == (f"label-image: error: --labels {third['output_labels']} are another model's: the "
                              f"{tmp_path / 'c' / 'report.json'} beside them names them for the files of its run, "
                              f"and --graph {first} holds labels of its own (its assets.extra/labels.txt); leave "
                              "--labels out\n") and refused.stdout == ""
    # The SavedModel's own labels translated by hand, given its own run's labels file: that run's report lists
    # the SavedModel, so they are not "another model's" (refused, probe WW): a warning.
    translated = tmp_path / "c" / "sm"
    retrain(make_colour_tree(tmp_path / "cmy2", per_class=8, classes={
        "cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)}), tiny_module,
        {**third, "output_graph": tmp_path / "c" / "g2.pb"}, saved_model_dir=translated)
    (translated / "assets.extra" / "labels.txt").write_text("Zyan\nMagenta\nGelb\n")
    for model in (translated, tmp_path / "served" / "1"):  # in place, or copied away (probe XX)
        if model != translated:
            shutil.copytree(translated, model)
        result = invoke(label_image_command, ["--graph", str(model), "--labels", str(third["output_labels"]),
                                              "--image", str(photo)])
        assert f"--labels {third['output_labels']} are not the labels --graph {model} holds" in result.stderr
    (second / "assets.extra" / "labels.txt").unlink()  # as a SavedModel of an earlier version
    error = retrain(colour_tree, tiny_module, outputs, saved_model_dir=tmp_path / "saved_models" / "3", expect=2)
    assert f"but leaves its {second}: with other labels" in error


@pytest.mark.parametrize("run", [None, [], {"flags": {"output_labels": ""}, "files": ["graph.pb"]}])
def test_a_hand_edited_report_beside_the_outputs_is_no_traceback(colour_tree: Path, tmp_path: Path, tiny_module: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, run: object) -> None:
    """A report.json of retrain's format beside --output_labels whose "run" is not an object was an AttributeError
    traceback; one naming an empty labels file, with outputs in the current folder, a ValueError one."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"format": "retrain-report", "labels": ["x", "y"], "run": run}))
    monkeypatch.chdir(out)
    retrain(colour_tree, tiny_module, {"output_graph": Path("graph.pb"), "output_labels": Path("labels.txt"),
                                       "summaries_dir": tmp_path / "logs", "bottleneck_dir": tmp_path / "bn",
                                       "checkpoint_path": tmp_path / "ck" / "ck"})
    assert json.loads((out / "report.json").read_text())["labels"] == sorted(COLOURS)


def test_a_picture_that_fails_to_draw_costs_a_warning_not_the_model(colour_tree: Path, tiny_module: Path, outputs,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged font made Pillow raise OSError('invalid outline') while drawing the confusion matrix: the run
    stopped with no model written, and 'finished files are kept'."""
    from retrain.insight import pictures

    def broken(**_: object) -> None:
        raise OSError("invalid outline")

    monkeypatch.setattr(pictures, "confusion_matrix_image", broken)
    result = retrain(colour_tree, tiny_module, outputs)
    assert "TensorBoard pictures of the test split could not be made: OSError: invalid outline" in result.stderr
    assert result.stderr.count("validation confusion matrix pictures could not be made, so no more are drawn: "
                               "OSError: invalid outline") == 1
    assert outputs["output_graph"].is_file() and (outputs["output_labels"].parent / "report.json").is_file()


def test_an_interrupt_while_the_pictures_are_drawn_keeps_every_output(colour_tree: Path, tiny_module: Path, outputs,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The test split's pictures were drawn inside the exports' set: a Ctrl-C after the last 'Wrote' line, while
    they were drawn (minutes with thousands of classes), took back the graph, labels and SavedModel just written.
    Then its last line said "rerun to continue", with nothing to continue."""
    from retrain.insight import tensorboard

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tensorboard, "write_misclassified", interrupted)  # the test split's, after the exports
    saved_model = outputs["output_graph"].parent / "saved_model"
    from retrain.cli import retrain_command

    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           saved_model_dir=saved_model, **outputs), expect=130)
    assert result.stderr.endswith("retrain: interrupted; every output is written, only the test split's TensorBoard "
                                  "pictures are not complete\n") and "taken back" not in result.stderr
    assert outputs["output_graph"].is_file() and (saved_model / "saved_model.pb").is_file()
    assert json.loads((outputs["output_labels"].parent / "report.json").read_text())["labels"] == sorted(COLOURS)
    assert outputs["output_labels"].read_text() == "".join(f"{c}\n" for c in sorted(COLOURS))


def test_a_stop_signal_while_the_set_is_kept_lets_it_finish_and_says_every_output_is_written(
        colour_tree: Path, tiny_module: Path, outputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM just after the report's 'Wrote' line, as the set was being kept (its journal marked, the earlier
    files kept aside being deleted): they stayed under temporary names, with the journal, and the last line said
    "rerun to continue" though every output was written. The signal now waits until the set is kept."""
    import signal

    from retrain import journal
    from retrain.cli import retrain_command

    retrain(colour_tree, tiny_module, outputs)  # an earlier model, whose files the next run keeps aside
    marked = journal.Journal.keep

    def keep_and_stop(self: journal.Journal) -> None:
        marked(self)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(journal.Journal, "keep", keep_and_stop)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           **outputs), expect=143)
    assert result.stderr.endswith("retrain: terminated; every output is written, only the test split's "
                                  "TensorBoard pictures are not complete\n"), result.stderr[-300:]
    assert sorted(path.name for path in outputs["output_graph"].parent.iterdir() if path.is_file()) == [
        "graph.pb", "labels.txt", "report.json"]  # nothing kept aside, no journal


def test_a_stop_signal_after_the_run_has_returned_says_every_output_is_written(
        colour_tree: Path, tiny_module: Path, outputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT 0.04 to 0.13 s after the report line, once the pictures were drawn (in the teardown: the run's
    locks let go, stdout's wrapper closed), said "finished files ... rerun to continue" (probe GG)."""
    import contextlib
    import signal

    from retrain import cli

    real = cli.commentary

    @contextlib.contextmanager
    def stopped_at_its_end():
        with real():
            yield
        signal.raise_signal(signal.SIGTERM)  # (SIGINT's handler is the CLI's only where Python's default was)

    monkeypatch.setattr(cli, "commentary", stopped_at_its_end)
    result = invoke(cli.retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module,
                                               how_many_training_steps=20, **outputs), expect=143)
    assert result.stderr.endswith("retrain: terminated; it came as the run ended: every output is written\n")
    assert (outputs["output_labels"].parent / "report.json").is_file()


class _SignalInFinaliser:
    """Raises a real stop signal from its `__del__`: the handler's exception is dropped there, as it was in the
    TensorFlow finalisers running while the TFLite converter worked (probe EE)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        import signal

        signal.raise_signal(self.signum)


@pytest.mark.parametrize("where", ["export", "training"])
def test_a_stop_signal_a_finaliser_drops_still_stops_the_run_at_its_next_safe_point(
        colour_tree: Path, tiny_module: Path, outputs, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """SIGTERM while the TFLite converter ran was raised inside a finaliser, which dropped it: the run went on
    for seconds to its end, kept the whole new set, then said 'terminated; finished files ... rerun to continue'
    (probe EE). The signal now stops the run at the next written output (the set is taken back) or training step."""
    import signal

    from retrain.cli import retrain_command
    from retrain.exporters.graph import FrozenGraph
    from retrain.train import VectorSteps

    retrain(colour_tree, tiny_module, outputs)  # the earlier model
    before = {name: (outputs["output_graph"].parent / name).read_bytes() for name in ("graph.pb", "labels.txt")}
    patched = FrozenGraph if where == "export" else VectorSteps
    method = "write" if where == "export" else "run"
    real, calls = getattr(patched, method), []

    def dropping(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 or where == "export":
            _SignalInFinaliser(signal.SIGTERM)  # collected at once: its __del__ raises, and the error is dropped
        return real(self, *args, **kwargs)

    monkeypatch.setattr(patched, method, dropping)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module,
                                           how_many_training_steps=200, **outputs), expect=143)
    if where == "export":
        assert "the run's files are taken back, as the run was interrupted while writing them" in result.stderr
        assert result.stderr.endswith("retrain: terminated; the earlier outputs are as they were, cached "
                                      "bottlenecks are kept: rerun to continue\n"), result.stderr[-400:]
    else:
        assert len(calls) == 2 and "Step 199" not in result.stderr and "Wrote" not in result.stdout
    assert {name: (outputs["output_graph"].parent / name).read_bytes() for name in before} == before


def _faulty_module(path: Path, fault: str) -> Path:
    """A feature-vector module with a fault: NaN for reddish images (a log of a negative number); values over
    float16's range for them; or NaN for reddish images that are not their own mirror image (a crop of one)."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class Faulty(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            means = tf.reduce_mean(images, [1, 2])
            if fault == "nan for red":
                return tf.concat([means, tf.math.log(0.6 - means[:, :1])], axis=1)
            if fault == "huge for red":
                return means * tf.where(means[:, :1] > 0.6, 2e5, 1.0)
            # "nan for cropped red": NaN for a red image that is not its own mirror image (the photos are)
            lopsided = tf.reduce_max(tf.abs(images - tf.reverse(images, axis=[2])), [1, 2, 3]) > 1e-3
            return tf.concat([means, tf.where(lopsided & (means[:, 0] > 0.6), np.nan, 0.0)[:, None]], axis=1)

    tf.saved_model.save(Faulty(), str(path))
    return path


@pytest.mark.parametrize("fault, dtype, reason", [
    ("nan for red", "float32", "the module gave it a vector holding NaN"),
    ("huge for red", "float16", "the module gave it a vector with values beyond what --bottleneck_dtype float16 "
                                "holds (its largest is 65504)")])
def test_vectors_that_are_not_numbers_skip_their_images_and_are_not_cached(colour_tree: Path, tmp_path: Path,
                                                                           outputs, fault: str, dtype: str,
                                                                           reason: str) -> None:
    """A module that gives NaN for some images (or values a float16 cache makes infinite): the run stopped at step
    0 blaming --learning_rate, and each rerun cached the NaN vectors again, found the shard damaged and moved it
    aside."""
    module = _faulty_module(tmp_path / "faulty", fault)
    for _ in range(2):  # and again: nothing of them was cached
        result = retrain(colour_tree, module, outputs, bottleneck_dtype=dtype)
        skipped = [line for line in result.stderr.splitlines() if reason in line and str(colour_tree) in line]
        reds = len(list((colour_tree / "red").iterdir()))  # 12: ten named, the rest counted in one line
        assert len(skipped) == 10 and all("skipping " + str(colour_tree / "red") in line for line in skipped)
        counted = [line for line in result.stderr.splitlines() if f"skipping {reds - 10} more" in line]
        assert len(counted) == 1 and reason.split(" (")[0] in counted[0] and counted[0].endswith(f" ({reds - 10})")
        assert "damaged" not in result.stderr and "RuntimeWarning" not in result.stderr
        assert outputs["output_labels"].read_text().split() == ["blue", "green"]


def _mirror_photo(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    """A noisy photo that is its own mirror image, saved losslessly."""
    half = np.random.default_rng(seed).normal(0, 20, (40, 24, 3)) + np.array(rgb)
    pixels = np.clip(np.concatenate([half, half[:, ::-1]], axis=1), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_distorted_variants_that_are_not_numbers_leave_their_images_out_or_stop_the_run(colour_tree: Path,
                                                                                        tmp_path: Path,
                                                                                        outputs) -> None:
    """NaN for distorted variants only: with none left the run ended in a traceback from the sampler; a class
    with none left was trained on nothing (exit 0); with some left, the skip count and report.json counted images
    the run did not train on."""
    module = _faulty_module(tmp_path / "faulty", "nan for cropped red")
    reds = tmp_path / "reds"
    for label, rgb in (("red", (230, 40, 40)), ("pink", (250, 120, 120))):
        for i in range(10):
            _mirror_photo(reds / label / f"{label}_{i}.png", rgb, seed=600 + i)
    error = retrain(reds, module, outputs, expect=1, random_crop=10)
    assert error == ("retrain: error: no training image is left: none of their distorted variants could be used "
                     "(the warnings above give the reasons); check --tfhub_module, or train without distortions")
    shutil.rmtree(colour_tree / "red")
    shutil.copytree(reds / "red", colour_tree / "red")
    error = retrain(colour_tree, module, outputs, expect=1, random_crop=10)  # red trained on nothing, exit 0
    assert error.startswith("retrain: error: class 'red' has no training image left: the distorted variants of "
                            "each could not be used"), error
    for i in range(6):  # greenish photos in the red folder: their variants are fine, so red keeps some
        _mirror_photo(colour_tree / "red" / f"greenish_{i}.png", (40, 200, 60), seed=700 + i)
    result = retrain(colour_tree, module, outputs, random_crop=10)
    lost = [line for line in result.stderr.splitlines() if "skipping " + str(colour_tree / "red" / "red_") in line]
    assert lost and f"skipped {len(lost)} image(s) that could not be read, decoded or used" in result.stderr
    # said as a variant's (probe ZZN: "the module gave it a vector holding NaN", of a photo whose own was fine)
    assert all("the module gave one of its distorted variants a vector holding NaN" in line for line in lost), lost
    found = int(re.search(r"found 3 classes in .*: (\d+) training", result.stderr).group(1))
    report = json.loads(outputs["output_labels"].with_name("report.json").read_text())
    assert report["run"]["images"]["training"] == found - len(lost)  # what trained, not what the split held


def test_a_saved_model_that_retrain_did_not_write_is_refused(colour_tree: Path, tiny_module: Path, outputs,
                                                             tmp_path: Path) -> None:
    foreign = tmp_path / "someone_elses_model"
    shutil.copytree(tiny_module, foreign)  # a valid SavedModel, but not one of ours
    before = digest(foreign)
    error = retrain(colour_tree, tiny_module, {**outputs, "saved_model_dir": foreign}, expect=2)
    assert "--saved_model_dir" in error and "did not write" in error
    assert digest(foreign) == before


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path) -> None:
    from retrain.errors import RetrainError
    from retrain.outputs import replace_folder

    target = tmp_path / "model"
    replace_folder(target, lambda tmp: (tmp.mkdir(), (tmp / "weights").write_text("old")), flag="--saved_model_dir")
    before = digest(target)
    with pytest.raises(RetrainError, match="cannot write --saved_model_dir"):
        replace_folder(target, lambda tmp: None, flag="--saved_model_dir")  # a writer that produced nothing
    assert digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_file_edited_in_a_folder_retrain_wrote_is_refused(tmp_path: Path) -> None:
    from retrain.errors import UsageError
    from retrain.names import OWNER_MARKER
    from retrain.outputs import check_replaceable_folder, replace_folder

    target = tmp_path / "web"

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "labels.txt").write_text("daisy\nroses\n")
        (tmp / "model.json").write_text("{}")

    replace_folder(target, write, flag="--output_tfjs")
    check_replaceable_folder(target, flag="--output_tfjs")  # as written: ours to replace
    (target / "labels.txt").write_text("Gänseblümchen\nRosen\n")  # the user translated the labels
    before = digest(target)
    with pytest.raises(UsageError, match=r"--output_tfjs .* holds files changed since retrain wrote them "
                                         r"\(e\.g\. labels\.txt\)"):
        check_replaceable_folder(target, flag="--output_tfjs")
    assert digest(target) == before
    # A marker from before hashes were recorded lists names only: its files count as unchanged.
    marker = json.loads((target / OWNER_MARKER).read_text())
    del marker["sha256"]
    (target / OWNER_MARKER).write_text(json.dumps(marker))
    check_replaceable_folder(target, flag="--output_tfjs")


@pytest.mark.parametrize("recorded", [True, False])
def test_a_folder_retrain_wrote_for_another_flag_is_not_replaced_by_another_format(tmp_path: Path,
                                                                                     recorded: bool) -> None:
    """A SavedModel folder given to --output_tfjs by a slip was replaced by a TF.js model with no word: the marker
    now says which flag wrote the folder (older markers tell by the files: saved_model.pb, model.json)."""
    from retrain.errors import UsageError
    from retrain.names import OWNER_MARKER
    from retrain.outputs import check_replaceable_folder, replace_folder

    target = tmp_path / "served"
    replace_folder(target, lambda tmp: (tmp.mkdir(), (tmp / "saved_model.pb").write_bytes(b"\x08\x01")),
                   flag="--saved_model_dir")
    if not recorded:  # a marker written before the flag was recorded
        marker = json.loads((target / OWNER_MARKER).read_text())
        del marker["flag"]
        (target / OWNER_MARKER).write_text(json.dumps(marker))
    check_replaceable_folder(target, flag="--saved_model_dir")  # the same output again: fine
    before = digest(target)
    with pytest.raises(UsageError, match=r"--output_tfjs .*served holds what retrain wrote for --saved_model_dir, "
                                         r"another kind of model; choose another folder for --output_tfjs"):
        check_replaceable_folder(target, flag="--output_tfjs")
    assert digest(target) == before



def test_a_tflite_model_is_told_by_its_one_signature_and_a_cut_one_is_not_ours(colour_tree: Path, tiny_module: Path,
                                                                            outputs) -> None:
    """The FlatBuffer is read without TensorFlow: retrain's model has one signature, serving_default, from image to
    prediction. A copy cut anywhere is judged without an error (cut after its signature, it is still ours)."""
    from retrain.filekinds import is_retrain_tflite, tflite_signatures

    model = outputs["output_graph"].with_name("m.tflite")
    retrain(colour_tree, tiny_module, outputs, output_tflite=model)
    data = model.read_bytes()
    assert tflite_signatures(data) == [("serving_default", ["image"], ["prediction"])] and is_retrain_tflite(data)
    judged = [is_retrain_tflite(data[:cut]) for cut in range(0, len(data), max(1, len(data) // 500))]
    assert judged[0] is False and all(isinstance(ours, bool) for ours in judged)
    with pytest.raises(ValueError, match="past the end"):  # an offset beyond the file is no table of zeros
        tflite_signatures(b"\xff\xff\xff\x7fTFL3" + bytes(8))
    # Bounded: vectors whose entries share one long name cost gigabytes to read whole (a 440 KB file took 2.9 GB).
    with pytest.raises(ValueError, match="too many entries"):
        tflite_signatures(data, most=0)
    with pytest.raises(ValueError, match="too long a name"):
        tflite_signatures(data, longest=len("serving_default") - 1)

@pytest.mark.parametrize("case", ["photo_at_graph", "notes_at_tflite", "notes_at_int8_variant", "foreign_report",
                                  "folder_at_report", "folder_at_thresholds", "pipe_at_graph",
                                  "photo_as_intermediate_graph", "notes_as_checkpoint_data", "photo_as_checkpoint_index",
                                  "other_models_checkpoint",
                                  "csv_at_labels", "script_at_labels", "unsorted_labels_at_labels",
                                  "settings_at_labels", "shell_script_at_labels", "word_list_at_labels",
                                  "other_models_labels_at_labels", "latin1_labels_at_labels",
                                  "other_models_graph_at_graph", "other_models_tflite_at_tflite",
                                  "detector_tflite_at_tflite", "retrain_graph_at_tflite"])
def test_an_existing_file_of_another_kind_is_never_replaced(colour_tree: Path, tiny_module: Path, outputs,
                                                            tmp_path: Path, case: str) -> None:
    out = outputs["output_graph"].parent
    mine = tmp_path / "mine"
    mine.mkdir()
    photo = colour_photo(mine / "holiday.jpg", COLOURS["red"], seed=9)
    (mine / "notes.txt").write_text("my notes, do not lose")
    changes, target, expected = {
        "photo_at_graph": ({"output_graph": photo}, photo, "--output_graph .* is not a frozen graph retrain wrote "
                                                           r"\(it is a JPEG image\)"),
        "notes_at_tflite": ({"output_tflite": mine / "notes.txt"}, mine / "notes.txt",
                            r"--output_tflite .* is not a TFLite model retrain wrote \(it is a text file\)"),
        **{name: ({"output_tflite": mine / "detector.tflite"}, mine / "detector.tflite",
                  r"--output_tflite .*detector\.tflite exists and is not a TFLite model retrain wrote \(it is "
                  r"another TFLite model\)") for name in ("other_models_tflite_at_tflite", "detector_tflite_at_tflite")},
        "notes_at_int8_variant": ({"output_tflite": mine / "model.tflite", "tflite_quantization": "float32,int8"},
                                  mine / "model_int8.tflite",
                                  r"model_int8\.tflite \(the int8 model beside --output_tflite\) exists and is not"),
        "foreign_report": ({}, out / "report.json",
                           r"report\.json \(the report beside --output_labels\) exists and is not a retrain report "
                           r"\(it is a JSON file\)"),
        "folder_at_report": ({}, out / "report.json",
                             r"report\.json \(the report beside --output_labels\) is a folder"),
        "folder_at_thresholds": ({"multi_label": True}, outputs["output_labels"].with_name("labels_thresholds.txt"),
                                 r"labels_thresholds\.txt \(the thresholds beside --output_labels\) is a folder"),
        "pipe_at_graph": ({"output_graph": mine / "pipe"}, mine / "pipe",  # as /dev/null would be, for root
                          r"--output_graph .*pipe is not a regular file \(a device or a pipe\)"),
        "photo_as_intermediate_graph": ({"intermediate_store_frequency": 10},
                                        outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb",
                                        r"intermediate_10\.pb \(in --intermediate_output_graphs_dir .*intermediate\) "
                                        r"exists and is not a frozen graph retrain wrote \(it is a JPEG image\)"),
        # retrain's own graph was called "another model's frozen graph" (probe FF)
        "retrain_graph_at_tflite": ({"output_tflite": mine / "m.tflite"}, mine / "m.tflite",
                                    r"--output_tflite .*m\.tflite exists and is not a TFLite model retrain wrote "
                                    r"\(it is a frozen graph retrain wrote\)"),
        "other_models_graph_at_graph": ({"output_graph": mine / "production.pb"}, mine / "production.pb",
                                        r"--output_graph .*production\.pb exists and is not a frozen graph retrain "
                                        r"wrote \(it is another model's frozen graph\)"),
        "notes_as_checkpoint_data": ({}, outputs["checkpoint_path"].with_name("ckpt.data-00000-of-00001"),
                                     r"--checkpoint_path .*ckpt\.data-00000-of-00001 exists beside no checkpoint "
                                     r"index"),
        "photo_as_checkpoint_index": ({}, outputs["checkpoint_path"].with_name("ckpt.index"),
                                      r"ckpt\.index exists and is not a checkpoint of the new layer \(it is a "
                                      r"JPEG image\)"),
        "other_models_checkpoint": ({}, outputs["checkpoint_path"].with_name("ckpt.index"),
                                    r"ckpt\.(index exists and is not a checkpoint of the new layer \(it|"
                                    r"data-00000-of-00001 exists and is not a checkpoint of the new layer \(its index "
                                    r"ckpt\.index) is other data\)"),
        # Text, but neither the labels of a retrain report beside it nor classic ones: the user's, not replaced.
        **{name: ({"output_labels": mine / file}, mine / file,
                  rf"--output_labels .*{file} exists and is not a labels file retrain can tell it wrote \(it is a "
                  r"text file\)")
           for name, file in (("csv_at_labels", "tags.csv"), ("script_at_labels", "script.py"),
                              ("unsorted_labels_at_labels", "imagenet_labels.txt"), ("settings_at_labels", "app.env"),
                              ("shell_script_at_labels", "run.sh"), ("word_list_at_labels", "todo.txt"),
                              ("other_models_labels_at_labels", "coco_labels.txt"))},
        "latin1_labels_at_labels": ({"output_labels": mine / "etiquettes.txt"}, mine / "etiquettes.txt",
                                    r"--output_labels .*etiquettes\.txt exists and is not a labels file retrain can "
                                    r"tell it wrote \(it is a text file not in UTF-8\)"),
    }[case]
    target.parent.mkdir(parents=True, exist_ok=True)
    if case == "notes_at_int8_variant":
        target.write_text("my own int8 experiment")
    elif case == "pipe_at_graph":
        os.mkfifo(target)
    elif case.startswith("photo_as"):
        shutil.copy(photo, target)
    elif case == "notes_as_checkpoint_data":
        target.write_text("my notes")
    elif case == "other_models_checkpoint":  # another model's weights, saved the TF2 way at the same prefix
        from retrain.tfenv import import_tensorflow

        tf = import_tensorflow()
        tf.train.Checkpoint(dense=tf.Module(), kernel=tf.Variable(tf.zeros([4, 2]))).write(str(target.with_suffix("")))
    elif case == "foreign_report":
        target.write_text('{"my": "experiment notes"}')
    elif case.startswith("folder_at"):
        (target / "keep").mkdir(parents=True)
    elif case == "other_models_graph_at_graph":
        target.write_bytes(FOREIGN_GRAPH)
    elif case == "retrain_graph_at_tflite":
        target.write_bytes(EARLIER_GRAPH)
    elif case.endswith("_tflite_at_tflite"):  # a model of the user's; the detector has retrain's names and more
        from retrain.tfenv import import_tensorflow

        tf = import_tensorflow()
        class Detector(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image")])
            def serve(self, image):
                return {"prediction": tf.nn.softmax(tf.reduce_mean(image, [1, 2])), "boxes": tf.reduce_max(image, [1, 2])}

        if case == "detector_tflite_at_tflite":
            model = Detector()
            function = model.serve
        else:
            model = function = tf.function(lambda x: {"y": tf.nn.relu(2.0 * x)},
                                           input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        target.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], model).convert())
        if case == "detector_tflite_at_tflite":
            from retrain.filekinds import tflite_signatures

            assert tflite_signatures(target.read_bytes()) == [("serving_default", ["image"], ["boxes", "prediction"])]
    elif case == "latin1_labels_at_labels":
        target.write_bytes("ch\u00e2teau\ncaf\u00e9\n".encode("latin-1"))
    elif case.endswith("_at_labels"):
        target.write_text({"csv_at_labels": "image,label\nimg_001.jpg,cat\nimg_002.jpg,dog\n",  # in sorted order
                           "script_at_labels": "import sys\nprint(sys.argv)\n",  # in sorted order too
                           "unsorted_labels_at_labels": "Background\nTench\nGoldfish\n",
                           "settings_at_labels": "API_KEY=abc123\n",  # one line
                           "shell_script_at_labels": "#!/bin/sh\necho hi\n",
                           "word_list_at_labels": "call mom\nbuy milk\npay rent 200\n",  # as the classic labels were
                           "other_models_labels_at_labels": "person\nbicycle\ntraffic light\n"}[case])
    before = digest(mine) | digest(out)
    error = retrain(colour_tree, tiny_module, {**outputs}, expect=2, **changes)
    assert re.search(expected, error), error
    assert "move the" in error or "choose a" in error
    assert digest(mine) | digest(out) == before  # refused before any work: nothing written, nothing replaced
    assert target.exists() and (case != "pipe_at_graph" or stat.S_ISFIFO(target.stat().st_mode))


def test_a_classic_checkpoint_and_labels_at_the_sample_boundary_are_told_as_retrains(tmp_path: Path) -> None:
    """The readers that let a run replace its own earlier files: the classic retrain.py's TF1 checkpoint (its
    variables under final_retrain_ops/) is the new layer's, another checkpoint is not; a labels file whose 64 kB
    sample ends inside a two-byte character is still UTF-8 text, a byte that is no UTF-8 before the end is not."""
    from retrain.filekinds import is_checkpoint_index, is_labels, is_text
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    for scope, ours in (("final_retrain_ops/weights", True), ("dense", False)):
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            with tf.compat.v1.variable_scope(scope):
                tf.compat.v1.get_variable("final_weights", [4, 2])
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = tf.compat.v1.train.Saver().save(session, str(tmp_path / scope.replace("/", "_") / "ckpt"))
        assert is_checkpoint_index(Path(prefix + ".index").read_bytes()) is ours
    labels = [f"label_{i:05d}" for i in range(5461)]  # 65,532 bytes of labels, then one with é across 65,536
    labels.append("caf\u00e9" + "s" * 40)
    text = "".join(f"{label}\n" for label in labels).encode()
    assert text[65535:65537] == "\u00e9".encode()
    (tmp_path / "labels.txt").write_bytes(text)
    (tmp_path / "report.json").write_text(json.dumps({"format": "retrain-report", "labels": labels, "run": {}}))
    assert is_text(text) and is_labels(text, tmp_path / "labels.txt")
    assert not is_text(text[:65530] + b"\xff" + text[65531:])


def test_sizes_are_said_in_a_unit_that_shows_them() -> None:
    from retrain.outputs import bytes_text

    assert [bytes_text(n) for n in (999, 1000, 99_999, 100_000, 99_999_999, 100_000_000, 2_100_000_000)] == [
        "999 bytes", "1.0 kB", "100.0 kB", "0.1 MB", "100.0 MB", "0.1 GB", "2.1 GB"]


def test_a_graph_cut_short_at_an_output_is_judged_without_an_error() -> None:
    """The GraphDef reader (no TensorFlow before the checks) on every cut of a graph: a node record that runs past
    the end made it read beyond the data (an IndexError, a traceback) before it said "not a graph"."""
    from retrain.filekinds import is_graph_def, is_retrain_graph

    for end in range(len(EARLIER_GRAPH)):
        cut = EARLIER_GRAPH[:end]
        assert not is_retrain_graph(cut, "final_result")  # at most the Placeholder: no final_result
        assert is_graph_def(cut) == (end == 28)  # the Placeholder's record is whole there
    assert is_retrain_graph(EARLIER_GRAPH, "final_result") and not is_retrain_graph(FOREIGN_GRAPH, "final_result")
    # A TF1 model with the default names (Placeholder -> Softmax) is not retrain's; one whose final node is this
    # run's --final_tensor_name is (an earlier run with the same flag).
    tf1_model = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"Softmax", b"Softmax", b"Placeholder")
    tags = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"tags", b"Sigmoid", b"Placeholder")
    assert not is_retrain_graph(tf1_model, "final_result") and is_graph_def(tf1_model)
    assert is_retrain_graph(tags, "tags") and not is_retrain_graph(tags, "final_result")


UNTOLD = "is not a frozen graph retrain can tell it wrote (its output node is"  # a graph no report vouches for


def test_a_rerun_without_its_final_tensor_name_replaces_the_graph_its_report_lists(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    """`--final_tensor_name scores`, then the same run without it: the graph, listed by the report beside it, is
    retrain's and replaced (it was refused as "another model's frozen graph"). So is one the report beside the
    labels lists, in another folder or a sub-folder (refused before stop 32). A graph no report lists is still
    refused, the message naming the flag to give again."""
    from retrain.filekinds import score_nodes

    retrain(colour_tree, tiny_module, outputs, final_tensor_name="scores", intermediate_store_frequency=10,
            how_many_training_steps=40)
    assert score_nodes(outputs["output_graph"].read_bytes()) == ["scores"]
    for _ in range(2):  # its intermediate graphs too, also once a report without the flag has replaced its own
        retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=20,  # (refused then, probe MM)
                how_many_training_steps=40)
    assert score_nodes(outputs["output_graph"].read_bytes()) == ["final_result"]
    intermediate = outputs["intermediate_output_graphs_dir"]
    assert [score_nodes((intermediate / f"intermediate_{step}.pb").read_bytes()) for step in (10, 20)] == [
        ["scores"], ["final_result"]]  # step 10 is the first run's, which the later ones did not write

    apart = {**outputs, "output_labels": tmp_path / "labels.txt"}
    below = {**apart, "output_graph": tmp_path / "models" / "graph.pb"}
    (tmp_path / "models").mkdir()
    for where in (apart, below):  # the graph in a sibling folder of the labels, and in a sub-folder
        retrain(colour_tree, tiny_module, where, final_tensor_name="scores")
        assert score_nodes(where["output_graph"].read_bytes()) == ["scores"]
        retrain(colour_tree, tiny_module, where)
        assert score_nodes(where["output_graph"].read_bytes()) == ["final_result"]
    # Those folders copied, with a graph of the user's (its Softmax named as the report says) in the copy: the
    # copied report vouches for the bytes its run wrote, not for these (it was replaced, exit 0: probes KK, LL).
    # Moved instead, the graph is the run's, and the rerun replaces it.
    retrain(colour_tree, tiny_module, below, final_tensor_name="scores")
    copy = tmp_path / "copy"
    (copy / "models").mkdir(parents=True)
    for name in ("labels.txt", "report.json"):
        shutil.copyfile(tmp_path / name, copy / name)
    users = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"scores", b"Softmax", b"Placeholder")
    (copy / "models" / "graph.pb").write_bytes(users)
    copied = {**below, "output_labels": copy / "labels.txt", "output_graph": copy / "models" / "graph.pb"}
    assert UNTOLD in retrain(colour_tree, tiny_module, copied, expect=2)
    assert (copy / "models" / "graph.pb").read_bytes() == users
    (copy / "models" / "graph.pb").unlink()
    (tmp_path / "models" / "graph.pb").rename(copy / "models" / "graph.pb")  # the set moved instead
    retrain(colour_tree, tiny_module, copied)
    assert score_nodes((copy / "models" / "graph.pb").read_bytes()) == ["final_result"]
    # A copy of folders whose graph has moved, so that no listed path holds the original (probe LL): still not
    # the user's graph.
    retrain(colour_tree, tiny_module, copied, final_tensor_name="scores")
    shutil.copytree(copy, tmp_path / "copy2")
    (copy / "models" / "graph.pb").rename(copy / "models" / "moved.pb")
    (tmp_path / "copy2" / "models" / "graph.pb").write_bytes(users)
    copied2 = {**below, "output_labels": tmp_path / "copy2" / "labels.txt",
               "output_graph": tmp_path / "copy2" / "models" / "graph.pb"}
    assert UNTOLD in retrain(colour_tree, tiny_module, copied2, expect=2)
    assert (tmp_path / "copy2" / "models" / "graph.pb").read_bytes() == users
    retrain(colour_tree, tiny_module, apart, final_tensor_name="scores")
    earlier = apart["output_graph"].read_bytes()
    (tmp_path / "report.json").rename(tmp_path / "report.json.bak")  # no report lists the graph now
    error = retrain(colour_tree, tiny_module, apart, expect=2)
    assert "is not a frozen graph retrain can tell it wrote (its output node is 'scores', and no" in error
    assert error.endswith("(if retrain wrote it with --final_tensor_name scores, give that flag again)"), error
    assert apart["output_graph"].read_bytes() == earlier
    (tmp_path / "report.json.bak").rename(tmp_path / "report.json")
    # A graph of the user's beside that report, whose output has the name the report gives: the report lists the
    # graph in out/, not this file, so it is not replaced (a match by file name alone replaced it, probe GG).
    mine = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"scores", b"Softmax", b"Placeholder")
    (tmp_path / "graph.pb").write_bytes(mine)
    error = retrain(colour_tree, tiny_module, {**apart, "output_graph": tmp_path / "graph.pb"}, expect=2)
    assert UNTOLD in error and (tmp_path / "graph.pb").read_bytes() == mine
    # An output node no --final_tensor_name can name (a scope): no hint to give a flag that would be refused.
    (tmp_path / "graph.pb").write_bytes(graph_node(b"Placeholder", b"Placeholder") +
                                        graph_node(b"Net/Predictions/Softmax", b"Softmax", b"Placeholder"))
    error = retrain(colour_tree, tiny_module, {**apart, "output_graph": tmp_path / "graph.pb"}, expect=2)
    assert error.endswith("choose another --output_graph"), error
    # A report edited by hand to a name no node can have: it vouches for nothing, and no traceback (probe GG).
    from retrain.filekinds import is_retrain_graph, reported_final_names

    report, graph = tmp_path / "report.json", outputs["output_graph"]
    data = graph.read_bytes()
    assert reported_final_names(data, graph, report) == ["scores"]  # the very bytes that run wrote
    assert reported_final_names(data + b"\0", graph, report) == []  # other bytes: nothing vouches
    edited = json.loads(report.read_text())
    edited["run"]["graph_sha256"] = dict.fromkeys(edited["run"]["graph_sha256"], "\ud800")
    report.write_text(json.dumps(edited))
    assert reported_final_names(data, graph, report) == []  # and the graph (its node `scores`) is judged:
    assert is_retrain_graph(data, "x", graph, report) is False


def test_a_graphs_digest_is_of_the_bytes_written_not_of_what_lies_there_later(tmp_path: Path) -> None:
    """The report's graph_sha256 was read back from disk at its end: a user's file put in place of an intermediate
    graph during the run was recorded, and a later run replaced that user's graph elsewhere (probe MM)."""
    import hashlib

    from retrain.outputs import atomic_write_bytes, check_replaceable_files, written_sha256

    check_replaceable_files([])  # a run starts: an earlier run's digests in this process are forgotten
    graph = tmp_path / "intermediate_10.pb"
    atomic_write_bytes(graph, EARLIER_GRAPH, flag="--intermediate_output_graphs_dir", digest=True)
    graph.write_bytes(FOREIGN_GRAPH)  # the user's, put there while the run goes on
    assert written_sha256(graph) == hashlib.sha256(EARLIER_GRAPH).hexdigest()
    check_replaceable_files([])
    assert written_sha256(graph) == ""


def test_what_a_run_does_not_write_and_file_manager_clutter_never_block_it(colour_tree: Path, tiny_module: Path,
                                                                           outputs, tmp_path: Path) -> None:
    from retrain.errors import UsageError
    from retrain.outputs import check_replaceable_folder, replace_folder

    table = tmp_path / "classes.csv"  # a single-label CSV: no thresholds file is written, so none is judged
    table.write_text("path,labels\n" + "".join(f"{p.relative_to(colour_tree).as_posix()},{p.parent.name}\n"
                                               for p in sorted(colour_tree.rglob("*.jpg"))))
    thresholds = outputs["output_labels"].with_name("labels_thresholds.txt")
    thresholds.write_text("my tuned thresholds: red 0.3\n")
    retrain(colour_tree, tiny_module, outputs, labels_csv=table)
    assert thresholds.read_text() == "my tuned thresholds: red 0.3\n"
    thresholds.unlink()  # a folder run writes none either (probe ZZS: a link of that name into the photos refused)
    thresholds.symlink_to(next(colour_tree.rglob("*.jpg")))
    retrain(colour_tree, tiny_module, outputs)
    assert thresholds.is_symlink()
    folder = tmp_path / "web"
    replace_folder(folder, lambda tmp: (tmp.mkdir(), (tmp / "model.json").write_text("{}")), flag="--output_tfjs")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (folder / "._model.json").write_bytes(b"\0\5\26\7")  # Finder's companion of a file retrain wrote
    check_replaceable_folder(folder, flag="--output_tfjs")  # Finder and Explorer files are not the user's work
    (folder / "._thesis_draft.docx").write_bytes(b"\0\5\26\7")  # the companion of a file retrain did not write
    with pytest.raises(UsageError, match=r"holds files retrain did not write there \(e\.g\. \._thesis_draft\.docx\)"):
        check_replaceable_folder(folder, flag="--output_tfjs")


def test_files_put_in_the_way_of_outputs_while_the_run_goes_on_are_not_replaced(
        colour_tree: Path, tiny_module: Path, outputs, caplog: pytest.LogCaptureFixture) -> None:
    """The checks run before the work; what appears or changes in an output's place by the time it is written
    is judged again there, so a file saved there meanwhile is the user's and stays."""
    from retrain.config import RetrainConfig
    from retrain.errors import RetrainError
    from retrain.pipeline import prepare, run

    out = outputs["output_graph"].parent
    config = RetrainConfig(image_dir=colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=20,
                           saved_model_dir=out / "saved", intermediate_store_frequency=10, **outputs)
    run(config)
    bmp = (PHOTOS / "cat.bmp").read_bytes()
    cases = {"graph.pb": b"my notes\n", "labels.txt": b"Cat\nDog\n", "report.json": b'{"tool": "other"}\n',
             "saved/DEPLOY_NOTES.md": b"deploy with care\n", "new:graph.pb": b"my notes\n",
             # entries of a folder output that no one had made when the run was checked
             "new:checkpoint/ckpt.index": bmp}
    for name, data in cases.items():
        path = out / name.removeprefix("new:")
        if name.startswith("new:"):  # no file there when the run is checked; one saved there before it writes
            for gone in path.parent.glob(path.name.split(".")[0] + ".*"):  # a checkpoint's data file goes too
                gone.unlink()
        plan = prepare(config)
        path.write_bytes(data)
        with pytest.raises(RetrainError, match=r"appeared|changed while the run went on") as raised:
            run(config, plan=plan)
        assert str(path.parent if name.startswith("saved/") else path) in str(raised.value), name
        assert path.read_bytes() == data, name
        path.unlink()
    # An intermediate graph's: kept too, and the run goes on without that graph (the whole run stopped, probe QQ).
    path = out / "intermediate" / "intermediate_10.pb"
    path.unlink()
    plan = prepare(config)
    path.write_bytes(b"my notes\n")
    run(config, plan=plan)
    assert path.read_bytes() == b"my notes\n"
    assert f"intermediate graph {path} not saved: {path} (in --intermediate_output_graphs_dir" in caplog.text
    path.unlink()
    # Another run of the same model writing the same files meanwhile is no one's loss: this run replaces them.
    plan = prepare(config)
    labels = out / "labels.txt"
    (out / "report.json").unlink(missing_ok=True)  # so only the new labels file's content can vouch for it
    labels.write_bytes(b"".join(f"{name}\n".encode() for name in sorted(COLOURS)))
    run(config, plan=plan)


def test_a_folder_output_that_is_a_link_is_written_through_and_hidden_backups_stay(colour_tree: Path,
                                                                                   tiny_module: Path, outputs,
                                                                                   tmp_path: Path) -> None:
    out = outputs["output_graph"].parent
    target = tmp_path / "real_target"
    target.mkdir()
    (out / "model").symlink_to(target)
    backups = [out / ".graph.pb.old-v1", out / ".labels.txt.backup.tmp", out / ".model.old-june" / "README"]
    for path in backups:
        path.parent.mkdir(exist_ok=True)
        path.write_text("my backup\n")
        hours_ago = time.time() - 2 * 3600
        os.utime(path.parent if path.name == "README" else path, (hours_ago, hours_ago))
    for _run in range(2):  # the second replaces what the first wrote through the link
        retrain(colour_tree, tiny_module, {**outputs, "saved_model_dir": out / "model"})
        assert (out / "model").is_symlink() and (target / "saved_model.pb").is_file()
    assert all(path.read_text() == "my backup\n" for path in backups)
    assert not [p.name for p in [*out.iterdir(), *tmp_path.iterdir()] if ".retrain-" in p.name]


def test_retrains_own_files_are_replaced_by_a_rerun(colour_tree: Path, tiny_module: Path, outputs) -> None:
    tflite = outputs["output_graph"].with_name("model.tflite")
    extra = {"output_tflite": tflite, "tflite_quantization": "float32,dynamic", "multi_label": True,
             "intermediate_store_frequency": 10}
    retrain(colour_tree, tiny_module, outputs, **extra)
    first = digest(outputs["output_graph"].parent)
    inode = (outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb").stat().st_ino
    retrain(colour_tree, tiny_module, outputs, how_many_training_steps=30, **extra)  # graph, labels, report...
    second = digest(outputs["output_graph"].parent)
    for name in ("graph.pb", "model.tflite", "report.json", "labels_thresholds.txt", "checkpoint/ckpt.index"):
        path = str(outputs["output_graph"].parent / name)
        assert path in first and first[path] != second[path], name  # replaced by the second run
    snapshot = outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb"  # the same model at step 10: the
    assert first[str(snapshot)] == second[str(snapshot)]  # same bytes, written again (a new file, renamed there)
    assert snapshot.stat().st_ino != inode
    assert not [p for p in outputs["output_graph"].parent.rglob("*") if re.search(r"\.retrain-[0-9a-f]{6}-", p.name)]
    # Labels files an earlier run wrote are replaced: retrain's own for other classes, which the report beside it
    # lists, and the classic retrain.py's for these classes (folder names lowercased, other characters a space).
    ours = "".join(f"{name}\n" for name in sorted(COLOURS))
    report = outputs["output_graph"].parent / "report.json"
    outputs["output_labels"].write_text("Tulpen \U0001f337\nDaisy\n")
    report.write_text(json.dumps({**json.loads(report.read_text()), "labels": ["Tulpen \U0001f337", "Daisy"]}))
    retrain(colour_tree, tiny_module, outputs, how_many_training_steps=30, **extra)
    assert outputs["output_labels"].read_text() == ours
    named = make_colour_tree(colour_tree.parent / "named", per_class=6, classes={
        "Red Panda": COLOURS["red"], "blue_jay": COLOURS["blue"], "Green-Frog 2": COLOURS["green"]})
    report.unlink()
    outputs["output_labels"].write_bytes(b"green frog 2\r\nred panda\r\nblue jay\r\n")  # as on Windows
    retrain(named, tiny_module, outputs, how_many_training_steps=30)
    assert outputs["output_labels"].read_text() == "Green-Frog 2\nRed Panda\nblue_jay\n"


def test_a_labels_file_that_already_holds_this_runs_labels_is_replaced(tmp_path: Path) -> None:
    """With no report beside it and labels the classic tool could not have written, a labels file is the user's,
    unless it holds exactly what this run writes there (then replacing it changes nothing)."""
    from retrain.errors import UsageError
    from retrain.outputs import Output, check_replaceable_files

    labels = tmp_path / "labels.txt"
    labels.write_text("Blue Jay\nRed_Panda\n")
    outputs = [Output("--output_labels", labels, content="labels")]
    with pytest.raises(UsageError, match="exists and is not a labels file retrain can tell it wrote") as refused:
        check_replaceable_files(outputs)
    assert str(refused.value).endswith(  # what is missing: it said 'it is a text file' only (probe TT)
        "(no report.json beside it says which labels retrain wrote there; if it is an earlier model's labels file, "
        "delete it or move it with that model's files)")
    with pytest.raises(UsageError, match="exists and is not a labels file retrain can tell it wrote"):
        check_replaceable_files(outputs, unchanged={labels: (b"Blue Jay\nRed_Panda\nZebra\n",)})
    check_replaceable_files(outputs, unchanged={labels: (b"Blue Jay\nRed_Panda\n",)})


def classic_graph(classes: int, *, quantized: bool = False) -> bytes:
    """A frozen graph as the classic retrain.py wrote it (TF1 variables under final_retrain_ops/, frozen to
    constants read through Identity nodes), scoring `classes` classes; `quantized`: with a FakeQuant op on the
    logits, as it built the layer for a quantized module."""
    from retrain.tfenv import import_tensorflow

    v1 = import_tensorflow().compat.v1
    graph = v1.Graph()
    with graph.as_default(), v1.Session() as session:
        bottleneck = v1.placeholder(v1.float32, [None, 8], name="input/BottleneckInputPlaceholder")
        with v1.variable_scope("final_retrain_ops"):
            weights = v1.Variable(v1.ones([8, classes]), name="weights/final_weights", use_resource=False)
            biases = v1.Variable(v1.zeros([classes]), name="biases/final_biases", use_resource=False)
            logits = v1.add(v1.matmul(bottleneck, weights), biases, name="Wx_plus_b/add")
            if quantized:
                logits = v1.quantization.fake_quant_with_min_max_vars(logits, v1.constant(-6.0), v1.constant(6.0))
        v1.nn.softmax(logits, name="final_result")
        session.run(v1.global_variables_initializer())
        return v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(),
                                                             ["final_result"]).SerializeToString()


def test_the_classic_scripts_labels_go_with_its_graph(colour_tree: Path, tiny_module: Path, outputs,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic retrain.py's two files (/tmp/output_graph.pb and output_labels.txt; TensorFlow for Poets'
    retrained_graph.pb and retrained_labels.txt) from another dataset, no report: the labels file was refused as
    "not a labels file retrain can tell it wrote" on every classic user's first run (probes TT, VV). It is
    replaced with its graph when the names, the classic labels' form and the graph's class count say they are a
    pair; nothing else without a report is (probe BBB: a link to another model's graph, a to-do list or another
    model's labels beside a graph of as many classes were replaced). And a run replacing that graph while it
    writes its labels elsewhere is refused: the classic labels left would name its classes (probe CCC)."""
    from retrain.filekinds import graph_class_count

    assert graph_class_count(classic_graph(6), "final_result") == 6
    assert graph_class_count(classic_graph(4, quantized=True), "final_result") == 4  # (probe DDD)
    assert graph_class_count(EARLIER_GRAPH, "final_result") is None  # a Softmax of its input: no new layer
    folder = tmp_path / "classic"
    folder.mkdir()
    flowers = "daisy\ndandelion\nroses\nsunflowers\ntulips\nwild rose 2\n"  # as the classic script wrote them
    for graph_name, labels_name in (("output_graph.pb", "output_labels.txt"), ("retrained_graph.pb",
                                                                               "retrained_labels.txt")):
        graph, labels = folder / graph_name, folder / labels_name
        ours = {**outputs, "output_graph": graph, "output_labels": labels}
        graph.write_bytes(classic_graph(6))
        labels.write_text(flowers)
        elsewhere = retrain(colour_tree, tiny_module, {**ours, "output_labels": tmp_path / "new_labels.txt"},
                            expect=2)
        assert f"this run replaces {graph}, the classic retrain.py's graph whose labels are {labels}" in elsewhere
        retrain(colour_tree, tiny_module, ours)
        assert labels.read_text() == "blue\ngreen\nred\n" and graph_class_count(graph.read_bytes(), "final_result") == 3
        (folder / "report.json").unlink()
    # Another run's report in that folder (as /tmp holds one) speaks of neither file (probe DDD: it hid the pair);
    # the folder reached through a link and spelt two ways is one folder (probe DDD).
    graph, labels = folder / "output_graph.pb", folder / "output_labels.txt"
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": folder / "mine.pb",
                                       "output_labels": folder / "mine.txt"})
    graph.write_bytes(classic_graph(6))
    labels.write_text(flowers)
    elsewhere = retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph,
                                                   "output_labels": folder / "mine.txt"}, expect=2)
    assert f"this run replaces {graph}, the classic retrain.py's graph whose labels are {labels}" in elsewhere
    kept = retrain(colour_tree, tiny_module, {**outputs, "output_labels": labels}, expect=2)  # its graph not written
    assert f"(it is the classic retrain.py's labels file of {graph} beside it, which this run does not replace: " \
           f"give --output_graph {graph} too to replace both, or move both away)" in kept, kept
    (tmp_path / "linked").symlink_to(folder)
    monkeypatch.chdir(tmp_path / "linked")
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": Path("output_graph.pb"),
                                       "output_labels": tmp_path / "linked" / "output_labels.txt"})
    assert labels.read_text() == "blue\ngreen\nred\n"
    # A report there whose files the classic script has written over since (its digests say so) is not theirs
    # (probe EEE: it switched the refusal off, and refused the pair's own rerun).
    graph.write_bytes(classic_graph(6))
    labels.write_text(flowers)
    elsewhere = retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph,
                                                   "output_labels": folder / "mine.txt"}, expect=2)
    assert f"this run replaces {graph}, the classic retrain.py's graph whose labels are {labels}" in elsewhere
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph, "output_labels": labels})
    # label-image does not call the classic pair's labels another model's for another run's report beside them
    # that lists the same labels (probe EEE).
    from retrain.inference.labels import warn_if_another_models_labels

    graph.write_bytes(classic_graph(3))
    labels.write_text("blue\ngreen\nred\n")
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": folder / "mine.pb",
                                       "output_labels": folder / "mine.txt"})
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("retrain").addHandler(handler)
    try:
        warn_if_another_models_labels(graph, labels, ["blue", "green", "red"])
        warn_if_another_models_labels(graph, folder / "mine.txt", ["blue", "green", "red"])  # the control
    finally:
        logging.getLogger("retrain").removeHandler(handler)
    assert len(said) == 1 and said[0].startswith(f"labels {folder / 'mine.txt'}: the report.json beside them says "
                                                 f"they are the labels of {folder / 'mine.pb'}, not of --graph"), said
    for name in ("mine.pb", "mine.txt", "report.json"):
        (folder / name).unlink()
    # Not the classic script's pair: refused, nothing written.
    for case in ("one label short", "not as the classic script wrote them", "another name", "a link to the graph"):
        graph.unlink(missing_ok=True)
        graph.write_bytes(classic_graph(6))
        labels.write_text(flowers.replace("wild rose 2\n", "") if case == "one label short" else
                          flowers.replace("daisy", "Daisy") if case == "not as the classic script wrote them" else
                          flowers)
        ours = {**outputs, "output_graph": graph, "output_labels": labels}
        if case == "another name":
            labels = labels.rename(folder / "labels.txt")
            ours["output_labels"] = labels
        if case == "a link to the graph":  # the run replaces the link, not the graph it leads to
            graph.rename(folder / "model_v1.pb")
            graph.symlink_to("model_v1.pb")
        before = digest(folder)
        error = retrain(colour_tree, tiny_module, ours, expect=2)
        assert "exists and is not a labels file retrain can tell it wrote" in error, (case, error)
        assert digest(folder) == before, case
        labels.unlink()
        for other in folder.iterdir():
            other.unlink()


def test_an_earlier_models_files_are_found_however_their_paths_were_spelt(colour_tree: Path, tmp_path: Path,
                                                                         outputs, tiny_module: Path,
                                                                         monkeypatch) -> None:
    """The graph given as an absolute path, the labels as a relative one: a moved folder's graph was not found
    (other labels were put beside it), and a copied folder's full rerun was refused over the original's graph."""
    monkeypatch.chdir(tmp_path)
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    Path("first").mkdir()
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": tmp_path / "first" / "g.pb",
                                       "output_labels": Path("first/l.txt")})
    shutil.copytree("first", "copy")
    Path("first").rename("moved")
    error = retrain(other_tree, tiny_module, {**outputs, "output_graph": tmp_path / "b.pb",
                                              "output_labels": Path("moved/l.txt")}, expect=2)
    assert "this run replaces moved/l.txt of the earlier model that moved/report.json describes (3 labels) but " \
           "leaves its moved/g.pb: with other labels" in error, error
    retrain(other_tree, tiny_module, {**outputs, "output_graph": Path("copy/g.pb"), "output_labels": Path("copy/l.txt")})


def test_a_multi_label_model_retrained_as_single_label_at_the_same_paths_is_fine(colour_tree: Path, tmp_path: Path,
                                                                                outputs, tiny_module: Path) -> None:
    """The earlier model's thresholds file stays beside the new labels, which nothing reads for a softmax model:
    it was counted as a file of the earlier model left behind, and the run refused ("write it again": impossible)."""
    table = tmp_path / "labels.csv"
    rows = [f"{photo},{photo.parent.name} shade" for photo in sorted(colour_tree.rglob("*.jpg"))]
    table.write_text("path,labels\n" + "\n".join(rows) + "\n")
    retrain(colour_tree, tiny_module, outputs, labels_csv=table)
    assert outputs["output_labels"].with_name("labels_thresholds.txt").is_file()
    retrain(colour_tree, tiny_module, outputs)
    assert outputs["output_labels"].read_text() == "".join(f"{label}\n" for label in sorted(COLOURS))

def test_a_pipe_or_a_deep_json_where_a_report_would_be_read_is_never_waited_on(colour_tree: Path, tmp_path: Path,
                                                                              outputs, tiny_module: Path) -> None:
    """A report.json beside an output is read for the earlier-model check: a FIFO there hung the run, a link to
    /dev/zero ran out of memory, and JSON nested 200,000 deep ended in a RecursionError traceback."""
    beside = tmp_path / "tflite"
    beside.mkdir()
    os.mkfifo(beside / "report.json")
    retrain(colour_tree, tiny_module, outputs, output_tflite=beside / "m.tflite")  # not read: the run goes on
    (beside / "report.json").unlink()
    (beside / "report.json").symlink_to("/dev/zero")
    retrain(colour_tree, tiny_module, outputs, output_tflite=beside / "m.tflite")
    deep = outputs["output_labels"].with_name("report.json")
    deep.write_text("[" * 200_000 + "]" * 200_000)
    error = retrain(colour_tree, tiny_module, outputs, expect=2)
    assert "report.json (the report beside --output_labels) exists and is not a retrain report" in error

def test_a_second_model_in_the_same_folder_says_it_replaces_the_first_ones_report(colour_tree: Path,
                                                                                   tiny_module: Path, outputs,
                                                                                   tmp_path: Path) -> None:
    """...and is not refused, though its labels differ: the first model's graph and labels stay together."""
    retrain(colour_tree, tiny_module, outputs)
    first = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    other = {**outputs, "output_graph": outputs["output_graph"].with_name("other.pb"),
             "output_labels": outputs["output_labels"].with_name("other_labels.txt")}
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / sorted(COLOURS)[0])
    result = retrain(other_tree, tiny_module, other)
    assert f"holds the report of the model whose labels are {outputs['output_labels']}; this run replaces it, so " \
           "label-image will need --labels for that model's files, and later runs will not see them as its" \
        in result.stderr
    assert first["run"]["flags"]["output_labels"] == str(outputs["output_labels"])
    again = retrain(other_tree, tiny_module, other)  # its own report: nothing to say
    assert "holds the report of the model" not in again.stderr


def test_two_runs_started_in_the_same_second_get_their_own_run_folders(tmp_path: Path) -> None:
    from retrain.insight.summaries import claim_run_dir, run_dir

    logs = tmp_path / "logs"
    planned = [run_dir(logs), run_dir(logs)]  # both runs checked their outputs before either started
    assert planned[0] == planned[1]
    claimed = [claim_run_dir(planned[0]), claim_run_dir(planned[1])]
    assert claimed[0] != claimed[1] and all(folder.is_dir() for folder in claimed)
    assert claimed[1].name == f"{planned[0].name}-2"


# --- 3. non-finite numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("learning_rate", "nan"), ("learning_rate", "inf"),
                                         ("fine_tune_learning_rate", "nan"), ("random_crop", "nan"),
                                         ("testing_percentage", "nan"), ("learning_rate", "-inf")])
def test_non_finite_flags_are_refused(colour_tree: Path, tiny_module: Path, outputs, flag: str, value: str) -> None:
    error = retrain(colour_tree, tiny_module, outputs, expect=2, **{flag: value})
    assert f"--{flag}" in error and ("finite" in error or "between" in error or "positive" in error)


def test_a_run_whose_loss_stops_being_a_number_exports_nothing(colour_tree: Path, tiny_module: Path,
                                                               outputs) -> None:
    outputs["output_graph"].write_bytes(EARLIER_GRAPH)
    error = retrain(colour_tree, tiny_module, outputs, expect=1, learning_rate=1e38, how_many_training_steps=50)
    assert "training stopped at step" in error and "--learning_rate" in error and "nothing was exported" in error
    assert outputs["output_graph"].read_bytes() == EARLIER_GRAPH
    assert not outputs["output_labels"].exists()


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_run_whose_loss_grows_huge_but_finite_exports_nothing(tmp_path: Path, tiny_module: Path,
                                                                 outputs, multi_label: bool) -> None:
    """A learning rate far too high that never reaches NaN: on classes the features cannot tell apart the
    weights and the loss blow up to 1e30, and the model (scores of 0 and 1, one label for nearly everything)
    used to be exported with exit 0. (On classes they can tell apart the loss falls to 0 instead: kept.)
    A multi-label model's sigmoids saturate the same way (every label at 0 for every image, say)."""
    names = ("one", "two", "three", "four", "five") if multi_label else ("one", "two")  # a loss summed over labels
    alike = make_colour_tree(tmp_path / "alike", per_class=8, classes=dict.fromkeys(names, (120, 120, 120)))
    outputs["output_graph"].write_bytes(EARLIER_GRAPH)
    earlier = outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb"  # an earlier run's, of step 10
    earlier.parent.mkdir()
    earlier.write_bytes(EARLIER_GRAPH)
    result = invoke(retrain_command, flags(image_dir=alike, tfhub_module=tiny_module, how_many_training_steps=20,
                                           learning_rate=1e6 if multi_label else 1e30, multi_label=multi_label,
                                           intermediate_store_frequency=5, **outputs), expect=1)
    [error] = [line for line in result.stderr.splitlines() if line.startswith("retrain: error: ")]
    # Judged before the thresholds are chosen: no warning about a broken model's labels comes first.
    assert "would be named on every image" not in result.stderr
    # The broken model's snapshots are removed; the earlier run's file of the same step, which one of them had
    # replaced, is put back.
    assert [p.name for p in earlier.parent.iterdir()] == ["intermediate_10.pb"]
    assert earlier.read_bytes() == EARLIER_GRAPH
    assert "training diverged: the mean cross-entropy of all the training images ended at" in error
    # Why it may be far below the loss the steps logged (probe GGG: 33.3 said, 795206 logged): said.
    assert "(each score below 1e-30 counts as 1e-30: the steps' logged batches can show more)" in error
    assert f"--learning_rate (now {1e6 if multi_label else 1e30:g})" in error and "nothing was exported" in error
    assert outputs["output_graph"].read_bytes() == EARLIER_GRAPH
    assert not outputs["output_labels"].exists()


@pytest.mark.parametrize("failure", ["error", "interrupt"])
def test_an_export_that_fails_takes_back_the_files_written_before_it(colour_tree: Path, tiny_module: Path, outputs,
                                                                      tmp_path: Path, monkeypatch,
                                                                      failure: str) -> None:
    """The exports are one set. One that fails (a full disk, a converter error) or is interrupted after others were
    written: those are listed as written, then taken back, the earlier ones put back (a link as a link), so the
    folder never holds a new graph beside an earlier model's labels or an earlier SavedModel beside new labels."""
    from retrain.cli import retrain_command
    from retrain.errors import RetrainError
    from retrain.exporters.tflite import TFLite

    out = outputs["output_graph"].parent
    every = {**outputs, "saved_model_dir": out / "saved", "output_tflite": out / "model.tflite"}
    other = make_colour_tree(tmp_path / "other", per_class=6, classes={"cyan": (0, 200, 200), "red": COLOURS["red"]})
    retrain(other, tiny_module, every)  # the earlier model: other classes, every export
    (out / "graph.pb").rename(out / "graph_v1.pb")
    (out / "graph.pb").symlink_to("graph_v1.pb")  # a file output that is a link to a graph: replaced, put back

    def models() -> dict[str, str]:  # what the run exports (not the cache and the TensorBoard runs it adds to)
        return {name: sha for name, sha in digest(out).items() if "/logs/" not in name and "/bottlenecks/" not in name}

    before = models()
    assert len(before) > 8

    def fail(self, model, config):
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise RetrainError("--output_tflite: TFLite conversion (float32) failed: no room left")

    monkeypatch.setattr(TFLite, "write", fail)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           **every), expect=1 if failure == "error" else 130)
    wrote = [line.split(" (")[0] for line in result.stdout.splitlines() if line.startswith("Wrote ")]
    assert wrote[:2] == [f"Wrote {outputs['output_graph']}", f"Wrote {outputs['output_labels']}"]
    assert f"Wrote {out / 'saved'}" in wrote
    why = "one of them could not be written" if failure == "error" else "the run was interrupted while writing them"
    assert f"the run's files are taken back, as {why}: put back the earlier" in result.stderr
    if failure == "interrupt":  # not "finished files ... are kept" after that
        assert result.stderr.endswith("retrain: interrupted; the earlier outputs are as they were, cached bottlenecks "
                                      "are kept: rerun to continue\n")
    assert models() == before  # graph (through its link), labels, report, checkpoint, SavedModel: the earlier ones
    assert (out / "graph.pb").is_symlink() and os.readlink(out / "graph.pb") == "graph_v1.pb"
    assert not [p.name for p in out.rglob("*") if re.search(r"\.retrain-[0-9a-f]{6}-", p.name)]  # none kept aside
    # With no earlier model, what the failed run wrote is removed.
    for path in [*out.iterdir()]:
        if path.name not in ("logs", "bottlenecks"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           **every), expect=1 if failure == "error" else 130)
    assert sorted(p.name for p in out.iterdir()) == ["bottlenecks", "logs"]  # the checkpoint's new folder too
    assert re.search(r"taken back, as .*: removed the new [^;]*\n", result.stderr)  # nothing earlier to put back


def test_taking_back_never_removes_what_the_run_did_not_write(tmp_path: Path, caplog) -> None:
    """A failed export set takes back only what it wrote, unchanged since: a file of the user's moved over a new
    output, a folder in its place, or a note added into a new SavedModel folder stays, and so does a file of the
    user's over an output whose earlier version was kept aside (that one is not put back over it)."""
    from retrain.outputs import atomic_write_bytes, export_set, replace_folder

    graph, labels, saved, tflite, report = (tmp_path / name for name in ("graph.pb", "labels.txt", "saved",
                                                                         "model.tflite", "report.json"))
    report.write_text("the earlier report\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeError, match="an export failed"), caplog.at_level("WARNING", logger="retrain"):
        with export_set() as writes:
            for path in (graph, labels, tflite, report):
                atomic_write_bytes(path, b"new " + path.name.encode(), flag="--output_graph")
            replace_folder(saved, lambda tmp: (tmp.mkdir(), (tmp / "saved_model.pb").write_bytes(b"x")),
                           flag="--saved_model_dir")
            (mine / "graph.pb").write_text("my own graph")
            os.replace(mine / "graph.pb", graph)  # the user's file, moved over the new one meanwhile
            tflite.unlink()
            tflite.mkdir()  # a folder of the user's in a new file's place
            (tflite / "thesis.docx").write_text("mine")
            (saved / "notes.md").write_text("mine")  # a note added into the new folder
            report.write_text("my edits")  # over an output whose earlier version is kept aside
            raise RuntimeError("an export failed")
    assert graph.read_text() == "my own graph" and (tflite / "thesis.docx").read_text() == "mine"
    assert (saved / "notes.md").read_text() == "mine" and report.read_text() == "my edits"
    assert not labels.exists()  # what the run wrote, unchanged, is taken back
    assert f"removed the new {labels}" in caplog.text
    assert "could not take back " in caplog.text
    for path in (graph, tflite, saved, report):
        assert f"{path} (it is no longer what this run wrote there" in caplog.text, path
    # Kept under a name no later run removes (probe ZZZ: a hidden `.report.json.retrain-….old`, which the next run
    # deleted as a dead run's temporary file), and said.
    assert f"the earlier one is {tmp_path / 'report.json.earlier'})" in caplog.text
    assert (tmp_path / "report.json.earlier").read_text() == "the earlier report\n"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    assert len(writes.failed) == 4  # so the run's last line does not say the earlier outputs are as they were (ZZB)


def test_a_second_signal_waits_until_the_take_back_is_done(tmp_path: Path) -> None:
    """A second SIGTERM landing while a set is taken back stopped it half way: a new graph and labels beside the
    earlier SavedModel and TFLite models, and no warning. Signals are held until the take-back ends."""
    from retrain.outputs import atomic_write_bytes, export_set

    earlier = {tmp_path / name: f"earlier {name}".encode() for name in ("graph.pb", "labels.txt", "report.json")}
    for path, data in earlier.items():
        path.write_bytes(data)
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt), export_set():
            for path in earlier:
                atomic_write_bytes(path, b"new", flag="--output_graph")
            os.kill(os.getpid(), signal.SIGTERM)  # delivered at once here: the handler runs
            assert received == [signal.SIGTERM]
            # The take-back below sends itself one more, as a second Ctrl-C or SIGTERM would land during it.
            real_replace, calls = os.replace, []

            def replace_and_signal(source, destination):
                calls.append(destination)
                if len(calls) == 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)
                    assert received == [signal.SIGTERM], "the signal reached its handler during the take-back"
                return real_replace(source, destination)

            os.replace = replace_and_signal
            raise KeyboardInterrupt
    finally:
        os.replace = real_replace
        signal.signal(signal.SIGTERM, previous)
    assert len(calls) == 3 and received == [signal.SIGTERM, signal.SIGTERM]  # delivered once the take-back ended
    assert {path: path.read_bytes() for path in earlier} == earlier


def test_what_a_killed_run_kept_aside_of_a_checkpoint_is_removed_by_the_next(colour_tree: Path, tiny_module: Path,
                                                                             outputs) -> None:
    from retrain.journal import HOST as _HOST, STALE_SECONDS

    folder = outputs["checkpoint_path"].parent
    folder.mkdir()
    old = time.time() - 2 * STALE_SECONDS
    left = [folder / f".ckpt.{suffix}.retrain-{_HOST}-999999999-1a2b3c4d.old"
            for suffix in ("index", "data-00000-of-00001")]
    for path in left:
        path.write_bytes(b"kept aside by a run that was killed")
        os.utime(path, (old, old))
    retrain(colour_tree, tiny_module, outputs)
    assert not [path for path in left if path.exists()]



def test_a_checkpoint_name_with_glob_characters_is_written(colour_tree: Path, tiny_module: Path, outputs) -> None:
    """`--checkpoint_path o/ck[1]`: the files TensorFlow wrote under the temporary name were looked up with the
    name as a glob pattern, found none, and the run exited 0 with no checkpoint; a rerun replaces it."""
    prefix = outputs["checkpoint_path"].with_name("ck[1]*?")
    retrain(colour_tree, tiny_module, {**outputs, "checkpoint_path": prefix})
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    assert sorted(p.name for p in prefix.parent.iterdir()) == [data.name, "ck[1]*?.index"]
    first = data.read_bytes()
    retrain(colour_tree, tiny_module, {**outputs, "checkpoint_path": prefix}, how_many_training_steps=30)
    assert sorted(p.name for p in prefix.parent.iterdir()) == [data.name, "ck[1]*?.index"]
    assert data.read_bytes() != first  # the new run's weights

def test_an_output_whose_temporary_name_just_fits_is_replaced_by_a_rerun(colour_tree: Path, tiny_module: Path,
                                                                           outputs) -> None:
    """The name a replaced file is kept aside under is no longer than the temporary file's: a graph name whose
    temporary name is exactly 255 bytes long was written by the first run and refused by the second. Names are
    now refused before any work where a temporary name could pass 255 bytes (`config._WRITE_ROOM`, with the
    longest process numbers: probe SS): the longest taken is written, and replaced by a rerun."""
    from retrain.config import _WRITE_ROOM

    graph = outputs["output_graph"].with_name("g" * (255 - _WRITE_ROOM - 3) + ".pb")
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph})
    first = graph.read_bytes()
    retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph}, how_many_training_steps=30)
    assert graph.read_bytes() != first
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph.with_name("g" + graph.name)}, expect=2)
    assert "--output_graph's name is too long (" in error


def test_label_image_refuses_to_print_nan_scores(colour_tree: Path, tiny_module: Path, outputs) -> None:
    from retrain.exporters.model import ExportModel
    from retrain.features.source import load_feature_source
    from retrain.objectives import Softmax
    from retrain.train import Head

    source = load_feature_source((str(tiny_module),))
    head = Head(weights=np.full((8, 3), np.nan, np.float32), biases=np.zeros(3, np.float32), objective=Softmax())
    model = ExportModel(source=source, head=head, labels=("a", "b", "c"), final_tensor_name="final_result")
    outputs["output_graph"].write_bytes(model.graph_def.SerializeToString())
    outputs["output_labels"].write_text("a\nb\nc\n")
    result = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                          str(outputs["output_labels"]), "--image",
                                          str(colour_tree / "red" / "red_000.jpg")], expect=1)
    assert result.stdout == "" and "not finite numbers" in result.stderr and "nan" not in result.stdout


# --- 5. names ---------------------------------------------------------------------------------------

def test_a_locale_that_is_not_utf8_changes_no_label_and_a_name_stdout_cannot_encode_loses_nothing(
        tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Probe PPP, under a Latin-1 locale: the class folder `café` became the label `cafÃ©` (exit 0), `猫` was
    refused for a control character it does not hold, outputs under a non-ASCII folder went to a garbled sibling,
    and a label stdout could not encode ended the run with a traceback after training, nothing written. Here C
    with PYTHONUTF8=0 (file names decoded as ASCII) and PYTHONIOENCODING=ascii."""
    tree = make_colour_tree(tmp_path / "photos", per_class=6,
                            classes={"café": (220, 40, 40), "green": (40, 200, 60), "猫": (30, 60, 220)})
    (tmp_path / "sortie_é").mkdir()
    outputs = {**outputs, "output_graph": tmp_path / "sortie_é" / "g.pb",
               "output_labels": tmp_path / "sortie_é" / "l.txt"}
    env = {"PYTHONUTF8": "0", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
    done = run_script("-m", "retrain", *flags(image_dir=tree, tfhub_module=tiny_module, how_many_training_steps=5,
                                               **outputs), env=env)
    assert outputs["output_labels"].read_text(encoding="utf-8") == "café\ngreen\n猫\n", done.stderr
    assert outputs["output_graph"].is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "out", "photos", "sortie_é"]
    assert "caf\\xe9 " in done.stdout and "\\u732b " in done.stdout and "skipping" not in done.stderr, done.stderr
    # Without PYTHONIOENCODING, under C: UTF-8, Python's own choice there (probe SSS: escaped labels were a
    # regression); the console script starts again in UTF-8 mode as `python -m retrain` does.
    env.pop("PYTHONIOENCODING")
    linked = tmp_path / "my-labeller"  # the console script by another name starts again too (probe TTT)
    linked.symlink_to(Path(sys.executable).with_name("label-image"))
    labelled = subprocess.run([str(linked), "--graph", str(outputs["output_graph"]), "--top_k", "3",
                               str(tree / "猫" / "猫_000.jpg")], capture_output=True, timeout=120,
                              env={**os.environ, **env})
    assert sorted(labelled.stdout.decode("utf-8").split()[::2]) == ["café", "green", "猫"], labelled


def test_stdout_speaks_the_terminals_encoding_in_utf8_mode(monkeypatch) -> None:
    """Probe RRR: under a Latin-1 locale the commands' UTF-8 mode sent a Latin-1 terminal UTF-8 (cafÃ©); probe
    SSS: under C, escapes where Python's own UTF-8 was."""
    from retrain import names

    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    for locale_encoding, expected in (("ISO-8859-1", "ISO-8859-1"), ("ANSI_X3.4-1968", None), ("UTF-8", None)):
        monkeypatch.setattr(names, "locale_encoding", lambda: locale_encoding)
        assert names.terminal_encoding(True) == expected and names.terminal_encoding(False) is None
    monkeypatch.setattr(names, "locale_encoding", lambda: "ISO-8859-1")
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")
    assert names.terminal_encoding(True) is None


def test_a_command_that_cannot_start_again_in_utf8_mode_runs_with_a_warning(tmp_path: Path) -> None:
    """Probe QQQ: a script read from stdin (`python -`) under a locale that is not UTF-8 was started again to turn
    UTF-8 mode on, found stdin empty, and did nothing, exit 0. It runs as it is now, and says that names outside
    ASCII will not read as they are (so does the Python API under such a locale)."""
    code = "print('wrapper started'); from retrain.entry import retrain_command; retrain_command()\n"
    from retrain.entry import _console_script

    installed = Path(sys.executable).with_name("retrain")
    pip = installed.read_text()  # the installers' console scripts, whatever their names; probe UUU: uv's and
    uv = pip.replace("import re\n", "").replace(  # pip's /bin/sh trampoline were taken for a user's script
        next(line for line in pip.splitlines() if "re.sub" in line),
        '    if sys.argv[0].endswith("-script.pyw"):\n        sys.argv[0] = sys.argv[0][:-11]\n'
        '    elif sys.argv[0].endswith(".exe"):\n        sys.argv[0] = sys.argv[0][:-4]')
    trampoline = "#!/bin/sh\n'''exec' \"/some path/python\" \"$0\" \"$@\"\n' '''\n" + pip.split("\n", 1)[1]
    crafted = pip.replace(next(line for line in pip.splitlines() if "re.sub" in line),
                          '    sys.argv[0] = re.sub("@", "@", sys.argv[0] + str(open("count", "a").write("ran")))')
    os.mkfifo(tmp_path / "fifo")  # (hung, probe UUU)
    for name, text, expected in (("pip", pip, True), ("uv", uv, True), ("trampoline", trampoline, True),
                                 ("crafted", crafted, False), ("empty", "", False), ("wrapper", code, False)):
        (tmp_path / name).write_text(text)
        assert _console_script(str(tmp_path / name)) is expected, (name, text)
    assert crafted != pip and not _console_script(str(tmp_path / "fifo"))
    (tmp_path / "retrain").write_text(code)  # probes SSS, TTT: a wrapper of the user's (named so) ran twice
    for command, given in (([sys.executable, "-"], code), ([sys.executable, str(tmp_path / "retrain")], None)):
        done = subprocess.run([*command, "--image_dir", str(tmp_path / "nope")], text=True, timeout=60, input=given,
                              capture_output=True, env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"})
        lines = [re.sub(r"^WARNING \S+ ", "WARNING ", line) for line in done.stderr.splitlines()]
        assert done.returncode == 2 and done.stdout == "wrapper started\n" and lines == [
            "WARNING this Python reads file names in ascii, not UTF-8, so names outside ASCII become other labels "
            "and paths than they are; start it in UTF-8 mode (PYTHONUTF8=1 or -X utf8, without -E or -I) or under a "
            "UTF-8 locale (LC_ALL=C.UTF-8)",
            f"retrain: error: --image_dir {tmp_path / 'nope'} does not exist; expected a folder with one sub-folder "
            "per class"], done.stderr


def test_a_name_that_is_not_utf8_says_how_it_reads_in_the_locales_own_encoding(monkeypatch) -> None:
    """Probe RRR: on a Latin-1 system, a folder `café` in Latin-1 bytes, which the code before UTF-8 mode took as
    it is, is now refused for its bytes; the message says what it is, and how to rename it."""
    from retrain import names

    latin = os.fsdecode(b"caf\xe9")
    monkeypatch.setattr(names, "locale_encoding", lambda: "ISO-8859-1")
    assert names.in_locale(latin) == (" (in this system's ISO-8859-1 it reads 'café': rename it in UTF-8, e.g. with "
                                      "convmv -f ISO-8859-1 -t UTF-8 --notest and its path)")
    monkeypatch.setattr(names, "locale_encoding", lambda: "UTF-8")
    assert names.in_locale(latin) == ""
    assert names.unreadable_name(latin) == "its name is not valid UTF-8; rename it to use it"
    # UTF-8 bytes a Python outside UTF-8 mode read as ASCII (each byte kept as a surrogate): no renaming (VVV).
    assert names.unreadable_name("caf\udcc3\udca9").startswith("its name is UTF-8, which this Python reads as ")


def test_odd_names_never_stop_the_run_and_the_labels_file_has_one_line_per_class(colour_tree: Path,
                                                                                 tiny_module: Path,
                                                                                 outputs) -> None:
    root = os.fsencode(colour_tree)
    with open(root + b"/red/caf\xe9.jpg", "wb") as handle:  # not UTF-8
        handle.write((colour_tree / "red" / "red_000.jpg").read_bytes())
    for i in range(3):
        colour_photo(colour_tree / "two\nlines" / f"x{i}.jpg", COLOURS["blue"], seed=i)
    result = retrain(colour_tree, tiny_module, outputs)
    assert "its name is not valid UTF-8" in result.stderr and "skipping class folder 'two\\nlines'" in result.stderr
    lines = outputs["output_labels"].read_bytes().decode().split("\n")
    assert lines == ["blue", "green", "red", ""]


# --- 7. flags that pass a check but cannot work ------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--how_many_training_steps", "10000000000"], "--how_many_training_steps 10000000000 is too large"),
    (["--train_batch_size", "100000000"], "--train_batch_size 100000000 is too large"),
    # the bounds themselves (probe ZZI: raising one went unnoticed)
    (["--train_batch_size", "65537"], "--train_batch_size 65537 is too large (at most 65,536)"),
    (["--bottleneck_batch_size", "1025"], "--bottleneck_batch_size 1025 is too large (at most 1,024)"),
    (["--validation_batch_size", "100000000"], "--validation_batch_size 100000000 is too large"),
    (["--bottleneck_batch_size", "100000"], "--bottleneck_batch_size 100000 is too large"),
    (["--final_tensor_name", "résultat"], "--final_tensor_name 'résultat' is not a valid node name"),
    (["--final_tensor_name", "_result"], "--final_tensor_name '_result' is not a valid node name"),
    (["--final_tensor_name", "MatMul"], "is the name of another node"),
    (["--final_tensor_name", "resize_1"], "--final_tensor_name 'resize_1' is the name of another node"),
    (["--tfhub_module", ""], "--tfhub_module '' names an empty module"),
    (["--tfhub_module", "a,,b"], "names an empty module"),
    (["--seed", "-1"], "--seed must be between 0"),
    (["--learning_rate", "1e-320"], "--learning_rate 1e-320 is too small for training's float32 numbers"),  # was 0
    (["--fine_tune", "--fine_tune_learning_rate", "1e-40"], "--fine_tune_learning_rate 1e-40 is too small"),
    # a URL made a local folder named `gs:` that quietly held what the user meant to upload
    (["--output_graph", "gs://bucket/g.pb"], "URLs and object stores are not supported; give a path on this"),
    (["--output_tfjs", "s3://bucket/web"], "--output_tfjs s3://bucket/web: URLs and object stores are not"),
    (["--summaries_dir", "hdfs://node/logs"], "--summaries_dir hdfs://node/logs: URLs and object stores"),
    (["--bottleneck_dir", "gs://bucket/cache"], "--bottleneck_dir gs://bucket/cache: URLs and object stores"),
    (["--output_labels", "file:///tmp/l.txt"], "--output_labels file:///tmp/l.txt: URLs"),  # as typed
    (["--tfhub_module", "file://server/m/x"], "--tfhub_module file://server/m/x names a folder on the host 'server'"),
    # A traceback after training (`PosixPath('.') has an empty name`); `ck/` wrote the checkpoint ck.index beside ck.
    (["--checkpoint_path", "."], "--checkpoint_path . names a folder; expected a file path, such as "
                                 "./_retrain_checkpoint"),
    (["--checkpoint_path", "ck/"], "--checkpoint_path ck/ names a folder; expected a file path, such as "
                                   "ck/_retrain_checkpoint"),
    (["--output_graph", "new/"], "--output_graph new/ names a folder; expected a file path, such as "
                                 "new/output_graph.pb"),  # it wrote a file named `new`
    # Bytes that are not UTF-8: a traceback once the run had trained (its report, TensorFlow's paths; probe II).
    (["--output_graph", os.fsdecode(b"nu/\xff/g.pb")], "--output_graph nu/\\xff/g.pb is not valid UTF-8, and "
                                                       "TensorFlow takes only UTF-8 paths; rename it"),
    (["--summaries_dir", os.fsdecode(b"\xfflogs")], "--summaries_dir \\xfflogs is not valid UTF-8"),
    # Names longer than file systems take: `File name too long (<the value, whole>)`, no flag named (probe RR).
    (["--tfhub_module", "m" * 300], "--tfhub_module is too long for a path (300 bytes, a name of 300; file systems "
                                    "take names of up to 255 bytes and paths of up to 4095): mmmm"),
    (["--output_graph", "out/" + "g" * 256 + ".pb"], "--output_graph is too long for a path (263 bytes, a name of 259"),
    # ... and outputs that pass that but whose temporary names do not: an error after training (probe SS).
    (["--output_graph", "out/" + "g" * 247 + ".pb"], "--output_graph's name is too long (250 bytes): retrain writes "
                                                     "it by way of a temporary name up to 60 bytes longer"),
    (["--checkpoint_path", "c" * 240], "--checkpoint_path's name is too long (240 bytes)"),
    (["--bottleneck_dir", "/" + "/".join(["d" * 200] * 20)], "--bottleneck_dir is too long for a path (4020 bytes "
                                                              "from /): retrain writes paths up to 255 bytes longer"),
    (["--image_dir", os.fsdecode(b"caf\xe9")], "--image_dir caf\\xe9 is not valid UTF-8"),
    (["--tfhub_module", os.fsdecode(b"m\xff")], "--tfhub_module m\\xff is not valid UTF-8"),
])
def test_flags_that_cannot_work_fail_in_a_second_before_tensorflow_loads(colour_tree: Path, outputs, args,
                                                                         message: str) -> None:
    code = ("import sys; from retrain.cli import retrain_command\n"
            "try:\n    retrain_command(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n    raise\n")
    result = run_script("-c", code, *flags(image_dir=colour_tree, **outputs), *args, check=2, timeout=60)
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_current_folder_or_model_path_that_is_not_utf8_is_refused(colour_tree: Path, tiny_module: Path, outputs,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths from a folder whose name is not UTF-8 became such paths too (a traceback after training);
    label-image's --graph, which TensorFlow loads, likewise (probe II)."""
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/\xff")
    os.mkdir(odd)
    monkeypatch.chdir(odd)
    error = invoke(retrain_command, flags(image_dir=os.path.relpath(colour_tree), **outputs), expect=2).stderr
    assert error.strip() == (f"retrain: error: --image_dir {os.path.relpath(colour_tree)} is relative, and the "
                             f"current folder {tmp_path}/\\xff is not valid UTF-8 (TensorFlow takes only UTF-8 "
                             "paths); cd to another folder, or give absolute paths")
    # All paths absolute from there: the run works, its report records no folder (a traceback at its end, probe KK).
    result = retrain(colour_tree, tiny_module, outputs)
    assert json.loads(outputs["output_labels"].with_name("report.json").read_text())["run"]["folder"] is None
    assert "Final test accuracy" in result.stdout
    # A path that reaches such a folder through `link/..` once the link is followed (a traceback, probe KK).
    (tmp_path / "link").symlink_to(Path(odd))
    (Path(odd) / "sub").mkdir()
    (tmp_path / "link2").symlink_to(Path(odd) / "sub")
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": tmp_path / "link2" / ".." / "g.pb"},
                    expect=2)
    assert error == (f"retrain: error: --output_graph {tmp_path}/\\xff/g.pb is not valid UTF-8, and TensorFlow "
                     "takes only UTF-8 paths; rename it, or choose another path")
    # A handle's copy in a TFHUB_CACHE_DIR of that name: one line after the scan (probe LL), now before any work.
    monkeypatch.setenv("TFHUB_CACHE_DIR", odd)
    error = retrain(colour_tree, "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",
                    outputs, expect=2)
    assert error.startswith(f"retrain: error: TFHUB_CACHE_DIR {tmp_path}/\\xff is not valid UTF-8"), error
    error = retrain(colour_tree, "mobilenet_v2_100_224", outputs, expect=2)  # a catalog name too (probe MM)
    assert error.startswith(f"retrain: error: TFHUB_CACHE_DIR {tmp_path}/\\xff is not valid UTF-8"), error
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    # A TMPDIR of that name, where TensorFlow writes the code it generates: a traceback once training began, and
    # the module cache's default lies in it (probe OO).
    monkeypatch.setattr(tempfile, "tempdir", odd)  # what TMPDIR=... gives tempfile.gettempdir()
    error = retrain(colour_tree, tiny_module, outputs, expect=2)
    assert error == (f"retrain: error: the temporary folder {tmp_path}/\\xff (TMPDIR) is not valid UTF-8, and "
                     "TensorFlow takes only UTF-8 paths; set TMPDIR to another folder")
    graph = odd + "/g.pb"
    Path(graph).write_bytes(EARLIER_GRAPH)
    error = invoke(label_image_command, ["--graph", graph, "--image", str(colour_tree)], expect=2).stderr
    assert error.strip() == (f"label-image: error: --graph {tmp_path}/\\xff/g.pb is not valid UTF-8, and TensorFlow "
                             "takes only UTF-8 paths; rename it, or choose another path")
    # Reached through a link of a UTF-8 name, beside a report that does not list it: the message names that
    # report with \x escapes, as the logs do (it showed '\udcff', probe KK).
    shutil.copyfile(outputs["output_labels"].with_name("report.json"), Path(odd) / "report.json")
    (tmp_path / "model.pb").symlink_to(graph)
    error = invoke(label_image_command, ["--graph", str(tmp_path / "model.pb"), "--image", str(colour_tree)],
                   expect=2).stderr
    assert f"the run that {tmp_path}/\\xff/report.json describes" in error and "udc" not in error, error


def test_a_checkpoint_prefix_that_is_a_folder_is_refused(colour_tree: Path, tiny_module: Path, outputs,
                                                          tmp_path: Path) -> None:
    """`--checkpoint_path ckdir` (a folder, or `~`) wrote ckdir.index beside it, not in it (probe GG)."""
    folder = tmp_path / "ckdir"
    folder.mkdir()
    error = retrain(colour_tree, tiny_module, {**outputs, "checkpoint_path": folder}, expect=2)
    assert error == (f"retrain: error: --checkpoint_path {folder} is a folder; it is the prefix of the checkpoint's "
                     f"files (ckdir.index, ...), so give a name in it, such as {folder / '_retrain_checkpoint'}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckdir", "out", "photos"]


def test_a_local_folder_whose_name_ends_with_a_colon_is_not_taken_for_a_url(tmp_path: Path) -> None:
    """`ab:/g.pb` (a folder named `ab:`, legal on Linux) was refused as a URL, and shown as `ab://g.pb` (probe AA):
    the command line's paths reached the check as Paths, which keep one slash of `gs://`."""
    from retrain.cli import retrain_command
    from retrain.config import RetrainConfig

    assert RetrainConfig(image_dir=tmp_path, output_graph="ab:/g.pb").output_graph == Path("ab:/g.pb")
    error = invoke(retrain_command, flags(image_dir=tmp_path, output_graph="ab:/g.pb"), expect=1).stderr
    assert "URL" not in error and "found no class folders" in error, error  # past the flags' checks


def test_the_smallest_learning_rate_the_refusal_names_is_taken(tmp_path: Path) -> None:
    """The refusal named 1.17549e-38 as the least, and refused it (probe DD): the bound is float32's own."""
    import numpy as np

    from retrain.config import RetrainConfig
    from retrain.errors import UsageError

    tiny = float(np.finfo(np.float32).tiny)
    assert RetrainConfig(image_dir=tmp_path, learning_rate=tiny).learning_rate == tiny
    with pytest.raises(UsageError, match=f"at least {tiny!r}"):
        RetrainConfig(image_dir=tmp_path, learning_rate=float(np.nextafter(tiny, 0)))


def test_a_module_given_as_a_file_url_is_that_folder(colour_tree: Path, tiny_module: Path, outputs,
                                                     tmp_path: Path) -> None:
    """`--tfhub_module file:///m/x` (TensorFlow Hub loads such a URL) failed with 'cannot load the SavedModel at
    file:/m/x (file:/m/x does not exist.)' (probe BB): it is the folder /m/x, also with a comma in its name
    (probe DD: split there) or percent-encoded."""
    commas = shutil.copytree(tiny_module, tmp_path / "my,module")
    result = retrain(colour_tree, tiny_module, outputs, tfhub_module=f"file://{commas}".replace("module", "m%6Fdule"))
    assert f"Wrote {outputs['output_graph']}" in result.stdout


def test_a_final_tensor_name_taken_inside_the_module_is_refused_with_nothing_exported(
        colour_tree: Path, tiny_module: Path, outputs) -> None:
    """A name only the module's graph holds cannot be known before it loads: refused once it has loaded, before
    any bottleneck or training, naming the exported graph, not the module, as the place of the clash (it may be
    retrain's own node)."""
    error = retrain(colour_tree, tiny_module, outputs, expect=1, final_tensor_name="StatefulPartitionedCall")
    assert "--final_tensor_name StatefulPartitionedCall clashes with another node of the exported graph" in error
    assert not outputs["output_graph"].exists()
    assert not outputs["bottleneck_dir"].exists() and not outputs["summaries_dir"].exists()


# --- 8. the environment fails ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A real file system with little room: a 256 kB tmpfs (as root), else a process file-size limit."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                            capture_output=True).returncode == 0:
        yield mount, {}
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        return
    if os.geteuid() == 0:
        pytest.fail("running as root but cannot mount a tmpfs for the disk-full test")
    yield mount, {"RETRAIN_TEST_FSIZE": str(4 * 1024)}


def run_limited(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m retrain` in a fresh process; RETRAIN_TEST_FSIZE (bytes) caps the size of files it may write."""
    code = ("import os, resource, signal, sys\n"
            "limit = int(os.environ.get('RETRAIN_TEST_FSIZE', '0'))\n"
            "if limit:\n    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
            "from retrain.cli import retrain_command\nretrain_command(sys.argv[1:], prog_name='retrain')\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, "RETRAIN_BOTTLENECK_FLUSH_EVERY": "64"})


@pytest.mark.integration  # a run in a fresh process, as the tests below
@pytest.mark.parametrize("closed", ["stdout", "stderr", "stdout of the API", "stdout from the start",
                                    "both from the start"])
def test_a_closed_stdout_or_stderr_does_not_cost_the_run_its_files(colour_tree: Path, tiny_module: Path, outputs,
                                                                   closed: str) -> None:
    """`retrain ... | head -n 1`: once head has gone, every line printed fails (a broken pipe). The run used to
    take its exports back and exit 1 with no error line. What it prints is commentary; its work is the files.
    (A script calling retrain() piped into head, the same.)"""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write to the pipe fails
    try:
        streams = {"stdout": subprocess.PIPE, "stderr": write} if closed == "stderr" else \
            {"stdout": write, "stderr": subprocess.PIPE}
        if closed == "stdout of the API":
            command = ["-c", f"from retrain import api; api.retrain({str(colour_tree)!r}, tfhub_module="
                             f"{str(tiny_module)!r}, how_many_training_steps=20, print_misclassified_test_images=True, "
                             f"**{ {name: str(path) for name, path in outputs.items()} !r})"]
        else:
            command = ["-m", "retrain", *flags(image_dir=colour_tree, tfhub_module=tiny_module,
                                               how_many_training_steps=20, **outputs)]
        command = [sys.executable, *command]
        if closed == "stdout from the start":  # `retrain ... >&-`: Python makes sys.stdout None
            command = ["bash", "-c", 'exec "$0" "$@" >&-', *command]
        if closed == "both from the start":  # and descriptor 2 free for the next file opened, unless retrain fills it
            command = ["bash", "-c", 'exec "$0" "$@" >&- 2>&-', *command]
        result = subprocess.run(command, text=True, timeout=300, **streams)
    finally:
        os.close(write)
    assert result.returncode == 0, (result.stdout or "") + (result.stderr or "")
    assert outputs["output_labels"].read_text() == "".join(f"{label}\n" for label in sorted(COLOURS))
    assert outputs["output_graph"].stat().st_size > 0
    if closed == "stderr":
        assert f"Wrote {outputs['output_graph']}" in result.stdout
    else:
        said = {"both from the start": None, "stdout from the start": "stdout is closed"}.get(closed, "Broken pipe")
        assert result.stderr.count("cannot print to stdout") == (said is not None), result.stderr
        assert said is None or f"cannot print to stdout ({said})" in result.stderr
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


@pytest.mark.integration  # 5 s: a run in a fresh process on a small disk; kept out of the 3-minute suite
@pytest.mark.parametrize("room", ["8 kB", "none"])
def test_a_full_disk_under_the_cache_is_one_line_and_leaves_no_temp_files(colour_tree: Path, tiny_module: Path,
                                                                          outputs, small_disk, room: str) -> None:
    """With no room at all, no shard is written: the line said "vectors computed so far are kept" all the same."""
    mount, env = small_disk
    if env and room == "none":
        env = {**env, "RETRAIN_TEST_FSIZE": "1"}
    elif not env and room == "8 kB":
        (mount / "filler").write_bytes(b"\0" * (248 * 1024))  # leave only 8 kB on the tmpfs
    elif not env:
        with contextlib.suppress(OSError), open(mount / "filler", "wb", buffering=0) as filler:  # fill the tmpfs
            while True:
                filler.write(b"\0" * 4096)
    for i in range(40):  # many photos, so the shards outgrow what is left
        for label in COLOURS:
            colour_photo(colour_tree / label / f"more_{i:03d}.jpg", COLOURS[label], seed=3000 + i)
    result = run_limited(flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=5,
                               **{**outputs, "bottleneck_dir": mount / "cache"}), env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("retrain: error: cannot write to the bottleneck cache") and str(mount) in last, last
    shards = list(mount.rglob("shard-*.npz"))  # what it says was kept is what is there
    assert last.endswith("vectors computed so far are kept" if shards else "no vector of this run could be kept")
    assert "Traceback" not in result.stderr
    assert not list(mount.rglob(".tmp-*")), "no temporary shard is left behind"


@pytest.mark.integration  # 6.5 s: a run in a fresh process on a small disk; kept out of the 3-minute suite
def test_a_full_disk_under_an_output_keeps_the_old_output(colour_tree: Path, tiny_module: Path, outputs,
                                                          small_disk) -> None:
    mount, env = small_disk
    old = mount / "graph.pb"
    old.write_bytes(EARLIER_GRAPH)
    if not env:
        (mount / "filler").write_bytes(b"\0" * (252 * 1024))  # leave only 4 kB: less than the graph
    result = run_limited(flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=5,
                               saved_model_dir=mount / "saved", **{**outputs, "output_graph": old}), env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("retrain: error: cannot write --") and "earlier outputs are kept" in last, last
    assert "Traceback" not in result.stderr
    assert old.read_bytes() == EARLIER_GRAPH
    assert not [p for p in mount.iterdir() if p.name.startswith(".")], "no temporary file is left behind"


@pytest.mark.integration  # a run in a fresh process on a small disk, as the tests above
def test_a_full_disk_under_the_checkpoint_is_one_plain_line_and_leaves_nothing(colour_tree: Path, tiny_module: Path,
                                                                                outputs, small_disk) -> None:
    """TensorFlow's own message named its function node and a temporary file, and its `_temp` folder stayed."""
    mount, env = small_disk
    if env:
        pytest.fail("a checkpoint smaller than the graph written before it needs a full tmpfs: run as root")
    with (mount / "filler").open("wb", buffering=0) as filler:  # fill the tmpfs to the last byte
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    result = run_limited(flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=5,
                               **{**outputs, "checkpoint_path": mount / "ck"}), env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"retrain: error: cannot write --checkpoint_path {mount / 'ck'}: No space left on device; "
                    "earlier outputs are kept"), result.stderr[-3000:]
    assert [p.name for p in mount.iterdir()] == ["filler"]
    assert not outputs["output_graph"].exists()  # the set is taken back: no graph without its checkpoint


@pytest.mark.integration  # a run in a fresh process on a small disk, as the test above
def test_a_full_disk_under_the_summaries_is_one_plain_line(colour_tree: Path, tiny_module: Path, outputs,
                                                           small_disk) -> None:
    mount, env = small_disk
    if not env:
        (mount / "filler").write_bytes(b"\0" * (252 * 1024))  # leave only 4 kB: less than the run's summaries
    result = run_limited(flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=200,
                               **{**outputs, "summaries_dir": mount / "logs"}), env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"retrain: error: cannot write TensorBoard summaries into {mount / 'logs'}/"), \
        result.stderr[-3000:]
    assert "function_node" not in last and "[Op:" not in last and "Traceback" not in result.stderr


def test_a_read_only_cache_folder_is_one_line(colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    if os.geteuid() == 0:
        assert subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(cache)]).returncode == 0
    else:
        cache.chmod(0o555)
    try:
        error = retrain(colour_tree, tiny_module, {**outputs, "bottleneck_dir": cache}, expect=2)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(cache)], capture_output=True)
    assert f"--bottleneck_dir {cache}: cannot write in {cache} (Read-only file system)" in error or \
        "Permission denied" in error


_SWALLOWED_INTERRUPT = """
import os, signal, click
from retrain.cli import _OneLineErrors

class Finaliser:
    def __del__(self):  # as TensorFlow's AtomicFunction.__del__ runs while an export converts
        os.kill(os.getpid(), signal.SIGINT)
        total = 0
        for step in range(10000):  # the handler runs here, inside the finaliser, which drops its exception
            total += step

@click.command(cls=_OneLineErrors)
def export():
    Finaliser()
    print("exported")

export()
"""


def test_a_ctrl_c_that_lands_in_a_finaliser_still_stops_the_run(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _SWALLOWED_INTERRUPT], capture_output=True, text=True,
                            timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert "interrupted" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


# --- 10. label-image on a truncated graph ------------------------------------------------------------

def test_a_graph_truncated_between_nodes_is_called_truncated(colour_tree: Path, tiny_module: Path,
                                                             outputs) -> None:
    from retrain.tfenv import import_tensorflow

    retrain(colour_tree, tiny_module, outputs)
    graph_def = import_tensorflow().compat.v1.GraphDef()
    graph_def.ParseFromString(outputs["output_graph"].read_bytes())
    # A file cut right after a node record, before the final node: a copy that stopped between two nodes
    # (the node records come first in a serialized GraphDef, the version record last).
    final = [node.name for node in graph_def.node].index("final_result")
    kept = graph_def.__class__()
    kept.node.extend(graph_def.node[:final])
    cut = kept.SerializeToString()
    truncated = outputs["output_graph"].with_name("cut.pb")
    truncated.write_bytes(cut)
    result = invoke(label_image_command, ["--graph", str(truncated), "--labels", str(outputs["output_labels"]),
                                          "--image", str(colour_tree / "red" / "red_000.jpg")], expect=1)
    assert "is truncated" in result.stderr and "final_result" not in result.stderr
    # Cut inside a node (probe GGG: called no frozen graph at all), before the labels are looked for.
    whole = outputs["output_graph"].read_bytes()
    truncated.write_bytes(whole[:len(cut) + 7])
    result = invoke(label_image_command, ["--graph", str(truncated), "--image", str(colour_tree / "red" /
                                                                                       "red_000.jpg")], expect=1)
    assert result.stderr.strip() == (f"label-image: error: --graph {truncated} is truncated: it ends inside a node, "
                                     f"after {final} whole nodes; copy or export it again")


def test_outputs_onto_the_labels_csv_or_an_image_it_names_are_refused(colour_tree: Path, tiny_module: Path,
                                                                      outputs, tmp_path: Path) -> None:
    elsewhere = colour_photo(tmp_path / "elsewhere" / "far.jpg", COLOURS["red"], seed=5)
    table = tmp_path / "labels.csv"
    rows = [f"{p.relative_to(colour_tree).as_posix()},{p.parent.name}" for p in sorted(colour_tree.rglob("*.jpg"))]
    table.write_text("path,labels\n" + "\n".join(rows + [f"{elsewhere},red"]) + "\n")
    before = {**digest(table), **digest(elsewhere)}
    for changes, flag in (({"output_labels": table}, "--labels_csv"), ({"output_graph": elsewhere}, "--labels_csv")):
        error = retrain(colour_tree, tiny_module, {**outputs, **changes}, expect=2, labels_csv=table)
        assert flag in error and "--output_" in error, error
    error = retrain(colour_tree, tiny_module, outputs, expect=2, labels_csv=table, saved_model_dir=elsewhere.parent)
    assert error == (f"retrain: error: --saved_model_dir {elsewhere.parent} would overwrite {elsewhere}, an image that "
                     f"--labels_csv names; choose a --saved_model_dir elsewhere")
    assert {**digest(table), **digest(elsewhere)} == before
    # Outputs inside --image_dir are fine for a CSV run: only the CSV and the images it names are read.
    result = retrain(colour_tree, tiny_module, {**outputs, "output_graph": colour_tree / "model.pb"}, labels_csv=table)
    assert "Final test accuracy" in result.stdout and (colour_tree / "model.pb").exists()


def test_paths_with_line_breaks_and_escape_codes_stay_one_line_in_results_and_errors(colour_tree: Path,
                                                                                      tiny_module: Path, outputs) -> None:
    """A path may hold any character but / and NUL: the results and the error line show it escaped, so no line
    reads like a line retrain printed (`Wrote /etc/passwd`) and the terminal obeys no escape code."""
    out = outputs["output_graph"].parent
    odd = out / "a\nWrote \x1b[31mred.pb"
    result = retrain(colour_tree, tiny_module, {**outputs, "output_graph": odd})
    assert odd.is_file()
    wrote = [line for line in result.stdout.splitlines() if line.startswith("Wrote ")]
    assert wrote[0].startswith(f"Wrote {out}/a\\nWrote \\x1b[31mred.pb (") and len(wrote) == 3, result.stdout
    assert "\x1b" not in result.stdout
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": out / "missing\n" / "g.pb"}, expect=2)
    assert "missing\\n" in error and "\x1b" not in error


def test_written_outputs_are_readable_by_others_under_the_usual_umask(tmp_path: Path) -> None:
    """Files are written through mkstemp (mode 0600): under umask 022 a model served by another user must still be
    readable, as a file written in place would be (0644)."""
    from retrain.outputs import atomic_write_bytes

    mask = os.umask(0o022)
    try:
        for name, flag in (("graph.pb", "--output_graph"), ("labels.txt", "--output_labels")):
            atomic_write_bytes(tmp_path / name, EARLIER_GRAPH if name == "graph.pb" else b"red\n", flag=flag)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    finally:
        os.umask(mask)


def test_temporary_files_of_another_host_are_removed_only_once_a_day_old(tmp_path: Path) -> None:
    """On a shared disk a run on another machine may still be writing: its temporary files are left alone until
    they are 24 hours old. This process's own temporary files are never removed."""
    from retrain.journal import HOST as _HOST, STALE_SECONDS
    from retrain.outputs import remove_stale_temps, temp_prefix

    target = tmp_path / "graph.pb"
    other_host = "0" * 6 if _HOST != "0" * 6 else "1" * 6
    now = time.time()
    files = {  # name -> (age in seconds, removed?)
        f".graph.pb.retrain-{other_host}-12345-1a2b3c4d.tmp": (2 * STALE_SECONDS, False),
        f".graph.pb.retrain-{other_host}-12345-5e6f7a8b.old": (23 * STALE_SECONDS, False),
        f".graph.pb.retrain-{other_host}-12345-9c0d1e2f.tmp": (25 * STALE_SECONDS, True),
        f"{temp_prefix('graph.pb')}3a4b5c6d.tmp": (48 * STALE_SECONDS, False),  # this run's
    }
    for name, (age, _) in files.items():
        (tmp_path / name).write_bytes(b"being written")
        os.utime(tmp_path / name, (now - age, now - age))
    remove_stale_temps(target)
    assert {name: not (tmp_path / name).exists() for name in files} == {name: gone for name, (_, gone) in files.items()}


def test_the_checkpoint_index_is_renamed_into_place_after_its_data(colour_tree: Path, tiny_module: Path, outputs,
                                                                   monkeypatch) -> None:
    """Readers open the index first: were it in place before the data, a crash between the two renames would leave
    an index naming data that is not there (or is the previous run's)."""
    renamed: list[str] = []
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if Path(target).parent == outputs["checkpoint_path"].parent:
            renamed.append(Path(target).name)
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    retrain(colour_tree, tiny_module, outputs)
    assert renamed == ["ckpt.data-00000-of-00001", "ckpt.index"], renamed


def test_notes_that_mention_the_classic_scope_at_the_checkpoint_index_are_not_replaced(colour_tree: Path,
                                                                                       tiny_module: Path,
                                                                                       outputs) -> None:
    """A text file naming `final_retrain_ops/` is not the classic script's checkpoint: only a real checkpoint
    table holding that scope is retrain's to replace."""
    index = outputs["checkpoint_path"].with_name("ckpt.index")
    index.parent.mkdir(parents=True)
    index.write_text("my notes: the classic script saved final_retrain_ops/weights here\n")
    before = index.read_bytes()
    error = retrain(colour_tree, tiny_module, outputs, expect=2)
    assert re.search(r"ckpt\.index exists and is not a checkpoint of the new layer \(it is a text file\)", error), error
    assert index.read_bytes() == before and not outputs["output_graph"].exists()


def test_no_output_goes_inside_a_folder_retrain_wrote_whole_for_a_model(colour_tree: Path, tiny_module: Path, outputs,
                                                                         tmp_path: Path) -> None:
    """A second run's --checkpoint_path at an earlier run's `sm/variables/variables` replaced that SavedModel's
    weights, exit 0, as its index looks like the new layer's checkpoint (probe OO); any other output written
    inside it made the folder hold what its marker does not list, so its own run's rerun was refused. Every output
    inside such a folder is refused before any work, and the folder is left as it was."""
    saved = tmp_path / "sm"
    retrain(colour_tree, tiny_module, outputs, saved_model_dir=saved)
    before = {path: path.read_bytes() for path in saved.rglob("*") if path.is_file()}
    other = {key: tmp_path / "b" / path.relative_to(outputs["output_graph"].parent) for key, path in outputs.items()}
    (tmp_path / "b").mkdir()
    for flag, value in (("checkpoint_path", saved / "variables" / "variables"), ("summaries_dir", saved / "logs"),
                        ("output_graph", saved / "assets" / "g.pb"), ("bottleneck_dir", saved / "cache")):
        error = retrain(colour_tree, tiny_module, {**other, flag: value}, expect=2)
        assert error == (f"retrain: error: --{flag} {value} lies inside {saved}, a folder retrain wrote whole for a "
                         "SavedModel (its .retrain-export.json says so; delete that file if the folder no longer "
                         f"holds that model): its files are that model's, so choose a --{flag} outside it"), error
    error = retrain(colour_tree, tiny_module, {**other, "output_labels": saved / "more" / "labels.txt"}, expect=2)
    assert f"lies inside {saved}, a folder retrain wrote whole for a SavedModel" in error
    assert {path: path.read_bytes() for path in saved.rglob("*") if path.is_file()} == before
    # A copy without the marker (`cp -r sm/* served/1/`: the glob leaves it out) is a SavedModel all the same: the
    # checkpoint replaced its weights, exit 0 (probe SS).
    served = tmp_path / "served" / "1"
    shutil.copytree(saved, served, ignore=shutil.ignore_patterns(".*"))
    copied = {path: path.read_bytes() for path in served.rglob("*") if path.is_file()}
    error = retrain(colour_tree, tiny_module, {**other, "checkpoint_path": served / "variables" / "variables"},
                    expect=2)
    assert error == (f"retrain: error: --checkpoint_path {served / 'variables' / 'variables'} lies inside {served}, "
                     "a SavedModel's folder (it holds saved_model.pb): its files are that model's, so choose a "
                     "--checkpoint_path outside it"), error
    assert {path: path.read_bytes() for path in served.rglob("*") if path.is_file()} == copied
    (served / "variables").rename(tmp_path / "weights")  # its variables a link to a folder elsewhere (probe UU)
    (served / "variables").symlink_to(tmp_path / "weights")
    error = retrain(colour_tree, tiny_module, {**other, "checkpoint_path": served / "variables" / "variables"},
                    expect=2)
    assert f"lies inside {served}, a SavedModel's folder" in error, error
    retrain(colour_tree, tiny_module, outputs, saved_model_dir=saved)  # its own run's rerun replaces it


def test_a_run_judges_only_the_intermediate_graphs_it_stores(colour_tree: Path, tiny_module: Path, outputs) -> None:
    """Files of steps a run does not store (a longer run's, stopped; a graph of the user's named
    intermediate_99999.pb) refused every run storing intermediate graphs in that folder, the message naming the
    file as if it were the flag's value (probe OO). Only the steps it stores are judged, each named as a file in
    the folder."""
    from retrain.config import RetrainConfig
    from retrain.exporters.graph import _stores
    from retrain.train import Schedule

    folder = outputs["intermediate_output_graphs_dir"]
    folder.mkdir()
    users = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"scores", b"Softmax", b"Placeholder")
    for name in ("intermediate_15.pb", "intermediate_99999.pb", "intermediate_010.pb", f"intermediate_{'9' * 200}.pb"):
        (folder / name).write_bytes(users)
    retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10, how_many_training_steps=40)
    assert sorted(path.name for path in folder.iterdir() if path.read_bytes() != users) == [
        "intermediate_10.pb", "intermediate_20.pb", "intermediate_30.pb"]
    (folder / "intermediate_20.pb").write_bytes(users)
    error = retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10, how_many_training_steps=40,
                    expect=2)
    assert error == (f"retrain: error: {folder / 'intermediate_20.pb'} (in --intermediate_output_graphs_dir {folder}) "
                     "exists and is not a frozen graph retrain can tell it wrote (its output node is 'scores', and no "
                     "retrain report beside it or beside this run's labels records its bytes); retrain replaces only "
                     "such a file there: move the file or choose another --intermediate_output_graphs_dir (if "
                     "retrain wrote it with --final_tensor_name scores, give that flag again)")
    assert (folder / "intermediate_20.pb").read_bytes() == users
    # What a run writes there is the files of its stored steps, whatever lies inside an entry so named (a folder
    # `intermediate_10.pb` holding another model's graph: a traceback, probe RR).
    from retrain.exporters.graph import IntermediateGraphs
    from retrain.outputs import writes

    output = IntermediateGraphs().outputs(RetrainConfig(image_dir=colour_tree, how_many_training_steps=40,
                                                        intermediate_store_frequency=10, **outputs))
    assert [writes(output, folder / name) for name in ("intermediate_10.pb/g.pb", "intermediate_15.pb", "g.pb")] == [
        True, False, False]
    # The steps judged are those training stores (train.Schedule), fine-tuning's numbered on from training's.
    for steps, every, fine_tune in ((40, 10, 0), (41, 10, 25), (7, 3, 5), (5, 7, 9)):
        config = RetrainConfig(image_dir=colour_tree, how_many_training_steps=steps, intermediate_store_frequency=every,
                               fine_tune=bool(fine_tune), fine_tune_steps=fine_tune or 200)
        phases = [(0, steps)] + ([(steps, fine_tune)] if fine_tune else [])
        stored = {first + step for first, count in phases for step in range(count)
                  if Schedule(steps=count, eval_interval=10, store_every=every, first_step=first).stores(step)}
        assert {step for step in range(120) if _stores(config, f"intermediate_{step}.pb")} == stored, (steps, every)


def test_a_runs_own_graph_is_never_the_digest_dropped(tmp_path: Path) -> None:
    """A run that stored 1,000 intermediate graphs or more kept the last 1,000 digests, its own graph's first among
    those dropped, so its rerun without --final_tensor_name was refused its own graph (probe OO)."""
    from types import SimpleNamespace

    from retrain.insight.run import _MOST_DIGESTS, _graph_digests
    from retrain.outputs import atomic_write_bytes

    config = SimpleNamespace(output_graph=tmp_path / "graph.pb", output_labels=tmp_path / "labels.txt",
                             final_tensor_name="scores")
    intermediate = [tmp_path / f"intermediate_{step}.pb" for step in range(1, _MOST_DIGESTS + 10)]
    for path in [config.output_graph, *intermediate]:
        atomic_write_bytes(path, path.name.encode(), flag="--output_graph", digest=True)
    digests = _graph_digests(config, [config.output_graph, config.output_labels], intermediate)
    assert len(digests) == _MOST_DIGESTS and digests[hashlib.sha256(b"graph.pb").hexdigest()] == "scores"
    assert hashlib.sha256(intermediate[-1].name.encode()).hexdigest() in digests


def test_a_class_left_out_once_its_photos_fail_is_checked_against_the_earlier_models_files(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    """The earlier model's files were judged by the classes the walk found; a class whose photos had all become
    unreadable was left out later, so a rerun dropping --output_tflite replaced that model's labels and report
    and left its TFLite file, which no labels then matched, exit 0 (probe PP). The run stops once it knows."""
    tree = shutil.copytree(colour_tree, tmp_path / "tree")
    tflite = outputs["output_graph"].with_name("m.tflite")
    retrain(tree, tiny_module, outputs, output_tflite=tflite)
    before = {path: path.read_bytes() for path in outputs["output_graph"].parent.glob("*") if path.is_file()}
    for photo in (tree / "red").iterdir():
        photo.write_bytes(b"no longer a photo")
    error = retrain(tree, tiny_module, outputs, expect=2)
    assert error.startswith("retrain: error: this run replaces ") and f"but leaves its {tflite}" in error, error
    assert {path: path.read_bytes() for path in outputs["output_graph"].parent.glob("*") if path.is_file()} == before


def test_a_rerun_with_other_classes_says_which_earlier_intermediate_graphs_it_leaves(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    """A rerun with other classes replaced the labels and report and left the earlier run's intermediate graphs
    of steps it does not store, exit 0, without a word (probe QQ). Snapshots in a folder runs share by default:
    said, not refused; the steps this run writes again are not named."""
    other = make_colour_tree(tmp_path / "other", per_class=8,
                             classes={"cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)})
    folder = outputs["intermediate_output_graphs_dir"]
    retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=5)
    result = retrain(other, tiny_module, outputs, intermediate_store_frequency=10)
    assert (f"and leaves that run's intermediate graphs {folder / 'intermediate_5.pb'}, "
            f"{folder / 'intermediate_15.pb'}: with their labels replaced, label-image asks which are theirs; to keep "
            "them usable, move them with a copy of that model's labels file and report.json") in result.stderr


def test_a_run_writing_over_another_models_intermediate_graphs_says_so_and_label_image_asks_for_labels(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    """A second model with its own graph and labels but the first's intermediate folder wrote over the graphs the
    first's report lists, exit 0 without a word, and label-image then named their scores with the first model's
    labels, exit 0 (probe SS). Said by the run; label-image tells the graphs by their bytes and asks."""
    other = make_colour_tree(tmp_path / "other", per_class=8,
                             classes={"cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)})
    folder = outputs["intermediate_output_graphs_dir"]
    retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10)
    second = {**outputs, "output_graph": tmp_path / "second" / "graph.pb",
              "output_labels": tmp_path / "second" / "labels.txt", "checkpoint_path": tmp_path / "second" / "ckpt"}
    (tmp_path / "second").mkdir()
    result = retrain(other, tiny_module, second, intermediate_store_frequency=10)
    report = outputs["output_labels"].parent / "report.json"
    assert (f"this run writes over {folder / 'intermediate_10.pb'}, intermediate graphs of the earlier model that "
            f"{report} describes (3 labels): label-image will then ask for --labels for them") in result.stderr
    photo = next(path for path in sorted(other.rglob("*")) if path.is_file())
    refused = invoke(label_image_command, ["--graph", str(folder / "intermediate_10.pb"), "--image", str(photo)],
                     expect=2)
    assert "holds other bytes than that run wrote there" in refused.stderr and refused.stdout == ""
    named = invoke(label_image_command, ["--graph", str(folder / "intermediate_10.pb"), "--image", str(photo),
                                         "--labels", str(second["output_labels"])])
    assert named.stdout.split()[0] in ("cyan", "magenta", "yellow")
    # A byte copy of it elsewhere was given the first model's labels, exit 0 (probe UU): refused too.
    shutil.copyfile(folder / "intermediate_10.pb", outputs["output_labels"].with_name("copy.pb"))
    copied = invoke(label_image_command, ["--graph", str(outputs["output_labels"].with_name("copy.pb")), "--image",
                                          str(photo)], expect=2)
    assert "is not among the files of the run that" in copied.stderr and copied.stdout == ""
    # A report further up that lists those very bytes names their labels (a nearer one's refusal stopped it).
    shutil.copyfile(second["output_labels"].with_name("report.json"), tmp_path / "report.json")
    (tmp_path / "labels.txt").write_text(second["output_labels"].read_text())  # its labels beside it (moved)
    found = invoke(label_image_command, ["--graph", str(folder / "intermediate_10.pb"), "--image", str(photo)])
    assert found.stdout.split()[0] in ("cyan", "magenta", "yellow") and "WARNING" not in found.stderr
    # The first model's report written before the bytes were recorded: the run says label-image will only warn.
    (tmp_path / "report.json").unlink()
    data = json.loads(report.read_text())
    del data["run"]["intermediate_sha256"]
    report.write_text(json.dumps(data))
    result = retrain(other, tiny_module, second, intermediate_store_frequency=10)
    assert "label-image will then name them by that model's labels, with a warning only (its report does not " \
           "record their bytes" in result.stderr


def test_a_model_file_put_back_over_a_newer_one_is_told_by_its_bytes(colour_tree: Path, tiny_module: Path, outputs,
                                                                     tmp_path: Path) -> None:
    """The graph of a run put back from a backup over a later run's, of other classes: label-image named its
    scores with the later run's labels, exit 0, without a word (probe VV). The report records the bytes of the
    files it lists. A copy of a file holding those bytes is that run's wherever it lies: a TFLite model moved away
    with copies of its labels and report, as the refusal to leave it beside other labels suggests, was 'not among
    the files of the run' (probe VV)."""
    other = make_colour_tree(tmp_path / "other", per_class=8,
                             classes={"cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)})
    tflite = outputs["output_labels"].with_name("m.tflite")
    retrain(colour_tree, tiny_module, outputs, output_tflite=tflite)
    backup = tmp_path / "backup.pb"
    shutil.copyfile(outputs["output_graph"], backup)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("m.tflite", "labels.txt", "report.json"):
        shutil.copyfile(outputs["output_labels"].with_name(name), shipped / name)
    tflite.unlink()
    retrain(other, tiny_module, outputs)
    shutil.copyfile(backup, outputs["output_graph"])
    photo = str(colour_tree / "red" / "red_000.jpg")
    refused = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--image", photo], expect=2)
    report = outputs["output_labels"].with_name("report.json")
    assert (f"no labels found for --graph {outputs['output_graph']}: {report} lists it among the files its run "
            "wrote, but it holds other bytes than that run wrote there") in refused.stderr and refused.stdout == ""
    warned = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--image", photo, "--labels",
                                          str(outputs["output_labels"])])
    assert "lists it among the files its run wrote, but that run wrote other bytes there" in warned.stderr
    moved = invoke(label_image_command, ["--graph", str(shipped / "m.tflite"), "--image", photo, "--top_k", "1"])
    assert moved.stdout.split()[0] == "red" and "WARNING" not in moved.stderr, moved.stderr



def test_a_copy_of_a_runs_model_below_its_report_or_over_its_graph_is_that_runs(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of an intermediate graph in a sub-folder of the run's folder (`models/best_step10.pb`) took the
    classic default's labels silently, or was refused saying no report names its labels; the run's own
    intermediate graph copied over its output graph (going back to a better step) was refused as other bytes
    (probe WW). Both hold bytes the report records."""
    from retrain.config import RetrainConfig

    monkeypatch.setattr(RetrainConfig, "output_labels", tmp_path / "stray" / "output_labels.txt")
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "output_labels.txt").write_text("cat\ndog\nbird\n")  # a classic default of another's
    retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10)
    best = outputs["output_labels"].parent / "models" / "best_step10.pb"
    best.parent.mkdir()
    shutil.copyfile(outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb", best)
    photo = str(colour_tree / "red" / "red_000.jpg")
    for graph in (best, outputs["output_graph"]):
        if graph == outputs["output_graph"]:
            shutil.copyfile(best, graph)
        result = invoke(label_image_command, ["--graph", str(graph), "--image", photo, "--top_k", "3"])
        assert sorted(line.split()[0] for line in result.stdout.splitlines()) == sorted(COLOURS), result.stdout
        assert "WARNING" not in result.stderr, result.stderr


def test_a_labels_file_saved_again_by_an_editor_is_still_the_one_its_report_lists(colour_tree: Path,
                                                                                  tiny_module: Path, outputs,
                                                                                  tmp_path: Path) -> None:
    """An earlier model's labels saved again without the last line break, or with a blank line after it (as
    label-image reads them: the same labels), were refused as not retrain's, the message saying that the report
    beside them lists other labels, which it did not (probe TT)."""
    other = make_colour_tree(tmp_path / "other", per_class=8,
                             classes={"cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)})
    for tree, saved in ((colour_tree, "{}"), (other, "{}\n\n"), (colour_tree, "\ufeff{}")):
        labels = outputs["output_labels"].read_text().rstrip("\n") if outputs["output_labels"].exists() else None
        if labels is not None:
            outputs["output_labels"].write_text(saved.format(labels.replace("\n", "\r\n")))
        retrain(tree, tiny_module, outputs)
    assert outputs["output_labels"].read_text() == "".join(f"{name}\n" for name in sorted(COLOURS))


def test_a_report_edited_to_list_a_path_with_a_nul_byte_is_no_traceback(colour_tree: Path, tiny_module: Path,
                                                                         outputs, tmp_path: Path) -> None:
    """A report beside --labels listing a path with a NUL byte (edited by hand) gave label-image a traceback
    (`embedded null byte`, probe YY): such a path is no file of the model's."""
    retrain(colour_tree, tiny_module, outputs)
    report = outputs["output_labels"].with_name("report.json")
    data = json.loads(report.read_text())
    data["run"]["files"].insert(0, "/x\u0000y")
    data["run"]["files_sha256"].insert(0, "")
    data["labels"] = ["b", "g", "r"]
    report.write_text(json.dumps(data))
    loose = tmp_path / "loose" / "g.pb"
    loose.parent.mkdir()
    shutil.copyfile(outputs["output_graph"], loose)
    result = invoke(label_image_command, ["--graph", str(loose), "--labels", str(outputs["output_labels"]),
                                          "--image", str(colour_tree / "red" / "red_000.jpg")])
    assert result.stdout.split()[0] in COLOURS and "Traceback" not in result.stderr


def test_a_run_that_fails_after_training_puts_back_the_earlier_runs_intermediate_graphs(
        colour_tree: Path, tiny_module: Path, outputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe YYY: a full disk at the SavedModel (or any later failure, or an interrupt) left the earlier run's
    intermediate graphs of the same steps replaced by this run's, with "earlier outputs are kept": label-image
    then refused them, their bytes no longer those its report records. Now they are put back; a step only this
    run reached keeps its graph, as any finished file of a run that stopped."""
    from retrain.exporters.labels import Labels

    folder = outputs["output_labels"].parent / "ig"
    outputs = {**outputs, "intermediate_output_graphs_dir": folder}
    retrain(colour_tree, tiny_module, outputs, intermediate_store_frequency=10)
    earlier = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(earlier) == ["intermediate_10.pb"]

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Labels, "write", full)
    error = retrain(colour_tree, tiny_module, outputs, expect=1, intermediate_store_frequency=10,
                        how_many_training_steps=25, learning_rate=0.5)
    assert error.startswith("retrain: error: No space left on device"), error
    assert (folder / "intermediate_10.pb").read_bytes() == earlier["intermediate_10.pb"]  # put back
    assert (folder / "intermediate_20.pb").is_file()  # this run's own step
    assert sorted(path.name for path in folder.iterdir()) == ["intermediate_10.pb", "intermediate_20.pb"]
    monkeypatch.undo()
    photo = next(path for path in sorted(colour_tree.rglob("*")) if path.is_file())
    assert invoke(label_image_command, ["--graph", str(folder / "intermediate_10.pb"), "--image", str(photo)]).stdout


@pytest.mark.parametrize("failure", ["memory", "open files", "tensorflow", "open files, worded"])
def test_out_of_memory_or_open_files_during_the_exports_is_one_line_and_takes_the_set_back(
        colour_tree: Path, tiny_module: Path, outputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    """Probe YYY: under `ulimit -v`, TensorFlow's std::bad_alloc (a MemoryError) as the SavedModel was saved
    ended the run with a traceback; under `ulimit -n 16` the whole error was "Too many open files"."""
    from retrain.errors import RetrainError
    from retrain.exporters.labels import Labels

    retrain(colour_tree, tiny_module, outputs)
    earlier = outputs["output_graph"].read_bytes()

    def short(*_args, **_kwargs):
        if failure == "memory":
            raise MemoryError("std::bad_alloc")
        if failure == "tensorflow":  # (probe ZZB: grappler's, as the TFLite converter shut down short of memory)
            raise RuntimeError("Resource temporarily unavailable")
        if failure == "open files, worded":  # an error line of retrain's own words (ZZB: `cannot read --image_dir`)
            raise RetrainError("cannot read --image_dir photos: Too many open files")
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Labels, "write", short)
    error = retrain(colour_tree, tiny_module, outputs, expect=1, learning_rate=0.5)
    assert error == {"memory": "retrain: error: out of memory (std::bad_alloc): this run needs more than the system "
                               "(or ulimit -v) gives it; finished files are kept",
                     "open files": "retrain: error: Too many open files (the process's limit on open files: raise "
                                   "it, e.g. ulimit -n 4096); finished files are kept",
                     "tensorflow": "retrain: error: cannot write --output_labels (RuntimeError: Resource temporarily "
                                   "unavailable); earlier outputs are kept",
                     "open files, worded": "retrain: error: cannot read --image_dir photos: Too many open files (the "
                                           "process's limit on open files: raise it, e.g. ulimit -n 4096)"}[failure]
    assert outputs["output_graph"].read_bytes() == earlier  # the set taken back


def test_the_mount_table_is_made_from_the_text_its_reread_compares(tmp_path: Path) -> None:
    """Probe ZZA: `reset` read the table's text, and the table was parsed from a second read; a mount made between
    the two was kept under the older text, so once it was unmounted and made again (the same text as before) a
    bind mount over the output folder was not seen."""
    tree, out, printed = _mounts_seen(tmp_path, "bind(); mounts.reset(); unbind(); mounts.canonical(out)\n"
                                                "bind(); mounts.reset(); print(mounts.canonical(out))")
    assert printed == [str(tree / "blue")]


def _mounts_seen(tmp_path: Path, steps: str) -> tuple[Path, Path, list[str]]:
    """Run `steps` in a mount namespace of its own, with `mounts` imported and `bind()` / `unbind()` mounting a
    folder of a photo tree over an output folder: (the tree, the output folder, the lines it printed)."""
    tree, out = tmp_path / "photos", tmp_path / "out"
    (tree / "blue").mkdir(parents=True)
    out.mkdir()
    script = (f"import subprocess; from retrain import mounts; tree, out = {str(tree)!r}, {str(out)!r}\n"
              f"bind = lambda: subprocess.run(['mount', '--bind', tree + '/blue', out], check=True)\n"
              f"unbind = lambda: subprocess.run(['umount', out], check=True)\n{steps}")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return tree, out, done.stdout.split()


def test_tensorflow_that_cannot_be_loaded_is_one_line(colour_tree: Path, tiny_module: Path, outputs,
                                                     tmp_path: Path) -> None:
    """Probe ZZZ: under `ulimit -v`, importing TensorFlow failed with a traceback ending "failed to map segment
    from shared object" (or a SystemError). Here the import fails as it did, through a package of that name put
    first on the path, which prints TensorFlow's start-up notices first: they came before the line (probe ZZD);
    what else the import printed still comes."""
    shim = tmp_path / "shim" / "tensorflow"
    shim.mkdir(parents=True)
    notices = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
               "I0000 00:00:1795882684.535594    2036 port.cc:153] oneDNN custom operations are on. You may see\n"
               "I0000 00:00:1795882684.535902    2036 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
               "E0000 00:00:1795882684.535903    2036 loader.cc:7] a reason of its own\n")
    (shim / "__init__.py").write_text(f'import os; os.write(2, {notices.encode()!r})\n'
                                      'raise ImportError("libtensorflow_cc.so.2: failed to map segment from shared '
                                      'object")\n')
    repo = Path(__file__).resolve().parents[1]
    result = run_script("-m", "retrain", *flags(image_dir=colour_tree, tfhub_module=tiny_module, **outputs),
                        env={"PYTHONPATH": f"{shim.parent}{os.pathsep}{repo}"}, check=1)
    assert "Traceback" not in result.stderr
    assert "InitializeLog" not in result.stderr and "I0000" not in result.stderr, result.stderr
    assert "loader.cc:7] a reason of its own" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "retrain: error: cannot load tensorflow (libtensorflow_cc.so.2: failed to map segment from shared object); "
        "if the memory this run may use is limited (ulimit -v), raise the limit, else reinstall it")


def test_a_mount_made_while_the_table_is_watched_is_seen(tmp_path: Path) -> None:
    """The table is read again only when the kernel marks /proc/self/mountinfo as changed (probe ZZC: reading it at
    each write cost 5 ms at 1,621 mounts): mounts and unmounts after the watch began are seen all the same."""
    tree, out, printed = _mounts_seen(tmp_path, "mounts.reset(); mounts.reset(); print(mounts.canonical(out))\n"
                                                "bind(); mounts.reset(); print(mounts.canonical(out))\n"
                                                "unbind(); mounts.reset(); print(mounts.canonical(out))")
    assert printed == [str(out), str(tree / "blue"), str(out)]
