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

const work = mkdtempSync(join(tmpdir(), "mb-browser-"));
const [httpPort, brokerPort] = [await freePort(), await freePort()];
const demo = spawn(bin, ["demo", "--http", `127.0.0.1:${httpPort}`, "--embedded-broker-port", String(brokerPort),
  "--data-dir", join(work, "data"), "--poll-seconds", "1"],
  { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MARSTEK_BRIDGE__TEMPO__ENABLED: "false" } });
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
  const external = requests.filter((u) => !u.startsWith(`http://127.0.0.1:${httpPort}/`));
  if (external.length) fail("the page fetched from elsewhere: " + external.join(", "));
  await page.screenshot({ path: shot, fullPage: true });
  console.log("screenshot: " + shot);
  console.log("1 passed, 0 failed");
} finally {
  if (context) await context.close();
  demo.kill("SIGINT");
  await new Promise((ok) => demo.on("exit", ok));
  rmSync(work, { recursive: true, force: true });
}
