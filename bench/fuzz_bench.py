"""The .nnc reader against lying and damaged files, at length.

Case ``n`` is reproducible from ``n`` alone (tests/fuzzlib.py): even cases are lies with
every checksum valid, odd cases damage. Each is read as every command reads a file
(header only, decode, per-layer table, build) in one worker process, which is replaced
whenever a case ran past the time limit or grew its peak memory by more than the
memory limit, so each such case is counted on its own. Counts: typed errors, accepted
files (decoded by the independent reader to the same weights), foreign exceptions,
mismatches (weights the two readers disagree on), slow and memory-hungry decodes; every
case of the last four kinds is saved under tests/data/fuzz_regressions/.

    python bench/fuzz_bench.py --cases 300000            # the full campaign
    python bench/fuzz_bench.py --cases 300000 --minutes 30   # stop early, record the real count
Writes bench/results/fuzz_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchlib import run_meta, write_results
import fuzzlib

SLOW_S = 5.0
MEMORY_MB = 1024
#: the worker's address-space cap: a runaway allocation fails there instead of taking the machine
ADDRESS_LIMIT = 8 * 2**30


def _worker(conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))
    import nncompress.modelfile  # noqa: F401 - imported before the baseline is taken

    seeds = fuzzlib.seeds()
    fuzzlib.run_case(seeds[sorted(seeds)[0]])
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    folder = tempfile.mkdtemp(prefix="fuzz_")
    conn.send(baseline)
    while True:
        n = conn.recv()
        if n is None:
            return
        family, what, data = fuzzlib.make_case(seeds, n)
        outcome = fuzzlib.run_case(data, folder)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
        verdict = outcome.verdict
        if family == "damage" and verdict == "accepted":  # damage that changed nothing, or that slipped through
            verdict = "unchanged" if data == seeds[what.split(":")[0]] else "undetected"
        conn.send((family, what, verdict, outcome.detail, outcome.seconds, grown))


class Worker:
    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        self.baseline_kb = self.conn.recv()

    def run(self, n: int, timeout: float) -> Any:
        self.conn.send(n)
        if not self.conn.poll(timeout):
            return None
        return self.conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


def campaign(cases: int, start: int, minutes: float, timeout: float) -> dict[str, Any]:
    seeds = fuzzlib.seeds()
    counts: collections.Counter = collections.Counter()
    bad: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    worker = Worker()
    t0 = time.time()
    done = 0
    for n in range(start, start + cases):
        if minutes and time.time() - t0 > 60 * minutes:
            break
        got = worker.run(n, timeout)
        done += 1
        if got is None:
            family, what, data = fuzzlib.make_case(seeds, n)
            got = (family, what, "hang", f"no answer in {timeout} s", timeout, 0.0)
            worker.stop()
            worker = Worker()
        family, what, verdict, detail, seconds, grown = got
        counts[f"{family}:{verdict}"] += 1
        kinds = [verdict] if verdict in ("foreign", "mismatch", "hang", "undetected") else []
        if seconds > SLOW_S and verdict != "hang":
            kinds.append("slow")
        if grown > MEMORY_MB:
            kinds.append("memory")
            worker.stop()
            worker = Worker()
        for kind in kinds:
            counts[kind] += 1
            _, _, data = fuzzlib.make_case(seeds, n)
            path = fuzzlib.save_regression(data, f"{kind}_{what}")
            bad[kind].append(
                {
                    "case": n,
                    "what": what,
                    "detail": detail,
                    "seconds": round(seconds, 2),
                    "grown_mb": round(grown, 1),
                    "file": path.name,
                }
            )
        if done % 5000 == 0:
            sys.stderr.write(f"{done} cases, {time.time() - t0:.0f} s: {dict(counts)}\n")
    worker.conn.send(None)
    worker.stop()
    return {
        "cases": done,
        "first_case": start,
        "seconds": round(time.time() - t0, 1),
        "counts": dict(counts),
        "failures": {k: v[:50] for k, v in bad.items()},
    }


def markdown(meta: dict[str, Any], res: dict[str, Any]) -> str:
    c = res["counts"]
    lies = sum(v for k, v in c.items() if k.startswith("lie:"))
    damage = sum(v for k, v in c.items() if k.startswith("damage:"))
    rows = [("lie", "typed"), ("lie", "accepted"), ("damage", "typed"), ("damage", "unchanged")]
    lines = [
        "# Fuzzing the .nnc reader: lies with valid checksums, and damage",
        "",
        f"`{meta['command']}`, {meta['machine']}, {meta['date']}, one worker process. "
        f"{res['cases']:,} decodes (cases {res['first_case']:,} to {res['first_case'] + res['cases'] - 1:,}): "
        f"{lies:,} lies, {damage:,} damaged files, in {res['seconds'] / 60:.1f} minutes.",
        "",
        "Each file is read as every command reads one: header only (`inspect`), then decode, per-layer table "
        "and, where the file records an architecture, `build_model`. An accepted file is decoded again by the "
        "independent reader in tests/nnc_ref.py and must give the same weights bit for bit. A damaged file "
        "is *unchanged* when the damage left its bytes as they were (a bit flipped twice, zeros over zeros). "
        "An accepted lie is a file that is still valid (a 16000 x 16000 all-zero tensor within the default "
        "limits, a version 3 file relabelled 2 that uses nothing of version 3, 63 levels of nesting) or an edit "
        "that changed nothing; each was decoded by both readers to the same weights.",
        "",
        "| family | outcome | files |",
        "|---|---|---|",
        *[f"| {f} | {o} | {c.get(f'{f}:{o}', 0):,} |" for f, o in rows],
        "",
        "| failure (target 0) | files |",
        "|---|---|",
        f"| foreign exception (not an nncompress error) | {c.get('foreign', 0)} |",
        f"| accepted, but weights differ from the independent reader's (or it refuses the file) | "
        f"{c.get('mismatch', 0)} |",
        f"| damaged file accepted (its bytes changed) | {c.get('undetected', 0)} |",
        f"| decode over {SLOW_S:.0f} s | {c.get('slow', 0) + c.get('hang', 0)} |",
        f"| peak memory grew by over {MEMORY_MB} MB | {c.get('memory', 0)} |",
        "",
    ]
    lines += [
        "Every failure a run of this campaign has found is kept in tests/data/fuzz_regressions/ (its README "
        "says what each was) and read again by the test suite.",
        "",
    ]
    for kind, items in res["failures"].items():
        lines += (
            [f"## {kind}", ""]
            + [
                f"- case {i['case']} ({i['what']}): {i['detail']} -> tests/data/fuzz_regressions/{i['file']}"
                for i in items[:20]
            ]
            + [""]
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300_000)
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: run every case)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    res = campaign(args.cases, args.start, args.minutes, args.timeout)
    meta = run_meta("fuzz_bench.py", slow_s=SLOW_S, memory_mb=MEMORY_MB)
    write_results("fuzz_bench", meta, [res], markdown(meta, res))


if __name__ == "__main__":
    main()
