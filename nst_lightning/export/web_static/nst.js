// Stylize photos in the browser with an nst_lightning network exported by `export.py format=web`.
//
//   import { loadModel, stylize } from "./nst.js";
//   const model = await loadModel(".");                  // reads model.json, model.onnx and ort/ beside this file
//   const out = await stylize(model, imageData, { strength: 1, style: [1, 0, 0] });   // an ImageData, same size
//
// The network is an ONNX graph that takes any 1×3×H×W float32 RGB image in [0, 1] (it pads and crops itself)
// and, for a multi-style network, 1×S style weights. Photos larger than `tileSize` are run in overlapping tiles
// (each tile's output cross-fades into its neighbours), so memory stays that of one tile plus the photo.

const ORT_MODULE = "ort/ort.webgpu.min.mjs"; // ONNX Runtime Web (WebAssembly and WebGPU), copied from npm

/** Resolve a path against a base folder URL ("." = the page's folder). */
function at(base, path) {
  return new URL(path, new URL(base.endsWith("/") ? base : base + "/", document.baseURI)).href;
}

/**
 * Load the bundle's model.
 * @param {string} base  folder URL holding model.json, model.onnx and ort/
 * @param {{backend?: "auto"|"wasm"|"webgpu", threads?: number}} options  auto: WebGPU when the browser has it
 * @returns {Promise<{session, info, ort, backend: string, threads: number}>}
 */
export async function loadModel(base = ".", options = {}) {
  const ort = await import(at(base, ORT_MODULE));
  const info = await (await fetch(at(base, "model.json"))).json();
  ort.env.wasm.wasmPaths = at(base, "ort/");
  // Threads need a cross-origin isolated page (COOP/COEP headers); without them ONNX Runtime runs one thread.
  const threads = options.threads ?? (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.simd = true;
  const wanted = options.backend ?? "auto";
  const gpu = wanted !== "wasm" && "gpu" in navigator && (await navigator.gpu.requestAdapter().catch(() => null));
  const providers = gpu ? ["webgpu", "wasm"] : ["wasm"];
  const session = await ort.InferenceSession.create(at(base, info.model), { executionProviders: providers });
  return { session, info, ort, backend: gpu ? "webgpu" : "wasm", threads };
}

/** Tile starts along one axis of `size` pixels: evenly spread tiles of `tile` px sharing at least `overlap`. */
export function tileStarts(size, tile, overlap) {
  if (size <= tile) return [0];
  const count = Math.ceil((size - overlap) / (tile - overlap));
  return Array.from({ length: count }, (_, i) => Math.round((i * (size - tile)) / (count - 1)));
}

/** Per tile, its weights along one axis (length = tile extent), summing to 1 over the tiles at every pixel:
 *  a linear ramp over the middle half of each overlap, flat at the photo's own borders. */
function axisWeights(size, starts, tile, overlap) {
  const extent = Math.min(tile, size);
  const raw = starts.map((s, i) => {
    const w = new Float32Array(extent);
    for (let k = 0; k < extent; k++) {
      let v = 1;
      if (i > 0) v = Math.min(v, (k + 0.5 - overlap / 4) / (overlap / 2));
      if (i < starts.length - 1) v = Math.min(v, (extent - k - 0.5 - overlap / 4) / (overlap / 2));
      w[k] = Math.max(0, Math.min(1, v));
    }
    return w;
  });
  const sum = new Float32Array(size);
  starts.forEach((s, i) => raw[i].forEach((v, k) => (sum[s + k] += v)));
  starts.forEach((s, i) => raw[i].forEach((v, k) => (raw[i][k] = v / sum[s + k])));
  return raw;
}

/**
 * Stylize an ImageData (RGBA, any size ≥ the network's minimum after tiling) → a new ImageData of the same size.
 * @param model  from loadModel
 * @param {ImageData} image
 * @param {{strength?: number, style?: number[], tileSize?: number, tileOverlap?: number,
 *          onProgress?: (done: number, total: number) => void}} options
 *   strength 1 = the network's output, 0 = the photo; style: a multi-style network's weights (normalised to sum 1)
 */
export async function stylize(model, image, options = {}) {
  const { session, info, ort } = model;
  const strength = options.strength ?? 1;
  const tile = options.tileSize ?? info.tile_size;
  const overlap = options.tileOverlap ?? info.tile_overlap;
  const { width, height, data } = image;
  if (Math.min(width, height) < info.min_size) {
    throw new Error(`the photo is ${width}×${height}; this network needs at least ${info.min_size} px per side`);
  }
  const feeds = {};
  if (info.styles.length > 1) {
    const w = options.style ?? info.styles.map((_, i) => (i === 0 ? 1 : 0));
    const total = w.reduce((a, b) => a + b, 0);
    if (w.length !== info.styles.length || !(total > 0)) throw new Error("style weights must be ≥ 0, not all 0");
    feeds[info.style_input] = new ort.Tensor("float32", Float32Array.from(w, (v) => v / total), [1, w.length]);
  }
  const xs = tileStarts(width, tile, overlap), ys = tileStarts(height, tile, overlap);
  const wx = axisWeights(width, xs, tile, overlap), wy = axisWeights(height, ys, tile, overlap);
  const tw = Math.min(tile, width), th = Math.min(tile, height), plane = tw * th;
  const acc = xs.length * ys.length > 1 ? new Float32Array(width * height * 3) : null;
  const out = new ImageData(width, height);
  const input = new Float32Array(3 * plane);
  let done = 0;
  for (let j = 0; j < ys.length; j++) {
    for (let i = 0; i < xs.length; i++) {
      const x0 = xs[i], y0 = ys[j];
      for (let y = 0; y < th; y++) {
        for (let x = 0; x < tw; x++) {
          const p = ((y0 + y) * width + x0 + x) * 4, q = y * tw + x;
          input[q] = data[p] / 255;
          input[plane + q] = data[p + 1] / 255;
          input[2 * plane + q] = data[p + 2] / 255;
        }
      }
      feeds[info.input] = new ort.Tensor("float32", input, [1, 3, th, tw]);
      const result = await session.run(feeds);
      const y3 = await result[info.output].getData();
      result[info.output].dispose?.();
      for (let y = 0; y < th; y++) {
        for (let x = 0; x < tw; x++) {
          const q = y * tw + x, o = (y0 + y) * width + x0 + x;
          const w = acc ? wx[i][x] * wy[j][y] : 1;
          for (let c = 0; c < 3; c++) {
            const v = y3[c * plane + q];
            if (acc) acc[o * 3 + c] += w * v;
            else out.data[o * 4 + c] = finish(v, data[o * 4 + c], strength);
          }
        }
      }
      done++;
      options.onProgress?.(done, xs.length * ys.length);
      await new Promise((r) => setTimeout(r, 0)); // let the page paint the progress
    }
  }
  for (let o = 0; o < width * height; o++) {
    if (acc) for (let c = 0; c < 3; c++) out.data[o * 4 + c] = finish(acc[o * 3 + c], data[o * 4 + c], strength);
    out.data[o * 4 + 3] = data[o * 4 + 3];
  }
  return out;
}

/** The network's value v blended with the photo's byte by `strength`, clamped to [0, 1], as an 8-bit level. */
function finish(v, original, strength) {
  const s = strength * v + (1 - strength) * (original / 255);
  return Math.round(Math.min(1, Math.max(0, s)) * 255);
}
