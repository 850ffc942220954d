"""Run a graph that `retrain` exported the classic way: tf.compat.v1, no retrain package needed.

    python examples/classify_frozen_graph.py /tmp/output_graph.pb /tmp/output_labels.txt photo.jpg

Preprocessing: RGB, resized whole to the graph's input size (bilinear with antialiasing, as retrain
resizes), scaled to [0, 1]. retrain also applies a photo's EXIF orientation, which this example skips,
and decodes and resizes with Pillow rather than TensorFlow: scores can differ from label-image's in the
second or third decimal.
"""

import sys

import numpy as np
import tensorflow as tf


def main(graph_path: str, labels_path: str, image_path: str) -> None:
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="import")
    placeholder = graph.get_tensor_by_name("import/Placeholder:0")
    height, width = placeholder.shape[1], placeholder.shape[2]
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    pixels = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), [height, width], antialias=True)
    with tf.compat.v1.Session(graph=graph) as session:
        scores = session.run("import/final_result:0", {placeholder: pixels.numpy()[None]})[0]
    labels = open(labels_path, encoding="utf-8").read().splitlines()
    for index in np.argsort(-scores)[:5]:
        print(labels[index], f"{scores[index]:.5f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python examples/classify_frozen_graph.py GRAPH.pb LABELS.txt IMAGE")
    main(*sys.argv[1:])
