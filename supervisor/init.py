"""``supervisor init``: a starter ``supervisor.toml`` for this machine, with comments, chosen from the doctor's
probes. Pure: ``starter_config(report, environ)`` turns probe results into text, so it is tested with fake
machines (Apple Silicon, Ollama with models, nothing at all)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.doctor import DoctorReport

MEMORY_HEADROOM = 0.8  # a local model must fit in this share of free memory

# Providers whose key, when set, fills in the paid tiers (cheapest first within a tier).
CHEAP_BY_KEY = [
    ("DEEPSEEK_API_KEY", "deepseek:deepseek-flash"),
    ("GEMINI_API_KEY", "gemini:gemini-3.8-flash"),
    ("OPENAI_API_KEY", "openai:gpt-6-luna"),
    ("ANTHROPIC_API_KEY", "anthropic:claude-haiku-5-5"),
]
FRONTIER_BY_KEY = [
    ("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-5-5"),
    ("OPENAI_API_KEY", "openai:gpt-6.2-sol"),
    ("GEMINI_API_KEY", "gemini:gemini-3.1-pro-preview"),
]
APPLE_MLX_MODEL = "mlx:mlx-community/Qwen3-4B-4bit"
APPLE_MLX_MIN_BYTES = 6 * 1024**3
EMBEDDED = "mlx:smollm2-135m"


@dataclass
class Choices:
    local: list[str] = field(default_factory=list)
    cheap: list[str] = field(default_factory=list)
    frontier: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    needs_embedded: bool = False


def choose(report: DoctorReport, environ: Mapping[str, str]) -> Choices:
    data = report.data
    choices = Choices()
    free = int(data["memory"]["available_bytes"])
    ollama = data["ollama"]
    if ollama.get("reachable"):
        pulled = sorted(ollama.get("models", []) + ollama.get("loaded", []), key=lambda m: -(m.get("size_bytes") or 0))
        seen: set[str] = set()
        fitting = []
        for model in pulled:
            name = model["name"]
            if name in seen:
                continue
            seen.add(name)
            size = model.get("size_bytes") or 0
            if size <= free * MEMORY_HEADROOM:
                fitting.append(name)
            else:
                choices.reasons.append(
                    f"left out ollama:{name}: {size / 1e9:.1f} GB does not fit in {free / 1e9:.1f} GB free memory"
                )
        choices.local += [f"ollama:{name}" for name in fitting]
        if fitting:
            choices.reasons.append(
                f"Ollama is running at {ollama.get('host')}: its pulled models that fit in memory, largest first"
            )
        else:
            choices.reasons.append(
                f"Ollama is running at {ollama.get('host')} but has no model that fits; `ollama pull qwen3:4b`"
            )
    choices.reasons += _gpu_reasons(data)
    if data["cpu"].get("apple_silicon"):
        if free >= APPLE_MLX_MIN_BYTES:
            choices.local.append(APPLE_MLX_MODEL)
            choices.reasons.append(
                f"Apple Silicon: {APPLE_MLX_MODEL} runs on the GPU with MLX (downloaded on first use)"
            )
        else:
            choices.reasons.append("Apple Silicon with little free memory: the embedded model only")
    if not choices.local or data["cpu"].get("apple_silicon"):
        choices.local.append(EMBEDDED)
        choices.needs_embedded = True
        if not ollama.get("reachable") and not data["cpu"].get("apple_silicon"):
            choices.reasons.append(
                "no Ollama and no Apple Silicon: the embedded SmolLM2-135M (98 MB, runs anywhere, tiny)"
            )
    for var, model in CHEAP_BY_KEY:
        if environ.get(var):
            choices.cheap.append(model)
    for var, model in FRONTIER_BY_KEY:
        if environ.get(var):
            choices.frontier.append(model)
    keys = [var for var, _ in CHEAP_BY_KEY if environ.get(var)]
    if keys:
        choices.reasons.append(f"API keys set ({', '.join(keys)}): their models fill the cheap and frontier tiers")
    else:
        choices.reasons.append(
            "no API key set: the cheap and frontier tiers are written commented out, with the variable to set"
        )
    return choices


def _gpu_reasons(data: dict[str, Any]) -> list[str]:
    """What an NVIDIA GPU means for the local tier: MLX models run on it with mlx's CUDA build, else say how."""
    gpus = data.get("gpu", {}).get("nvidia", [])
    if not gpus or data["cpu"].get("apple_silicon"):
        return []
    mlx = data.get("mlx", {})
    name = gpus[0].get("name") or "an NVIDIA GPU"
    if mlx.get("device") == "gpu":
        return [
            f"NVIDIA GPU ({name}) with mlx's {mlx.get('build')} build: MLX models, the embedded one included, run on it"
        ]
    install = mlx.get("recommended_install")
    if install:
        return [
            f"NVIDIA GPU ({name}), but mlx computes on the CPU here ({mlx.get('build') or 'not installed'}): "
            f"`{install}` runs MLX models on the GPU ({mlx.get('recommended_why')})"
        ]
    return [f"NVIDIA GPU ({name}): {mlx.get('recommended_why') or 'mlx runs on the CPU'}"]


def _tier_line(name: str, models: list[str], candidates: list[tuple[str, str]], environ: Mapping[str, str]) -> str:
    if models:
        return f"{name} = [{', '.join(repr(m).replace(chr(39), chr(34)) for m in models)}]"
    lines = [f"# {name}: set one of these keys, then uncomment the matching model:"]
    for var, model in candidates:
        lines.append(f'# {name} = ["{model}"]   # needs {var}')
    lines.append(f"{name} = []")
    return "\n".join(lines)


def starter_config(report: DoctorReport, environ: Mapping[str, str]) -> tuple[str, Choices]:
    """The text of a commented starter config for the machine ``report`` describes."""
    choices = choose(report, environ)
    local = ", ".join(f'"{m}"' for m in choices.local)
    text = f"""\
# frugal-supervisor config, written by `supervisor init` for this machine.
# Docs: the README's "Configuration" section. Check it with `supervisor config check`.
#
# Why these tiers:
{chr(10).join(f"#   - {reason}" for reason in choices.reasons)}

# Models per tier, tried in order within a tier. A step goes to the cheapest tier that passes its gates.
[tiers]
local = [{local}]
{_tier_line("cheap", choices.cheap, CHEAP_BY_KEY, environ)}
{_tier_line("frontier", choices.frontier, FRONTIER_BY_KEY, environ)}

# Global spend caps (USD) across all agents. A call that could cross one is not sent; the agent defers.
[caps]
day_usd = 2.00
month_usd = 20.00

# The runaway breaker pauses an agent whose input grows call after call with little output, whose hourly
# spend runs ahead of its day cap, or whose gate keeps failing the same way.
[breaker]
rising_calls = 5
max_output_ratio = 0.05
hour_share_of_day_cap = 0.5
same_failure_repeats = 3

# An agent: uncomment and adapt. Steps run in order; `run` steps need no model (tier 0); `prompt` steps go
# to the cheapest tier of the ladder whose answer passes every `verify` gate.
#
# [agents.link-fixer]
# goal = "Keep every link in the site's README working."
# workspace = "~/code/site"
# schedule = "every 30m"            # or "every 2h", "daily 09:30"; leave out to run only on demand
# ladder = ["local", "cheap", "frontier"]
# frontier = "ask"                  # ask (a keyboard approval each time) | never | allow (not for scheduled agents)
# attempts_per_tier = 2
# caps = {{ run_usd = 0.20, day_usd = 1.00, month_usd = 10.00 }}
# memory_tokens = 1500              # bound on the digest each fresh session starts from
#
# [[agents.link-fixer.steps]]
# name = "find-broken"
# run = "python tools/check_links.py --json > broken.json"
#
# [[agents.link-fixer.steps]]
# name = "fix"
# prompt = "Fix every broken link listed in broken.json inside README.md. Reply with the complete new README.md."
# context = ["broken.json", "README.md"]
# writes = "README.md"
# verify = ["python tools/check_links.py"]
"""
    return text, choices


def describe(choices: Choices) -> list[str]:
    out = [f"local tier: {', '.join(choices.local) or 'none'}"]
    out.append(f"cheap tier: {', '.join(choices.cheap) or 'none yet (commented out)'}")
    out.append(f"frontier tier: {', '.join(choices.frontier) or 'none yet (commented out)'}")
    return out + [f"why: {r}" for r in choices.reasons]


def fake_report(**overrides: Any) -> DoctorReport:
    """A doctor report for tests and docs: a 16 GB Linux box with nothing installed, then ``overrides``."""
    data: dict[str, Any] = {
        "version": "test",
        "os": {"system": "Linux", "release": "6", "machine": "x86_64", "python": "3.11"},
        "cpu": {"model": "test cpu", "cores": 2, "apple_silicon": False},
        "memory": {"total_bytes": 16 * 1024**3, "available_bytes": 12 * 1024**3},
        "gpu": {"nvidia": [], "detail": "none"},
        "ollama": {
            "host": "http://127.0.0.1:11434",
            "reachable": False,
            "detail": "refused",
            "models": [],
            "loaded": [],
        },
        "mlx": {
            "importable": True,
            "detail": "importable",
            "build": "cpu",
            "version": "0.32.4",
            "device": "cpu",
            "device_detail": "mlx's CPU build",
            "recommended_build": "cpu",
            "recommended_why": "no NVIDIA GPU: mlx runs on the CPU",
            "recommended_install": None,
            "embedded_models": [],
        },
        "api_keys": {},
        "ledger": {"path": "", "exists": False, "size_bytes": 0},
        "config": {"path": "", "exists": False},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return DoctorReport(data)
