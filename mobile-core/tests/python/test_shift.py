"""A whole guard shift through the generated Python bindings of patrol-mobile, against the real
patrol-server: enroll the phone with a one-time code, record offline, sync, end the shift, sync
again, and find every event in the control room's feed exactly once.

Run by scripts/python-tests.sh, which builds the library and the server, generates the bindings
and sets PYTHONPATH and PATROL_SERVER_BIN. Needs only the standard library.
"""

import json
import os
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
from collections import Counter

import patrol_mobile as pm

SITE = "site-1"
LISTENING = "listening on "


class Recorder(pm.EventObserver):
    """Keeps what the device reports, and checks it may call back into the device."""

    def __init__(self):
        self.device = None
        self.events = []
        self.statuses = []
        self.lock = threading.Lock()

    def on_event_recorded(self, event):
        # Called with the store released: reading it back from here must not deadlock.
        if self.device is not None:
            self.device.status()
        with self.lock:
            self.events.append(event)

    def on_sync_status(self, status):
        with self.lock:
            self.statuses.append(status)


class Server:
    """The real patrol-server on a free loopback port, with site-1 and a first administrator
    created in a fresh store."""

    def __init__(self, binary, data_dir):
        # The server logs to stderr: warnings and errors only, unless RUST_LOG says otherwise.
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        subprocess.run(
            [binary, "site", "create", SITE, "--data-dir", data_dir],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        # The documented first step: the command prints the administrator's token, once.
        self.admin_token = subprocess.run(
            [binary, "admin", "create", "py-admin", "--data-dir", data_dir],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.url = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(LISTENING):
                self.url = line[len(LISTENING):].strip()
                break
        if self.url is None:
            self.stop()
            raise RuntimeError("patrol-server did not report its address")

    def _call(self, method, path, body=None):
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_token}",
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def enrollment_code(self):
        """A one-time code for a phone to enroll with, issued by the administrator."""
        return self._call("POST", f"/api/v1/sites/{SITE}/enrollment-codes", {})["code"]

    def feed(self):
        return self._call("GET", f"/api/v1/sites/{SITE}/events?after=0&limit=1000")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


class ShiftTest(unittest.TestCase):
    def setUp(self):
        binary = os.environ.get("PATROL_SERVER_BIN")
        if not binary:
            self.fail("PATROL_SERVER_BIN must name the patrol-server binary")
        tmp = tempfile.TemporaryDirectory(prefix="patrol-py-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        server_dir = os.path.join(self.tmp, "server")
        os.mkdir(server_dir)
        self.server = Server(binary, server_dir)
        self.addCleanup(self.server.stop)

    def test_a_whole_shift_reaches_the_control_room_once(self):
        path = os.path.join(self.tmp, "phone.db")
        code = self.server.enrollment_code()
        device = pm.PatrolDevice.enroll(path, self.server.url, code)
        observer = Recorder()
        observer.device = device
        device.set_observer(observer)
        self.assertEqual(device.site_id(), SITE)
        self.assertTrue(device.is_enrolled())
        self.assertEqual(device.server_url(), self.server.url)
        # The key the phone signs its logs with, registered with the server at enrollment.
        key = device.public_key()
        self.assertEqual(len(key), 64)
        self.assertIsNone(device.current_shift())
        # The code is spent: enrolling again with it, into a new store, is refused.
        with self.assertRaises(pm.PatrolError.NotEnrolled):
            pm.PatrolDevice.enroll(os.path.join(self.tmp, "again.db"), self.server.url, code)
        # A store already set up never takes another identity.
        with self.assertRaises(pm.PatrolError.InvalidInput):
            pm.PatrolDevice.enroll(path, self.server.url, self.server.enrollment_code())
        # Plain HTTP off this machine is refused before the code is sent.
        lab = os.path.join(self.tmp, "lab.db")
        with self.assertRaises(pm.PatrolError.InvalidInput):
            pm.PatrolDevice.enroll(lab, "http://192.0.2.1:8080", self.server.enrollment_code())
        self.assertFalse(os.path.exists(lab))
        # The transport is kept and can be changed; certificates that do not parse are refused.
        device.set_transport(pm.FfiTransport(allow_plain_http=False, ca_certificates_pem=None))
        with self.assertRaises(pm.PatrolError.InvalidInput):
            device.set_transport(
                pm.FfiTransport(allow_plain_http=False, ca_certificates_pem="not a certificate")
            )

        shift_id = device.start_shift("guard-1")
        current = device.current_shift()
        self.assertEqual(current.shift_id, shift_id)
        self.assertEqual(current.guard_id, "guard-1")
        with self.assertRaises(pm.PatrolError.ShiftAlreadyOpen):
            device.start_shift("guard-2")

        here = pm.FfiLocation(lat=51.5074, lon=-0.1278, accuracy_m=20.0)
        nfc = device.scan_checkpoint(
            pm.FfiScanInput(
                checkpoint_id="cp-12",
                method=pm.FfiScanMethod.NFC(tag="04:A2:2B"),
                location=here,
            )
        )
        gps = device.scan_checkpoint(
            pm.FfiScanInput(
                checkpoint_id="cp-13",
                method=pm.FfiScanMethod.GPS(),
                location=pm.FfiLocation(lat=51.5075, lon=-0.1279),
                note="roof hatch locked",
            )
        )
        incident = device.report_incident(
            pm.FfiIncidentCategory.FIRE,
            pm.FfiSeverity.HIGH,
            "smoke in plant room 2",
            here,
        )
        panic = device.raise_panic(here)
        note = device.add_note("fire door B2 propped open")

        # A lone worker's check-in timer: due 30 minutes on, checked in, stopped.
        with self.assertRaises(pm.PatrolError.InvalidInput):
            device.start_check_in_timer(0)
        self.assertIsNone(device.check_in_status())
        device.start_check_in_timer(30)
        timer = device.check_in_status()
        self.assertEqual((timer.every_min, timer.missed), (30, False))
        self.assertEqual(timer.due_ms, timer.since_ms + 30 * 60_000)
        device.check_in()
        device.stop_check_in_timer()
        self.assertIsNone(device.check_in_status())
        with self.assertRaises(pm.PatrolError.InvalidInput):
            device.check_in()

        # The typed error for a bad id, before anything is recorded.
        with self.assertRaises(pm.PatrolError.InvalidInput) as caught:
            device.scan_checkpoint(
                pm.FfiScanInput(
                    checkpoint_id="cp 12/bad",
                    method=pm.FfiScanMethod.QR(payload="CP12"),
                )
            )
        self.assertIn("checkpoint id", str(caught.exception))
        with self.assertRaises(pm.PatrolError.InvalidInput):
            device.events("not-a-shift-id")

        local = device.events()
        kinds = [e.kind for e in local]
        self.assertEqual(
            kinds,
            ["shift_started", "checkpoint_scanned", "checkpoint_scanned", "incident_reported",
             "panic", "note", "checkin_timer_started", "checked_in", "checkin_timer_stopped"],
        )
        self.assertEqual([local[i].id for i in (1, 2, 4, 5)], [nfc, gps, panic, note])
        self.assertEqual(json.loads(local[3].json)["incident"], incident)
        self.assertEqual(json.loads(local[1].json)["checkpoint"], "cp-12")
        self.assertTrue(all(e.shift_id == shift_id and not e.delivered for e in local))
        self.assertEqual(device.status().pending_events, len(local))
        self.assertTrue(device.status().urgent, "an undelivered panic makes sync urgent")

        worked = device.add_incident_note(incident, "brigade called")
        self.assertTrue(worked.pending)
        self.assertEqual([n.text for n in worked.notes], ["brigade called"])
        # Every action, with who and when, in order.
        self.assertEqual(
            [(h.by, h.what, h.took_effect) for h in worked.history],
            [("guard:guard-1", "reported (fire, high)", True),
             ("guard:guard-1", "note: brigade called", True)],
        )
        self.assertEqual(worked.history[1].action,
                         pm.FfiIncidentHistoryAction.NOTE(text="brigade called"))
        self.assertLessEqual(worked.history[0].wall_ms, worked.history[1].wall_ms)
        self.assertEqual(type(device.alarms()[0].state), pm.FfiAlarmState.QUEUED)

        report = device.sync(self.server.url)
        self.assertEqual(report.events_delivered, len(local))
        self.assertEqual(report.pending_events, 0)
        # The incident's document went with the events; the alarm is on the server.
        self.assertFalse(device.incident(incident).pending)
        self.assertEqual(type(device.alarms()[0].state), pm.FfiAlarmState.DELIVERED)

        device.end_shift("quiet night")
        self.assertIsNone(device.current_shift())
        with self.assertRaises(pm.PatrolError.NoOpenShift):
            device.add_note("after the shift")
        report = device.sync(self.server.url)
        self.assertEqual(report.events_delivered, 1)

        local = device.events()
        self.assertEqual(len(local), 10)
        self.assertEqual(local[-1].kind, "shift_ended")
        undelivered = [e.id for e in local if not e.delivered]
        self.assertEqual(undelivered, [])
        status = device.status()
        self.assertEqual(status.pending_events, 0)
        self.assertIsNone(status.last_error)
        self.assertFalse(status.urgent)
        self.assertEqual(device.events(shift_id), local)

        feed = self.server.feed()
        self.assertFalse(feed["more"])
        counts = Counter(e["id"] for e in feed["events"])
        for event in local:
            self.assertEqual(counts[event.id], 1, f"{event.kind} {event.id} in the feed")
        self.assertEqual(sum(counts.values()), len(local))
        by_id = {e["id"]: e for e in feed["events"]}
        for event in local:
            self.assertEqual(by_id[event.id]["kind"], event.kind)
            self.assertEqual(by_id[event.id]["device_id"], device.device_id())

        # The observer saw every recording, in order, and every sync attempt.
        self.assertEqual([e.id for e in observer.events], [e.id for e in local])
        self.assertEqual(observer.events[0].kind, "shift_started")
        self.assertEqual(len(observer.statuses), 2)
        self.assertEqual(observer.statuses[-1].pending_events, 0)

        # Reopened, the store holds the same delivered log. A store has one owner at a time:
        # the last reference to the first object (the observer holds one) closes it.
        device.set_observer(None)
        observer.device = None
        del device
        again = pm.PatrolDevice.open(os.path.join(self.tmp, "phone.db"))
        self.assertEqual([e.id for e in again.events()], [e.id for e in local])
        self.assertEqual(again.status().pending_events, 0)

    def test_a_failed_sync_is_a_network_error_and_keeps_the_events(self):
        device = pm.PatrolDevice.enroll(
            os.path.join(self.tmp, "offline.db"),
            self.server.url,
            self.server.enrollment_code(),
            pm.FfiDurability.NORMAL,
        )
        observer = Recorder()
        device.set_observer(observer)
        device.start_shift("guard-2")
        device.add_note("basement level 3, no signal")
        # Nothing listens on the server's port once it has stopped.
        url = self.server.url
        self.server.stop()
        with self.assertRaises(pm.PatrolError.Network):
            device.sync(url)
        status = device.status()
        self.assertEqual(status.pending_events, 2)
        self.assertIsNotNone(status.last_error)
        self.assertEqual(status.consecutive_failures, 1)
        self.assertIsNotNone(status.next_attempt_ms)
        self.assertEqual(len(observer.statuses), 1)
        self.assertEqual(observer.statuses[0].pending_events, 2)
        with self.assertRaises(pm.PatrolError.InvalidInput):
            device.sync("ftp://example.org")

    def test_a_store_not_made_by_enrolling_cannot_sync(self):
        device = pm.PatrolDevice.create(os.path.join(self.tmp, "plain.db"), SITE)
        self.assertFalse(device.is_enrolled())
        self.assertIsNone(device.public_key())
        device.start_shift("guard-3")
        with self.assertRaises(pm.PatrolError.NotEnrolled):
            device.sync(self.server.url)
        self.assertEqual(device.status().pending_events, 1)
        self.assertEqual(self.server.feed()["events"], [])


if __name__ == "__main__":
    unittest.main()
