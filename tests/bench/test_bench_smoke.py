"""The benchmark scripts run end to end with tiny parameters and write well-formed results (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.bench  # opt-in: `make bench-smoke`


def _summary(value: dict[str, float]) -> None:
    assert value["n"] >= 1
    assert 0 <= value["p50_ms"] <= value["p99_ms"] <= value["max_ms"]


@pytest.mark.timeout(300)
def test_bench_run_quick_writes_results_doc_and_plot(tmp_path: Path) -> None:
    out, doc, plot = tmp_path / "latest.json", tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--doc", str(doc), "--plot", str(plot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout)
    results = json.loads(out.read_text())
    assert results["meta"]["quick"] is True and results["meta"]["load_before"]["cpus"] >= 1

    rows = results["propagation"]["rows"]
    assert [r["clients"] for r in rows] == [1, 2]
    for row in rows:
        assert row["configd"]["n"] == row["pushes"] * row["clients"] == row["raw"]["n"]
        _summary(row["configd"])
        _summary(row["raw"])
        assert row["p99_ratio"] > 0 and isinstance(row["target_met"], bool)

    for row in results["throughput"]["rows"]:
        assert row["configd_pushes_per_s"] > 0 and row["raw_txn_per_s"] > 0 and row["raw_read_txn_per_s"] > 0

    bulk = results["bulk"]
    assert bulk["import"]["configs"] == 20 and bulk["import"]["configctl_s"] > 0 and bulk["import"]["raw_s"] > 0
    for part in ("listing", "history"):
        _summary(bulk[part]["configd"])
        _summary(bulk[part]["raw"])

    large = results["large"]
    assert large["canonical_bytes"] >= 1024 * 1024 and large["chunks"] >= 1
    for size in large["sizes"]:
        for part in ("configd", "raw", "floor", "parsing_floor"):
            _summary(size[part])
        assert isinstance(size["target_met"], bool) and size["over_parsing_floor_p50"] > 0

    idle = results["idle"]
    for kind in ("configd", "raw"):
        assert idle[kind]["blocking_queries_held"]["max"] >= 1
        assert idle[kind]["idle_cpu_s"] >= 0 and idle[kind]["threads_added_ready"] >= 1

    text = doc.read_text()
    for heading in ("## 1. Propagation", "## 2. Push throughput", "## 3. Bulk", "## 4. Large", "## 5 and 6.", "Nacos"):
        assert heading in text
    assert "benchmarks.png" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
