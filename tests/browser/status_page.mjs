// Browser test of the status page, run by .ci/run: starts `marstek-bridge demo` (embedded
// broker, three simulated batteries, SQLite in a temporary folder), opens the printed page URL in
// Debian's Chromium driven by playwright-core, and checks what a user sees: three batteries with
// numbers from the simulator, the 24 h chart drawn, a mode changed through the page's own control
// arriving back by live update, the dry-run toggle
// answered with its result object. Saves a screenshot. Usage:
//   node tests/browser/status_page.mjs <marstek-bridge binary> <screenshot.png>
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");
const [bin, shot] = process.argv.slice(2);
if (!bin || !shot) throw new Error("usage: status_page.mjs <binary> <screenshot.png>");

const freePort = () => new Promise((ok, fail) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  s.on("error", fail);
});
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; throw new Error(msg); };

// A local api-couleur-tempo (real payload shapes): today blue, tomorrow red, the season's stats.
// The Tempo day runs 06:00 → 06:00 Paris time.
const tempoDay = (offset) => {
  const d = new Date(new Intl.DateTimeFormat("en-CA", { timeZone: "Europe/Paris" }).format(new Date(Date.now() - 6 * 3600e3)));
  d.setUTCDate(d.getUTCDate() + offset);
  return d.toISOString().slice(0, 10);
};
const colours = createHttpServer((req, res) => {
  const m = req.url.match(/^\/api\/jourTempo\/([0-9-]+)/);
  let body;
  if (m) body = { dateJour: m[1], codeJour: m[1] === tempoDay(0) ? 1 : m[1] === tempoDay(1) ? 3 : 0, periode: "2026-2027" };
  else if (req.url.startsWith("/api/stats")) body = { periode: "2026-2027", bissextile: false,
    joursBleusConsommes: 60, joursBleusRestants: 240, joursBlancsConsommes: 3, joursBlancsRestants: 40,
    joursRougesConsommes: 2, joursRougesRestants: 20 };
  res.writeHead(body ? 200 : 404, { "content-type": "application/json" });
  res.end(JSON.stringify(body ?? { error: "not found" }));
});
await new Promise((ok) => colours.listen(0, "127.0.0.1", ok));
const coloursUrl = `http://127.0.0.1:${colours.address().port}`;

const work = mkdtempSync(join(tmpdir(), "mb-browser-"));
const [httpPort, brokerPort] = [await freePort(), await freePort()];
const demo = spawn(bin, ["demo", "--http", `127.0.0.1:${httpPort}`, "--embedded-broker-port", String(brokerPort),
  "--data-dir", join(work, "data"), "--poll-seconds", "1"],
  { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MARSTEK_BRIDGE__TEMPO__ENABLED: "true",
    MARSTEK_BRIDGE__TEMPO__COULEUR_TEMPO_URL: coloursUrl, MARSTEK_BRIDGE__TEMPO__FORECAST_URL: "" } });
let out = "";
demo.stderr.on("data", () => {});
const url = await new Promise((ok, no) => {
  const timer = setTimeout(() => no(new Error("the demo printed no page URL in 60 s:\n" + out)), 60000);
  demo.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/status page:\s+(http:\/\/\S+)/);
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
  demo.on("exit", (c) => no(new Error("demo exited with " + c + ":\n" + out)));
});
console.log("page: " + url.replace(/token=.*/, "token=…"));

let context;
try {
  context = await chromium.launchPersistentContext(join(work, "profile"), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    viewport: { width: 1100, height: 900 },
  });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url);
  await page.waitForFunction(() => {
    const socs = [...document.querySelectorAll("article.battery .soc")].map((e) => Number(e.textContent));
    return socs.length === 3 && socs.every((v) => v > 0 && v <= 100);
  }, null, { timeout: 30000 });
  const cards = await page.$$eval("article.battery", (els) => els.map((e) => ({
    id: e.dataset.id, soc: Number(e.querySelector(".soc").textContent), mode: e.querySelector(".mode").textContent,
  })));
  console.log("batteries: " + JSON.stringify(cards));
  if (cards.length !== 3) fail("expected 3 batteries, saw " + cards.length);
  // The demo starts its batteries at 35, 55 and 75 % SOC.
  const socs = cards.map((c) => c.soc).sort((a, b) => a - b);
  if (!(socs[0] < 45 && socs[2] > 65)) fail("SOCs are not the simulator's: " + socs);
  await page.waitForFunction(() => [...document.querySelectorAll("svg.chart polyline.c-soc")]
    .some((p) => (p.getAttribute("points") || "").split(" ").filter(Boolean).length >= 2), null, { timeout: 30000 });
  await page.waitForSelector("#conn.on", { timeout: 10000 });
  const target = cards.find((c) => c.mode !== "Passive") || fail("every battery is already Passive");
  const card = page.locator(`article.battery[data-id="${target.id}"]`);
  await card.locator("select[name=mode]").selectOption("passive");
  await card.locator("input[name=power]").fill("-600");
  await card.locator("button[type=submit]").click();
  await page.waitForFunction(() => /"status": "ok"/.test(document.querySelector("#result").textContent), null, { timeout: 20000 });
  await page.waitForFunction((id) =>
    document.querySelector(`article.battery[data-id="${id}"] .mode`).textContent === "Passive", target.id, { timeout: 20000 });
  console.log(`mode of ${target.id} changed to Passive through the page and came back by live update`);
  // Dry run through the page's toggle: answered with the result object, the banner shows, and
  // turning it off again is answered the same way.
  if (await page.locator("#bridge-dryrun").isChecked()) fail("dry run is on at the start");
  await page.locator("#bridge-dryrun").check();
  await page.waitForFunction(() => {
    const t = document.querySelector("#result").textContent;
    return /PUT \/dry-run → 200/.test(t) && /"dry_run": true/.test(t) && /"previous": false/.test(t);
  }, null, { timeout: 20000 });
  if (await page.locator("#dryrun-pill").isHidden()) fail("the dry-run banner is not shown");
  await page.locator("#bridge-dryrun").uncheck();
  await page.waitForFunction(() => /"dry_run": false/.test(document.querySelector("#result").textContent)
    && document.querySelector("#dryrun-pill").hidden, null, { timeout: 20000 });
  console.log("dry run toggled on and off through the page, each answer shown");
  // Tonight's Tempo decision, recomputed through the page's control (preview: nothing stored),
  // shown with its reason; the next scheduled actions name the night job with that reason, and
  // the planner's slots with theirs; every battery shows its firmware.
  await page.locator("#refresh").click();
  await page.waitForFunction(() => /POST \/tempo\/refresh → 200/.test(document.querySelector("#result").textContent)
    && /tomorrow <b class="colour-red">red<\/b>/.test(document.querySelector("#tempo").innerHTML), null, { timeout: 30000 });
  const tonight = (await page.locator("#tempo span.muted").textContent()).trim();
  if (!tonight || tonight === "starting") fail("no reason for tonight's decision: " + tonight);
  console.log("tonight: " + tonight);
  await page.waitForFunction((why) => {
    const rows = [...document.querySelectorAll("#next li")];
    const night = rows.find((li) => li.dataset.source === "schedule" && /switch_to_manual_night/.test(li.textContent));
    const plan = rows.filter((li) => li.dataset.source === "plan" && li.querySelector(".reason").textContent.trim().length > 10);
    return night && night.querySelector(".reason").textContent === why && plan.length >= 1;
  }, tonight, { timeout: 30000 });
  const next = await page.$$eval("#next li", (els) => els.map((e) => e.textContent.replace(/\s+/g, " ").trim()));
  console.log("next actions:\n  " + next.join("\n  "));
  const metas = await page.$$eval("article.battery .meta", (els) => els.map((e) => e.textContent));
  if (!metas.every((m) => /fw \d+/.test(m))) fail("a battery shows no firmware: " + JSON.stringify(metas));
  const external = requests.filter((u) => !u.startsWith(`http://127.0.0.1:${httpPort}/`));
  if (external.length) fail("the page fetched from elsewhere: " + external.join(", "));
  await page.screenshot({ path: shot, fullPage: true });
  console.log("screenshot: " + shot);
  console.log("1 passed, 0 failed");
} finally {
  if (context) await context.close();
  demo.kill("SIGINT");
  await new Promise((ok) => demo.on("exit", ok));
  colours.close();
  rmSync(work, { recursive: true, force: true });
}
