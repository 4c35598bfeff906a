// The web page: list styles, upload a photo to POST /stylize, show and offer the result for download.
"use strict";

const $ = (id) => document.getElementById(id);
let chosenStyle = null;
let resultUrl = null;
const styleInfo = {};  // name -> its GET /styles entry (network, style, network_styles)

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function painting() {
  return $("painting").files[0] || null;
}

function refreshButton() {
  $("go").disabled = !((chosenStyle || painting()) && $("photo").files.length);
}

function chooseStyle(name) {
  chosenStyle = name;
  if (name) $("painting").value = "";
  for (const el of document.querySelectorAll(".style")) {
    el.setAttribute("aria-checked", String(el.dataset.name === name));
  }
  showMix(styleInfo[name] || {});
  const network = (styleInfo[name] || {}).network;
  const link = $("device-link");
  link.hidden = !network;
  if (network) link.href = `/device/${encodeURIComponent(network)}/`;
  refreshButton();
}

// A multi-style network: one slider per style; the request sends them as style_mix (weights are normalised).
function showMix(entry) {
  const names = entry.network_styles || [];
  $("mix").hidden = names.length < 2;
  $("mix-on").checked = false;
  $("mix-sliders").replaceChildren();
  for (const [i, style] of names.entries()) {
    const label = document.createElement("label");
    const own = entry.style ? style === entry.style : i === 0;
    label.innerHTML = `<span></span> <input type="range" min="0" max="1" step="0.05" value="${own ? 1 : 0}">`;
    label.querySelector("span").textContent = style.replaceAll("_", " ");
    label.querySelector("input").dataset.style = style;
    $("mix-sliders").appendChild(label);
  }
}

function styleMix() {
  if ($("mix").hidden || !$("mix-on").checked) return null;
  const mix = {};
  for (const input of $("mix-sliders").querySelectorAll("input")) mix[input.dataset.style] = Number(input.value);
  return JSON.stringify(mix);
}

// The sliders start at the service's defaults (GET /styles "options"), each showing its value.
const SLIDERS = { strength: "strength", "stroke-scale": "stroke_scale", "input-noise": "input_noise" };

function showValue(id) {
  $(`${id}-value`).textContent = Number($(id).value).toFixed(2);
}

function setDefaults(options) {
  for (const [id, field] of Object.entries(SLIDERS)) {
    if (options && field in options) $(id).value = String(options[field]);
    showValue(id);
  }
  if (options && "input_noise_smooth_only" in options) $("noise-smooth-only").checked = options.input_noise_smooth_only;
  if (options && "noise_seed" in options) $("noise-seed").value = String(options.noise_seed);
}

async function loadStyles() {
  const response = await fetch("/styles");
  const { styles, arbitrary, options } = await response.json();
  setDefaults(options);
  $("painting-label").hidden = !(arbitrary && arbitrary.available);
  for (const style of styles) {
    styleInfo[style.name] = style;
    const el = document.createElement("div");
    el.className = "style";
    el.dataset.name = style.name;
    el.setAttribute("role", "radio");
    el.tabIndex = 0;
    el.innerHTML = `<img alt="" src="${style.thumbnail}"><span></span>`;
    el.querySelector("span").textContent = style.name.replaceAll("_", " ");
    el.addEventListener("click", () => chooseStyle(style.name));
    el.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") chooseStyle(style.name); });
    $("styles").appendChild(el);
  }
  if (styles.length) chooseStyle(styles[0].name);
}

async function stylize() {
  const file = $("photo").files[0];
  const form = new FormData();
  const art = painting();
  const styleName = art ? art.name.replace(/\.[^.]+$/, "") : chosenStyle;
  form.append("image", file);
  if (art) form.append("style_image", art);
  else form.append("style", chosenStyle);
  form.append("strength", $("strength").value);
  form.append("preserve_color", $("preserve-color").checked ? "true" : "false");
  form.append("stroke_scale", $("stroke-scale").value);
  form.append("input_noise", $("input-noise").value);
  form.append("input_noise_smooth_only", $("noise-smooth-only").checked ? "true" : "false");
  if ($("noise-seed").value !== "") form.append("noise_seed", $("noise-seed").value);
  const mix = styleMix();
  if (mix) form.append("style_mix", mix);
  $("go").disabled = true;
  setStatus("Stylizing…");
  const started = performance.now();
  try {
    const response = await fetch(art ? "/stylize/zeroshot" : "/stylize", { method: "POST", body: form });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ detail: response.statusText }));
      throw new Error(body.detail || response.statusText);
    }
    const blob = await response.blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    $("result").src = resultUrl;
    $("result").hidden = $("result-caption").hidden = $("download").hidden = false;
    $("result-caption").textContent = `${styleName.replaceAll("_", " ")}, strength ${$("strength").value}`;
    $("download").href = resultUrl;
    $("download").download = `${file.name.replace(/\.[^.]+$/, "")}_${styleName}.png`;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`Done in ${seconds} s (${response.headers.get("X-Cache") === "hit" ? "from cache" : "computed"}).`);
  } catch (err) {
    setStatus(`Could not stylize: ${err.message}`, true);
  } finally {
    refreshButton();
  }
}

$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  if (file) {
    $("preview").src = URL.createObjectURL(file);
    $("preview").hidden = $("preview-caption").hidden = false;
  }
  refreshButton();
});
$("painting").addEventListener("change", () => { if (painting()) chooseStyle(null); refreshButton(); });
for (const id of Object.keys(SLIDERS)) $(id).addEventListener("input", () => showValue(id));
$("go").addEventListener("click", stylize);
loadStyles().catch((err) => setStatus(`Could not load styles: ${err.message}`, true));
