// Small helpers every view shares: building elements without HTML strings (nothing a guard
// typed is ever parsed as markup), and times as an operator reads them.

/** An element: h("td.flag", {title: "x"}, "text", child, ...). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Every time on the console is the site's local time, whatever the operator's computer's zone
// (a control room may watch a site in another zone): set once the site's configuration is read.
let zone = "UTC";
let clock, dateClock, hourMinute, day, ymd, abbr;

/** Makes `timeZone` (IANA) the zone of every time shown; an unknown one keeps UTC. */
export function setZone(timeZone) {
  const z = { timeZone: validZone(timeZone) ? timeZone : "UTC" };
  zone = z.timeZone;
  clock = new Intl.DateTimeFormat(undefined, { ...z, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  dateClock = new Intl.DateTimeFormat(undefined, { ...z, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  hourMinute = new Intl.DateTimeFormat(undefined, { ...z, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  day = new Intl.DateTimeFormat(undefined, { ...z, year: "numeric", month: "short", day: "numeric" });
  ymd = new Intl.DateTimeFormat("en-CA", { ...z, year: "numeric", month: "2-digit", day: "2-digit" });
  abbr = new Intl.DateTimeFormat("en-US", { ...z, timeZoneName: "short" });
}
setZone("UTC");

function validZone(timeZone) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
    return Boolean(timeZone);
  } catch {
    return false;
  }
}

/** The zone every time is shown in (the site's). */
export function siteZone() {
  return zone;
}

/** The zone's short name at `date`: "PST", "GMT", "GMT+13" (it changes with summer time). */
export function zoneAbbr(date = new Date()) {
  return abbr.formatToParts(date).find((p) => p.type === "timeZoneName")?.value ?? zone;
}

/** 22:14: a tour window's start, a scan in a grid cell. */
export function hm(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : hourMinute.format(d);
}

/** A size in bytes as people read it. */
export function size(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** 22:14:03 for today (the site's today), else "Mar 1, 22:14". */
export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return localDate(zone, d) === localDate() ? clock.format(d) : dateClock.format(d);
}

/** The site's date and time with milliseconds and the zone's name, and below it the instant as
 * sent (UTC), for an event's detail. */
export function fullTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const ms = String(d.getMilliseconds()).padStart(3, "0");
  return [`${day.format(d)} ${clock.format(d)}.${ms} ${zoneAbbr(d)}`, h("div.meta.mono", {}, iso)];
}

/** "12 s ago", "4 min ago", "2 h 5 min ago". */
export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const secs = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (secs < 60) return `${secs} s ago`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins} min ago`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return `${hours} h ${mins % 60} min ago`;
  return `${Math.floor(hours / 24)} days ago`;
}

/** A clock offset in ms as people read it: "+1.2 s", "−3 h 0 min". */
export function offset(ms) {
  if (ms === null || ms === undefined) return "—";
  const sign = ms < 0 ? "−" : "+";
  const abs = Math.abs(ms);
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(1)} s`;
  const mins = Math.round(abs / 60_000);
  if (mins < 60) return `${sign}${mins} min`;
  return `${sign}${Math.floor(mins / 60)} h ${mins % 60} min`;
}

/** The last 8 characters of a UUID: its random part (a UUIDv7 starts with its time, which
 * phones enrolled together share), enough to tell devices apart on one site. */
export function short(id) {
  return id ? String(id).slice(-8) : "—";
}

/** snake_case to words: "checkpoint_scanned" -> "checkpoint scanned". */
export function words(s) {
  return String(s ?? "").replaceAll("_", " ");
}

/** The date (YYYY-MM-DD) in `timeZone` at `date`. */
export function localDate(timeZone = zone, date = new Date()) {
  if (timeZone === zone) return ymd.format(date);
  try {
    return new Intl.DateTimeFormat("en-CA", {
      timeZone, year: "numeric", month: "2-digit", day: "2-digit",
    }).format(date);
  } catch {
    return date.toISOString().slice(0, 10);
  }
}

/** The hour (0-23) in `timeZone` at `date`. */
export function localHour(timeZone = zone, date = new Date()) {
  try {
    return Number(new Intl.DateTimeFormat("en-GB", {
      timeZone, hour: "2-digit", hour12: false,
    }).format(date)) % 24;
  } catch {
    return date.getUTCHours();
  }
}
