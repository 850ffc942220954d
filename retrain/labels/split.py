"""The classic deterministic split: a SHA-1 of the image's name, mapped to a percentage.

Pure Python. Unlike the classic script we hash the path relative to
`image_dir` (POSIX separators, Unicode NFC), so the split never depends on where
the tree lives, how `--image_dir` was spelled, or the operating system.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata

# The classic constant: the hash is reduced modulo this before becoming a percentage.
MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1
SPLITS = ("training", "validation", "testing")
_NOHASH = re.compile(r"_nohash_.*$")


def split_of(relative_path: str, *, validation_percentage: float, testing_percentage: float) -> str:
    """Return 'training', 'validation' or 'testing' for a path relative to image_dir.

    Deterministic and stable: adding files never moves an existing one, and
    files that differ only after `_nohash_` in their name land together (a folder's name is hashed whole: a class
    folder `x_nohash_2019` is not one group).
    """
    folder, _, name = unicodedata.normalize("NFC", relative_path.replace(os.sep, "/")).rpartition("/")
    key = f"{folder}/{_NOHASH.sub('', name)}" if folder else _NOHASH.sub("", name)  # in the file's name only
    digest = int(hashlib.sha1(key.encode("utf-8", errors="surrogateescape")).hexdigest(), 16)
    percentage = (digest % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def scant_training(*, validation_percentage: float, testing_percentage: float) -> str:
    """When the two percentages leave under half the images for training, words that say so (a class with no
    training image then trains on all its images, the small-class rule: a cause to name, not "a small class")."""
    left = 100 - validation_percentage - testing_percentage
    if left >= 50:
        return ""
    return (f"--testing_percentage {testing_percentage:g} and --validation_percentage {validation_percentage:g} "
            f"leave {max(left, 0):g}% for training")
