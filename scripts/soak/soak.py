#!/usr/bin/env python3
"""The soak's sampler, audit and chart (scripts/soak.sh). Python 3 standard library only.

  soak.py sample DIR        every --every seconds until DIR/stop exists, append a row to
                            DIR/samples.csv (see COLUMNS)
  soak.py audit DIR         compare what was published (DIR/chunks, DIR/published.log) with
                            PostgreSQL and the broker; write DIR/audit.md; exit 1 on any record
                            lost or stored twice, or dead letters other than the invalid lines
  soak.py chart DIR         draw DIR/samples.csv and DIR/faults.log as DIR/chart.svg

Settings come from the environment soak.sh exports: SOAK_PSQL_URL (the owner's URL of the soak
database), SOAK_MGMT (management API base URL), SOAK_QUEUE, SOAK_DLQ, SOAK_ROW, SOAK_RATE.
"""

import base64
import csv
import glob
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

COLUMNS = ["time", "elapsed_s", "published", "stored", "dead_lettered", "stored_per_s",
           "queue_ready", "queue_unacked", "consumers", "lag", "dlq",
           "r1_pid", "r1_rss_kib", "r1_fds", "r2_pid", "r2_rss_kib", "r2_fds"]


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"soak.py: {name} is not set")
    return value


def psql(sql, timeout=20):
    """Rows of a query (tab-separated fields), or None when PostgreSQL does not answer."""
    try:
        out = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", env("SOAK_PSQL_URL"), "-c", sql],
                             capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PGCONNECT_TIMEOUT": "3"})
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def queue(name):
    """The management API's view of a queue (dict), or None when the broker does not answer."""
    req = urllib.request.Request(f"{env('SOAK_MGMT')}/api/queues/%2f/{urllib.request.quote(name, safe='')}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return json.load(resp)
    except Exception:  # noqa: BLE001 - a broker being restarted answers with anything
        return None


def published(d):
    """Records published and confirmed so far (DIR/published.log: chunk, count, epoch)."""
    try:
        with open(os.path.join(d, "published.log")) as f:
            return sum(int(line.split()[1]) for line in f if line.strip())
    except FileNotFoundError:
        return 0


def proc(d, replica):
    """pid, RSS (KiB) and open descriptors of a replica, from /proc; blanks when it is not running."""
    try:
        with open(os.path.join(d, f"replica{replica}.pid")) as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/status") as f:
            rss = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
        return pid, rss, str(len(os.listdir(f"/proc/{pid}/fd")))
    except (OSError, StopIteration):
        return "", "", ""


def sample(d):
    every = float(os.environ.get("SOAK_SAMPLE_EVERY", "5"))
    path = os.path.join(d, "samples.csv")
    start = float(open(os.path.join(d, "started")).read())
    last = None
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if f.tell() == 0:
            w.writerow(COLUMNS)
        while not os.path.exists(os.path.join(d, "stop")):
            t = time.time()
            counts = psql("SELECT (SELECT count(*) FROM crf_records), (SELECT count(*) FROM rejections)", 4)
            stored, dead = (int(counts[0][0]), int(counts[0][1])) if counts else (None, None)
            rate = ""
            if stored is not None and last is not None:
                rate = f"{(stored - last[1]) / (t - last[0]):.1f}"
            if stored is not None:
                last = (t, stored)
            q, dlq = queue(env("SOAK_QUEUE")), queue(env("SOAK_DLQ"))
            pub = published(d)
            lag = pub - stored - dead if stored is not None else ""
            row = [f"{t:.1f}", f"{t - start:.1f}", pub, "" if stored is None else stored,
                   "" if dead is None else dead, rate,
                   q.get("messages_ready", "") if q else "", q.get("messages_unacknowledged", "") if q else "",
                   q.get("consumers", "") if q else "", lag, dlq.get("messages", "") if dlq else ""]
            row += [*proc(d, 1), *proc(d, 2)]
            w.writerow(row)
            f.flush()
            time.sleep(max(0.0, every - (time.time() - t)))


def sha256(line):
    return hashlib.sha256(line).hexdigest()


CODED = {"AESER", "AESEV"}


def invalid(line):
    """Whether a generated line is one `edc-ingest generate` damaged (its six kinds of damage), decided
    from the line alone, not from what the daemon did with it."""
    try:
        v = json.loads(line)
        uuid.UUID(v["record_id"])
    except (ValueError, KeyError, TypeError):
        return True  # truncated JSON or a record_id that is no UUID
    items = v.get("items", {})
    # A string in a coded item (DEMO-001's AESER, AESEV) is of the right type: a value outside its
    # codes is a soft check, stored as queried, so that damage leaves the record valid.
    mistyped = any(x == "not-a-value-of-its-type" and k not in CODED for k, x in items.items())
    return v.get("site") == "SITE-99" or "BOGUS" in items or "captured_at" not in v or mistyped


def slope(points):
    """Least-squares slope of (x, y) points, or None with fewer than 3."""
    n = len(points)
    if n < 3:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def segments(rows, replica):
    """A replica's samples, split where its pid changed (a kill -9 and restart): [(pid, [row])]."""
    out = []
    for r in rows:
        pid = r[f"r{replica}_pid"]
        if not pid or not r[f"r{replica}_rss_kib"]:
            continue
        if not out or out[-1][0] != pid:
            out.append((pid, []))
        out[-1][1].append(r)
    return out


FLAT_KIB = 2048  # what the second half's RSS peak may add to the first half's: allocator noise


def flat(rows):
    """Memory and descriptors flat: for each replica process that lived 30 minutes or more, its RSS
    peak and descriptor maximum in the second half of its life against the first half. A leak makes
    the second half higher; a step at a fault that is never given back does too, unless the first
    half already reached it. [(replica, pid, minutes, (rss1, rss2), (fds1, fds2), ok)]"""
    out = []
    for replica in (1, 2):
        for pid, seg in segments(rows, replica):
            t = [float(r["elapsed_s"]) for r in seg]
            if t[-1] - t[0] < 1800:
                continue
            mid = (t[0] + t[-1]) / 2
            first = [r for r, x in zip(seg, t) if x < mid]
            second = [r for r, x in zip(seg, t) if x >= mid]
            rss = tuple(max(int(r[f"r{replica}_rss_kib"]) for r in h) for h in (first, second))
            fds = tuple(max(int(r[f"r{replica}_fds"]) for r in h) for h in (first, second))
            good = rss[1] <= rss[0] + FLAT_KIB and fds[1] <= fds[0]
            out.append((replica, pid, (t[-1] - t[0]) / 60, rss, fds, good))
    return out


def audit(d):
    chunks = {}
    with open(os.path.join(d, "published.log")) as f:
        for line in f:
            if line.strip():
                name = line.split()[0]
                chunks[name] = chunks.get(name, 0) + 1
    with open(os.path.join(d, "retries.log")) as f:
        resent = sum(1 for line in f if line.strip())
    valid, bad = {}, {}
    lines = 0
    for name in sorted(chunks):
        with open(os.path.join(d, "chunks", name), "rb") as f:
            for raw in f:
                line = raw.rstrip(b"\n")
                if not line.strip():
                    continue
                lines += 1
                if invalid(line):
                    bad[sha256(line)] = bad.get(sha256(line), 0) + 1
                else:
                    v = json.loads(line)
                    valid[(v["record_id"], str(v["version"]))] = sha256(line)
    stored = psql("SELECT record_id, version, payload_sha256 FROM crf_records", 300)
    rejected = psql("SELECT body_sha256, kind FROM rejections", 300)
    if stored is None or rejected is None:
        sys.exit("soak.py audit: PostgreSQL does not answer")
    seen, dup, foreign, wrong_body = {}, 0, 0, 0
    for rid, ver, sha in stored:
        key = (rid, ver)
        if key in seen:
            dup += 1
        seen[key] = sha
        if key not in valid:
            foreign += 1
        elif valid[key] != sha:
            wrong_body += 1
    lost = sum(1 for k in valid if k not in seen)
    dead = {}
    kinds = {}
    for sha, kind in rejected:
        dead[sha] = dead.get(sha, 0) + 1
        kinds[kind] = kinds.get(kind, 0) + 1
    dead_missing = sum(1 for s in bad if s not in dead)
    dead_unexpected = sum(1 for s in dead if s not in bad)
    q, dlq = queue(env("SOAK_QUEUE")), queue(env("SOAK_DLQ"))
    left = q.get("messages") if q else None
    dlq_messages = dlq.get("messages") if dlq else None

    with open(os.path.join(d, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    slopes = []
    for replica in (1, 2):
        for pid, seg in segments(rows, replica):
            first = float(seg[0]["elapsed_s"])
            late = [r for r in seg if float(r["elapsed_s"]) >= first + 60]
            if len(late) < 12:  # under a minute of samples after the first: no slope
                continue
            t = [float(r["elapsed_s"]) / 60 for r in late]
            rss = slope([(x, float(r[f"r{replica}_rss_kib"])) for x, r in zip(t, late)])
            fds = slope([(x, float(r[f"r{replica}_fds"])) for x, r in zip(t, late)])
            mean = sum(float(r[f"r{replica}_rss_kib"]) for r in late) / len(late)
            peak = max(float(r[f"r{replica}_rss_kib"]) for r in late)
            slopes.append((replica, pid, t[0], t[-1], rss, fds, mean, peak,
                           min(int(r[f"r{replica}_fds"]) for r in late),
                           max(int(r[f"r{replica}_fds"]) for r in late)))
    faults = read_faults(d)
    elapsed = float(rows[-1]["elapsed_s"]) / 60 if rows else 0
    halves = flat(rows)
    ok = lost == 0 and dup == 0 and foreign == 0 and wrong_body == 0 and dead_missing == 0 \
        and dead_unexpected == 0 and left == 0 and all(h[-1] for h in halves)
    rate = os.environ.get("SOAK_RATE", "?")
    out = [f"# Soak audit: {env('SOAK_ROW')}", "",
           f"{elapsed:.1f} minutes; publisher at {rate} records/s (chunks of one second, a chunk not "
           f"confirmed sent again: {resent} time(s)); two replicas, default settings; "
           f"{len(faults)} faults.", "",
           "| check | value | expected | ok |", "|---|---|---|---|",
           f"| lines published (confirmed) | {lines:,} | | |",
           f"| valid records published (distinct record_id, version) | {len(valid):,} | | |",
           f"| stored (crf_records rows) | {len(stored):,} | {len(valid):,} | {yes(len(stored) == len(valid))} |",
           f"| lost (published, not stored) | {lost:,} | 0 | {yes(lost == 0)} |",
           f"| duplicated (stored twice) | {dup:,} | 0 | {yes(dup == 0)} |",
           f"| stored but never published | {foreign:,} | 0 | {yes(foreign == 0)} |",
           f"| stored from another body (payload_sha256) | {wrong_body:,} | 0 | {yes(wrong_body == 0)} |",
           f"| invalid lines published (distinct bodies) | {len(bad):,} | | |",
           f"| dead-lettered (rejections, distinct bodies) | {len(dead):,} "
           f"({', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items()))}) | {len(bad):,} | "
           f"{yes(dead_missing == 0 and dead_unexpected == 0)} |",
           f"| invalid lines not dead-lettered | {dead_missing:,} | 0 | {yes(dead_missing == 0)} |",
           f"| dead letters of valid lines | {dead_unexpected:,} | 0 | {yes(dead_unexpected == 0)} |",
           f"| messages in the dead-letter queue | {fmt(dlq_messages)} | >= {len(dead):,} | "
           f"{yes(dlq_messages is not None and dlq_messages >= len(dead))} |",
           f"| messages left in the work queue | {fmt(left)} | 0 | {yes(left == 0)} |"]
    for replica, pid, minutes, rss, fds, good in halves:
        out.append(f"| replica {replica} ({pid}, {minutes:.0f} min): RSS peak and descriptors most, "
                   f"first half -> second half | {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} MiB, "
                   f"{fds[0]} -> {fds[1]} | at most +{FLAT_KIB // 1024} MiB, no more | {yes(good)} |")
    out.append("")
    out += ["| replica (pid) | minutes | RSS mean / peak | RSS slope | fds min / max | fd slope |",
            "|---|---|---|---|---|---|"]
    for replica, pid, t0, t1, rss, fds, mean, peak, fmin, fmax in slopes:
        out.append(f"| {replica} ({pid}) | {t0:.1f} to {t1:.1f} | {mean / 1024:.1f} / {peak / 1024:.1f} MiB | "
                   f"{rss:+.1f} KiB/min | {fmin} / {fmax} | {fds:+.3f} fds/min |")
    out += ["", "Slopes: least squares over each process's samples after its first minute (a replica "
            "killed and started again is a new process).", "", "Faults (minute, what):", ""]
    out += [f"- {(t - float(open(os.path.join(d, 'started')).read())) / 60:.1f}: {what}" for t, what in faults]
    out += ["", f"Result: {'PASS' if ok else 'FAIL'}", ""]
    text = "\n".join(out)
    with open(os.path.join(d, "audit.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if ok else 1


def yes(b):
    return "yes" if b else "**NO**"


def fmt(n):
    return "?" if n is None else f"{n:,}"


def read_faults(d):
    try:
        with open(os.path.join(d, "faults.log")) as f:
            return [(float(line.split(" ", 1)[0]), line.split(" ", 1)[1].strip()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def chart(d):
    with open(os.path.join(d, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    start = float(open(os.path.join(d, "started")).read())
    faults = [((t - start) / 60, what) for t, what in read_faults(d)]
    w, left, right, ph, gap, top = 900, 70, 20, 140, 45, 40
    tmax = max([float(r["elapsed_s"]) / 60 for r in rows] + [1])
    x = lambda m: left + (w - left - right) * m / tmax  # noqa: E731
    panels = [("records stored per second", [("stored/s", "stored_per_s", "#1f77b4", 1)]),
              ("work queue: ready + unacked messages", [("queue", None, "#2ca02c", 1)]),
              ("replica RSS (MiB)", [("replica 1", "r1_rss_kib", "#d62728", 1 / 1024),
                                     ("replica 2", "r2_rss_kib", "#9467bd", 1 / 1024)]),
              ("replica open file descriptors", [("replica 1", "r1_fds", "#d62728", 1),
                                                 ("replica 2", "r2_fds", "#9467bd", 1)])]
    h = top + len(panels) * (ph + gap) + 10
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">Soak, {esc(env("SOAK_ROW"))}: '
           f'{esc(os.environ.get("SOAK_RATE", "?"))} records/s published, two replicas, a fault every few minutes</text>']
    for i, (title, series) in enumerate(panels):
        y0 = top + i * (ph + gap) + 15
        data = []
        for label, col, color, scale in series:
            pts = []
            for r in rows:
                if col is None:
                    if r["queue_ready"] == "" or r["queue_unacked"] == "":
                        continue
                    v = float(r["queue_ready"]) + float(r["queue_unacked"])
                elif r[col] == "":
                    continue
                else:
                    v = float(r[col]) * scale
                pts.append((float(r["elapsed_s"]) / 60, v))
            data.append((label, color, pts))
        vmax = nice(max([v for _, _, pts in data for _, v in pts] + [1]) * 1.05)
        y = lambda v: y0 + ph - ph * v / vmax  # noqa: E731,B023
        svg.append(f'<text x="{left}" y="{y0 - 5}" font-weight="bold">{esc(title)}</text>')
        svg.append(f'<rect x="{left}" y="{y0}" width="{w - left - right}" height="{ph}" fill="none" stroke="#999"/>')
        for k in range(5):
            v = vmax * k / 4
            svg.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.{0 if vmax >= 40 else 1}f}</text>')
        for m, what in faults:
            svg.append(f'<line x1="{x(m):.1f}" y1="{y0}" x2="{x(m):.1f}" y2="{y0 + ph}" stroke="#ff7f0e" stroke-dasharray="4,3"/>')
            if i == 0:
                svg.append(f'<text x="{x(m) + 2:.1f}" y="{y0 + 10}" fill="#ff7f0e" font-size="9" '
                           f'transform="rotate(90 {x(m) + 2:.1f} {y0 + 10})">{esc(what.split(" ")[0])}</text>')
        for j, (label, color, pts) in enumerate(data):
            # A gap of more than two samples (a server down, a replica gone) breaks the line.
            runs = [[]]
            for t, v in pts:
                if runs[-1] and t - runs[-1][-1][0] > 0.25:
                    runs.append([])
                runs[-1].append((t, v))
            for run in runs:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
                if path:
                    svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{path}"/>')
            svg.append(f'<text x="{w - right - 5 - 90 * j}" y="{y0 - 5}" text-anchor="end" fill="{color}">{esc(label)}</text>')
        yb = y0 + ph + 14
        for k in range(0, int(tmax) + 1, max(1, int(tmax) // 12)):
            svg.append(f'<text x="{x(k):.1f}" y="{yb}" text-anchor="middle">{k}</text>')
    svg.append(f'<text x="{w - right}" y="{h - 5}" text-anchor="end">minutes</text>')
    svg.append("</svg>")
    with open(os.path.join(d, "chart.svg"), "w") as f:
        f.write("\n".join(svg) + "\n")


def nice(v):
    """The smallest of 1, 2, 4, 6, 8 x 10^n at least v: a round top for an axis of four steps."""
    step = 10 ** len(str(int(v))) / 100
    while True:
        for m in (1, 2, 4, 6, 8):
            if m * step * 10 >= v:
                return m * step * 10
        step *= 10


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sample", "audit", "chart"):
        sys.exit(__doc__)
    cmd, directory = sys.argv[1], sys.argv[2]
    if cmd == "sample":
        sample(directory)
    elif cmd == "audit":
        sys.exit(audit(directory))
    else:
        chart(directory)
