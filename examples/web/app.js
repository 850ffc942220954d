// Classify a photo in the browser with a model exported by `retrain --output_tfjs DIR`.
//
// The model folder (./model/ by default, or ?model=URL-of-a-folder) holds model.json, its
// weight shards and labels.txt. The model takes float32 [N, H, W, 3] RGB scaled to [0, 1],
// the whole photo resized to H x W with antialiasing; this page prepares photos that way:
// the browser decodes (EXIF orientation applied, no colour-profile conversion, as Pillow
// does in training), resize.js resizes exactly as TensorFlow's resize(antialias=True).
//
// A single-label model shows its top 5 labels; a multi-label model (model.json's metadata holds
// `thresholds`) shows every label whose score is at or above its threshold, as label-image does.
//
// Optional URL parameters: ?model=URL (folder), ?backend=cpu|webgl|wasm (TF.js backend).

import {resizeAntialiased} from './resize.js';

// TF.js from a local copy when there is one (offline use; tests put one there), else from a CDN.
const LOCAL_TFJS = ['vendor/tf.min.js'];
const CDN_TFJS = ['https://cdn.jsdelivr.net/npm/@tensorflow/tfjs@4.22.0/dist/tf.min.js'];
const TOP_K = 5;

const page = {
  body: document.body,
  status: document.getElementById('status'),
  drop: document.getElementById('drop'),
  file: document.getElementById('file'),
  preview: document.getElementById('preview'),
  answer: document.getElementById('answer'),
  fileName: document.getElementById('file-name'),
  results: document.getElementById('results'),
  timing: document.getElementById('timing'),
  about: document.getElementById('about'),
};

function setState(state, message) {
  page.body.dataset.state = state;
  if (message !== undefined) page.status.textContent = message;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

/** Load TF.js (local copy first, then the CDN); returns where it came from. */
async function loadTfjs() {
  for (const scripts of [LOCAL_TFJS, CDN_TFJS]) {
    try {
      for (const src of scripts) await loadScript(src);
      if (window.tf && window.tf.loadGraphModel) return scripts[0];
    } catch (error) {
      // Not there (a 404, or offline): try the next source.
    }
  }
  throw new Error('TensorFlow.js could not be loaded (no vendor/tf.min.js and no network)');
}

function modelFolder() {
  const folder = new URLSearchParams(location.search).get('model') || 'model/';
  return new URL(folder.endsWith('/') ? folder : `${folder}/`, location.href);
}

async function loadModel(tf, folder) {
  const model = await tf.loadGraphModel(new URL('model.json', folder).href);
  const metadata = model.metadata || {};
  const labelsUrl = new URL(metadata.labels_file || 'labels.txt', folder);
  const response = await fetch(labelsUrl);
  if (!response.ok) throw new Error(`could not read ${labelsUrl} (HTTP ${response.status})`);
  const labels = (await response.text()).split(/\r?\n/);
  if (labels[labels.length - 1] === '') labels.pop();

  const [, height, width, channels] = model.inputs[0].shape;
  if (!(height > 0 && width > 0 && channels === 3)) {
    throw new Error(`unexpected model input shape ${JSON.stringify(model.inputs[0].shape)}`);
  }
  if (metadata.num_labels !== undefined && metadata.num_labels !== labels.length) {
    throw new Error(`labels.txt has ${labels.length} labels, the model ${metadata.num_labels}`);
  }
  if (metadata.thresholds !== undefined && metadata.thresholds.length !== labels.length) {
    throw new Error(`model.json has ${metadata.thresholds.length} thresholds for ${labels.length} labels`);
  }
  return {model, labels, height, width, metadata};
}

/** Decode a file as training does: upright, no colour management; returns RGBA pixels. */
async function decode(file) {
  const bitmap = await createImageBitmap(file, {
    imageOrientation: 'from-image',
    colorSpaceConversion: 'none',
    premultiplyAlpha: 'none',
  });
  const {width, height} = bitmap;
  const canvas = typeof OffscreenCanvas !== 'undefined' ?
      new OffscreenCanvas(width, height) :
      Object.assign(document.createElement('canvas'), {width, height});
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return {pixels: context.getImageData(0, 0, width, height).data, width, height};
}

async function classify(tf, classifier, file) {
  const started = performance.now();
  const {pixels, width, height} = await decode(file);
  const input = resizeAntialiased(pixels, width, height, 4, classifier.width, classifier.height);
  const prepared = performance.now();
  const output = tf.tidy(() => classifier.model.predict(
      tf.tensor4d(input, [1, classifier.height, classifier.width, 3], 'float32')));
  const scores = await output.data();
  output.dispose();
  const thresholds = classifier.metadata.thresholds;
  const sorted = Array.from(scores, (score, index) => ({label: classifier.labels[index], score,
    threshold: thresholds ? thresholds[index] : undefined})).sort((a, b) => b.score - a.score);
  const ranked = thresholds ? sorted.filter(({score, threshold}) => score >= threshold) : sorted.slice(0, TOP_K);
  return {ranked, size: [width, height], prepareMs: prepared - started, modelMs: performance.now() - prepared};
}

function showResults(file, result) {
  page.fileName.textContent = file.name;
  if (result.ranked.length === 0) {  // a multi-label model that gives no label
    page.results.replaceChildren(Object.assign(document.createElement('p'),
        {className: 'small', textContent: '(no label at or above its threshold)'}));
  } else page.results.replaceChildren(...result.ranked.map(({label, score, threshold}) => {
    const item = document.createElement('li');
    item.dataset.label = label;
    item.dataset.score = String(score);
    if (threshold !== undefined) {
      item.dataset.threshold = String(threshold);
      item.title = `threshold ${(100 * threshold).toFixed(1)}%`;
    }
    const name = Object.assign(document.createElement('span'), {className: 'label', textContent: label});
    const bar = Object.assign(document.createElement('span'), {className: 'bar'});
    const fill = document.createElement('span');
    fill.style.width = `${(100 * score).toFixed(1)}%`;
    bar.append(fill);
    const value = Object.assign(document.createElement('span'),
        {className: 'score', textContent: `${(100 * score).toFixed(1)}%`});
    item.append(name, bar, value);
    return item;
  }));
  page.timing.textContent = `${result.size[0]}×${result.size[1]} photo: prepared in ` +
      `${result.prepareMs.toFixed(0)} ms, classified in ${result.modelMs.toFixed(0)} ms`;
  page.answer.hidden = false;
}

function showAbout(entries) {
  page.about.replaceChildren(...entries.flatMap(([term, text]) => [
    Object.assign(document.createElement('dt'), {textContent: term}),
    Object.assign(document.createElement('dd'), {textContent: text}),
  ]));
}

async function main() {
  const tfSource = await loadTfjs();
  const tf = window.tf;
  const backend = new URLSearchParams(location.search).get('backend');
  if (backend) await tf.setBackend(backend);
  await tf.ready();

  const folder = modelFolder();
  const classifier = await loadModel(tf, folder);
  showAbout([
    ['model', folder.href],
    ['input', classifier.metadata.input || `float32 [N, ${classifier.height}, ${classifier.width}, 3]`],
    ['output', classifier.metadata.output || 'probabilities'],
    ['labels', classifier.labels.join(', ')],
    ['TF.js', `${(tf.version && tf.version.tfjs) || tf.version_core} (${tf.getBackend()} backend, from ${tfSource})`],
  ]);

  let running = Promise.resolve();
  const handle = (file) => {
    if (!file) return;
    // One photo at a time, in the order they were given.
    running = running.then(async () => {
      setState('busy', `Classifying ${file.name}…`);
      if (page.preview.src) URL.revokeObjectURL(page.preview.src);
      page.preview.src = URL.createObjectURL(file);
      page.preview.hidden = false;
      try {
        showResults(file, await classify(tf, classifier, file));
        page.body.dataset.file = file.name;
        setState('done', `Ready: drop or choose another photo (${classifier.labels.length} labels).`);
      } catch (error) {
        page.body.dataset.file = file.name;
        page.answer.hidden = true;
        setState('error', `Could not classify ${file.name}: ${error.message || error}`);
      }
    });
  };

  page.file.addEventListener('change', () => {
    handle(page.file.files[0]);
    page.file.value = '';  // choosing the same file again fires `change` again
  });
  page.drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    page.drop.classList.add('over');
  });
  page.drop.addEventListener('dragleave', () => page.drop.classList.remove('over'));
  page.drop.addEventListener('drop', (event) => {
    event.preventDefault();
    page.drop.classList.remove('over');
    handle(event.dataTransfer.files[0]);
  });

  page.file.disabled = false;
  setState('ready', `Ready: drop or choose a photo (${classifier.labels.length} labels).`);
}

main().catch((error) => setState('error', `Could not start: ${error.message || error}`));
