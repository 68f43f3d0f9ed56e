// The p2pblob dashboard: polls the node's JSON API once a second and
// draws what it answers.  Every value from the node goes into the page as
// text (never as HTML).
"use strict";

const POLL_MS = 1000;
const CHART_POINTS = 180;          // three minutes of samples
const samples = [];                // {t, up, down}: byte counters over time
let polling = null;

function token() { return sessionStorage.getItem("p2pblob-token"); }

async function api(path, options = {}) {
  const headers = { "Accept": "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch("/api/v1/" + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) { askToken(); }
  if (!response.ok) {
    const error = new Error((answer.error && answer.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return answer;
}

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "unlimited";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[unit];
}

function rate(bytesPerSecond) { return size(Math.max(0, bytesPerSecond)) + "/s"; }

function showAlert(message) {
  const alert = document.getElementById("alert");
  alert.textContent = message || "";
  alert.hidden = !message;
}

// status: node line, cards, bandwidth samples

function showStatus(status) {
  document.getElementById("node-line").textContent =
    `version ${status.version} · ${status.data_dir}`;
  const disk = status.disk;
  const bar = document.getElementById("disk-bar");
  bar.max = disk.limit || Math.max(disk.used, 1);
  bar.value = disk.used;
  document.getElementById("disk-line").textContent =
    `${size(disk.used)} in ${disk.blobs} blob(s) of ${size(disk.limit)}`;
  const peer = status.peer, dht = status.dht;
  document.getElementById("peer-line").textContent =
    `${peer.listening ? "peers reach this node at " + peer.listening : "not listening yet"}; ` +
    `${peer.connections} connection(s)`;
  document.getElementById("dht-line").textContent = !dht.enabled ? "DHT: off" :
    `DHT: ${dht.joined ? "joined" : "joining"}, ${dht.contacts} contact(s)`;
  document.getElementById("reach-line").textContent = reachText(status.reach);
  document.getElementById("wallet-line").textContent = status.wallet ?
    `${status.wallet.balance} points (${status.wallet.reserved} reserved)` : "no wallet";
  const limits = status.bandwidth.limits;
  document.getElementById("limits").textContent =
    `limits: upload ${limits.max_upload ? rate(limits.max_upload) : "none"}, ` +
    `download ${limits.max_download ? rate(limits.max_download) : "none"}`;
  samples.push({ t: performance.now() / 1000, up: status.bandwidth.uploaded,
                 down: status.bandwidth.downloaded });
  while (samples.length > CHART_POINTS) samples.shift();
  drawChart();
}

// whether peers reach the node: its address, its port mapping, its onion
function reachText(reach) {
  if (!reach) return "";
  const parts = [reach.reachable
    ? (reach.external_address ? `reachable at ${reach.external_address}` : "reachable")
    : "not reachable: not announcing"];
  const mapping = reach.port_mapping;
  if (mapping) {
    parts.push(`port mapping (${mapping.method}): ${mapping.state}` +
               (mapping.problem ? ` (${mapping.problem})` : ""));
  }
  const tor = reach.tor;
  if (tor) {
    parts.push(`Tor: ${tor.state}` +
               (tor.onion_address ? `, ${tor.onion_address}:${tor.onion_port}` : "") +
               (tor.problem ? ` (${tor.problem})` : ""));
  }
  return parts.join(" · ");
}

function rates() {
  const points = [];
  for (let i = 1; i < samples.length; i += 1) {
    const dt = samples[i].t - samples[i - 1].t;
    if (dt <= 0) continue;
    points.push({ up: (samples[i].up - samples[i - 1].up) / dt,
                  down: (samples[i].down - samples[i - 1].down) / dt });
  }
  return points;
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = rates();
  const last = points[points.length - 1] || { up: 0, down: 0 };
  document.getElementById("rate-up").textContent = rate(last.up);
  document.getElementById("rate-down").textContent = rate(last.down);
  const top = Math.max(1, ...points.map(p => Math.max(p.up, p.down)));
  const step = canvas.width / (CHART_POINTS - 1);
  for (const [key, colour] of [["down", "#2f6fdf"], ["up", "#27ae60"]]) {
    g.beginPath();
    g.strokeStyle = colour;
    g.lineWidth = 2 * ratio;
    points.forEach((p, i) => {
      const x = canvas.width - (points.length - 1 - i) * step;
      const y = canvas.height - (p[key] / top) * (canvas.height - 4 * ratio) - 2 * ratio;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

// streams

const ACTIONS = {
  waiting: ["pause", "cancel"], running: ["pause", "cancel"], paused: ["resume", "cancel"],
  failed: ["resume"], cancelled: ["resume"], finished: [],
};

function showStreams(streams) {
  const body = document.querySelector("#streams tbody");
  body.replaceChildren();
  document.getElementById("no-streams").hidden = streams.length > 0;
  for (const stream of streams) {
    const row = el("tr");
    row.dataset.sdHash = stream.sd_hash;
    row.dataset.state = stream.state;
    row.append(el("td", stream.name || stream.sd_hash.slice(0, 16) + "…"));
    const state = el("td", stream.state, "state-" + stream.state);
    if (stream.error) state.append(el("div", stream.error, "error"));
    row.append(state);
    const progress = el("progress");
    progress.max = stream.total_bytes || 1;
    progress.value = stream.total_bytes ? stream.done_bytes : 0;
    const percent = stream.total_bytes ? (100 * stream.done_bytes / stream.total_bytes) : 0;
    progress.dataset.percent = percent.toFixed(1);
    const cell = el("td");
    cell.append(progress, el("span", ` ${percent.toFixed(1)}%`, "percent"));
    row.append(cell);
    row.append(el("td", stream.state === "running" ? rate(stream.rate) : "", "num"));
    row.append(el("td", String(stream.peers), "num"));
    const buttons = el("td");
    for (const action of ACTIONS[stream.state] || []) {
      const button = el("button", action);
      button.type = "button";
      button.dataset.action = action;
      button.addEventListener("click", () => act(stream.sd_hash, action));
      buttons.append(button);
    }
    row.append(buttons);
    body.append(row);
  }
}

async function act(sdHash, action) {
  try {
    await api(`streams/${sdHash}/${action}`, { method: "POST", body: {} });
    await poll();
  } catch (error) { showAlert(`${action}: ${error.message}`); }
}

function showPeers(answer) {
  const body = document.querySelector("#peers tbody");
  body.replaceChildren();
  for (const peer of answer.peers) {
    const row = el("tr");
    row.append(el("td", peer.peer), el("td", size(peer.uploaded), "num"),
               el("td", size(peer.downloaded), "num"));
    body.append(row);
  }
  const sources = document.querySelector("#sources tbody");
  sources.replaceChildren();
  for (const peer of answer.sources || []) {
    const row = el("tr");
    row.append(el("td", peer.address), el("td", peer.score.toFixed(1), "num"),
               el("td", String(peer.blobs_served), "num"), el("td", rate(peer.rate), "num"),
               el("td", peer.available ? "ok" : `resting after ${peer.failures} failure(s)`));
    sources.append(row);
  }
}

async function poll() {
  try {
    const [status, streams, peers] = await Promise.all([
      api("status"), api("streams"), api("peers"),
    ]);
    showStatus(status);
    showStreams(streams.streams);
    showPeers(peers);
    showAlert("");
  } catch (error) {
    if (error.status !== 401) showAlert("cannot reach the node: " + error.message);
  }
}

function start() {
  document.getElementById("download-form").addEventListener("submit", async event => {
    event.preventDefault();
    const input = document.getElementById("sd-hash");
    try {
      await api("streams", { method: "POST", body: { sd_hash: input.value.trim().toLowerCase() } });
      input.value = "";
      await poll();
    } catch (error) { showAlert("download: " + error.message); }
  });
  document.getElementById("token-form").addEventListener("submit", () => {
    sessionStorage.setItem("p2pblob-token", document.getElementById("token").value.trim());
    poll();
  });
  poll();
  polling = setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
