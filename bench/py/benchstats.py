"""Statistics + JSON result line shared by the Python benchmarks (same format as the C ones).

Copied from shared/bench/py/benchstats.py (our harness); the load-case helpers at the end are new.
"""
import json
import math
import statistics
import sys


def pct_us(sorted_ns, p):
    """Nearest-rank percentile of a sorted list of ns samples, in microseconds."""
    n = len(sorted_ns)
    if n == 0:
        return float("nan")
    idx = min(max(math.ceil(p * n), 1), n)
    return sorted_ns[idx - 1] / 1000.0


def emit_result(bench, impl, bus, payload, per_rep, rep_samples, rep_rate, rate_unit, extra=None):
    """rep_samples: list (one per rep) of lists of per-operation times in ns."""
    pooled = sorted(s for rep in rep_samples for s in rep)
    rate = statistics.median(rep_rate)
    out = {
        "bench": bench, "impl": impl, "bus": bus, "payload": payload,
        "per_rep": per_rep, "reps": len(rep_samples), "n": len(pooled),
        "median_us": round(pct_us(pooled, 0.5), 3),
        "p99_us": round(pct_us(pooled, 0.99), 3),
        "mean_us": round(sum(pooled) / len(pooled) / 1000.0, 3),
        "max_us": round(pooled[-1] / 1000.0, 3),
        "rate": round(rate, 1), "rate_unit": rate_unit,
        "mbps": round(rate * payload / 1e6, 3),
        "rep_median_us": [round(pct_us(sorted(r), 0.5), 3) for r in rep_samples],
        "rep_rate": [round(r, 1) for r in rep_rate],
    }
    if extra:
        out.update(extra)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ helpers of the load cases

def read_rss_kib(pid):
    """VmRSS of ``pid`` in KiB, from /proc/PID/status."""
    return read_status_kib(pid)["VmRSS"]


def read_status_kib(pid, fields=("VmRSS", "RssAnon", "RssFile", "RssShmem")):
    """{field: KiB} of /proc/PID/status (RssShmem: shared memory, e.g. mapped memfds)."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in fields:
                out[key] = int(line.split()[1])
    if "VmRSS" not in out:
        raise RuntimeError("no VmRSS for pid %d" % pid)
    return out


def raise_nofile_limit():
    """Lift the soft RLIMIT_NOFILE to the hard limit (1000 connections are 1000+ fds)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold_until_signal(ready_file, text):
    """Write ``text`` to ``ready_file`` (atomically), then sleep until SIGTERM or SIGINT.

    The signals are blocked before the file appears, so one sent as soon as it
    appears is never lost; a signal during the setup before this still kills."""
    import os
    import signal
    sigs = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    if ready_file:
        with open(ready_file + ".tmp", "w") as f:
            f.write(text + "\n")
        os.rename(ready_file + ".tmp", ready_file)
    signal.sigwait(sigs)
