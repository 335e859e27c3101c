// Shared setup of the browser tests: a `tidings serve` on free ports in a temporary data
// directory, Debian's Chromium driven by playwright-core, pages whose console output is
// kept for failure messages, and the command-line client.
//
// TIDINGS_BIN names the binary (the Rust wrapper test sets it); CHROMIUM_PATH overrides
// /usr/bin/chromium; TIDINGS_WEB_VERBOSE=1 prints every page's console output at the end
// of each test file.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const TIDINGS_BIN = process.env.TIDINGS_BIN ?? path.join(REPO_ROOT, "target/debug/tidings");
const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Bound of every wait on the server, a page or the command-line client. */
export const WAIT_MS = 20_000;
const SERVER_START_MS = 30_000;
const SERVER_STOP_MS = 15_000;
const CLI_MS = 30_000;

const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Rejects with `message` after `ms`, unless `promise` settles first. */
export function bounded(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (timed out after ${ms} ms)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `tidings ARGS` to completion and returns its stdout; rejects with stderr on failure. */
export function runTidings(args, { timeoutMs = CLI_MS } = {}) {
  const child = spawn(TIDINGS_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const done = new Promise((resolve, reject) => {
    child.on("error", reject);
    // "close" comes after the output streams ended; "exit" may come before the last output.
    child.on("close", (code) => {
      if (code === 0) {
        resolve(stdout);
      } else {
        reject(new Error(`tidings ${args[0]} ${args[1] ?? ""} exited with ${code}: ${stderr.trim()}`));
      }
    });
  });
  return bounded(done, timeoutMs, `tidings ${args.slice(0, 2).join(" ")}`).catch((error) => {
    if (child.exitCode === null) {
      process.kill(child.pid, "SIGKILL");
    }
    throw error;
  });
}

/** A `tidings serve` on 127.0.0.1 with free ports and its own data directory. */
export class Server {
  /**
   * Starts a server on free ports in a new data directory, or, to restart one, on the ports
   * and data directory of `previous`.
   */
  static async start(previous = null) {
    const dataDir = previous?.dataDir ?? mkdtempSync(path.join(tmpdir(), "tidings-web-"));
    const listen = previous === null
      ? ["--quic-listen", "127.0.0.1:0"]
      : ["--quic-listen", previous.quicAddr, "--http-listen", previous.httpAddr];
    const child = spawn(TIDINGS_BIN, ["serve", "--data-dir", dataDir, ...listen], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    });
    const server = new Server(child, dataDir);
    await bounded(server.#readAddresses(), SERVER_START_MS, `tidings serve did not print its addresses: ${server.log()}`);
    return server;
  }

  constructor(child, dataDir) {
    this.child = child;
    this.dataDir = dataDir;
    this.lines = [];
    this.exited = new Promise((resolve) => child.on("exit", resolve));
    child.stderr.on("data", (chunk) => this.lines.push(...chunk.toString().split("\n").filter(Boolean)));
  }

  #readAddresses() {
    const lines = readline.createInterface({ input: this.child.stdout });
    return new Promise((resolve, reject) => {
      // The listener stays after the addresses are read, so the server never blocks on a full pipe.
      lines.on("line", (line) => {
        // Tokens stay out of failure messages.
        this.lines.push(line.replace(/#token=\S+/, "#token=<token>"));
        const quic = line.match(/^quic listening on (\S+)/);
        const http = line.match(/^http listening on (\S+)/);
        const link = line.match(/^web client as (\S+): open (\S+)/);
        if (quic) {
          this.quicAddr = quic[1];
        } else if (http) {
          this.httpAddr = http[1];
        } else if (link) {
          this.signInLinks = { ...this.signInLinks, [link[1]]: link[2] };
        }
        if (this.quicAddr && this.httpAddr && this.signInLinks?.bob) {
          resolve();
        }
      });
      this.child.on("exit", (code) => reject(new Error(`tidings serve exited with ${code} before printing its addresses`)));
    });
  }

  log() {
    return this.lines.slice(-40).join("\n");
  }

  get origin() {
    return `http://${this.httpAddr}`;
  }

  get quicPort() {
    return Number(this.quicAddr.split(":").pop());
  }

  get httpPort() {
    return Number(this.httpAddr.split(":").pop());
  }

  /** Mints a token for `user` with the server's key. */
  async token(user, ttl = "1h") {
    const out = await runTidings(["token", "--user", user, "--ttl", ttl, "--data-dir", this.dataDir]);
    return out.trim();
  }

  /** Ends every session of `user` through the operator endpoint; returns its JSON reply. */
  async kick(user, reason) {
    const admin = (await runTidings(["token", "--user", "ops", "--admin", "--ttl", "10m", "--data-dir", this.dataDir])).trim();
    const response = await fetch(`${this.origin}/v1/admin/kick`, {
      method: "POST",
      headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: JSON.stringify({ user, reason }),
      signal: AbortSignal.timeout(10_000),
    });
    const reply = await response.json();
    if (!response.ok) {
      throw new Error(`kick failed with ${response.status}: ${JSON.stringify(reply)}`);
    }
    return reply;
  }

  /** Arguments every `tidings client` call needs to reach this server over QUIC. */
  clientArgs(token, device) {
    return ["--server", this.quicAddr, "--token", token, "--device", device, "--data-dir", this.dataDir, "--transport", "quic"];
  }

  /** Sends `text` as a command-line client and returns the acknowledgement. */
  async cliSend(token, conversationId, text) {
    const args = ["client", "send", ...this.clientArgs(token, "cli-sender"), "--conversation", conversationId, "--json", text];
    return JSON.parse(await runTidings(args));
  }

  /**
   * Starts `tidings client listen` for `count` deliveries of a conversation. Resolves
   * `ready` once it is connected, and `messages` with the delivered messages.
   */
  cliListen(token, conversationId, count) {
    const args = ["client", "listen", ...this.clientArgs(token, "cli-listener"), "--conversation", conversationId, "--count", String(count), "--timeout", "60s"];
    const child = spawn(TIDINGS_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    const ready = new Promise((resolve, reject) => {
      child.stderr.on("data", (chunk) => {
        stderr += chunk;
        if (stderr.includes("listening as")) {
          resolve();
        }
      });
      child.on("close", (code) => reject(new Error(`tidings client listen exited with ${code} before it was ready: ${stderr}`)));
    });
    let stdout = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    const messages = new Promise((resolve, reject) => {
      // "close", not "exit": the last lines of output may arrive after the exit.
      child.on("close", (code) => {
        if (code === 0) {
          resolve(stdout.trim().split("\n").map((line) => JSON.parse(line)));
        } else {
          reject(new Error(`tidings client listen exited with ${code}: ${stderr}`));
        }
      });
    });
    messages.catch(() => {});
    const stop = () => {
      if (child.exitCode === null) {
        process.kill(child.pid, "SIGKILL");
      }
    };
    return {
      ready: bounded(ready, CLI_MS, "tidings client listen did not connect"),
      messages: bounded(messages, 60_000, "tidings client listen did not get every message").finally(stop),
      stop,
    };
  }

  /** Sends SIGTERM, so the edge drains its sessions, and waits for the exit; keeps the data. */
  async terminate() {
    process.kill(this.child.pid, "SIGTERM");
    await bounded(this.exited, SERVER_STOP_MS, "tidings serve did not stop after SIGTERM");
  }

  /** Ends the server by its PID and removes its data directory. */
  async stop() {
    if (this.child.exitCode === null) {
      process.kill(this.child.pid, "SIGTERM");
      try {
        await bounded(this.exited, SERVER_STOP_MS, "tidings serve did not stop after SIGTERM");
      } catch {
        process.kill(this.child.pid, "SIGKILL");
        await bounded(this.exited, SERVER_STOP_MS, "tidings serve did not stop after SIGKILL");
      }
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Chromium with one browser context per page, each page's console output recorded. */
export class Browser {
  static async launch() {
    const browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      // NOTE: headless through the flag below, because Playwright's own headless switch
      // picks a mode for its bundled builds; playwright-core also passes a fresh
      // --user-data-dir to every launch.
      headless: false,
      args: CHROMIUM_ARGS,
      timeout: WAIT_MS,
    });
    return new Browser(browser);
  }

  constructor(browser) {
    this.browser = browser;
    this.console = [];
  }

  /**
   * Opens `url` in a new context as `name`. With `webTransport: false` the page runs
   * without `window.WebTransport`, as in a browser that lacks it.
   */
  async open(name, url, { webTransport = true } = {}) {
    const context = await this.browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("console", (message) => this.console.push(`[${name}] ${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => this.console.push(`[${name}] page error: ${error.message}`));
    if (!webTransport) {
      await page.addInitScript(() => {
        delete window.WebTransport;
      });
    }
    await page.goto(url);
    return page;
  }

  /** Returns the console output of every page, for a failure message. */
  consoleLog() {
    return this.console.join("\n").replace(/token=[\w.-]+/g, "token=<token>");
  }

  async close() {
    await this.browser.close();
  }
}

/** Starts the server and the browser that a test file shares. */
export async function startFixture() {
  const server = await Server.start();
  const browser = await Browser.launch();
  return { server, browser };
}

/** Stops what `startFixture` started; either may be missing when starting failed. */
export async function stopFixture(server, browser) {
  if (process.env.TIDINGS_WEB_VERBOSE) {
    console.log(browser?.consoleLog());
  }
  await browser?.close();
  await server?.stop();
}

/** Returns the sign-in URL of `token`, with optional endpoint overrides. */
export function signInUrl(server, token, { wt = null, ws = null } = {}) {
  const params = new URLSearchParams({ token });
  if (wt) {
    params.set("wt", wt);
  }
  if (ws) {
    params.set("ws", ws);
  }
  return `${server.origin}/#${params}`;
}

/** Waits until the page's indicator shows `state` (and `transport`, when given). */
export async function waitForConnection(page, state, transport = null) {
  await page.waitForFunction(
    ([expectedState, expectedTransport]) => {
      const shown = document.querySelector("[data-testid=connection-state]")?.textContent;
      const via = document.querySelector("[data-testid=transport]")?.textContent;
      return shown === expectedState && (expectedTransport === null || via === expectedTransport);
    },
    [state, transport],
    { timeout: WAIT_MS },
  );
}

/** Returns the messages the open conversation shows: body, seq, state and sender. */
export function shownMessages(page) {
  return page.$$eval("[data-testid=message]", (items) =>
    items.map((item) => ({
      body: item.querySelector("[data-testid=message-body]").textContent,
      seq: item.dataset.seq ?? null,
      state: item.dataset.state,
      sender: item.dataset.sender,
      error: item.querySelector("[data-testid=message-error]")?.textContent ?? null,
    })));
}

/** Waits until the open conversation shows a sent message with each of `bodies`. */
export async function waitForBodies(page, bodies) {
  await page.waitForFunction(
    (expected) => {
      const sent = [...document.querySelectorAll("[data-testid=message][data-state=sent] [data-testid=message-body]")]
        .map((body) => body.textContent);
      return expected.every((body) => sent.includes(body));
    },
    bodies,
    { timeout: WAIT_MS },
  );
}

/** Opens the conversation `conversationId` from the page's list, waiting for it to appear. */
export async function openConversation(page, conversationId) {
  const item = page.locator(`[data-testid=conversation-item][data-conversation-id="${conversationId}"]`);
  await item.waitFor({ timeout: WAIT_MS });
  await item.click();
  await page.waitForFunction(
    (id) => document.querySelector(`[data-testid=conversation-item][data-conversation-id="${id}"]`)?.getAttribute("aria-current") === "true",
    conversationId,
    { timeout: WAIT_MS },
  );
}

/** Types `text` into the composer and sends it. */
export async function compose(page, text) {
  await page.fill("[data-testid=composer-input]", text);
  await page.click("[data-testid=composer-send]");
}

/** Runs `body`; on failure rethrows with the pages' console output and the server log attached. */
export async function withDiagnostics(browser, server, body) {
  try {
    await body();
  } catch (error) {
    error.message += `\n--- page console ---\n${browser.consoleLog()}\n--- tidings serve ---\n${server.log()}`;
    throw error;
  }
}
