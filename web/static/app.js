// The chat page: sign-in, the conversation list, the message view with history paging, the
// composer, groups and the connection indicator. The protocol lives in client.js; this
// module only reads and renders its state.
//
// Sign-in links carry the token in the URL fragment (`#token=...`), which browsers never
// send to a server. The page moves it to sessionStorage and removes it from the address
// bar. Optional `wt=URL` and `ws=URL` in the same fragment replace the edge's endpoints,
// for example to route through a proxy; they count only beside a token.

import { ChatClient } from "./client.js";
import { closeName } from "./codes.js";
import { withTimeout } from "./links.js";

const TOKEN_KEY = "tidings.token";
const DEVICE_KEY = "tidings.device";
const ENDPOINTS_KEY = "tidings.endpoints";
const FETCH_TIMEOUT_MS = 2_000;
/** Distance from the top of the message view, in pixels, at which the next older page loads. */
const LOAD_OLDER_THRESHOLD_PX = 48;
/** Older pages loaded at most to fill the view when a conversation opens. */
const MAX_FILL_PAGES = 5;

const $ = (id) => document.getElementById(id);

let client = null;
let openKey = null;
/** The edge's endpoints as last read; until the first read only the WebSocket path is known. */
let lastClientConfig = { webtransport_port: null, webtransport_path: "/v1/wt", websocket_path: "/v1/ws" };

/** Reads a token and endpoint overrides from the fragment, then removes the fragment. */
function takeFragment() {
  if (location.hash.length <= 1) {
    return;
  }
  const params = new URLSearchParams(location.hash.slice(1));
  history.replaceState(null, "", location.pathname + location.search);
  const token = params.get("token");
  if (!token) {
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  const overrides = { webtransportUrl: params.get("wt"), websocketUrl: params.get("ws") };
  sessionStorage.setItem(ENDPOINTS_KEY, JSON.stringify(overrides));
}

function deviceId() {
  let id = sessionStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = `web-${crypto.randomUUID().slice(0, 8)}`;
    sessionStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

async function fetchJson(path) {
  const response = await withTimeout(fetch(path, { cache: "no-store" }), FETCH_TIMEOUT_MS, `GET ${path} timed out`);
  if (!response.ok) {
    throw new Error(`GET ${path} returned ${response.status}`);
  }
  return response.json();
}

/** Returns where to connect now: the edge's own endpoints unless the fragment overrode them. */
async function resolveEndpoints() {
  const overrides = JSON.parse(sessionStorage.getItem(ENDPOINTS_KEY) ?? "{}");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let config = lastClientConfig;
  try {
    config = await fetchJson("/v1/client-config");
    lastClientConfig = config;
  } catch (error) {
    console.info(`tidings: reading /v1/client-config failed: ${error.message}; using the last one read`);
  }
  let webtransportUrl = overrides.webtransportUrl
    ?? (config.webtransport_port === null ? null : `https://${location.hostname}:${config.webtransport_port}${config.webtransport_path}`);
  let certHashes = [];
  // NOTE: a page on plain HTTP comes from a loopback edge with the development PKI, whose
  // leaves browsers trust only by hash. Over HTTPS the browser already trusts the edge's
  // certificate, and Chromium rejects hashes of certificates valid for over 14 days.
  if (webtransportUrl !== null && location.protocol === "http:") {
    try {
      certHashes = (await fetchJson("/v1/cert-hashes")).hashes;
    } catch (error) {
      // Without the hashes the development certificate cannot be pinned, so only the WebSocket can work.
      console.info(`tidings: reading /v1/cert-hashes failed: ${error.message}; using the WebSocket`);
      webtransportUrl = null;
    }
  }
  const websocketUrl = overrides.websocketUrl ?? `${scheme}://${location.host}${config.websocket_path}`;
  return { webtransportUrl, certHashes, websocketUrl };
}

// ---------------------------------------------------------------------------------------
// Rendering

function renderConnection() {
  const state = client?.state ?? "signed out";
  $("connection").dataset.state = state;
  $("connection-state").textContent = state;
  $("transport").textContent = client?.transport ?? "no transport";
  $("user-id").textContent = client?.userId ?? "";
  const ended = client?.state === "closed";
  $("composer-input").disabled = openKey === null || ended;
  $("composer-send").disabled = openKey === null || ended;
}

function sortedConversations() {
  return [...client.conversations.values()].sort((left, right) => right.activityMs() - left.activityMs());
}

function renderList() {
  const list = $("conversation-list");
  const items = [];
  for (const conversation of sortedConversations()) {
    const item = document.createElement("li");
    item.dataset.testid = "conversation-item";
    item.dataset.conversationId = conversation.key;
    item.setAttribute("aria-current", String(conversation.key === openKey));
    const title = document.createElement("span");
    title.className = "title";
    title.dataset.testid = "conversation-title";
    title.textContent = conversation.title(client.userId);
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.testid = "unread-badge";
    badge.dataset.count = String(conversation.unread);
    badge.textContent = String(conversation.unread);
    const preview = document.createElement("span");
    preview.className = "preview";
    preview.dataset.testid = "conversation-preview";
    const last = conversation.last();
    preview.textContent = last === null ? "no messages yet" : `${last.sender}: ${last.body}`;
    item.append(title, badge, preview);
    item.addEventListener("click", () => openConversation(conversation.key));
    items.push(item);
  }
  list.replaceChildren(...items);
}

function messageItem({ body, sender, seq = null, state, error = null, kind = "user", serverTimeMs = null, clientMsgId = null }) {
  const item = document.createElement("li");
  item.className = `message ${kind === "system" ? "system" : ""} ${sender === client.userId ? "mine" : ""}`;
  item.dataset.testid = "message";
  item.dataset.state = state;
  item.dataset.sender = sender;
  if (seq !== null) {
    item.dataset.seq = seq.toString();
  }
  if (clientMsgId !== null) {
    item.dataset.clientMsgId = clientMsgId;
  }
  const text = document.createElement("span");
  text.className = "body";
  text.dataset.testid = "message-body";
  text.textContent = body;
  const meta = document.createElement("span");
  meta.className = "meta";
  const time = serverTimeMs === null ? "" : new Date(Number(serverTimeMs)).toLocaleTimeString();
  meta.textContent = error ?? `${sender} ${time} ${state === "pending" ? "sending…" : ""}`.trim();
  if (error !== null) {
    meta.dataset.testid = "message-error";
  }
  item.append(text, meta);
  return item;
}

function renderMembers(conversation) {
  const panel = $("members-panel");
  panel.hidden = conversation.kind !== "group";
  if (panel.hidden) {
    return;
  }
  // Only a group admin may add or remove members, so the controls show for admins only.
  const isAdmin = conversation.members.some((member) => member.userId === client.userId && member.role === "admin");
  $("add-member").hidden = !isAdmin;
  const items = conversation.members.map((member) => {
    const item = document.createElement("li");
    item.dataset.testid = "member";
    item.dataset.user = member.userId;
    item.textContent = member.role === "admin" ? `${member.userId} (admin)` : member.userId;
    if (isAdmin && member.userId !== client.userId) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.dataset.testid = "remove-member";
      remove.dataset.user = member.userId;
      remove.title = `Remove ${member.userId}`;
      remove.textContent = "×";
      remove.addEventListener("click", () => act(() => client.removeMembers(conversation.key, [member.userId])));
      item.append(remove);
    }
    return item;
  });
  $("members").replaceChildren(...items);
}

function renderConversation() {
  const view = $("messages");
  const conversation = openKey === null ? undefined : client.conversations.get(openKey);
  if (conversation === undefined) {
    openKey = null;
    $("conversation-title").textContent = "No conversation open";
    $("members-panel").hidden = true;
    $("message-list").replaceChildren();
    $("history-state").textContent = "";
    renderConnection();
    return;
  }
  $("conversation-title").textContent = conversation.title(client.userId);
  renderMembers(conversation);

  const nearBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
  const items = conversation.ordered().map((message) => messageItem({ ...message, state: "sent" }));
  for (const entry of conversation.outbox) {
    items.push(messageItem({ body: entry.body, sender: client.userId, state: entry.state, error: entry.error, clientMsgId: entry.clientMsgId }));
  }
  $("message-list").replaceChildren(...items);
  $("history-state").textContent = conversation.historyComplete ? "start of the conversation" : "scroll up for older messages";
  $("history-state").dataset.complete = String(conversation.historyComplete);
  if (nearBottom) {
    view.scrollTop = view.scrollHeight;
  }
  renderConnection();
}

function render(what, key) {
  renderConnection();
  if (client === null) {
    return;
  }
  if (what !== "messages" || key !== null) {
    renderList();
  }
  if (what === "state" || what === "conversations" || key === openKey) {
    renderConversation();
  }
}

// ---------------------------------------------------------------------------------------
// Actions

function notice(text) {
  $("notice").textContent = text;
}

/** Runs a user action and reports its failure in the notice line, which it clears first. */
async function act(action) {
  notice("");
  try {
    return await action();
  } catch (error) {
    notice(error.message);
    return undefined;
  }
}

async function openConversation(key) {
  openKey = key;
  client.view(key);
  $("messages").scrollTop = 0;
  render("conversations", key);
  $("messages").scrollTop = $("messages").scrollHeight;
  const conversation = client.conversations.get(key);
  // Loads older pages until the view can scroll, so scrolling up can page further.
  for (let page = 0; page < MAX_FILL_PAGES && conversation && !conversation.historyComplete; page += 1) {
    const view = $("messages");
    if (conversation.historyLoaded && view.scrollHeight > view.clientHeight) {
      break;
    }
    const added = await act(() => client.loadOlder(key));
    if (added === undefined) {
      break;
    }
  }
}

async function loadOlderOnScroll() {
  const view = $("messages");
  const conversation = openKey === null ? undefined : client?.conversations.get(openKey);
  if (conversation === undefined || conversation.historyComplete || view.scrollTop > LOAD_OLDER_THRESHOLD_PX) {
    return;
  }
  const before = view.scrollHeight;
  const added = await act(() => client.loadOlder(conversation.key));
  if (added) {
    // Keeps the message under the reader's eyes where it was, above the inserted page.
    view.scrollTop += view.scrollHeight - before;
  }
}

function splitUsers(text) {
  return text.split(",").map((user) => user.trim()).filter((user) => user.length > 0);
}

function showCloseBanner({ code, name, reason }) {
  $("close-code").textContent = name ?? `${closeName(code)} (0x${code.toString(16)})`;
  $("close-code").dataset.code = String(code);
  $("close-reason").textContent = reason;
  $("close-banner").hidden = false;
}

function startClient(token) {
  client = new ChatClient({ token, deviceId: deviceId(), resolveEndpoints });
  client.addEventListener("change", (event) => render(event.detail.what, event.detail.key));
  client.addEventListener("notice", (event) => notice(event.detail.text));
  client.addEventListener("close", (event) => {
    showCloseBanner(event.detail);
    if (event.detail.signIn) {
      // The edge rejected the token before any session began: only the form is useful.
      sessionStorage.removeItem(TOKEN_KEY);
      $("chat").hidden = true;
      $("sign-out").hidden = true;
      $("sign-in").hidden = false;
    }
  });
  client.addEventListener("change", (event) => {
    if (event.detail.what === "state" && client.state === "closed") {
      // The session ended for good (an expired token, a kick): the chat stays readable
      // and the form offers a new token.
      $("sign-in").hidden = false;
    }
  });
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  $("sign-out").hidden = false;
  client.start();
  renderConnection();
}

function signOut() {
  client?.stop();
  client = null;
  openKey = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ENDPOINTS_KEY);
  $("chat").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  renderConnection();
}

function wireForms() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = new FormData(event.target).get("token").trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(ENDPOINTS_KEY);
    client?.stop();
    $("close-banner").hidden = true;
    startClient(token);
  });
  $("sign-out").addEventListener("click", signOut);
  $("close-dismiss").addEventListener("click", () => {
    $("close-banner").hidden = true;
  });
  $("new-direct").addEventListener("submit", async (event) => {
    event.preventDefault();
    const peer = new FormData(event.target).get("user").trim();
    const key = await act(() => client.startDirect(peer));
    if (key !== undefined) {
      event.target.reset();
      await openConversation(key);
    }
  });
  $("new-group").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const key = await act(() => client.createGroup(form.get("name").trim(), splitUsers(form.get("members"))));
    if (key !== undefined) {
      event.target.reset();
      await openConversation(key);
    }
  });
  $("add-member").addEventListener("submit", async (event) => {
    event.preventDefault();
    const users = splitUsers(new FormData(event.target).get("users"));
    await act(() => client.addMembers(openKey, users));
    event.target.reset();
  });
  $("leave").addEventListener("click", () => act(() => client.leave(openKey)));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("composer-input");
    if (openKey === null || input.value.length === 0) {
      return;
    }
    act(() => client.send(openKey, input.value));
    input.value = "";
  });
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("messages").addEventListener("scroll", loadOlderOnScroll);
}

function main() {
  takeFragment();
  wireForms();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    startClient(token);
  } else {
    $("sign-in").hidden = false;
  }
}

main();
