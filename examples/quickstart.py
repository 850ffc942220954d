"""The whole job in one command: fetch the classic flower photos, retrain, and label a photo.

    pip install . && python examples/quickstart.py

Downloads TensorFlow's flower_photos (3,670 photos, 218 MB) into ~/flower_photos unless
that folder exists, retrains MobileNet V2 on them with retrain's Python API (a few minutes
on a laptop CPU), prints the accuracy per split and the files written, and labels one of
the held-out test photos with the exported model. Options: --image_dir for your own
folder-per-class photos, --output_dir, --module, --steps.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from retrain import api

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"


def fetch_flowers(destination: Path) -> None:
    """Download and unpack flower_photos into `destination` (a folder that does not exist yet)."""
    print(f"Downloading {FLOWERS_URL} (218 MB) into {destination} ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        archive = Path(scratch) / "flower_photos.tgz"
        with urllib.request.urlopen(FLOWERS_URL, timeout=60) as response, open(archive, "wb") as handle:
            shutil.copyfileobj(response, handle, length=1 << 20)
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(scratch, filter="data")  # no links or paths that leave the folder
            except TypeError:  # Python before 3.10.12 has no filters; the archive is a known one
                tar.extractall(scratch)
        (Path(scratch) / "flower_photos").rename(destination)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=Path.home() / "flower_photos",
                        help="folder with one sub-folder of photos per class (fetched if it is missing)")
    parser.add_argument("--output_dir", type=Path, default=Path.home() / "retrain_quickstart")
    parser.add_argument("--module", default="mobilenet_v2_100_224", help="any --tfhub_module value")
    parser.add_argument("--steps", type=int, default=4000, help="--how_many_training_steps")
    args = parser.parse_args()
    image_dir, out = args.image_dir.expanduser(), args.output_dir.expanduser()
    try:
        if not image_dir.exists():
            image_dir.parent.mkdir(parents=True, exist_ok=True)
            fetch_flowers(image_dir)
    except OSError as error:  # urllib's URLError and timeouts are OSErrors too
        print(f"quickstart: error: cannot fetch the flower photos ({getattr(error, 'reason', error)}); download "
              f"{FLOWERS_URL} by hand, unpack it, and pass --image_dir", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = api.retrain(image_dir, tfhub_module=args.module, how_many_training_steps=args.steps,
                             output_graph=out / "graph.pb", output_labels=out / "labels.txt",
                             saved_model_dir=out / "saved_model", summaries_dir=out / "logs",
                             bottleneck_dir=out / "bottlenecks", checkpoint_path=out / "checkpoint" / "ckpt")
        print("Accuracy per split: " + ", ".join(f"{split} {100 * value:.1f}%"
                                                 for split, value in result.accuracy.items() if value == value))
        split = result.splits["testing"] if len(result.splits["testing"]) else result.splits["training"]
        photo, truth = split.paths[0], result.labels[split.targets.ids[0]]  # a class's photos may be in sub-folders
        (record,) = api.classify([photo], graph=out / "graph.pb", labels=out / "labels.txt", top_k=3)
    except api.RetrainError as error:
        print(f"quickstart: error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"\n{photo} (a held-out photo of {truth}):")
    for prediction in record["predictions"]:
        print(f"  {prediction['label']} {prediction['score']:.3f}")
    print(f"\nNext: label-image --graph {out / 'graph.pb'} --labels {out / 'labels.txt'} --image YOUR_PHOTO.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
