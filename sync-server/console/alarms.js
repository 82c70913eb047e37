// Alarms first: every open panic on top of every page, red, with a sound (WebAudio, muted by
// the operator's choice only) until someone acknowledges it; who raised it, where, how long
// ago, and one click to acknowledge. Lone workers' overdue check-ins show beside them, amber.

import { api, sitePath } from "./api.js";
import { h, fill, ago, time } from "./util.js";
import { store, emit, checkpointName, dismissNotice } from "./app.js";

let audio = null;
let beeper = null;

export function muted() {
  return localStorage.getItem("patrol.muted") === "1";
}

export function setMuted(on) {
  localStorage.setItem("patrol.muted", on ? "1" : "0");
  updateSound();
}

export function unlockAudio() {
  try {
    audio ??= new AudioContext();
    if (audio.state === "suspended") audio.resume();
  } catch {
    // No audio device: the bar is still there, red.
  }
}

/** Two tones, high then low: unlike anything else a control room hears. */
function beep() {
  if (!audio) unlockAudio();
  if (!audio) return;
  const t = audio.currentTime;
  for (const [freq, at] of [[880, 0], [660, 0.22]]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t + at);
    gain.gain.exponentialRampToValueAtTime(0.15, t + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + at + 0.2);
    osc.connect(gain).connect(audio.destination);
    osc.start(t + at);
    osc.stop(t + at + 0.21);
  }
}

function updateSound() {
  const wanted = store.alarms.size > 0 && !muted();
  if (wanted && !beeper) {
    beep();
    beeper = setInterval(beep, 1500);
  } else if (!wanted && beeper) {
    clearInterval(beeper);
    beeper = null;
  }
  // What the sound is doing, for people reading the page's state (and for the tests).
  document.body.dataset.alarmSound = store.alarms.size === 0 ? "off" : muted() ? "muted" : "playing";
}

/** Where the guard was: the panic's own position, and the last checkpoint the device scanned. */
function whereabouts(alarm) {
  const panic = store.eventsById.get(alarm.event_id);
  const parts = [];
  const scans = store.events.filter((e) => e.device_id === alarm.device_id && e.kind === "checkpoint_scanned" && e.seq <= (panic?.seq ?? Infinity));
  const last = scans[scans.length - 1];
  parts.push(last ? `last checkpoint ${checkpointName(last.checkpoint)} at ${time(last.corrected_time)}` : "no checkpoint scanned yet");
  const loc = panic?.location;
  if (loc) parts.push(`position ${loc.lat.toFixed(5)}, ${loc.lon.toFixed(5)}${loc.accuracy_m ? ` ±${Math.round(loc.accuracy_m)} m` : ""}`);
  return parts.join(" · ");
}

export function renderBar(el) {
  updateSound();
  const open = [...store.alarms.values()].sort((a, b) => a.received_at.localeCompare(b.received_at));
  document.title = open.length ? `(${open.length}) PANIC · Patrol` : "Patrol control room";
  document.body.classList.toggle("alarming", open.length > 0);
  const items = open.map((a) => {
    const since = h("span.since", {}, ago(a.raised_at_corrected));
    since.dataset.at = a.raised_at_corrected;
    const button = h("button.ack", {
      onclick: async () => {
        button.disabled = true;
        button.textContent = "Acknowledging…";
        try {
          await api("POST", sitePath(store.site, `/alarms/${a.event_id}/acknowledge`), {});
          store.alarms.delete(a.event_id);
          emit("alarms");
        } catch (e) {
          button.disabled = false;
          button.textContent = "Acknowledge";
          button.title = e.message;
        }
      },
    }, "Acknowledge");
    return h("div.alarm", { role: "alert", dataset: { eventId: a.event_id } },
      h("strong.label", {}, "PANIC"),
      h("span.guard", {}, a.guard),
      since,
      h("span.where", {}, whereabouts(a)),
      a.escalated_at ? h("span.escalated", {}, `escalated ${time(a.escalated_at)}`) : null,
      button);
  });
  const notices = [...store.notices.entries()].map(([key, n]) =>
    h("div.notice", { role: "status" },
      h("strong.label", {}, n.kind === "check_in_overdue" ? "CHECK-IN OVERDUE" : "CHECK-IN MISSED"),
      h("span.guard", {}, n.guard),
      h("span.since", { dataset: { at: n.at } }, `due ${time(n.at)}`),
      h("button", { onclick: () => dismissNotice(key) }, "Dismiss")));
  fill(el, items, notices);
}

// "How long ago" moves on its own; nothing else in the bar does.
setInterval(() => {
  for (const el of document.querySelectorAll("#alarms .alarm .since")) el.textContent = ago(el.dataset.at);
}, 1000);
