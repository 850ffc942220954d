// Classify float32 images with a retrain TF.js export, using the real @tensorflow/tfjs packages.
//
//   node run_model.mjs MODEL_DIR INPUTS.bin N
//
// MODEL_DIR holds model.json and its weight shards; INPUTS.bin holds N images as raw
// little-endian float32 [N, H, W, 3] (H and W come from the model's input). Prints one JSON
// object on stdout: {tfjs, backend, load_ms, predict_ms, input, output, inputNodes,
// outputNodes, metadata, probabilities: [[...], ...]}.
//
// Pure JavaScript (tfjs-core + tfjs-converter + tfjs-backend-cpu), no tfjs-node: the files
// are read with fs and handed to TF.js through a small IOHandler.

import {readFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {join} from 'node:path';
import {performance} from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const converter = require('@tensorflow/tfjs-converter');

/** An IOHandler reading model.json and its shards from a folder on disk. */
function fileHandler(directory) {
  return {
    async load() {
      const modelJSON = JSON.parse(readFileSync(join(directory, 'model.json'), 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const buffers = [];
        for (const group of manifest) {
          for (const path of group.paths) {
            const bytes = readFileSync(join(directory, path));
            buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
          }
        }
        return [tf.io.getWeightSpecs(manifest), tf.io.concatenateArrayBuffers(buffers)];
      });
    },
  };
}

async function main(argv) {
  await tf.setBackend('cpu');
  await tf.ready();
  const [directory, inputsPath, countText] = argv;
  if (!directory || !inputsPath || !countText) {
    throw new Error('usage: node run_model.mjs MODEL_DIR INPUTS.bin N');
  }
  const count = Number.parseInt(countText, 10);

  const start = performance.now();
  const model = await converter.loadGraphModel(fileHandler(directory));
  const loadMs = performance.now() - start;

  const [, height, width, channels] = model.inputs[0].shape;
  const raw = readFileSync(inputsPath);
  const pixels = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  if (pixels.length !== count * height * width * channels) {
    throw new Error(`${inputsPath} holds ${pixels.length} floats; expected ${count}x${height}x${width}x${channels}`);
  }
  const images = tf.tensor4d(pixels, [count, height, width, channels], 'float32');

  const predictStart = performance.now();
  const output = model.predict(images);
  const probabilities = await output.array();
  const predictMs = performance.now() - predictStart;

  console.log(JSON.stringify({
    tfjs: tf.version_core,
    backend: tf.getBackend(),
    load_ms: loadMs,
    predict_ms: predictMs,
    input: model.inputs[0],
    output: model.outputs[0],
    inputNodes: model.inputNodes,
    outputNodes: model.outputNodes,
    metadata: model.metadata,
    shape: output.shape,
    probabilities,
  }));
  tf.dispose([images, output]);
  model.dispose();
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`run_model.mjs: ${error.stack || error}`);
  process.exit(1);
});
