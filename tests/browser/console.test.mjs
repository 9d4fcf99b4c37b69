// Browser test of the operator console: a real `offboard serve` (the binary `cargo test` built, or $OFFBOARD_BIN)
// on a temporary SQLite file (or the PostgreSQL database in $OFFBOARD_TEST_DATABASE_URL), driven in headless
// Chromium (/usr/bin/chromium) through playwright-core. Run through tests/browser/run.sh.
//
// It signs in with a `console` credential made by the CLI, opens the live view, registers a push stream (to a
// loopback receiver here) and a poll stream (polled and acknowledged here), sends a SCIM deactivation and asserts
// the row and all four deliveries (two SETs per stream) show within 1 s; ends a user's sessions from the Users page
// and sees the token refused by introspection; checks that a POST without the CSRF token is refused and that an
// expired session sends the browser to the sign-in form. Screenshot: target/browser-artifacts/live-view.png, copied
// to docs/console.png with UPDATE_SCREENSHOT=1 (the README's picture; a CI run leaves the tree unchanged).

import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, openSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const bin = process.env.OFFBOARD_BIN || path.join(root, "target", "debug", "offboard");
const pgUrl = process.env.OFFBOARD_TEST_DATABASE_URL || "";
const artifacts = path.join(root, "target", "browser-artifacts");
const WITHIN_MS = 1000;

const work = mkdtempSync(path.join(tmpdir(), "offboard-browser-"));
const cleanups = [() => rmSync(work, { recursive: true, force: true })];
let failed = false;

function log(...args) {
  console.log("[browser]", ...args);
}

function check(cond, what) {
  if (!cond) {
    throw new Error("assertion failed: " + what);
  }
  log("ok:", what);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const dbUrl = pgUrl || path.join(work, "offboard.db");
const env = {
  ...process.env,
  OFFBOARD_DATABASE_URL: dbUrl,
  OFFBOARD_LISTEN: `127.0.0.1:${port}`,
  OFFBOARD_ISSUER: base,
  OFFBOARD_KEYS__KEK: randomBytes(32).toString("base64"),
  OFFBOARD_LOG_LEVEL: "info,actix_server=debug,actix_http=debug",
};
delete env.RUST_LOG;

function cli(...args) {
  return execFileSync(bin, args, { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

function credential(name, scopes) {
  const out = cli("credentials", "create", "--name", name, "--scopes", scopes);
  return out.split("\n").pop();
}

/// Runs SQL against the test database (the expiry check ages a session the way time would).
function sql(statement) {
  if (pgUrl) {
    execFileSync("psql", [pgUrl, "-v", "ON_ERROR_STOP=1", "-q", "-c", statement]);
  } else {
    execFileSync("sqlite3", [dbUrl, statement]);
  }
}

async function api(method, url, { token, basic, json, form } = {}) {
  const headers = {};
  if (token) {
    headers.authorization = `Bearer ${token}`;
  }
  if (basic) {
    headers.authorization = "Basic " + Buffer.from(`${basic[0]}:${basic[1]}`).toString("base64");
  }
  let body;
  if (json !== undefined) {
    headers["content-type"] = url.includes("/scim/") ? "application/scim+json" : "application/json";
    body = JSON.stringify(json);
  }
  if (form !== undefined) {
    headers["content-type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  }
  const res = await fetch(base + url, { method, headers, body });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  return { status: res.status, text, body: parsed };
}

async function waitReady(server) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) {
      throw new Error(`offboard serve exited with ${server.exitCode}; see ${path.join(artifacts, "serve.log")}`);
    }
    try {
      const res = await fetch(base + "/readyz");
      if (res.ok) {
        return;
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("offboard did not become ready within 30 s");
}

function newUser(userName) {
  return {
    schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"],
    userName,
    name: { givenName: "Test", familyName: "User" },
    emails: [{ primary: true, value: userName, type: "work" }],
    active: true,
  };
}

try {
  mkdirSync(artifacts, { recursive: true });
  log(`offboard ${bin} on ${pgUrl ? "PostgreSQL" : "SQLite"} at ${base}`);
  cli("migrate");
  const consoleSecret = credential("console-op", "console");
  const scimSecret = credential("okta", "scim");
  const rsSecret = credential("rs", "introspect");
  const ssfSecret = credential("receiver", "ssf.manage");

  const logFd = openSync(path.join(artifacts, "serve.log"), "w");
  const server = spawn(bin, ["serve"], { env, stdio: ["ignore", logFd, logFd] });
  cleanups.unshift(() => server.kill("SIGTERM"));
  await waitReady(server);

  // A push receiver on loopback.
  const pushed = [];
  const receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      pushed.push(body);
      res.writeHead(202).end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  cleanups.unshift(() => receiver.close());
  const rxUrl = `http://127.0.0.1:${receiver.address().port}/events`;

  let res = await api("POST", "/ssf/streams", {
    token: ssfSecret,
    json: { delivery: { method: "urn:ietf:rfc:8935", endpoint_url: rxUrl }, description: "push receiver" },
  });
  check(res.status === 201, `push stream created (${res.status})`);
  res = await api("POST", "/ssf/streams", {
    token: ssfSecret,
    json: { delivery: { method: "urn:ietf:rfc:8936" }, description: "poll receiver" },
  });
  check(res.status === 201, `poll stream created (${res.status})`);
  const pollStream = res.body.stream_id;

  // The poll receiver: polls every 50 ms (short polls, so it never holds a request open at shutdown) and
  // acknowledges what it got in the next poll.
  let polling = true;
  const polled = [];
  const poller = (async () => {
    let ack = [];
    while (polling) {
      const r = await api("POST", `/ssf/poll/${pollStream}`, {
        token: ssfSecret,
        json: { ack, maxEvents: 10, returnImmediately: true },
      }).catch(() => null);
      ack = r && r.body && r.body.sets ? Object.keys(r.body.sets) : [];
      polled.push(...ack);
      if (ack.length === 0) {
        await new Promise((x) => setTimeout(x, 50));
      }
    }
  })();
  const stopPolling = async () => {
    polling = false;
    await poller;
  };
  cleanups.unshift(stopPolling);

  for (const u of ["leaver@example.com", "dev@example.com"]) {
    res = await api("POST", "/scim/v2/Users", { token: scimSecret, json: newUser(u) });
    check(res.status === 201, `user ${u} created`);
  }
  const leaver = (await api("GET", `/scim/v2/Users?filter=${encodeURIComponent('userName eq "leaver@example.com"')}`, { token: scimSecret })).body.Resources[0].id;
  const leaverToken = JSON.parse(cli("token", "mint", "--user", "leaver@example.com")).access_token;
  const devToken = JSON.parse(cli("token", "mint", "--user", "dev@example.com")).access_token;
  const introspect = async (token) =>
    (await api("POST", "/oauth2/introspect", { basic: ["rs", rsSecret], form: { token } })).body;
  check((await introspect(devToken)).active === true, "dev's token is active before");

  const userDataDir = mkdtempSync(path.join(work, "chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 720 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  cleanups.unshift(() => context.close());
  const page = context.pages()[0] || (await context.newPage());
  const cspViolations = [];
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) {
      cspViolations.push(m.text());
    }
  });

  // Sign in.
  await page.goto(base + "/");
  check(page.url() === base + "/console/sign-in", "/ leads to the sign-in form when signed out");
  await page.fill("input[name=name]", "console-op");
  await page.fill("input[name=secret]", "ofb_wrong");
  await page.click("button[type=submit]");
  check((await page.textContent("p.error")).includes("wrong secret"), "a wrong secret is refused");
  await page.fill("input[name=name]", "console-op");
  await page.fill("input[name=secret]", consoleSecret);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/console");
  const cookies = await context.cookies(base + "/console");
  const session = cookies.find((c) => c.name === "offboard_session");
  check(session && session.httpOnly && session.sameSite === "Strict" && session.path === "/console", "session cookie is HttpOnly, SameSite=Strict, Path=/console");

  // Live view: a SCIM deactivation, its row and all four deliveries within 1 s.
  await page.waitForSelector("#feed-state.live", { timeout: 5000 });
  const started = Date.now();
  res = await api("PATCH", `/scim/v2/Users/${leaver}`, {
    token: scimSecret,
    json: {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "active", value: false }],
    },
  });
  check(res.status === 200, "the IdP's deactivation is accepted");
  const row = 'tr.access[data-user="leaver@example.com"][data-action="user.deactivate"]';
  await page.waitForSelector(row, { timeout: Math.max(1, WITHIN_MS - (Date.now() - started)) });
  const rowMs = Date.now() - started;
  await page.waitForFunction(
    (sel) => document.querySelectorAll(sel + ' li.delivery[data-status="delivered"]').length === 4,
    row,
    { timeout: Math.max(1, WITHIN_MS - (Date.now() - started)), polling: 20 },
  );
  const deliveredMs = Date.now() - started;
  log(`row after ${rowMs} ms, all four deliveries after ${deliveredMs} ms`);
  check(deliveredMs <= WITHIN_MS, `the row and both streams' deliveries show within ${WITHIN_MS} ms`);
  check((await page.textContent(row + " td.ended-by")).startsWith("IdP deactivate"), "the row says the IdP deactivated");
  check((await page.textContent(row + " td.generation")) === "0 → 1", "the row shows the generation change");
  const streams = await page.$$eval(row + " li.delivery", (lis) => [...new Set(lis.map((l) => l.dataset.stream))]);
  check(streams.length === 2, "both streams are listed");
  check(pushed.length === 2 && polled.length === 2, "the push receiver and the poller each got two SETs");

  // The leaver's old token presented again: flagged in the live view.
  check((await introspect(leaverToken)).active === false, "the leaver's token is refused");
  await page.waitForSelector('tr.presented[data-user="leaver@example.com"]', { timeout: 3000 });
  check(true, "the revoked token presented shows in the live view");

  // End dev's sessions from the Users page; the token is refused after.
  await page.click("nav a[href='/console/users']");
  await page.fill("input[name=q]", "dev@");
  await page.click("form.search button[type=submit]");
  await page.click("a:text('dev@example.com')");
  check((await page.textContent("#sessions")) === "1", "the Users page shows dev's live session");
  const devPath = new URL(page.url()).pathname;
  // A POST without the CSRF token (same origin, with the cookies) is refused and changes nothing.
  const forged = await page.evaluate(async (p) => {
    const r = await fetch(p + "/end-sessions", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "reason=forged",
    });
    return r.status;
  }, devPath);
  check(forged === 403, "a POST without the CSRF token is refused (403)");
  check((await introspect(devToken)).active === true, "the refused POST changed nothing");
  await page.fill("form[action$='/end-sessions'] input[name=reason]", "laptop lost");
  await page.click("form[action$='/end-sessions'] button[type=submit]");
  await page.waitForSelector("p.done");
  check((await page.textContent("#sessions")) === "0", "no live session left");
  check((await introspect(devToken)).active === false, "dev's token is refused by introspection after End sessions");

  // The live view with everything above, for the README.
  await page.goto(base + "/console");
  await page.waitForSelector('tr.access[data-user="dev@example.com"][data-action="user.end_sessions"]', { timeout: 3000 });
  await page.waitForFunction(() => document.querySelectorAll('li.delivery[data-status="delivered"]').length >= 6, null, { timeout: 3000 });
  const shot = path.join(artifacts, "live-view.png");
  await page.screenshot({ path: shot, fullPage: true });
  if (process.env.UPDATE_SCREENSHOT === "1") {
    mkdirSync(path.join(root, "docs"), { recursive: true });
    copyFileSync(shot, path.join(root, "docs", "console.png"));
    log(`screenshot: ${shot} (copied to docs/console.png)`);
  } else {
    log(`screenshot: ${shot} (UPDATE_SCREENSHOT=1 also copies it to docs/console.png)`);
  }

  // The Streams page: both streams, nothing dead, and the chart of the hour's endings.
  await page.click("nav a[href='/console/streams']");
  check((await page.$$("table.streams tbody tr")).length === 2, "the Streams page lists both streams");
  check((await page.$$eval("table.streams td.dead", (tds) => tds.map((t) => t.textContent))).every((t) => t === "0"), "no dead letters");
  check((await page.$$("svg.chart rect.bar")).length === 12, "the chart has twelve hours");
  await page.screenshot({ path: path.join(artifacts, "streams.png"), fullPage: true });
  await page.goto(base + "/console");
  await page.waitForSelector("#feed-state.live", { timeout: 5000 });

  // An expired session: the open live view goes to the sign-in form, and so does any page.
  sql("UPDATE console_sessions SET expires = '2000-01-01 00:00:00'");
  await page.waitForURL(base + "/console/sign-in", { timeout: 5000 });
  check(true, "the live view of an expired session goes to the sign-in form");
  await page.goto(base + "/console/users");
  check(page.url() === base + "/console/sign-in", "pages of an expired session redirect to the sign-in form");

  // A graceful shutdown does not wait for open live views.
  await page.fill("input[name=name]", "console-op");
  await page.fill("input[name=secret]", consoleSecret);
  await page.click("button[type=submit]");
  await page.waitForSelector("#feed-state.live", { timeout: 5000 });
  await stopPolling();
  const stopping = Date.now();
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 15000))]);
  const stopMs = Date.now() - stopping;
  log(`offboard stopped ${stopMs} ms after SIGTERM with a live view open`);
  check(server.exitCode !== null && stopMs < 10000, "SIGTERM stops the server without waiting for the open live view");
  check(cspViolations.length === 0, `no console errors (CSP violations) in the browser: ${cspViolations.join("; ")}`);
  log("PASS");
} catch (e) {
  failed = true;
  console.error("[browser] FAIL:", e && e.stack ? e.stack : e);
} finally {
  for (const c of cleanups) {
    try {
      await c();
    } catch {
      // best effort
    }
  }
}
process.exit(failed ? 1 : 0);
