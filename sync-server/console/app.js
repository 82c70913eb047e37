// The console's frame: who is signed in, which site, the live stream that feeds every view,
// the alarm bar on top of every page, and hash routing (#/<site>/<view>[/<id>]).

import { api, onSignedOut, sitePath, query } from "./api.js";
import { h, s, fill, hm, setZone, siteZone, zoneAbbr } from "./util.js";
import * as alarms from "./alarms.js";
import * as live from "./live.js";
import * as incidents from "./incidents.js";
import * as tours from "./tours.js";
import * as devices from "./devices.js";
import * as plan from "./plan.js";
import * as reports from "./reports.js";
import * as admin from "./admin.js";
import * as account from "./account.js";

const VIEWS = [
  ["live", "Live log", live],
  ["incidents", "Incidents", incidents],
  ["tours", "Tours", tours],
  ["devices", "Devices", devices],
  // Short names: the header holds everything on one line down to a tablet's width.
  ["plan", "Plan", plan],
  ["reports", "Reports", reports],
  ["admin", "Admin", admin],
  // Reached from the user's name in the header, not the views' bar.
  ["account", "Your password", account],
];

/** Events kept in memory per site: a long night's worth; older ones stay on the server. */
const MAX_EVENTS = 5000;
/** How far back the live log starts when the console opens: a twelve-hour night. */
const HISTORY_MS = 12 * 3600 * 1000;

/** What every view reads, and the listeners told when it changes. */
export const store = {
  user: null,
  sites: [],
  site: null,
  config: null,
  events: [],
  eventsById: new Map(),
  lastSeq: 0,
  /** Open panic alarms by event id, as `GET .../alarms` shows them. */
  alarms: new Map(),
  /** Lone workers' overdue check-ins and silent devices announced on the stream, by key. */
  notices: new Map(),
  connection: "offline",
  listeners: new Set(),
};

export function emit(kind, data) {
  for (const fn of [...store.listeners]) {
    try {
      fn(kind, data);
    } catch (e) {
      console.error(e);
    }
  }
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

export function checkpointName(id) {
  const cp = store.config?.checkpoints?.find((c) => c.id === id);
  return cp ? `${cp.name} (${id})` : id;
}

export function isAdmin() {
  return store.user?.role === "admin";
}

let stream = null;
let streamSite = null;
let current = null;
let retryTimer = null;

function parseHash() {
  const [site, view, ...rest] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { site, view, arg: rest.join("/") };
}

async function start() {
  window.addEventListener("hashchange", route);
  onSignedOut(() => signedOutLocally("Your session has ended. Sign in again."));
  // Browsers start audio only after a gesture: any click unlocks the alarm's sound.
  document.addEventListener("click", alarms.unlockAudio, { capture: true });
  store.listeners.add((kind) => {
    if (kind === "alarms" || kind === "notices") alarms.renderBar(document.getElementById("alarms"));
    if (kind === "connection") renderConnection();
    if (kind === "tick") renderZone();
  });
  setInterval(() => emit("tick"), 1000);
  try {
    const session = await api("GET", "/api/v1/session", undefined, { quiet401: true });
    await signedIn(session.user);
  } catch (e) {
    if (e.status === 401) showSignIn();
    else showSignIn(`The server answered: ${e.message}`);
  }
}

async function signedIn(user) {
  store.user = user;
  const { sites } = await api("GET", "/api/v1/sites");
  store.sites = sites;
  route();
}

function signedOutLocally(message) {
  store.user = null;
  disconnect();
  store.alarms.clear();
  store.notices.clear();
  alarms.renderBar(document.getElementById("alarms"));
  showSignIn(message);
}

function showSignIn(message) {
  if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
  fill(document.getElementById("top"));
  const error = h("p.error", { role: "alert", id: "signin-error" }, message || "");
  const name = h("input", { id: "signin-name", name: "name", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { id: "signin-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = h("button.primary", { id: "signin-submit", type: "submit" }, "Sign in");
  const form = h("form.signin", {
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      error.textContent = "";
      try {
        const session = await api("POST", "/api/v1/session", { name: name.value, password: password.value }, { quiet401: true });
        password.value = "";
        history.replaceState(null, "", "#/");
        await signedIn(session.user);
      } catch (err) {
        error.textContent =
          err.status === 401 ? "Wrong name or password."
          : err.status === 429 ? `Too many failed attempts. Try again in ${err.retryAfter ?? "a few"} seconds.`
          : err.message;
        password.select();
      } finally {
        button.disabled = false;
      }
    },
  },
    h("h1", {}, "Patrol control room"),
    h("label", {}, "Name", name),
    h("label", {}, "Password", password),
    button,
    error,
  );
  disposeView();
  fill(document.getElementById("view"), form);
  name.focus();
}

async function signOut() {
  try {
    await api("DELETE", "/api/v1/session", undefined, { quiet401: true });
  } catch {
    // Signed out already, or the server is away: forget the session here either way.
  }
  signedOutLocally("Signed out.");
}

let routing = 0;
/** The current site's connection until its configuration is read. */
let connecting = null;

async function route() {
  const turn = ++routing;
  if (!store.user) {
    showSignIn();
    return;
  }
  let { site, view, arg } = parseHash();
  const known = store.sites.find((s) => s.site_id === site);
  if (!known) {
    if (!store.sites.length) {
      disposeView();
      renderTop(null, null);
      // Their own password is theirs to change without a site.
      current = view === "account" ? account.render({ store }) : null;
      fill(document.getElementById("view"), current?.el ?? h("p.empty", {}, "You cover no site yet. An administrator adds sites to your account."));
      return;
    }
    // Another site's address (or none): the user's first site, not a hint of what exists.
    history.replaceState(null, "", `#/${encodeURIComponent(store.sites[0].site_id)}/live`);
    ({ site, view, arg } = parseHash());
  }
  const entry = VIEWS.find(([name]) => name === view) || VIEWS[0];
  if (entry[0] === "admin" && !isAdmin()) {
    navigate(`#/${encodeURIComponent(site)}/live`);
    return;
  }
  // The site's configuration (its time zone above all) is read before a view is drawn.
  if (streamSite !== site) connecting = connect(site);
  await connecting;
  if (turn !== routing) return;
  renderTop(site, entry[0]);
  disposeView();
  const ctx = { site, arg, store, navigate, checkpointName, isAdmin, emit };
  current = entry[2].render(ctx);
  fill(document.getElementById("view"), current.el);
  document.body.dataset.view = entry[0];
}

function disposeView() {
  current?.dispose?.();
  current = null;
}

// Views subscribe through their returned `update`.
const viewListener = (kind, data) => current?.update?.(kind, data);
store.listeners.add(viewListener);

function renderTop(site, view) {
  const top = document.getElementById("top");
  const picker = h("select", {
    id: "site-picker",
    "aria-label": "Site",
    onchange: (e) => navigate(`#/${encodeURIComponent(e.target.value)}/${view || "live"}`),
  }, store.sites.map((s) => h("option", { value: s.site_id, selected: s.site_id === site }, s.name)));
  const nav = h("nav", {},
    VIEWS.filter(([name]) => name !== "account" && (name !== "admin" || isAdmin())).map(([name, title]) =>
      h("a", {
        href: `#/${encodeURIComponent(site ?? "")}/${name}`,
        class: name === view ? "active" : "",
        id: `nav-${name}`,
      }, title)));
  const mute = h("button", {
    id: "sound-toggle",
    onclick: () => {
      alarms.setMuted(!alarms.muted());
      drawMute();
    },
  });
  function drawMute() {
    const off = alarms.muted();
    fill(mute, speaker(off), h("span.label", {}, off ? "Sound off" : "Sound on"));
    mute.title = off ? "The alarm's sound is off: click to turn it on" : "The alarm's sound is on: click to turn it off";
    mute.setAttribute("aria-label", off ? "Alarm sound off" : "Alarm sound on");
    mute.classList.toggle("off", off);
  }
  drawMute();
  fill(top,
    h("span.brand", {}, "Patrol"),
    site ? picker : null,
    site ? nav : null,
    h("span.spacer"),
    site ? h("span.zone", { id: "site-zone" }, h("span.zone-label", {}, "Site time "), h("span.clock")) : null,
    h("span", { id: "connection" }),
    mute,
    h("a.who", {
      id: "who",
      href: `#/${encodeURIComponent(site ?? "")}/account`,
      title: `${store.user.name}, ${store.user.role}: change your password`,
    }, store.user.name, h("span.role", {}, ` · ${store.user.role}`)),
    h("button", { id: "sign-out", onclick: signOut }, "Sign out"),
  );
  renderConnection();
  renderZone();
}

/** The site's clock and zone, once in the header: every time on the page is in this zone. */
function renderZone() {
  const el = document.getElementById("site-zone");
  if (!el) return;
  const now = new Date();
  const text = `${hm(now.toISOString())} ${zoneAbbr(now)}`;
  const clock = el.querySelector(".clock");
  if (clock.textContent !== text) clock.textContent = text;
  el.title = `Every time on this console is the site's local time (${siteZone()})`;
}

/** A loudspeaker, with sound waves, or crossed out when `off`. */
function speaker(off) {
  return s("svg", { viewBox: "0 0 20 20", width: 18, height: 18, "aria-hidden": "true", class: "icon" },
    s("path", { d: "M3 7.5h3l4-3.5v12l-4-3.5H3z", class: "fill" }),
    off
      ? s("path", { d: "M13 7.5l5 5M18 7.5l-5 5" })
      : s("path", { d: "M13 7.2a4 4 0 0 1 0 5.6M15.3 5a7 7 0 0 1 0 10" }));
}

function renderConnection() {
  const el = document.getElementById("connection");
  if (!el) return;
  el.className = `connection ${store.connection}`;
  el.textContent = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" }[store.connection];
  el.title = store.connection === "live" ? "New events appear as the server receives them" : "Not receiving new events";
}

function setConnection(state) {
  if (store.connection !== state) {
    store.connection = state;
    emit("connection", state);
  }
}

function disconnect() {
  stream?.close();
  stream = null;
  streamSite = null;
  clearTimeout(retryTimer);
  setConnection("offline");
}

/** Loads `site`'s configuration (before its views are drawn: their times are in its zone),
 * then its open alarms and the night's events, then follows its stream. */
async function connect(site) {
  disconnect();
  streamSite = site;
  store.site = site;
  store.config = null;
  store.events = [];
  store.eventsById = new Map();
  store.lastSeq = 0;
  store.alarms.clear();
  store.notices.clear();
  setConnection("connecting");
  emit("reset");
  try {
    const config = await api("GET", sitePath(site, "/config"));
    if (streamSite !== site) return;
    store.config = config;
    setZone(config.time_zone);
  } catch (e) {
    // Not the last site's zone: UTC, which the header then names.
    setZone("UTC");
    console.error(e);
  }
  follow(site);
}

async function follow(site) {
  try {
    await Promise.all([refreshAlarms(site), loadHistory(site)]);
  } catch (e) {
    console.error(e);
  }
  if (streamSite === site) openStream(site);
}

async function loadHistory(site) {
  const from = new Date(Date.now() - HISTORY_MS).toISOString();
  let after = 0;
  for (;;) {
    const page = await api("GET", sitePath(site, "/events") + query({ after, limit: 1000, from }));
    if (streamSite !== site) return;
    for (const ev of page.events) addEvent(ev);
    // `next` is where the page stopped examining, even when the filter kept nothing.
    after = page.next ?? after;
    store.lastSeq = Math.max(store.lastSeq, after);
    if (!page.more) break;
  }
  emit("events");
}

export async function refreshAlarms(site = store.site) {
  const { alarms: open } = await api("GET", sitePath(site, "/alarms") + query({ open: true }));
  if (streamSite !== site) return;
  store.alarms = new Map(open.map((a) => [a.event_id, a]));
  emit("alarms");
}

function addEvent(ev) {
  if (store.eventsById.has(ev.id)) return false;
  store.eventsById.set(ev.id, ev);
  store.events.push(ev);
  store.lastSeq = Math.max(store.lastSeq, ev.seq);
  if (store.events.length > MAX_EVENTS) {
    for (const old of store.events.splice(0, store.events.length - MAX_EVENTS)) store.eventsById.delete(old.id);
  }
  return true;
}

function openStream(site) {
  const es = new EventSource(sitePath(site, "/stream") + query({ after: store.lastSeq }));
  stream = es;
  es.onopen = () => setConnection("live");
  es.onerror = () => {
    if (stream !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused (signed out, or the server restarting): ask the session, then start again.
      setConnection("reconnecting");
      es.close();
      retryTimer = setTimeout(async () => {
        try {
          await api("GET", "/api/v1/session");
          if (streamSite === site) {
            await refreshAlarms(site);
            openStream(site);
          }
        } catch (e) {
          if (e.status !== 401 && streamSite === site) openStream(site);
        }
      }, 3000);
    } else {
      setConnection("reconnecting");
    }
  };
  es.addEventListener("event", (m) => {
    const ev = JSON.parse(m.data);
    if (!addEvent(ev)) return;
    emit("event", ev);
    if (ev.kind === "panic") refreshAlarms(site).catch(console.error);
    if (ev.kind === "checkin_missed") {
      notice(`checkin:${ev.shift_id}:${ev.due_ms}`, { kind: "check_in_missed", guard: ev.guard_id, at: ev.corrected_time });
    }
  });
  es.addEventListener("alarm_acknowledged", (m) => {
    const a = JSON.parse(m.data);
    store.alarms.delete(a.event_id);
    emit("alarms");
  });
  es.addEventListener("alarm_escalated", (m) => {
    const a = JSON.parse(m.data);
    if (a.open) store.alarms.set(a.event_id, a);
    emit("alarms");
  });
  es.addEventListener("check_in_overdue", (m) => {
    const c = JSON.parse(m.data);
    notice(`checkin:${c.shift_id}:${c.due_at}`, { kind: "check_in_overdue", guard: c.guard, at: c.due_at });
  });
  for (const name of ["device_silent", "device_back", "shift_overdue"]) {
    es.addEventListener(name, (m) => emit("gap", { kind: name, ...JSON.parse(m.data) }));
  }
  for (const name of ["window_changed", "window_final", "window_amended"]) {
    es.addEventListener(name, (m) => emit("window", { kind: name, ...JSON.parse(m.data) }));
  }
  es.addEventListener("closed", () => {
    es.close();
    signedOutLocally("Your session has ended. Sign in again.");
  });
}

function notice(key, value) {
  if (store.notices.has(key)) return;
  store.notices.set(key, value);
  emit("notices");
}

export function dismissNotice(key) {
  store.notices.delete(key);
  emit("notices");
}

start();
