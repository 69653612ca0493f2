// The service's page: plain JS, no build step. Talks to /config.json and /api/generate.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];  // the newest images, newest first: loaded from /api/generations, so a reload keeps them

async function loadHistory() {
  const headers = $("api-key").value ? { "X-API-Key": $("api-key").value } : {};
  const response = await fetch("/api/generations?limit=24", { headers });
  if (!response.ok) return;  // e.g. 401 until the key is typed in; generating still works
  const data = await response.json();
  history.splice(0, history.length,
    ...data.items.map((r) => ({ ...r, emotion: r.request.emotion, style: r.request.style })));
  renderHistory();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function describe(detail) {
  // FastAPI's 422 is a list of {loc, msg}; other errors are one string.
  if (Array.isArray(detail)) return detail.map((e) => `${e.loc.slice(1).join(".") || "body"}: ${e.msg}`).join("; ");
  return String(detail ?? "unknown error");
}

function show(item) {
  $("image").src = item.image_url;
  $("caption").textContent = `${item.emotion} · ${item.style} · seed ${item.seed} — ${item.prompt}`;
  $("result").hidden = false;
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(...history.map((item) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = item.image_url;
    img.alt = `${item.emotion}, ${item.style}, seed ${item.seed}`;
    img.title = img.alt;
    img.addEventListener("click", () => show(item));
    li.append(img);
    return li;
  }));
}

async function generate(event) {
  event.preventDefault();
  showError("");
  const body = { emotion: $("emotion").value, style: $("style").value };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = Number(seed);
  const steps = $("steps").value.trim();
  if (steps !== "") body.steps = Number(steps);
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  $("generate").disabled = true;
  $("generate").textContent = "Generating…";
  document.body.classList.add("busy");
  try {
    const response = await fetch("/api/generate", { method: "POST", headers, body: JSON.stringify(body) });
    const data = await response.json().catch(() => ({ detail: response.statusText }));
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      throw new Error(describe(data.detail) + (retry ? ` (retry in ${retry} s)` : ""));
    }
    const item = { ...data, emotion: body.emotion, style: body.style };
    history.unshift(item);
    history.length = Math.min(history.length, 24);
    show(item);
    renderHistory();
  } catch (err) {
    showError(err.message || String(err));
  } finally {
    $("generate").disabled = false;
    $("generate").textContent = "Generate";
    document.body.classList.remove("busy");
  }
}

async function init() {
  try {
    const config = await (await fetch("/config.json")).json();
    for (const [id, values] of [["emotion", config.emotions], ["style", config.styles]]) {
      $(id).replaceChildren(...values.map((v) => new Option(v.replace("_", " "), v)));
    }
    $("seed").max = config.limits.max_seed;
    $("steps").max = config.limits.max_steps;
    $("key-label").hidden = !config.auth_required;
  } catch (err) {
    showError(`Could not load the service's settings: ${err.message}`);
  }
  $("form").addEventListener("submit", generate);
  $("api-key").addEventListener("change", loadHistory);
  await loadHistory().catch((err) => showError(`Could not load the history: ${err.message}`));
}

init();
