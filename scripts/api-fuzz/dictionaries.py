"""Writes, for scripts/api-fuzz.sh, the ids of the records it seeded as schemathesis dictionaries
(TOML, appended to the settings), which the fuzzer draws path and query values from half the
time, so that it reaches real records and not only 404s.

Usage: dictionaries.py URL USER_TOKEN SITE
"""

import json
import sys
import urllib.request

url, token, site = sys.argv[1:]


def get(path):
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


events = get(f"/api/v1/sites/{site}/events")["events"]
incidents = get(f"/api/v1/sites/{site}/incidents")["incidents"]
attachments = get(f"/api/v1/sites/{site}/attachments")["attachments"]
values = {
    "site": [site],
    "device": sorted({e["device_id"] for e in events}),
    "shift": sorted({e["shift_id"] for e in events}),
    "guard": sorted({e["guard_id"] for e in events}),
    "checkpoint": sorted({e["checkpoint"] for e in events if "checkpoint" in e}),
    "event": sorted(e["id"] for e in events if e["kind"] == "panic"),
    "incident": sorted(i["id"] for i in incidents),
    "sha256": sorted({a["sha256"] for a in attachments}),
}
bindings = {
    "path.site": "site",
    "path.device": "device",
    "path.shift": "shift",
    "path.event": "event",
    "path.incident": "incident",
    "path.sha256": "sha256",
    "query.incident": "incident",
    "query.device": "device",
    "query.guard": "guard",
    "query.checkpoint": "checkpoint",
}
print()
print("# Added by scripts/api-fuzz.sh: the ids it seeded.")
print("[parameters]")
for key, name in bindings.items():
    print(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
for name, items in values.items():
    if not items:
        sys.exit(f"api-fuzz: the seeded records have no {name} id")
    print(f"\n[dictionaries.{name}]\nvalues = {json.dumps(items)}")
