"""7. Start-up: what a CLI command and ``import configd_client`` cost beside what they cannot avoid.

Each command runs as a fresh subprocess, ``runs`` times, interleaved with its references (so all see the same
load); the figure is the minimum (the least-disturbed run on a shared machine). Targets (issue 17):

- ``configctl --help`` ≤ ``python -c "import typer"`` + 0.1 s;
- ``configctl get NS/NAME`` (against a real server) ≤ ``python -c "import typer, httpx"`` + 0.15 s;
- ``python -c "import configd_client"`` ≤ ``python -c "import pydantic_settings"`` + 0.1 s.

Also measured, without a target: ``python -c pass`` (the interpreter alone), ``from configd_client import
ConfigClient`` (the threaded client and its Consul client; py-consul imports requests), and
``import typer, httpx, pydantic``: the installed typer (0.29) coerces every non-flag parameter with a pydantic
``TypeAdapter``, so any typer command that takes an argument imports pydantic, whatever the program does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from ._env import ADMIN_TOKEN, BenchEnv, setup_configs

TARGETS: dict[str, tuple[str, float]] = {
    "configctl --help": ("import typer", 0.1),
    "configctl get NS/NAME": ("import typer, httpx", 0.15),
    "import configd_client": ("import pydantic_settings", 0.1),
}


def _configctl() -> list[str]:
    script = shutil.which("configctl", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "configctl"]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def commands(server_url: str | None, ref: str) -> dict[str, list[str]]:
    """Every measured command line, by label (``configctl get`` only with a server)."""
    cli = _configctl()
    found = {
        "python -c pass": _python("pass"),
        "import typer": _python("import typer"),
        "configctl --help": [*cli, "--help"],
        "import typer, httpx": _python("import typer, httpx"),
        "import typer, httpx, pydantic": _python("import typer, httpx, pydantic"),
        "import pydantic_settings": _python("import pydantic_settings"),
        "import configd_client": _python("import configd_client"),
        "from configd_client import ConfigClient": _python("from configd_client import ConfigClient"),
    }
    if server_url is not None:
        found["configctl get NS/NAME"] = [*cli, "--server", server_url, "--token", ADMIN_TOKEN, "get", ref]
    return found


def _once(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.decode(errors='replace')[-1000:]}")
    return elapsed


def measure(argvs: dict[str, list[str]], runs: int) -> dict[str, dict[str, Any]]:
    """Min and median of ``runs`` interleaved runs of every command (seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFIGD_", "PYTHON"))}
    times: dict[str, list[float]] = {label: [] for label in argvs}
    for argv in argvs.values():  # one warm-up each: page cache and .pyc files, not counted
        _once(argv, env)
    for _ in range(runs):
        for label, argv in argvs.items():
            times[label].append(_once(argv, env))
    return {
        label: {"min_s": round(min(t), 4), "median_s": round(sorted(t)[len(t) // 2], 4), "runs": len(t)}
        for label, t in times.items()
    }


def verdicts(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, (reference, budget) in TARGETS.items():
        if label not in figures:
            continue
        own, ref = figures[label]["min_s"], figures[reference]["min_s"]
        rows.append(
            {
                "command": label,
                "reference": reference,
                "min_s": own,
                "reference_min_s": ref,
                "difference_s": round(own - ref, 4),
                "ratio": round(own / ref, 2) if ref else float("nan"),
                "budget_s": budget,
                "target_met": own - ref <= budget,
            }
        )
    return rows


def run(env: BenchEnv, runs: int) -> dict[str, Any]:
    server = env.start_server()
    setup_configs(server, "startup", ["web"])
    figures = measure(commands(server.base_url, "startup/web"), runs)
    server.stop()
    rows = verdicts(figures)
    for row in rows:
        print(
            f"  startup: {row['command']} {row['min_s']} s = {row['reference']} {row['reference_min_s']} s "
            f"+ {row['difference_s']} s (budget {row['budget_s']} s): {'met' if row['target_met'] else 'missed'}",
            flush=True,
        )
    return {"runs": runs, "figures": figures, "rows": rows}


def render(result: dict[str, Any]) -> list[str]:
    out = ["## 7. Start-up of the CLI and the SDK\n"]
    out.append(
        f"Each command is a fresh subprocess, run {result['runs']} times interleaved with its references (after one "
        "uncounted warm-up each); the figure is the minimum, the least-disturbed run on this shared machine. "
        "`configctl get` reads a real config from a configd server on loopback. The budget is what a command may "
        "add to the imports it cannot avoid.\n"
    )
    out.append("| command | min (s) | reference | reference min (s) | difference (s) | ratio | budget | target |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        out.append(
            f"| `{r['command']}` | {r['min_s']} | `{r['reference']}` | {r['reference_min_s']} | {r['difference_s']} | "
            f"{r['ratio']} | + {r['budget_s']} s | {'**met**' if r['target_met'] else '**missed**'} |"
        )
    figures = result["figures"]
    out.append("\nEvery command measured (min / median of the runs, seconds):\n")
    out.append("| command | min | median |\n|---|---|---|")
    for label, f in figures.items():
        out.append(f"| `{label}` | {f['min_s']} | {f['median_s']} |")
    out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-server", action="store_true", help="skip `configctl get` (no Consul, no server)")
    args = parser.parse_args()
    if args.no_server:
        figures = measure(commands(None, ""), args.runs)
        print(json.dumps({"runs": args.runs, "figures": figures, "rows": verdicts(figures)}, indent=2))
        return
    with BenchEnv() as env:
        print(json.dumps(run(env, args.runs), indent=2))


if __name__ == "__main__":
    main()
