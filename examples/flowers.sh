#!/usr/bin/env bash
# Retrain on TensorFlow's flower photos and classify one of them: the classic tutorial, today.
set -euo pipefail
work="${1:-$HOME/retrain_flowers}"
mkdir -p "$work" && cd "$work"
if [ ! -d flower_photos ]; then
  curl -LO https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz
  tar xzf flower_photos.tgz
fi
retrain --image_dir flower_photos \
  --tfhub_module https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5 \
  --output_graph "$work/graph.pb" --output_labels "$work/labels.txt" \
  --saved_model_dir "$work/saved_model"
label-image --graph "$work/graph.pb" --labels "$work/labels.txt" \
  --image "$(ls flower_photos/roses/*.jpg | head -n 1)"
