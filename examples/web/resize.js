// Resize like training does: TensorFlow's tf.image.resize(image, [h, w], method="bilinear",
// antialias=True) on RGB scaled to [0, 1] (retrain/images.py).
//
// That TensorFlow op (ScaleAndTranslate with a triangle kernel) is a separable filter: each
// output pixel's centre maps back to the source, and the triangle kernel (radius 1) is
// stretched by the downscale factor, so every source pixel under it contributes (this is the
// antialiasing; plain bilinear would read only the 2 nearest). Weights are normalised to sum
// to 1. TF.js has no such op (its resizeBilinear never antialiases), so it is done here in
// plain JavaScript: no DOM, so Node can test it against TensorFlow (tests/test_tfjs.py).

/**
 * For one axis: which source pixels each output pixel reads, and with what weights.
 * Float32 arithmetic where TensorFlow uses float, so the spans match its kernel.
 */
function spans(inputSize, outputSize) {
  const f = Math.fround;
  const scale = f(outputSize / inputSize);
  const invScale = f(1 / scale);
  const kernelScale = Math.max(invScale, 1);  // stretch the kernel only when shrinking
  const starts = new Int32Array(outputSize);
  const counts = new Int32Array(outputSize);
  const weights = [];
  for (let x = 0; x < outputSize; x++) {
    const sample = f(f(x + 0.5) * invScale);
    let start = Math.ceil(f(sample - kernelScale - 0.5));
    let end = Math.floor(f(sample + kernelScale - 0.5));
    start = Math.min(Math.max(start, 0), inputSize - 1);
    end = Math.min(Math.max(end, 0), inputSize - 1) + 1;
    const w = new Float64Array(end - start);
    let total = 0;
    for (let s = start; s < end; s++) {
      const distance = Math.abs(f(f(s + 0.5) - sample) / kernelScale);
      const weight = distance < 1 ? 1 - distance : 0;  // the triangle kernel
      w[s - start] = weight;
      total += weight;
    }
    for (let i = 0; i < w.length; i++) w[i] = total > 0 ? w[i] / total : 0;
    starts[x] = start;
    counts[x] = end - start;
    weights.push(w);
  }
  return {starts, counts, weights};
}

/**
 * Antialiased bilinear resize of 8-bit pixels to float RGB in [0, 1].
 *
 * @param {Uint8Array|Uint8ClampedArray} pixels  row-major [height][width][channels], e.g. canvas
 *     ImageData.data (channels 4, RGBA: alpha is ignored, as training drops it)
 * @param {number} width  source width
 * @param {number} height  source height
 * @param {number} channels  3 (RGB) or 4 (RGBA)
 * @param {number} outWidth  the model's input width
 * @param {number} outHeight  the model's input height
 * @returns {Float32Array} [outHeight][outWidth][3], RGB in [0, 1]: the model's input
 */
export function resizeAntialiased(pixels, width, height, channels, outWidth, outHeight) {
  const rows = spans(height, outHeight);
  const cols = spans(width, outWidth);
  // Vertical pass first: [outHeight][width][3], then horizontal: [outHeight][outWidth][3].
  const middle = new Float64Array(outHeight * width * 3);
  for (let y = 0; y < outHeight; y++) {
    const start = rows.starts[y];
    const w = rows.weights[y];
    for (let x = 0; x < width; x++) {
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < w.length; k++) {
        const i = ((start + k) * width + x) * channels;
        r += w[k] * pixels[i];
        g += w[k] * pixels[i + 1];
        b += w[k] * pixels[i + 2];
      }
      const o = (y * width + x) * 3;
      middle[o] = r;
      middle[o + 1] = g;
      middle[o + 2] = b;
    }
  }
  const out = new Float32Array(outHeight * outWidth * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const start = cols.starts[x];
      const w = cols.weights[x];
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < w.length; k++) {
        const i = (y * width + start + k) * 3;
        r += w[k] * middle[i];
        g += w[k] * middle[i + 1];
        b += w[k] * middle[i + 2];
      }
      const o = (y * outWidth + x) * 3;
      // Scaling to [0, 1] is linear, so dividing after the filter equals training's divide-first.
      out[o] = r / 255;
      out[o + 1] = g / 255;
      out[o + 2] = b / 255;
    }
  }
  return out;
}
