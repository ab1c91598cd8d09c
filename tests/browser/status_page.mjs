// Browser test of the status page, run by .ci/run: starts `marstek-bridge demo` (embedded
// broker, three simulated batteries, SQLite in a temporary folder), opens the printed page URL in
// Debian's Chromium driven by playwright-core, and checks what a user sees: three batteries with
// numbers from the simulator, the 24 h chart drawn, a mode changed through the page's own control
// arriving back by live update, the dry-run toggle answered with its result object, and the
// maintenance holds (one battery's, then every battery's) set and released through the page,
// each answered with its result object and seen by a second open page by live update. Saves a
// screenshot. Usage:
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

// A local api-couleur-tempo (real payload shapes): today blue, tomorrow `tomorrowColour`, the
// season's stats.
// The Tempo day runs 06:00 → 06:00 Paris time.
const tempoDay = (offset) => {
  const d = new Date(new Intl.DateTimeFormat("en-CA", { timeZone: "Europe/Paris" }).format(new Date(Date.now() - 6 * 3600e3)));
  d.setUTCDate(d.getUTCDate() + offset);
  return d.toISOString().slice(0, 10);
};
// Tomorrow is red when the Tempo calendar allows it (Mon–Fri, Nov 1 → Mar 31, not a public
// holiday), else white (not on a Sunday), else blue: the test holds on any day of the year.
const easterMonday = (y) => {
  const a = y % 19, b = Math.floor(y / 100), c = y % 100, d = Math.floor(b / 4), e = b % 4;
  const f = Math.floor((b + 8) / 25), g = Math.floor((b - f + 1) / 3), h = (19 * a + b - d - g + 15) % 30;
  const i = Math.floor(c / 4), k = c % 4, l = (32 + 2 * e + 2 * i - h - k) % 7, m = Math.floor((a + 11 * h + 22 * l) / 451);
  const month = Math.floor((h + l - 7 * m + 114) / 31), day = ((h + l - 7 * m + 114) % 31) + 1;
  return new Date(Date.UTC(y, month - 1, day + 1)).toISOString().slice(0, 10);
};
const colourFor = (iso) => {
  const d = new Date(iso + "T00:00:00Z"), wd = d.getUTCDay(), mo = d.getUTCMonth() + 1;
  const holiday = ["11-01", "11-11", "12-25", "01-01"].includes(iso.slice(5)) || iso === easterMonday(d.getUTCFullYear());
  if ((mo >= 11 || mo <= 3) && wd >= 1 && wd <= 5 && !holiday) return "red";
  return wd === 0 ? "blue" : "white";
};
const tomorrowColour = colourFor(tempoDay(1));
const code = { blue: 1, white: 2, red: 3 };
const colours = createHttpServer((req, res) => {
  const m = req.url.match(/^\/api\/jourTempo\/([0-9-]+)/);
  let body;
  if (m) body = { dateJour: m[1], codeJour: m[1] === tempoDay(0) ? 1 : m[1] === tempoDay(1) ? code[tomorrowColour] : 0, periode: "2026-2027" };
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
  // Maintenance holds: one battery's, then the bridge-wide one, through the page's toggles; each
  // answer is shown, and a second page (no reload) sees each change by a `maintenance` event.
  const other = await context.newPage();
  await other.goto(url.replace(/#.*/, ""));
  await other.waitForSelector("#conn.on", { timeout: 20000 });
  await other.waitForFunction(() => document.querySelectorAll("article.battery").length === 3, null, { timeout: 20000 });
  const held = (p, id, want) => p.waitForFunction(([id, want]) => {
    const c = document.querySelector(`article.battery[data-id="${id}"]`);
    return c.querySelector("input[name=hold]").checked === want && c.querySelector(".held").hidden === !want;
  }, [id, want], { timeout: 20000 });
  const hold = card.locator("input[name=hold]");
  if (await hold.isChecked()) fail("a battery is held at the start");
  await hold.check();
  await page.waitForFunction((id) => {
    const t = document.querySelector("#result").textContent;
    return /PUT \/maintenance → 200/.test(t) && JSON.parse(t.slice(t.indexOf("\n"))).devices[id]?.by === "http";
  }, target.id, { timeout: 20000 });
  await held(other, target.id, true);
  console.log(`hold of ${target.id} set through the page, answered, seen by a second page by live update`);
  await page.locator("#hold-all").check();
  await page.waitForFunction(() => {
    const t = document.querySelector("#result").textContent;
    return /PUT \/maintenance → 200/.test(t) && JSON.parse(t.slice(t.indexOf("\n"))).bridge?.by === "http";
  }, null, { timeout: 20000 });
  await other.waitForFunction(() => document.querySelector("#hold-all").checked && !document.querySelector("#hold-pill").hidden
    && [...document.querySelectorAll("article.battery .held")].every((p) => !p.hidden), null, { timeout: 20000 });
  console.log("hold all set through the page, every battery shown held on the second page");
  await page.locator("#hold-all").uncheck();
  await hold.uncheck();
  await page.waitForFunction(() => {
    const t = document.querySelector("#result").textContent;
    if (!/PUT \/maintenance → 200/.test(t)) return false;
    const m = JSON.parse(t.slice(t.indexOf("\n")));
    return m.bridge === null && Object.keys(m.devices).length === 0;
  }, null, { timeout: 20000 });
  await other.waitForFunction(() => !document.querySelector("#hold-all").checked && document.querySelector("#hold-pill").hidden
    && [...document.querySelectorAll("article.battery")].every((c) => c.querySelector(".held").hidden
      && !c.querySelector("input[name=hold]").checked), null, { timeout: 20000 });
  await held(page, target.id, false);
  console.log("both holds released through the page, the second page sees every battery released");
  await other.close();
  // Tonight's Tempo decision, recomputed through the page's control (preview: nothing stored),
  // shown with its reason; the next scheduled actions name the night job with that reason (on the
  // page when it is among the next 10), and the planner's slots with theirs; every battery shows
  // its firmware.
  await page.locator("#refresh").click();
  await page.waitForFunction((c) => /POST \/tempo\/refresh → 200/.test(document.querySelector("#result").textContent)
    && document.querySelector("#tempo").innerHTML.includes(`tomorrow <b class="colour-${c}">${c}</b>`), tomorrowColour, { timeout: 30000 });
  const tonight = (await page.locator("#tempo span.muted").textContent()).trim();
  if (!tonight || tonight === "starting") fail("no reason for tonight's decision: " + tonight);
  console.log("tonight: " + tonight);
  // The page lists the next 10 actions: after 22:00 Paris the night job's next run is tomorrow
  // evening, behind the day's actions, so where it stands is read from the API first.
  const all = await page.evaluate(() => fetch("/api/v1/next-actions?count=50").then((r) => r.json()));
  const at = all.actions.findIndex((a) => a.source === "schedule" && /switch_to_manual_night/.test(a.job || ""));
  if (at < 0 || all.actions[at].reason !== tonight) fail("the night job does not carry tonight's reason: " + JSON.stringify(all.actions[at]));
  await page.waitForFunction(([why, shown]) => {
    const rows = [...document.querySelectorAll("#next li")];
    const night = rows.find((li) => li.dataset.source === "schedule" && /switch_to_manual_night/.test(li.textContent));
    const plan = rows.filter((li) => li.dataset.source === "plan" && li.querySelector(".reason").textContent.trim().length > 10);
    return (shown ? night && night.querySelector(".reason").textContent === why : !night) && plan.length >= 1;
  }, [tonight, at < 10], { timeout: 30000 }).catch(async (e) => {
    const rows = await page.$$eval("#next li", (els) => els.map((li) => li.dataset.source + ": " + li.textContent.replace(/\s+/g, " ")));
    fail("the next actions do not show tonight's reason and the plan's slots (" + e.message + "):\n  " + rows.join("\n  "));
  });
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
