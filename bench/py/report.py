"""Turn one benchmark run (bench-<stamp>.jsonl) into the report: a table of medians, p99 and
the ratio kdbusfs / dbus-broker for each row, the targets of issue 4, and details.

Usage: python report.py RAW.jsonl OUT.md [--stamp S] [--wall-seconds S] [--reps R]
                        [--scale X] [--cpustat START END] [--loadavg START END]
                        [--kdbusfs-label L] [--quiet]

Every line of RAW.jsonl carries "case" (what was measured) and "bus_kind" (kdbusfs,
dbus-broker or dbus-daemon) next to the result fields of benchstats.emit_result;
{"failed": ...} lines are listed at the end.  The report goes to OUT.md; the main table and
the targets are also printed on stdout (unless --quiet).
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess

BUSES = ("kdbusfs", "dbus-broker", "dbus-daemon")
REF = "dbus-broker"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return ""


def fmt_size(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%d MiB" % (n >> 20)
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return "%d KiB" % (n >> 10)
    return "%d B" % n


def fmt_num(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 1000:
        return "{:,.0f}".format(x)
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def fmt_ratio(x):
    return "—" if x is None else "%.2f" % x


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------------------- the rows

SIZES = (8, 1024, 65536, 1048576)


def row_defs(results):
    """(section, [(label, kdbusfs case, reference case, kind)]) in table order.

    kind: "lat" (median/p99 µs from the result), "rss" or "rss-per-conn"."""
    echo_c = [("C, %s" % fmt_size(s), "echo-c-%d" % s, "echo-c-%d" % s, "lat") for s in SIZES]
    echo_c.append(("C, 8 B, kdbusfs service polls instead of RECV_BLOCK", "echo-c-8-poll",
                   "echo-c-8", "lat"))
    echo_py = [("Python, %s" % fmt_size(s), "echo-py-%d" % s, "echo-py-%d" % s, "lat")
               for s in SIZES]
    sig = [("%s, %s" % (lang, fmt_size(s)), "signal-%s-%d" % (key, s),
            "signal-%s-%d" % (key, s), "lat")
           for lang, key in (("C", "c"), ("Python", "py")) for s in (64, 65536)]
    scale = []
    cases = {r["case"] for r in results}
    for kind, what in (("conns", "other connections"), ("names", "owned names"),
                       ("matches", "installed matches")):
        ks = sorted(int(c.rsplit("-", 1)[1]) for c in cases
                    if re.fullmatch(r"scale-%s-\d+" % kind, c))
        for k in ks:
            case = "scale-%s-%d" % (kind, k)
            label = "{:,} {}".format(k, what)
            scale.append((label.replace("connections", "connection") if k == 1 else label,
                          case, case, "lat"))
    conns = next((r.get("conns") for r in results if r.get("bench") == "rss-idle"), None)
    mem = [("RSS with {:,} idle connections, MiB".format(conns or 0), "memory", "memory", "rss"),
           ("RSS growth per idle connection, KiB", "memory", "memory", "rss-per-conn")]
    return [
        ("Echo round trip (call and reply), µs", echo_c + echo_py),
        ("One-way broadcast to one subscriber, µs per message (window time / W)", sig),
        ("Scaling: echo round trip 8 B, C clients, with load on the bus, µs", scale),
        ("Server resident memory (VmRSS)", mem),
    ]


def values(r, kind):
    """(median, p99) of one result for a row kind."""
    if r is None:
        return None, None
    if kind == "lat":
        return r.get("median_us"), r.get("p99_us")
    if kind == "rss":
        return r["rss_after_kib"] / 1024.0, None
    if kind == "rss-per-conn":
        return r["per_conn_kib"], None
    raise ValueError(kind)


# ---------------------------------------------------------------------------- report parts

def main_table(defs, get):
    out = ["| Case | kdbusfs median | kdbusfs p99 | dbus-broker median | dbus-broker p99 | "
           "dbus-daemon median | dbus-daemon p99 | kdbusfs / dbus-broker median | "
           "kdbusfs / dbus-broker p99 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for section, rows in defs:
        rows = [r for r in rows if get("kdbusfs", r[1]) or get("dbus-broker", r[2])
                or get("dbus-daemon", r[2])]
        if not rows:
            continue
        out.append("| **%s** | | | | | | | | |" % section)
        for label, kcase, rcase, kind in rows:
            k = values(get("kdbusfs", kcase), kind)
            b = values(get("dbus-broker", rcase), kind)
            d = values(get("dbus-daemon", rcase), kind)
            if k[0] is None and b[0] is None and d[0] is None:
                continue                # not run (CASES / BUSES)
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, fmt_num(k[0]), fmt_num(k[1]), fmt_num(b[0]), fmt_num(b[1]),
                fmt_num(d[0]), fmt_num(d[1]), fmt_ratio(ratio(k[0], b[0])),
                fmt_ratio(ratio(k[1], b[1]))))
    return out


def targets(get):
    """The targets of issue 4: (target, measured, limit, met?) rows."""
    rows = []

    def vs_broker(label, kcase, bcase, limit):
        k, b = get("kdbusfs", kcase), get(REF, bcase)
        if k and b:
            v = k["median_us"] / b["median_us"]
            rows.append((label, "%.2f (%s / %s µs)" % (v, fmt_num(k["median_us"]),
                                                      fmt_num(b["median_us"])), limit, v))
        else:
            rows.append((label, "not measured", limit, None))

    def growth(label, base, top, limit):
        k0, k1 = get("kdbusfs", base), get("kdbusfs", top)
        if k0 and k1:
            v = k1["median_us"] / k0["median_us"]
            rows.append((label, "%.2f× (%s → %s µs)" % (v, fmt_num(k0["median_us"]),
                                                       fmt_num(k1["median_us"])), limit, v))
        else:
            rows.append((label, "not measured", limit, None))

    vs_broker("Echo 8 B, C clients: kdbusfs / dbus-broker", "echo-c-8", "echo-c-8", 1.0)
    vs_broker("Echo 1 MiB, C clients: kdbusfs / dbus-broker", "echo-c-1048576",
              "echo-c-1048576", 0.5)
    for s in SIZES:
        vs_broker("Echo %s, Python: kdbusfs.client on kdbusfs / jeepney on dbus-broker"
                  % fmt_size(s), "echo-py-%d" % s, "echo-py-%d" % s, 0.25)
    growth("Latency growth, 1 → 1,000 other connections (kdbusfs)", "scale-conns-1",
           "scale-conns-1000", 2.0)
    growth("Latency growth, 10 → 10,000 owned names (kdbusfs)", "scale-names-10",
           "scale-names-10000", 2.0)
    growth("Latency growth, 10 → 10,000 installed matches (kdbusfs)", "scale-matches-10",
           "scale-matches-10000", 2.0)
    out = ["| Target | Measured | Limit | Met |", "|---|---|---:|---|"]
    for label, measured, limit, v in rows:
        met = "—" if v is None else ("yes" if v <= limit else "**no**")
        out.append("| %s | %s | ≤ %s | %s |" % (label, measured, fmt_num(limit), met))
    return out


def spread(vals):
    if not vals:
        return "—"
    med = statistics.median(vals)
    pct = 100.0 * (max(vals) - min(vals)) / med / 2 if med else float("nan")
    return "%s–%s (±%.0f%%)" % (fmt_num(min(vals)), fmt_num(max(vals)), pct)


def details(results, setups):
    out = ["| Case | Bus | Impl | Payload | Samples (reps×N) | Median µs | p99 µs | Rate | MB/s | "
           "Rep spread of median µs | Lost | Load setup s |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        if r.get("bench") not in ("echo-rtt", "signal-tput"):
            continue
        samples = "%d×%d" % (r["reps"], r["per_rep"])
        if r["bench"] == "signal-tput":
            samples += ", W=%d" % r.get("window", 0)
        setup = setups.get((r["bus_kind"], r["case"]))
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s %s | %s | %s | %s | %s |" % (
            r["case"], r["bus_kind"], r["impl"], fmt_size(r["payload"]), samples,
            fmt_num(r["median_us"]), fmt_num(r["p99_us"]), fmt_num(r["rate"]), r["rate_unit"],
            fmt_num(r["mbps"]), spread(r.get("rep_median_us")),
            r.get("lost", "") if r["bench"] == "signal-tput" else "",
            "" if setup is None else fmt_num(setup)))
    mem = [r for r in results if r.get("bench") == "rss-idle"]
    if mem:
        out += ["", "| Server | Idle connections | VmRSS before, KiB | VmRSS after, KiB | "
                "Growth per connection, KiB | After: RssAnon / RssFile / RssShmem, KiB | "
                "Time to open them, s |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in mem:
            st = r.get("status_after_kib", {})
            parts = " / ".join(fmt_num(st.get(k)) for k in ("RssAnon", "RssFile", "RssShmem"))
            out.append("| %s (%s) | %s | %s | %s | %s | %s | %s |" % (
                r["bus_kind"], r["bus"], fmt_num(r["conns"]), fmt_num(r["rss_before_kib"]),
                fmt_num(r["rss_after_kib"]), fmt_num(r["per_conn_kib"]), parts,
                fmt_num(r.get("setup_s"))))
    return out


def steal_fraction(start_path, end_path):
    try:
        with open(start_path) as f:
            a = [int(x) for x in f.read().split()[1:]]
        with open(end_path) as f:
            b = [int(x) for x in f.read().split()[1:]]
        d = [y - x for x, y in zip(a, b)]
        total = sum(d[:8])
        return d[7] / total if total else None
    except (OSError, ValueError, IndexError):
        return None


def busy_fraction(start_path, end_path):
    """Share of all CPU time that was not idle during the run (every process, ours too)."""
    try:
        with open(start_path) as f:
            a = [int(x) for x in f.read().split()[1:]]
        with open(end_path) as f:
            b = [int(x) for x in f.read().split()[1:]]
        d = [y - x for x, y in zip(a, b)]
        total = sum(d[:8])
        return 1 - (d[3] + d[4]) / total if total else None
    except (OSError, ValueError, IndexError):
        return None


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_info(kdbusfs_label):
    cpu = next((line.split(":", 1)[1].strip() for line in read_first("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), "")
    try:
        mem = "%.1f GiB" % (int(read_first("/proc/meminfo").split()[1]) / 1024 / 1024)
    except (ValueError, IndexError):
        mem = ""
    osname = next((line.split("=", 1)[1].strip('"') for line in
                   read_first("/etc/os-release").splitlines() if line.startswith("PRETTY_NAME=")),
                  "")
    try:
        import jeepney
        jv = jeepney.__version__
    except ImportError:
        jv = "not installed"
    return [
        ("Host", "%s, kernel %s (%s)" % (osname, platform.release(), platform.machine())),
        ("CPU", "%s, %s logical CPUs" % (cpu, os.cpu_count())),
        ("Memory", mem),
        ("kdbusfs", "%s, Python %s" % (kdbusfs_label, platform.python_version())),
        ("dbus-daemon", sh("dbus-daemon --version 2>/dev/null | head -1") or "not installed"),
        ("dbus-broker", sh("dbus-broker --version 2>/dev/null | head -1") or "not installed"),
        ("libsystemd (sd-bus)", sh("pkg-config --modversion libsystemd 2>/dev/null") or "—"),
        ("jeepney", jv),
        ("gcc", sh("gcc --version | head -1")),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--stamp")
    ap.add_argument("--wall-seconds", type=float)
    ap.add_argument("--reps")
    ap.add_argument("--scale", default="1")
    ap.add_argument("--cpustat", nargs=2)
    ap.add_argument("--loadavg", nargs=2)
    ap.add_argument("--kdbusfs-label", default="kdbusfs")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    results, failed, setups = [], [], {}
    with open(args.raw) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                failed.append("unparsable result line: %s" % line[:200])
                continue
            if "failed" in obj:
                failed.append("%s on %s: %s" % (obj.get("case"), obj.get("bus_kind"),
                                                obj["failed"]))
            elif obj.get("bench") == "load-setup":
                setups[(obj["bus_kind"], obj["case"])] = obj.get("setup_s")
            else:
                results.append(obj)
    by = {(r["bus_kind"], r["case"]): r for r in results}

    def get(bus, case):
        return by.get((bus, case))

    defs = row_defs(results)
    table = main_table(defs, get)
    tgt = targets(get)

    if args.stamp:
        when = datetime.datetime.strptime(args.stamp, "%Y%m%dT%H%M%SZ").strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    else:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    stolen = steal_fraction(*args.cpustat) if args.cpustat else None
    busy = busy_fraction(*args.cpustat) if args.cpustat else None
    title = "# kdbusfs benchmark"
    head = ["Run of `scripts/bench` started %s%s; REPS=%s, SCALE=%s." % (
        when, " (took %.0f s)" % args.wall_seconds if args.wall_seconds else "",
        args.reps, args.scale)]
    out = [title, ""] + head + [""]
    out.append("Lower is better everywhere; ratios are kdbusfs / dbus-broker of the same run. "
               "Latencies are pooled over all repetitions (nearest-rank median and p99). "
               "C clients: `c/kdbus-echo-bench` / `c/kdbus-signal-bench` on kdbusfs, sd-bus "
               "(`bench/src/sdbus_bench.c`) on the brokers; Python clients: our "
               "`kdbusfs.client` on kdbusfs, jeepney on the brokers. See `bench/README.md`.")
    out.append("")
    out += table
    out += ["", "## Targets", ""] + tgt + [""]
    out += ["## Details", ""] + details(results, setups) + [""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    for k, v in machine_info(args.kdbusfs_label):
        out.append("| %s | %s |" % (k, v.replace("|", "/")))
    if args.loadavg:
        out.append("| Load average at start / end | %s / %s |" % tuple(
            " ".join(read_first(p).split()[:3]) for p in args.loadavg))
    if busy is not None:
        out.append("| CPU busy during the run (all processes) | %.0f%% |" % (100 * busy))
    if stolen is not None:
        out.append("| CPU time stolen by the hypervisor | %.1f%% |" % (100 * stolen))
    out.append("")
    if stolen is not None and stolen > 0.05:
        out.append("> **Warning:** the hypervisor stole %.0f%% of CPU time during this run; "
                   "rerun before trusting the numbers.\n" % (100 * stolen))
    if failed:
        out += ["## Cases that failed", ""] + ["- %s" % f_ for f_ in failed] + [""]

    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    if not args.quiet:
        print("\n".join([title, ""] + head + [""] + table + ["", "Targets:", ""] + tgt))
        if failed:
            print("\nFailed cases:\n" + "\n".join("- " + f_ for f_ in failed))
        print("\nReport: %s" % args.out)


if __name__ == "__main__":
    main()
