// Run the web page's resize (examples/web/resize.js) in Node, so tests compare it with TensorFlow's.
//
//   node resize_image.mjs PIXELS.bin WIDTH HEIGHT CHANNELS OUT_WIDTH OUT_HEIGHT OUT.bin
//
// PIXELS.bin: raw uint8 [HEIGHT][WIDTH][CHANNELS]; OUT.bin gets raw float32 [OUT_HEIGHT][OUT_WIDTH][3].

import {readFileSync, writeFileSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

// examples/web has no package.json saying "type": "module" (it is a static page, not a package),
// so Node would read resize.js as CommonJS; importing its source as a data: URL loads it as the
// browser does, as an ES module.
const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, '..', '..', 'examples', 'web', 'resize.js'));
const {resizeAntialiased} = await import(`data:text/javascript;base64,${source.toString('base64')}`);

const [pixelsPath, ...rest] = process.argv.slice(2);
const [width, height, channels, outWidth, outHeight] = rest.slice(0, 5).map(Number);
const outPath = rest[5];
const pixels = new Uint8Array(readFileSync(pixelsPath));
if (pixels.length !== width * height * channels) {
  console.error(`resize_image.mjs: ${pixelsPath} has ${pixels.length} bytes; expected ${width}x${height}x${channels}`);
  process.exit(1);
}
const out = resizeAntialiased(pixels, width, height, channels, outWidth, outHeight);
writeFileSync(outPath, Buffer.from(out.buffer));
