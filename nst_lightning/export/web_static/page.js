// The bundle's page: pick a photo, a style or a blend, a strength; stylize here; download. All in the browser.
import { loadModel, stylize } from "./nst.js";

const $ = (id) => document.getElementById(id);
const status = (text) => ($("status").textContent = text);
let model = null;

function styleInputs() {
  return [...document.querySelectorAll("#styles input")];
}

function buildStyleControls(styles) {
  if (styles.length < 2) return;
  const box = $("styles");
  styles.forEach((name, i) => {
    const p = document.createElement("p");
    const id = `style-${i}`;
    p.innerHTML = `<label for="${id}"></label><input id="${id}" type="number" min="0" step="any">`;
    p.querySelector("label").textContent = name;
    p.querySelector("input").value = i === 0 ? "1" : "0";
    p.querySelector("input").dataset.style = name;
    box.append(p);
  });
  box.hidden = false;
}

async function readPhoto(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, canvas.width, canvas.height, { colorSpace: "srgb" });
}

async function run(event) {
  event.preventDefault();
  const file = $("photo").files[0];
  if (!file) return status("Choose a photo first.");
  $("go").disabled = true;
  const bar = $("progress");
  bar.hidden = false;
  bar.value = 0;
  const started = performance.now();
  try {
    status("Reading the photo…");
    const image = await readPhoto(file);
    const style = styleInputs().map((input) => Math.max(0, Number(input.value) || 0));
    const result = await stylize(model, image, {
      strength: Number($("strength").value),
      style: style.length ? style : undefined,
      onProgress: (done, total) => {
        bar.value = done / total;
        status(`Stylizing: tile ${done} of ${total}…`);
      },
    });
    const canvas = $("result");
    canvas.width = result.width;
    canvas.height = result.height;
    canvas.getContext("2d").putImageData(result, 0, 0);
    canvas.hidden = false;
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const link = $("download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = file.name.replace(/\.[^.]*$/, "") + "_stylized.png";
    link.hidden = false;
    const seconds = (performance.now() - started) / 1000;
    window.nstLastSeconds = seconds;
    status(`Done in ${seconds.toFixed(1)} s (${result.width}×${result.height}, ${model.backend}, ${model.threads} thread(s)).`);
  } catch (error) {
    status(`Could not stylize: ${error.message}`);
  } finally {
    $("go").disabled = false;
  }
}

$("strength").addEventListener("input", () => ($("strength-value").value = Number($("strength").value).toFixed(2)));
$("form").addEventListener("submit", run);
try {
  const backend = new URLSearchParams(location.search).get("backend") || "auto";
  model = await loadModel(".", { backend });
  buildStyleControls(model.info.styles);
  $("go").disabled = false;
  status(`Ready: ${model.info.title} (${model.backend}, ${model.threads} thread(s)).`);
  window.nstModel = model;
} catch (error) {
  status(`Could not load the network: ${error.message}`);
}
