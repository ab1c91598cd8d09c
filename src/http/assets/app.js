// marstek-bridge status page: reads /api/v1, follows /api/v1/events (server-sent events read
// with fetch, so the bearer token can be sent), draws a 24 h SVG chart per battery, and sends
// controls (mode, jobs, dry run, maintenance holds) through the same API with the token kept in
// this browser.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const api = "/api/v1";
const cards = new Map();

(function takeTokenFromUrl() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("mb-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();
const token = () => localStorage.getItem("mb-token") || "";
function headers(json) {
  const h = {};
  if (token()) h.Authorization = "Bearer " + token();
  if (json) h["Content-Type"] = "application/json";
  return h;
}
async function get(path) {
  const r = await fetch(api + path, { headers: headers(false) });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function send(method, path, body) {
  const r = await fetch(api + path, { method, headers: headers(true), body: JSON.stringify(body ?? {}) });
  let out;
  try { out = await r.json(); } catch { out = { status: r.status }; }
  showResult(method + " " + path + " → " + r.status, out);
  return { ok: r.ok, body: out };
}
function showResult(title, obj) {
  const el = $("#result");
  el.classList.remove("muted");
  el.textContent = title + "\n" + JSON.stringify(obj, null, 2);
}
const text = (el, v) => { el.textContent = v; };

function card(b) {
  let c = cards.get(b.id);
  if (!c) {
    const node = $("#battery-tpl").content.firstElementChild.cloneNode(true);
    node.dataset.id = b.id;
    text($(".name", node), b.id);
    $("form", node).addEventListener("submit", (e) => {
      e.preventDefault();
      const f = e.target;
      const body = { mode: f.mode.value, id: "page-" + Date.now() };
      if (f.mode.value === "passive") body.power = Number(f.power.value);
      send("POST", "/batteries/" + encodeURIComponent(b.id) + "/commands", body);
    });
    $("input[name=hold]", node).onchange = (e) => toggleHold(e, b.id);
    $("#batteries").appendChild(node);
    c = { node };
    cards.set(b.id, c);
  }
  return c;
}

function renderBattery(b) {
  const { node } = card(b);
  const avail = $(".avail", node);
  text(avail, b.online ? "online" : "offline");
  avail.className = "pill avail " + (b.online ? "on" : "off");
  const fw = b.firmware != null ? "fw " + b.firmware : "";
  text($(".meta", node), [b.model, fw, b.ble_mac].filter(Boolean).join(" · ") || "waiting for the first answer");
  const note = $(".fwnote", node);
  note.hidden = !b.firmware_note;
  note.className = "fwnote " + (b.firmware_known_bad ? "warn" : "muted");
  text(note, b.firmware_note ? (b.firmware_known_bad ? "firmware warning: " : "firmware note: ") + b.firmware_note : "");
  renderFigures(node, b.soc, b.bat_power, b.mode);
  const intent = b.intent && b.intent.config ? b.intent.config.mode : null;
  text($(".intent", node), intent ? "intent: " + intent + " (set by " + b.intent.set_by + ")" : "no intent kept");
}

function renderFigures(node, soc, power, mode) {
  if (soc != null) text($(".soc", node), soc);
  if (power != null) {
    text($(".power", node), Math.abs(power));
    text($(".dir", node), power > 0 ? "W discharging" : power < 0 ? "W charging" : "W idle");
  }
  if (mode) text($(".mode", node), mode);
}

function onSample(s) {
  const c = cards.get(s.device);
  if (!c) return;
  renderFigures(c.node, s.soc, s.bat_power, s.mode);
  extendChart(c, s);
  const avail = $(".avail", c.node);
  text(avail, "online");
  avail.className = "pill avail on";
}

async function drawChart(id) {
  const c = cards.get(id);
  if (!c) return;
  const h = await get("/batteries/" + encodeURIComponent(id) + "/history?bucket=hour");
  c.series = h.points.map((p) => ({ t: Date.parse(p.t), soc: p.soc_mean, pow: p.power_mean }));
  renderChart(c);
}

// Live samples extend the stored history until the next reload of it.
function extendChart(c, s) {
  if (!c.series) return;
  c.series.push({ t: Date.parse(s.at), soc: s.soc, pow: s.bat_power });
  const since = Date.now() - 86400000;
  while (c.series.length && c.series[0].t < since) c.series.shift();
  if (!c.pending) { c.pending = true; setTimeout(() => { c.pending = false; renderChart(c); }, 1000); }
}

function renderChart(c) {
  const svg = $(".chart", c.node);
  const pts = c.series;
  // The axis spans the last 24 h, or from the first point when the history is shorter: a fresh
  // start's few minutes would otherwise be squeezed into the last pixel of a 24 h axis.
  const t1 = Date.now();
  const first = pts.length ? Math.min(...pts.map((p) => p.t)) : t1;
  const t0 = Math.max(t1 - 86400000, Math.min(first, t1 - 60000));
  const x = (t) => Math.max(0, (t - t0) / (t1 - t0) * 300).toFixed(1);
  text($(".span", c.node), t1 - t0 >= 86400000 - 60000 ? "last 24 h" : "since " + new Date(t0).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  const maxW = Math.max(100, ...pts.map((p) => Math.abs(p.pow ?? 0)));
  const soc = pts.filter((p) => p.soc != null).map((p) => x(p.t) + "," + (90 - p.soc * 0.9).toFixed(1));
  const pow = pts.filter((p) => p.pow != null).map((p) => x(p.t) + "," + (45 - p.pow / maxW * 43).toFixed(1));
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const line = (cls, list) => {
    const el = document.createElementNS(ns, list ? "polyline" : "line");
    el.setAttribute("class", cls);
    // One point (a fresh start: only the hour in progress) is drawn as a level line to now.
    if (list && list.length === 1) list = [list[0], "300," + list[0].split(",")[1]];
    if (list) el.setAttribute("points", list.join(" "));
    else { el.setAttribute("x1", 0); el.setAttribute("x2", 300); el.setAttribute("y1", 45); el.setAttribute("y2", 45); }
    svg.appendChild(el);
  };
  line("zero");
  line("c-pow", pow);
  line("c-soc", soc);
  svg.dataset.points = String(pts.length);
}

function renderJobs(jobs) {
  const body = $("#jobs tbody");
  body.replaceChildren();
  const sorted = [...jobs].sort((a, b) => (a.next_run_utc || "~").localeCompare(b.next_run_utc || "~"));
  for (const j of sorted) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.id;
    const next = j.paused ? "paused" : (j.next_run_local || "–").replace("T", " ").slice(0, 16);
    for (const v of [j.id.replace(/^job_/, ""), next, j.last_status || "–"]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const run = document.createElement("button");
    run.textContent = "run";
    run.onclick = () => send("POST", "/jobs/" + j.id + "/run").then(loadJobs);
    const toggle = document.createElement("button");
    toggle.className = "ghost";
    toggle.textContent = j.paused ? "resume" : "pause";
    toggle.onclick = () => send("POST", "/jobs/" + j.id + (j.paused ? "/resume" : "/pause")).then(loadJobs);
    td.append(run, " ", toggle);
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function renderDryRun(d) {
  $("#bridge-dryrun").checked = !!d.dry_run;
  $("#dryrun-pill").hidden = !d.dry_run;
}

async function toggleDryRun(e) {
  const want = e.target.checked;
  const r = await send("PUT", "/dry-run", { dry_run: want });
  if (r.ok) renderDryRun(r.body);
  else e.target.checked = !want;
}

// Maintenance holds (firmware updates): the last state answered or sent by a `maintenance` event.
let holds = { bridge: null, devices: {} };
const holdText = (h) => "since " + new Date(h.since).toLocaleString() + " by " + h.by;
function renderHolds(m) {
  holds = { bridge: m.bridge || null, devices: m.devices || {} };
  $("#hold-all").checked = !!holds.bridge;
  $("#hold-pill").hidden = !holds.bridge;
  $("#hold-pill").title = holds.bridge ? holdText(holds.bridge) : "";
  for (const [id, { node }] of cards) {
    const own = holds.devices[id];
    $("input[name=hold]", node).checked = !!own;
    const pill = $(".held", node);
    pill.hidden = !own && !holds.bridge;
    text(pill, own ? "held" : "held (all)");
    pill.title = own ? holdText(own) : holds.bridge ? holdText(holds.bridge) : "";
  }
}

// Sets or releases a hold (one battery's, or every battery's when `device` is absent).
async function toggleHold(e, device) {
  const want = e.target.checked;
  const body = device ? { maintenance: want, device } : { maintenance: want };
  try {
    const r = await send("PUT", "/maintenance", body);
    if (r.ok) renderHolds(r.body);
    else e.target.checked = !want;
  } catch (err) {
    e.target.checked = !want;
    showResult("maintenance hold not changed", { error: String(err) });
  }
}
const loadHolds = () => get("/maintenance").then(renderHolds).catch(() => {});

const localTime = (t, timeZone) => new Date(t).toLocaleString([], { timeZone, weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

function renderNext(n) {
  const ol = $("#next");
  ol.replaceChildren();
  if (!n.actions.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "nothing scheduled"; ol.appendChild(li); }
  for (const a of n.actions) {
    const li = document.createElement("li");
    li.dataset.source = a.source;
    const head = document.createElement("div");
    const when = document.createElement("b");
    when.textContent = localTime(a.at, n.timezone);
    const who = a.device ? a.device + " (plan" + (n.plan_applied ? "" : ", not applied") + ")" : a.job.replace(/^job_/, "");
    head.append(when, " " + who + ": " + a.action);
    head.title = n.timezone;
    const why = document.createElement("div");
    why.className = "reason muted";
    why.textContent = a.reason;
    li.append(head, why);
    ol.appendChild(li);
  }
}
const loadNext = () => get("/next-actions?count=10").then(renderNext).catch(() => {});

function renderTempo(t) {
  const el = $("#tempo");
  el.classList.remove("muted");
  const col = (d) => d && d.colour ? '<b class="colour-' + d.colour + '">' + d.colour + "</b>" : "unknown";
  el.innerHTML = "today " + col(t.today) + " · tomorrow " + col(t.tomorrow) +
    "<br>tonight: " + (t.precharge ? "precharge" : "no precharge") +
    (t.dry_run ? " (dry run)" : "") + '<br><span class="muted"></span>';
  text($("span.muted", el), t.reason || "");
}

async function loadAlerts() {
  const a = await get("/alerts");
  const ul = $("#alerts");
  ul.replaceChildren();
  const items = a.open.length ? a.open : a.recent.slice(0, 5);
  if (!items.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "none"; ul.appendChild(li); }
  for (const x of items) {
    const li = document.createElement("li");
    li.textContent = (x.device ? x.device + ": " : "") + x.message + (x.state === "cleared" ? " (cleared)" : "");
    ul.appendChild(li);
  }
}
const loadJobs = () => get("/jobs").then(renderJobs).catch(() => {});

async function follow() {
  const conn = $("#conn");
  for (let wait = 1000; ; wait = Math.min(wait * 2, 15000)) {
    try {
      const r = await fetch(api + "/events", { headers: headers(false) });
      if (!r.ok) throw new Error("events " + r.status);
      text(conn, "live"); conn.className = "pill on"; wait = 1000;
      loadHolds(); // a change while the stream was down
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) { /* reconnect below */ }
    text(conn, "offline"); conn.className = "pill off";
    await new Promise((res) => setTimeout(res, wait));
  }
}

function dispatch(block) {
  let kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  let v;
  try { v = JSON.parse(data); } catch { return; }
  if (kind === "sample") onSample(v);
  else if (kind === "schedule" && v.jobs) { renderJobs(v.jobs); loadNext(); }
  else if (kind === "tempo") { renderTempo(v); loadNext(); }
  else if (kind === "dry_run") { renderDryRun(v); loadNext(); }
  else if (kind === "plan") loadNext();
  else if (kind === "maintenance") renderHolds(v);
  else if (kind === "alert") loadAlerts().catch(() => {});
  else if (kind === "command") {
    showResult("command on " + v.device + " (" + v.source + ")", v.result);
    get("/batteries/" + encodeURIComponent(v.device)).then(renderBattery).catch(() => {});
  }
}

async function start() {
  $("#token").value = token();
  $("#savetoken").onclick = () => { localStorage.setItem("mb-token", $("#token").value.trim()); showResult("token saved", {}); };
  $("#refresh").onclick = () => send("POST", "/tempo/refresh", { dry_run: $("#dryrun").checked }).then((r) => r.ok && renderTempo(r.body));
  $("#bridge-dryrun").onchange = (e) => toggleDryRun(e).catch((err) => showResult("dry run not changed", { error: String(err) }));
  $("#hold-all").onchange = (e) => toggleHold(e);
  get("/dry-run").then(renderDryRun).catch(() => {});
  const info = await get("/bridge");
  text($("#version"), "v" + info.version + (info.read_only ? " · read-only" : ""));
  const list = await get("/batteries");
  list.forEach(renderBattery);
  loadHolds();
  follow();
  await Promise.all(list.map((b) => drawChart(b.id).catch(() => {})));
  loadJobs();
  loadNext();
  get("/tempo").then(renderTempo).catch(() => {});
  loadAlerts().catch(() => {});
  setInterval(() => { list.forEach((b) => drawChart(b.id).catch(() => {})); loadNext(); }, 300000);
}
start().catch((e) => showResult("cannot load the page's data", { error: String(e) }));
