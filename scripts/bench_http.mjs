// HTTP benchmark (docs/benchmarks.md, "Status page and REST API"): the release bridge as a child
// process with 10 simulated batteries (`marstek-bridge simulate`), the local mosquitto and a
// SQLite file, polled every 5 s with quiet_gap 0 s as in benches/bridge_bench.rs. Three runs of the
// same binary: A with the HTTP server off, H with it on and no client, B with the status page
// open in Chromium (playwright-core) for the whole window. Reports peak and current RSS of both (from /proc), the
// page's transfer size (every request of the first load, the event stream left out), and the
// latency of GET /api/v1/batteries and GET /api/v1/next-actions (sequential, keep-alive) while
// the browser stays connected to the event stream.
// Usage: node scripts/bench_http.mjs <release binary> [window seconds, default 60]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import http from "node:http";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");
const [bin, windowArg] = process.argv.slice(2);
const windowS = Number(windowArg || 60);
const N = 10;
const TOKEN = "bench-token-0123456789abcdef";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((ok) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
});
const status = (pid) => {
  const t = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k) => Number(t.match(new RegExp(k + ":\\s+(\\d+)"))[1]);
  return { peak_mb: kb("VmHWM") / 1024, rss_mb: kb("VmRSS") / 1024, anon_mb: kb("RssAnon") / 1024, file_mb: kb("RssFile") / 1024,
    threads: kb("Threads") };
};
function get(port, path) {
  return new Promise((ok, no) => {
    const req = http.get({ host: "127.0.0.1", port, path, agent }, (res) => {
      let n = 0;
      res.on("data", (d) => { n += d.length; });
      res.on("end", () => ok({ code: res.statusCode, bytes: n }));
    });
    req.on("error", no);
  });
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// `n` sequential GETs of `path` on one keep-alive connection: p50/p95/p99/max in ms.
async function latency(port, path, n) {
  const lat = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    const r = await get(port, path);
    lat.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.code !== 200) throw new Error("GET " + path + " answered " + r.code);
  }
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { n: lat.length, p50: q(0.5), p95: q(0.95), p99: q(0.99), max: lat[lat.length - 1] };
}

async function run(withHttp, withPage) {
  const work = mkdtempSync(join(tmpdir(), "mb-bench-http-"));
  const simPort = 41000 + Math.floor(Math.random() * 10000);
  const sim = spawn(bin, ["simulate", "--devices", String(N), "--base-port", String(simPort)], { stdio: "ignore" });
  const httpPort = await freePort();
  const base = "mbbenchhttp" + process.pid + (withPage ? "b" : withHttp ? "h" : "a");
  let cfg = `[bridge]\ninstance_id = "${base}"\n[mqtt]\nhost = "127.0.0.1"\nport = 1883\nbase_topic = "${base}"\n` +
    `discovery_prefix = "${base}ha"\nclient_id = "${base}"\n[polling]\nstatus_interval = "5s"\nquiet_gap = "0s"\n` +
    `[marstek]\nbind_device_port = false\n[tempo]\nenabled = false\n[database]\nurl = "sqlite://${work}/b.db"\n`;
  if (withHttp) cfg += `[http]\nlisten = "127.0.0.1:${httpPort}"\ntoken = "${TOKEN}"\n`;
  for (let i = 0; i < N; i++) cfg += `[[devices]]\nhost = "127.0.0.1"\nport = ${simPort + i}\nid = "bat-${i}"\n`;
  writeFileSync(join(work, "c.toml"), cfg);
  await sleep(500);
  const bridge = spawn(bin, ["--config", join(work, "c.toml"), "--log-level", "warn", "run"], { stdio: "ignore" });
  const out = { with_http: withHttp, with_page: withPage };
  let context;
  try {
    await sleep(8000); // every battery polled at least once
    if (withPage) {
      context = await chromium.launchPersistentContext(join(work, "profile"), {
        executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync"],
      });
      const page = await context.newPage();
      const sizes = [];
      page.on("response", async (r) => {
        if (r.url().endsWith("/api/v1/events")) return;
        try { sizes.push({ url: r.url(), bytes: (await r.body()).length }); } catch { /* stream */ }
      });
      await page.goto(`http://127.0.0.1:${httpPort}/#token=${TOKEN}`);
      await page.waitForFunction((n) => document.querySelectorAll("article.battery").length === n, N, { timeout: 30000 });
      await page.waitForSelector("#conn.on", { timeout: 10000 });
      await sleep(2000);
      const assets = sizes.filter((s) => !s.url.includes("/api/"));
      out.page_assets_bytes = assets.reduce((a, s) => a + s.bytes, 0);
      out.page_total_bytes = sizes.reduce((a, s) => a + s.bytes, 0);
      out.page_requests = sizes.length;
      out.page_sizes = sizes.map((x) => ({ path: new URL(x.url).pathname, bytes: x.bytes }));
    }
    await sleep(windowS * 1000);
    out.after_window = status(bridge.pid);
    if (withPage) {
      out.batteries_latency_ms = await latency(httpPort, "/api/v1/batteries", 2000);
      out.next_actions_latency_ms = await latency(httpPort, "/api/v1/next-actions", 500);
      out.after_requests = status(bridge.pid);
    }
  } finally {
    if (context) await context.close();
    bridge.kill("SIGTERM");
    await new Promise((r) => bridge.on("exit", r));
    sim.kill("SIGINT");
    await new Promise((r) => sim.on("exit", r));
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}

const a = await run(false, false);
const h = await run(true, false);
const b = await run(true, true);
const result = { at: new Date().toISOString(), devices: N, window_s: windowS, http_off: a, http_on_no_client: h,
  page_and_browser: b };
console.log(JSON.stringify(result, null, 2));
