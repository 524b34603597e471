#!/usr/bin/env python3
"""A client of ferry's hub that uses only the paths and fields of Ngenea
Hub's Programming Guide (seed-hub.md), with `requests`.

Usage: e2e.py URL USER PASSWORD SITE PATH [TIMEOUT]

It gets a JWT, creates a client key and uses it from then on, creates a
workflow (a recursive premigrate), submits it on PATH of SITE, polls the
job to a final state, lists its tasks with page_size 19, 101 and 0, and
reads its failed files from /api/jobstats/. It prints one JSON document:
{"job": ..., "pages": {...}, "failures": [...], "tasks_count": N}.
"""
import json
import sys
import time
import uuid

import requests

url, user, password, site, path = sys.argv[1:6]
timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 600
api = url + "/api"


def check(r, status):
    if r.status_code != status:
        sys.exit(f"{r.request.method} {r.url}: {r.status_code} {r.text}")
    return r.json() if r.content else None


tokens = check(requests.post(f"{api}/auth/token/", json={"username": user, "password": password}), 200)
bearer = {"Authorization": f"Bearer {tokens['access']}"}
key = check(requests.post(f"{api}/auth/clientkeys/", json={"name": "e2e"}, headers=bearer), 201)
auth = {"Authorization": f"Api-Key {key['api_key']}"}

name = "e2e_" + uuid.uuid4().hex[:8]
workflow = check(
    requests.post(
        f"{api}/workflows/",
        headers=auth,
        json={
            "name": name,
            "label": "E2E premigrate",
            "icon_classes": [],
            "discovery": "recursive",
            "enabled": True,
            "visible": True,
            "fields": [
                {
                    "name": "lock_level",
                    "label": "Lock level",
                    "type": "choices",
                    "default": "implicit",
                    "choices": [{"label": "Implicit", "value": "implicit"}, {"label": "None", "value": "none"}],
                }
            ],
            "filter_rules": [
                {
                    "state": "all",
                    "type": "file",
                    "action": [{"name": "dynamo.tasks.migrate", "premigrate": True, "lock_level": "*lock_level"}],
                }
            ],
        },
    ),
    201,
)

job = check(
    requests.post(
        f"{api}/file/workflow/",
        headers=auth,
        json={"workflow": name, "site": site, "paths": [path], "fields": {"lock_level": "implicit"}},
    ),
    201,
)
deadline = time.time() + timeout
while job["state"] not in ("SUCCESS", "FAILURE", "CANCELLED"):
    if time.time() > deadline:
        sys.exit(f"job {job['id']} still {job['state']} after {timeout} s: {json.dumps(job)}")
    time.sleep(0.5)
    job = check(requests.get(f"{api}/jobs/{job['id']}/", headers=auth), 200)

pages = {}
for size in (19, 101, 0):
    page = check(requests.get(f"{api}/tasks/", params={"job_id": job["id"], "page_size": size}, headers=auth), 200)
    pages[str(size)] = {"count": page["count"], "results": len(page["results"]), "next": page["next"], "stats": page["stats"]}

# Every task by keyset pages of 20 (`after=`, following `next`), beside
# the whole list by id (page_size=0); and `after` values the hub refuses.
every = check(requests.get(f"{api}/tasks/", params={"job_id": job["id"], "page_size": 0}, headers=auth), 200)
keyset = {"all": [t["id"] for t in every["results"]], "pages": [], "counts": [], "links": [], "previous": []}
nxt = f"{api}/tasks/?job_id={job['id']}&after=0&page_size=20"
while nxt:
    page = check(requests.get(nxt, headers=auth), 200)
    keyset["pages"].append([t["id"] for t in page["results"]])
    keyset["counts"].append(page["count"])
    keyset["previous"].append(page["previous"])
    nxt = page["next"]
    keyset["links"].append(nxt)
keyset["refused"] = {
    bad: requests.get(f"{api}/tasks/", params={"job_id": job["id"], "after": bad}, headers=auth).status_code
    for bad in ("x", "-1", "1.5")
}
keyset["with_page"] = requests.get(
    f"{api}/tasks/", params={"job_id": job["id"], "after": 0, "page": 2}, headers=auth
).status_code

failures = []
nxt = f"{api}/jobstats/?job={job['id']}&state[]=failures"
while nxt:
    page = check(requests.get(nxt, headers=auth), 200)
    failures += page["results"]
    nxt = page["next"]

print(json.dumps({"job": job, "workflow": workflow, "pages": pages, "keyset": keyset, "failures": failures}))
