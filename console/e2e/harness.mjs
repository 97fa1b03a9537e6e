// What the browser tests stand on: a real `flowd dev` (its binary and connectors from `make
// build`), Debian's Chromium driven by playwright-core, and the public API for set-up.
//
// Environment: FLOWD_BIN (default ../bin/flowd), FLOWD_CONNECTORS_DIR (../bin/connectors),
// FLOWD_CHROMIUM (/usr/bin/chromium). Without Chromium the tests skip, unless
// FLOWD_REQUIRE_BROWSER=1 (CI) makes that a failure. FLOWD_CONSOLE_URL with FLOWD_ADMIN_TOKEN
// points the tests at a running flowd instead of starting one.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

const root = resolve(new URL("..", import.meta.url).pathname, "..");
export const artifacts = resolve(root, "console/test-results");
mkdirSync(artifacts, { recursive: true });

export const chromiumPath = process.env.FLOWD_CHROMIUM || "/usr/bin/chromium";

/** browserMissing says why the browser tests cannot run here, or "" when they can. */
export function browserMissing() {
  if (existsSync(chromiumPath)) return "";
  const why = `no Chromium at ${chromiumPath} (apt-get install chromium, or set FLOWD_CHROMIUM)`;
  if (process.env.FLOWD_REQUIRE_BROWSER === "1") throw new Error(why);
  return why;
}

/** until polls fn every 100 ms until it returns a truthy value, failing after ms. */
export async function until(what, fn, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => ok(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

/** startFlowd runs `flowd dev` in a fresh data dir and waits until it is ready. */
export async function startFlowd() {
  if (process.env.FLOWD_CONSOLE_URL) {
    return { base: process.env.FLOWD_CONSOLE_URL.replace(/\/$/, ""), admin: process.env.FLOWD_ADMIN_TOKEN ?? "", stop: async () => {} };
  }
  const bin = process.env.FLOWD_BIN || join(root, "bin/flowd");
  const connectors = process.env.FLOWD_CONNECTORS_DIR || join(root, "bin/connectors");
  if (!existsSync(bin)) throw new Error(`${bin} not found: run make build`);
  const dir = mkdtempSync(join(tmpdir(), "flowd-console-"));
  const port = await freePort();
  const admin = randomBytes(16).toString("hex");
  const base = `http://127.0.0.1:${port}`;
  const log = [];
  const child = spawn(bin, ["dev", "--data-dir", dir, "--addr", `127.0.0.1:${port}`, "--connectors-dir", connectors], {
    env: { ...process.env, FLOWD_ADMIN_TOKEN: admin, FLOWD_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (b) => log.push(b.toString()));
  child.stderr.on("data", (b) => log.push(b.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  try {
    await until(
      "flowd dev to be ready",
      async () => {
        if (child.exitCode !== null) throw new Error(`flowd dev exited ${child.exitCode}:\n${log.join("")}`);
        return (await fetch(`${base}/readyz`)).ok;
      },
      90000,
    );
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  return {
    base,
    admin,
    log,
    stop: async () => {
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
      writeFileSync(join(artifacts, "flowd-dev.log"), log.join(""));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** launch starts headless Chromium with the flags a closed network needs. */
export function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
}

/** api calls flowd's API with a token and returns the parsed body, failing on an unexpected status. */
export async function api(base, token, method, path, body, expect = [200, 201, 202, 204]) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!expect.includes(res.status)) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** user creates a tenant's user with a token and returns the token. */
export async function tenantUser(base, admin, name) {
  const tenant = (await api(base, admin, "POST", "/tenants", { name })).data.id;
  const perms = ["flows.read", "flows.update", "flows.delete", "flows.control", "secrets.read", "secrets.create", "secrets.delete", "components.read"];
  const user = (await api(base, admin, "POST", "/users", { username: `${name}-user`, tenant, permissions: perms })).data.id;
  const tok = (await api(base, admin, "POST", `/users/${user}/tokens`, { name: "console test" })).data;
  return { tenant, user, token: tok.token ?? tok.secret };
}

/** shot saves a full-page screenshot as a test artifact. */
export async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: false });
}

/** signIn opens the console and signs in with token. */
export async function signIn(page, base, token) {
  await page.goto(`${base}/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Flows" }).waitFor();
}
