"""Benchmark: which new-layer ("head") recipe gives the best held-out accuracy (issue 15).

    python benchmarks/bench_heads.py [--module DIR[,DIR...]] [--folds 10] [--seeds 0 1 2] [--heads SPEC ...]

1. Computes the bottleneck vector of every photo (default: the 500 fixture
   flower photos) with the module, for the photo as is and for its mirror
   image, plus `--variants` distorted copies (random crop / scale / flip, the
   semantics of retrain/distortions.py), and caches them in `--cache`
   (default /tmp/bench_heads_cache; keyed by the module's files, the photos
   and the distortion settings). Pixels come from
   `retrain.images.load_image`, exactly as training prepares them. Recipes
   with `size=` also get plain and mirror vectors of other inputs: the photo
   at another size (a module that fixes 224 is re-declared at that size
   through its frozen graph), its centre square, or a view an exported graph
   could compute from its 224x224 input (enlarged, or its middle zoomed).
2. Trains every head recipe with repeated stratified k-fold cross-validation:
   for each seed the photos of each class are shuffled and dealt into k folds;
   fold i is the test set, a stratified `--validation_percentage` of all photos
   taken from the other folds is the validation set (used only by early
   stopping, but held out from training for every recipe, as the CLI holds out
   its validation split), the rest trains. With k = 10 and 10 % that is
   exactly the CLI's default 80/10/10 split. All recipes see the same folds,
   so per-fold accuracy differences are paired.
3. Prints one row per recipe: mean test accuracy and its std over the
   seed x fold cells, the mean paired gain over the first recipe (the classic
   head) with its std, the Nadeau-Bengio corrected standard error of that
   gain (CV folds share training data, so the naive SE is too small), how many
   cells the recipe won / tied / lost against the classic head, mean test cross-
   entropy, and the wall time of training per fold.

Each head is trained as one compiled tf.function loop over steps, as
retrain/train.py does, so timings are realistic. A recipe is a spec string
of key=value pairs separated by commas (see HeadSpec for keys and defaults),
e.g. "opt=adam,lr=0.001,steps=1000,l2=0.001,train=flip,test=avg". Timings are
wall-clock on a shared machine: compare recipes within one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fixtures import FIXTURES  # noqa: E402
EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}

# The default recipes: the classic head first (the reference for paired gains), then one change
# at a time, then combinations. Override with --heads.
DEFAULT_HEADS = [
    "classic",
    "tseed=1",  # the classic head with other initial weights and batches: the noise floor of a paired gain
    "test=avg",  # flip averaging at test time only
    "train=avg,test=avg",  # flip averaging in training and at test time
    "train=variants",  # what --flip_left_right --random_crop 10 --random_scale 10 (cached) trains on
    "norm=sqrt",
    "norm=sqrt,train=avg,test=avg",
    "norm=sqrt,train=variants+flip,test=avg",
    "opt=adam,lr=0.001,l2=0.03",
]


SPEC_HELP = """recipe keys (defaults = the classic head):
  opt=sgd|momentum|adam  lr=0.01  steps=4000  batch=100  sched=const|cosine
  l2=0 (adds l2/2*|W|^2)  ls=0 (label smoothing)  dropout=0  init=0.001 (stddev of initial weights)
  train=plain|avg|flip|variants|variants+flip|variants+avg|variants+plain  (the vectors trained on; avg = mean
        of the photo's and its mirror's vectors, flip = both as separate rows, variants = the distorted copies)
  test=plain|avg|all  (the vectors tested on; all = mean of plain, mirror and every variant)
  norm=none|sqrt|std|l2  (feature transform before the layer)  k=0 (use only the first k variants)
  es=none|loss|acc  es_every=100  (keep the weights with the best validation loss / accuracy)
  tseed=0 (training-seed offset: a null recipe)  fraction=1 (train on a fraction of each fold: learning curve)
  size=  (what the module sees, default --image_size: "288" is the whole photo resized to 288x288 (a module that
         fixes 224 runs at 288 through its frozen graph), "224sq" the photo's centre square at 224x224, "288u" the
         photo at --image_size enlarged to 288x288, "224z88" the middle 88 % of the photo at --image_size enlarged
         back to 224x224 (u and z: what a graph taking --image_size can compute); "+" averages the vectors, e.g.
         "224+224sq", "224+288" or "224+288u"; plain and mirror vectors only, no distorted variants)
"""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One head recipe. Defaults are the classic head."""

    opt: str = "sgd"  # sgd | momentum (0.9, heavy ball) | adam (beta 0.9 / 0.999, eps 1e-7)
    lr: float = 0.01
    steps: int = 4000
    batch: int = 100
    sched: str = "const"  # const | cosine (lr * (1 + cos(pi * t / steps)) / 2)
    l2: float = 0.0  # adds l2 / 2 * sum(weights ** 2) to the loss (biases not decayed)
    ls: float = 0.0  # label smoothing: targets (1 - ls) * onehot + ls / classes
    dropout: float = 0.0  # dropout on the bottleneck vector during training
    init: float = 0.001  # stddev of the truncated-normal initial weights
    train: str = "plain"  # plain | avg | flip (plain and mirror rows) | variants | variants+flip | variants+avg | variants+plain
    test: str = "plain"  # plain | avg (mean of the photo's and its mirror's vectors) | all (mean of plain, mirror, variants)
    norm: str = "none"  # none | std: (x - mean) / std per feature, from the training vectors (foldable into W, b)
    #                     | l2: x * (mean training norm / |x|) | sqrt: sqrt(x) (MobileNet features are >= 0)
    k: int = 0  # use only the first k distorted variants of each photo (0: all --variants)
    tseed: int = 0  # offset of the training seed (init, batches): "tseed=1" is a null recipe showing seed noise
    fraction: float = 1.0  # train on this stratified fraction of each fold's training photos (learning curves)
    es: str = "none"  # none | loss | acc: keep the weights with the best validation loss / accuracy
    es_every: int = 100  # steps between validation checks when es != none
    size: str = ""  # inputs joined by "+" (see SOURCE), their vectors averaged

    @staticmethod
    def parse(text: str) -> HeadSpec:
        if text.strip() in ("", "classic"):
            return HeadSpec()
        fields = {f.name: f for f in dataclasses.fields(HeadSpec)}
        values = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in fields:
                raise SystemExit(f"bench_heads: unknown key {key!r} in head spec {text!r}; keys: {', '.join(fields)}")
            kind = type(getattr(HeadSpec(), key))
            values[key] = kind(float(value)) if kind is int else kind(value)
            if key == "size" and not all(re.fullmatch(SOURCE, part) for part in value.split("+")):
                raise SystemExit(f"bench_heads: size={value!r}; expected inputs joined by '+', e.g. 288, 224+224sq, "
                                 f"224+288u or 224+224z88")
        spec = HeadSpec(**values)
        spec.check()
        return spec

    def check(self) -> None:
        allowed = {"opt": {"sgd", "momentum", "adam"}, "sched": {"const", "cosine"}, "es": {"none", "loss", "acc"},
                   "train": {"plain", "avg", "flip", "variants", "variants+flip", "variants+avg", "variants+plain"},
                   "test": {"plain", "avg", "all"}, "norm": {"none", "std", "l2", "sqrt"}}
        for key, options in allowed.items():
            if getattr(self, key) not in options:
                raise SystemExit(f"bench_heads: {key}={getattr(self, key)!r}; expected one of {sorted(options)}")

    def inputs(self, default: int) -> list[str]:
        return self.size.split("+") if self.size else [str(default)]

    def name(self) -> str:
        default = HeadSpec()
        changed = [f"{f.name}={getattr(self, f.name):g}" if isinstance(getattr(self, f.name), float)
                   else f"{f.name}={getattr(self, f.name)}"
                   for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(changed) or "classic"


# ----------------------------------------------------------------------------------------------------------------
# Bottleneck vectors


def list_photos(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
        files += found
        labels += [index] * len(found)
    return classes, files, np.asarray(labels, np.int32)


def module_digest(module: Path) -> str:
    digest = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        if (module / name).is_file():
            digest.update((module / name).read_bytes())
    return digest.hexdigest()[:12]


def photos_digest(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


_last_progress = [0.0]


def progress(what: str, done: int, total: int) -> None:
    """A line on stderr every 10 s and at the end."""
    now = time.monotonic()
    if done == total or now - _last_progress[0] > 10:
        _last_progress[0] = now
        print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)


def load_module(tf, module: Path, size: int):
    """The module as a function of [N, size, size, 3] images. A module whose signature fixes another size runs at
    `size` through its frozen graph with the input re-declared (works for fully convolutional modules such as
    MobileNet; this is an experiment, not something retrain does)."""
    from retrain.features.module import load_feature_extractor

    # retrain's own loading: the size the module fixes, or `size` for one that leaves it open.
    extractor = load_feature_extractor(str(module), image_size=size, strict_size=False)
    # A tf.function, not its concrete function: the function's closure keeps the module (and its variables) alive.
    function = tf.function(lambda images: extractor(images), autograph=False,
                           input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    if (extractor.height, extractor.width) == (size, size):
        return function
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    native = tf.function(lambda images: extractor(images), autograph=False).get_concrete_function(
        tf.TensorSpec([None, extractor.height, extractor.width, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(native).graph.as_graph_def()
    placeholder = native.inputs[0].name.split(":")[0]
    output = native.outputs[0].name

    def imported():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="resized_images")
        tf.graph_util.import_graph_def(frozen, input_map={placeholder: images}, name="module")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    print(f"  {module.name}: running at {size}x{size} through its frozen graph", file=sys.stderr)
    return wrapped.prune(wrapped.graph.get_tensor_by_name("resized_images:0"),
                         wrapped.graph.get_tensor_by_name(f"module/{output}"))


# One input a recipe's size= names: "288" the photo at 288x288; "224sq" its centre square; "288u" the photo at
# --image_size, then enlarged to 288x288 (what a graph taking --image_size can compute); "224z88" the middle 88 %
# (by side) of the photo at --image_size, enlarged back to 224x224.
SOURCE = r"([1-9][0-9]*)(sq|u|z([1-9][0-9]?))?"


def load_square(path: Path, *, size: int) -> np.ndarray:
    """The centre square of a photo (side: its shorter side), resized to size x size as retrain resizes."""
    from retrain.images import decode_rgb, read_bytes, resize

    rgb = decode_rgb(read_bytes(path))
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(rgb[top:top + side, left:left + side], height=size, width=size)


def compute_plain_and_mirror(tf, embed, files: list[Path], *, size: int, kind: str, base: int, batch: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of every photo (or the view of it `kind` names, see SOURCE) and of its mirror image (left-right),
    one module call a batch."""
    from retrain.images import load_image

    def load(path: Path) -> np.ndarray:
        if kind == "sq":
            return load_square(path, size=size)
        return load_image(path, height=base, width=base) if kind else load_image(path, height=size, width=size)

    if kind.startswith("z"):
        edge = (1.0 - int(kind[1:]) / 100.0) / 2.0
        module = embed

        def embed(images):
            count = tf.shape(images)[0]
            boxes = tf.tile(tf.constant([[edge, edge, 1.0 - edge, 1.0 - edge]]), [count, 1])
            return module(tf.image.crop_and_resize(images, boxes, tf.range(count), [size, size], method="bilinear"))
    elif kind == "u":
        module = embed

        def embed(images):
            return module(tf.image.resize(images, [size, size], method="bilinear"))

    plain, mirror = [], []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for start in range(0, len(files), batch):
            images = np.stack(list(pool.map(load, files[start:start + batch])))
            both = embed(tf.constant(np.concatenate([images, images[:, :, ::-1, :]]))).numpy()
            plain.append(both[:len(images)])
            mirror.append(both[len(images):])
            progress("plain + mirror vectors", start + len(images), len(files))
    return np.concatenate(plain), np.concatenate(mirror)


def compute_variants(tf, module_call, files: list[Path], *, size: int, batch: int, variants: int, crop: float,
                     scale: float, brightness: float, flip: bool, seed: int) -> np.ndarray:
    """[variants, N, D] vectors of distorted copies, with retrain/distortions.py's semantics.

    Each photo is prepared once at the largest size a draw can need (size * margin * max scale), then
    every variant takes a window of relative side 1 / (margin * scale) at a random place of it
    (crop_and_resize back to `size`), mirrors it with probability 1/2 when `flip`, and multiplies its
    pixels by U(1 - b, 1 + b). Draws depend on the photo's index, the variant and the seed only.
    """
    from retrain.images import load_image

    margin, max_scale = 1.0 + crop / 100.0, 1.0 + scale / 100.0
    source = math.ceil(round(size * margin * max_scale, 6))

    @tf.function(input_signature=[tf.TensorSpec([None, source, source, 3], tf.float32), tf.TensorSpec([None, 4], tf.float32),
                                  tf.TensorSpec([None], tf.bool), tf.TensorSpec([None], tf.float32)])
    def features(images, boxes, flips, factors):
        count = tf.shape(images)[0]
        windows = tf.image.crop_and_resize(images, boxes, tf.range(count), [size, size], method="bilinear")
        windows = tf.where(tf.reshape(flips, [-1, 1, 1, 1]), tf.reverse(windows, axis=[2]), windows)
        return module_call(windows * tf.reshape(factors, [-1, 1, 1, 1]))

    rows: list[tuple[int, int, np.ndarray, np.ndarray, bool, float]] = []
    result: dict[tuple[int, int], np.ndarray] = {}

    def run() -> None:
        vectors = features(np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]).astype(np.float32),
                           np.asarray([r[4] for r in rows]), np.asarray([r[5] for r in rows], np.float32)).numpy()
        for row, vector in zip(rows, vectors):
            result[(row[0], row[1])] = vector
        rows.clear()

    per_call = max(1, batch // variants)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for start in range(0, len(files), per_call):
            chunk = range(start, min(len(files), start + per_call))
            images = list(pool.map(lambda i: load_image(files[i], height=source, width=source), chunk))
            for index, image in zip(chunk, images):
                for variant in range(variants):
                    rng = np.random.default_rng([seed, index, variant])
                    s = rng.uniform(1.0, max_scale)
                    oy, ox = rng.uniform(0.0, 1.0, 2)
                    mirrored = bool(rng.uniform() < 0.5) if flip else False
                    factor = rng.uniform(1.0 - brightness / 100.0, 1.0 + brightness / 100.0)
                    side = 1.0 / (margin * s)
                    box = np.array([oy * (1 - side), ox * (1 - side), oy * (1 - side) + side, ox * (1 - side) + side])
                    rows.append((variant, index, image, box, mirrored, factor))
            run()
            progress("distorted variants", min(len(files), start + per_call) * variants, len(files) * variants)
    return np.stack([np.stack([result[(v, i)] for i in range(len(files))]) for v in range(variants)])


def bottlenecks(tf, args, files: list[Path], source: str) -> dict[str, np.ndarray]:
    """Plain, mirror and (if asked, for --image_size) variant vectors of every member of --module (comma-separated),
    concatenated in the order given as `retrain --tfhub_module A,B` concatenates them. `source` is one input of a
    recipe's size= ("288", "224sq")."""
    members = [member_bottlenecks(tf, args, files, Path(name), source) for name in args.module.split(",")]
    return {kind: np.concatenate([member[kind] for member in members], axis=-1) for kind in members[0]}


def member_bottlenecks(tf, args, files: list[Path], module: Path, source: str) -> dict[str, np.ndarray]:
    """One module's plain, mirror and (if asked) variant vectors, from the cache folder or computed and cached
    there."""
    args.cache.mkdir(parents=True, exist_ok=True)
    match = re.fullmatch(SOURCE, source)
    size, kind = int(match.group(1)), match.group(2) or ""
    key = f"{module.name}-{module_digest(module)}-{photos_digest(files, Path(args.photos))}-{source}"
    plain_file = args.cache / f"plain-{key}.npz"
    vkey = (f"k{args.variants}-crop{args.random_crop:g}-scale{args.random_scale:g}-bright{args.random_brightness:g}"
            f"-flip{int(not args.no_variant_flip)}-seed{args.variant_seed}")
    variant_file = args.cache / f"variants-{key}-{vkey}.npz"
    data: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    embed = None
    if plain_file.is_file():
        with np.load(plain_file) as stored:
            data.update(plain=stored["plain"], mirror=stored["mirror"])
    else:
        embed = load_module(tf, module, size)
        start = time.perf_counter()
        data["plain"], data["mirror"] = compute_plain_and_mirror(tf, embed, files, size=size, kind=kind,
                                                                 base=args.image_size,
                                                                 batch=args.bottleneck_batch_size)
        timings["plain+mirror"] = time.perf_counter() - start
        np.savez(str(plain_file) + ".tmp.npz", **data)
        os.replace(str(plain_file) + ".tmp.npz", plain_file)
    if args.variants and source == str(args.image_size):
        if variant_file.is_file():
            with np.load(variant_file) as stored:
                data["variants"] = stored["variants"]
        else:
            embed = embed or load_module(tf, module, size)  # loaded once when the plain vectors were computed too
            start = time.perf_counter()
            data["variants"] = compute_variants(tf, embed, files, size=args.image_size,
                                                batch=args.bottleneck_batch_size, variants=args.variants,
                                                crop=args.random_crop, scale=args.random_scale,
                                                brightness=args.random_brightness, flip=not args.no_variant_flip,
                                                seed=args.variant_seed)
            timings["variants"] = time.perf_counter() - start
            np.savez(str(variant_file) + ".tmp.npz", variants=data["variants"])
            os.replace(str(variant_file) + ".tmp.npz", variant_file)
    for name, seconds in timings.items():
        count = data["variants"].shape[0] * len(files) if name == "variants" else 2 * len(files)
        print(f"computed {name} vectors of {module.name} at {source}: {count} forward passes in {seconds:.1f} s "
              f"({count / seconds:.1f}/s)")
    return data


def at_inputs(by_input: dict[str, dict[str, np.ndarray]], inputs: list[str]) -> dict[str, np.ndarray]:
    """The vectors of one input, or (several) the mean of their plain and of their mirror vectors."""
    if len(inputs) == 1:
        return by_input[inputs[0]]
    return {kind: np.mean([by_input[source][kind] for source in inputs], axis=0) for kind in ("plain", "mirror")}


def views(data: dict[str, np.ndarray], which: str, k: int = 0) -> np.ndarray:
    """[N, V, D]: the V vectors a recipe trains or tests on for each photo (k > 0: only k distorted variants)."""
    if k and "variants" in data:
        if k > len(data["variants"]):
            raise SystemExit(f"bench_heads: k={k} but only --variants {len(data['variants'])} were computed")
        data = dict(data, variants=data["variants"][:k])
    plain, mirror = data["plain"], data["mirror"]
    if which == "plain":
        return plain[:, None]
    if which == "avg":
        return ((plain + mirror) / 2)[:, None]
    if which == "flip":
        return np.stack([plain, mirror], axis=1)
    if which == "all" and "variants" in data:
        return ((plain + mirror + data["variants"].sum(axis=0)) / (2 + len(data["variants"])))[:, None]
    if "variants" not in data:
        raise SystemExit(f"bench_heads: train={which} needs distorted variants; pass --variants K (K > 0)")
    variants = np.transpose(data["variants"], (1, 0, 2))
    if which == "variants":
        return variants
    if which == "variants+flip":
        return np.concatenate([plain[:, None], mirror[:, None], variants], axis=1)
    if which == "variants+avg":
        return np.concatenate([((plain + mirror) / 2)[:, None], variants], axis=1)
    if which == "variants+plain":
        return np.concatenate([plain[:, None], variants], axis=1)
    raise ValueError(which)


# ----------------------------------------------------------------------------------------------------------------
# Cross-validation folds


def folds(labels: np.ndarray, *, k: int, seed: int, validation_percentage: float):
    """Yield (train, validation, test) index arrays for each of the k stratified folds of one seed."""
    rng = np.random.default_rng([seed, 12345])
    fold_of = np.zeros(len(labels), int)
    rank = np.zeros(len(labels), int)  # position of each photo in its class's shuffled order
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        offset = rng.integers(k)  # so that a class's remainder photos do not always go to fold 0
        fold_of[members] = (np.arange(len(members)) + offset) % k
        rank[members] = np.arange(len(members))
    for i in range(k):
        test = np.flatnonzero(fold_of == i)
        validation = []
        for c in np.unique(labels):
            # the validation photos of class c: the first ones (in shuffled order) of the next folds
            rest = np.flatnonzero((labels == c) & (fold_of != i))
            rest = rest[np.argsort(((fold_of[rest] - i) % k) * len(labels) + rank[rest], kind="stable")]
            validation.append(rest[:round(validation_percentage / 100.0 * np.sum(labels == c))])
        validation = np.sort(np.concatenate(validation))
        train = np.setdiff1d(np.arange(len(labels)), np.concatenate([test, validation]))
        yield train, validation, test


# ----------------------------------------------------------------------------------------------------------------
# Head training: one compiled loop over steps, as retrain/train.py


class HeadTrainer:
    """Trains softmax(x @ W + b) on [N, V, D] vectors; compiled once per recipe and data shape."""

    def __init__(self, tf, spec: HeadSpec, *, dim: int, classes: int) -> None:
        self.tf, self.spec, self.classes = tf, spec, classes
        def zeros(shape: list[int]):
            return tf.Variable(tf.zeros(shape))

        self.weights, self.biases = zeros([dim, classes]), zeros([classes])
        self.slots = [zeros([dim, classes]), zeros([classes]), zeros([dim, classes]), zeros([classes])]
        self.step = tf.Variable(0.0)
        self.generator = tf.random.Generator.from_seed(0)
        self.run_steps = tf.function(self._run_steps)

    def reset(self, seed: int) -> None:
        tf = self.tf
        self.weights.assign(tf.random.stateless_truncated_normal(self.weights.shape, seed=[seed, 1],
                                                                 stddev=self.spec.init))
        self.biases.assign(tf.zeros_like(self.biases))
        for slot in self.slots:
            slot.assign(tf.zeros_like(slot))
        self.step.assign(0.0)
        self.generator.reset_from_seed(seed)

    def _run_steps(self, vectors, labels, offsets, counts, count):
        """`count` steps on vectors [N, V, D] sorted by class (labels [N], class offsets and counts)."""
        tf, spec = self.tf, self.spec
        batch, classes = spec.batch, self.classes
        view_count = tf.shape(vectors)[1]
        smooth_on, smooth_off = 1.0 - spec.ls + spec.ls / classes, spec.ls / classes
        m_w, m_b, v_w, v_b = self.slots
        for _ in tf.range(count):
            # class-uniform: a class, then a photo of it, then one of its views
            pick = self.generator.uniform([batch], 0, classes, tf.int32)
            size = tf.gather(counts, pick)
            within = tf.minimum(tf.cast(self.generator.uniform([batch]) * tf.cast(size, tf.float32), tf.int32), size - 1)
            photo = tf.gather(offsets, pick) + within
            view = self.generator.uniform([batch], 0, view_count, tf.int32)
            x = tf.gather_nd(vectors, tf.stack([photo, view], axis=1))
            y = tf.gather(labels, photo)
            if spec.dropout > 0:
                keep = tf.cast(self.generator.uniform(tf.shape(x)) >= spec.dropout, tf.float32)
                x = x * keep / (1.0 - spec.dropout)
            targets = tf.one_hot(y, classes, on_value=smooth_on, off_value=smooth_off)
            with tf.GradientTape() as tape:
                logits = tf.matmul(x, self.weights) + self.biases
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, logits))
                if spec.l2 > 0:
                    loss += spec.l2 / 2.0 * tf.reduce_sum(tf.square(self.weights))
            grad_w, grad_b = tape.gradient(loss, [self.weights, self.biases])
            rate = tf.constant(spec.lr, tf.float32)
            if spec.sched == "cosine":
                rate = rate * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(self.step / spec.steps, 1.0)))
            self.step.assign_add(1.0)
            if spec.opt == "sgd":
                self.weights.assign_sub(rate * grad_w)
                self.biases.assign_sub(rate * grad_b)
            elif spec.opt == "momentum":
                m_w.assign(0.9 * m_w + grad_w)
                m_b.assign(0.9 * m_b + grad_b)
                self.weights.assign_sub(rate * m_w)
                self.biases.assign_sub(rate * m_b)
            else:  # adam
                m_w.assign(0.9 * m_w + 0.1 * grad_w)
                m_b.assign(0.9 * m_b + 0.1 * grad_b)
                v_w.assign(0.999 * v_w + 0.001 * tf.square(grad_w))
                v_b.assign(0.999 * v_b + 0.001 * tf.square(grad_b))
                corrected = rate * tf.sqrt(1.0 - tf.pow(0.999, self.step)) / (1.0 - tf.pow(0.9, self.step))
                self.weights.assign_sub(corrected * m_w / (tf.sqrt(v_w) + 1e-7))
                self.biases.assign_sub(corrected * m_b / (tf.sqrt(v_b) + 1e-7))
        return self.step

    def train(self, vectors: np.ndarray, labels: np.ndarray, *, seed: int, validation=None) -> tuple[np.ndarray, np.ndarray, int]:
        """Train from scratch; returns (weights, biases, steps of the returned weights)."""
        tf, spec = self.tf, self.spec
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=self.classes)
        arguments = (tf.constant(vectors[order]), tf.constant(labels[order]),
                     tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)),
                     tf.constant(counts.astype(np.int32)))
        self.reset(seed)
        if spec.es == "none" or validation is None:
            self.run_steps(*arguments, tf.constant(spec.steps))
            return self.weights.numpy(), self.biases.numpy(), spec.steps
        best = None
        done = 0
        while done < spec.steps:
            chunk = min(spec.es_every, spec.steps - done)
            self.run_steps(*arguments, tf.constant(chunk))
            done += chunk
            weights, biases = self.weights.numpy(), self.biases.numpy()
            accuracy, loss = score(weights, biases, *validation)
            key = (loss,) if spec.es == "loss" else (-accuracy, loss)
            if best is None or key < best[0]:
                best = (key, weights, biases, done)
        return best[1], best[2], best[3]


def subsample(indices: np.ndarray, labels: np.ndarray, fraction: float, *, seed: int) -> np.ndarray:
    """A stratified random `fraction` of `indices`."""
    rng = np.random.default_rng([seed, 777])
    kept = [rng.permutation(indices[labels[indices] == c])[:max(1, round(fraction * np.sum(labels[indices] == c)))]
            for c in np.unique(labels[indices])]
    return np.sort(np.concatenate(kept))


def normaliser(kind: str, train_views: np.ndarray):
    """A function of vectors [..., D], fitted on the training vectors [N, V, D] of one fold."""
    if kind == "none":
        return lambda x: x
    if kind == "sqrt":
        return lambda x: np.sqrt(np.maximum(x, 0.0))
    flat = train_views.reshape(-1, train_views.shape[-1])
    if kind == "l2":
        scale = float(np.mean(np.linalg.norm(flat, axis=1)))
        return lambda x: x * (scale / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))
    mean, var = flat.mean(axis=0), flat.var(axis=0)
    inverse = 1.0 / np.sqrt(var + 0.01 * var.mean())  # floored: features that are (almost) always 0 stay small
    return lambda x: ((x - mean) * inverse).astype(np.float32)


def score(weights: np.ndarray, biases: np.ndarray, vectors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a head on [N, D] vectors."""
    logits = vectors @ weights + biases
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return (float(np.mean(np.argmax(logits, axis=1) == labels)),
            float(-np.mean(log_probabilities[np.arange(len(labels)), labels])))


# ----------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=SPEC_HELP)
    parser.add_argument("--module", default=str(FIXTURES / "modules" / "mobilenet_v2_100_224"),
                        help="a module folder, or several separated by commas (their vectors concatenated)")
    parser.add_argument("--photos", default=str(FIXTURES / "flower_photos"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_heads_cache"))
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--bottleneck_batch_size", type=int, default=32)
    parser.add_argument("--variants", type=int, default=5, help="distorted copies per photo (0: none)")
    parser.add_argument("--random_crop", type=float, default=10)
    parser.add_argument("--random_scale", type=float, default=10)
    parser.add_argument("--random_brightness", type=float, default=0)
    parser.add_argument("--no_variant_flip", action="store_true", help="variants are not randomly mirrored")
    parser.add_argument("--variant_seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--validation_percentage", type=float, default=10)
    parser.add_argument("--heads", nargs="+", default=None,
                        help="head specs; the first is the reference for paired gains (default: a built-in list)")
    parser.add_argument("--add_heads", nargs="+", default=[], help="specs appended to --heads / the default list")
    parser.add_argument("--json", type=Path, default=None, help="also write every per-fold result here")
    args = parser.parse_args()
    specs = [HeadSpec.parse(s) for s in (args.heads or DEFAULT_HEADS) + args.add_heads]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")

    classes, files, labels = list_photos(Path(args.photos))
    load = os.getloadavg()
    print(f"module {args.module}; {len(files)} photos in {len(classes)} classes; {args.folds}-fold CV x seeds "
          f"{args.seeds}; validation {args.validation_percentage:g} %; os.cpu_count() = {os.cpu_count()}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; tensorflow {tf.__version__}", flush=True)
    by_input = {source: bottlenecks(tf, args, files, source)
                for source in sorted({source for spec in specs for source in spec.inputs(args.image_size)})}
    dim = next(iter(by_input.values()))["plain"].shape[1]
    splits = [(seed, fold, *indices) for seed in args.seeds
              for fold, indices in enumerate(folds(labels, k=args.folds, seed=seed,
                                                   validation_percentage=args.validation_percentage))]
    train_size, test_size = len(splits[0][2]), len(splits[0][4])
    print(f"per fold: {train_size} train, {len(splits[0][3])} validation, {test_size} test photos; "
          f"{len(splits)} folds per recipe", flush=True)

    results = {}
    for spec in specs:
        trainer = HeadTrainer(tf, spec, dim=dim, classes=len(classes))
        data = at_inputs(by_input, spec.inputs(args.image_size))
        train_views, test_views = views(data, spec.train, spec.k), views(data, spec.test, spec.k)[:, 0]
        # compile once, outside the timings, on the shapes every fold has
        first = splits[0]
        trainer.reset(0)
        warm = first[2] if spec.fraction >= 1 else subsample(first[2], labels, spec.fraction, seed=0)
        trainer.run_steps(tf.constant(train_views[warm]), tf.constant(labels[warm]),
                          tf.constant(np.zeros(len(classes), np.int32)),
                          tf.constant(np.ones(len(classes), np.int32)), tf.constant(1))
        rows = []
        for seed, fold, train, validation, test in splits:
            if spec.fraction < 1:
                train = subsample(train, labels, spec.fraction, seed=seed * 1000 + fold)
            start = time.perf_counter()
            transform = normaliser(spec.norm, train_views[train])
            weights, biases, used = trainer.train(transform(train_views[train]), labels[train],
                                                  seed=seed * 1000 + fold + 100_000 * spec.tseed,
                                                  validation=(transform(test_views[validation]), labels[validation]))
            seconds = time.perf_counter() - start
            accuracy, loss = score(weights, biases, transform(test_views[test]), labels[test])
            wrong = test[np.argmax(transform(test_views[test]) @ weights + biases, axis=1) != labels[test]]
            rows.append({"seed": seed, "fold": fold, "accuracy": accuracy, "cross_entropy": loss, "seconds": seconds,
                         "steps": used, "wrong": [str(files[i].relative_to(args.photos)) for i in wrong]})
        results[spec.name()] = rows
        report_row(spec.name(), rows, results[specs[0].name()], train_size=train_size, test_size=test_size,
                   header=spec is specs[0])
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))


def report_row(name: str, rows: list[dict], reference: list[dict], *, train_size: int, test_size: int,
               header: bool) -> None:
    if header:
        print(f"\n{'recipe':58s} {'acc %':>6s} {'std':>5s} {'gain':>6s} {'std':>5s} {'c.SE':>5s} {'W/T/L':>8s} "
              f"{'xent':>6s} {'s/fold':>6s} {'steps':>6s}")
    accuracy = np.array([r["accuracy"] for r in rows]) * 100
    gain = accuracy - np.array([r["accuracy"] for r in reference]) * 100
    n = len(gain)
    # Nadeau & Bengio (2003): resampled CV differences are correlated; inflate the variance of the mean
    corrected = math.sqrt((1.0 / n + test_size / train_size) * np.var(gain, ddof=1)) if n > 1 else float("nan")
    wins, ties, losses = int(np.sum(gain > 1e-9)), int(np.sum(np.abs(gain) <= 1e-9)), int(np.sum(gain < -1e-9))
    print(f"{name:58s} {accuracy.mean():6.2f} {accuracy.std(ddof=1):5.2f} {gain.mean():+6.2f} {gain.std(ddof=1):5.2f} "
          f"{corrected:5.2f} {f'{wins}/{ties}/{losses}':>8s} {np.mean([r['cross_entropy'] for r in rows]):6.3f} "
          f"{np.mean([r['seconds'] for r in rows]):6.2f} {np.mean([r['steps'] for r in rows]):6.0f}", flush=True)


if __name__ == "__main__":
    main()
