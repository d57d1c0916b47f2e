"""Checks that need more than the config file itself: the catalog, the environment, the workspace on disk.

``supervisor config check`` prints problems (the config cannot work) and warnings (it works, but probably
not as intended).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from supervisor.catalog import TIERS, Catalog, split_model_key
from supervisor.config import CommandGate, Config, JsonSchemaGate


def check_config(config: Config, catalog: Catalog) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    source = str(config.path) if config.path else "config"
    for tier in TIERS:
        for key in config.tiers.models(tier):
            provider, model_id = split_model_key(key)
            pcfg = config.providers.get(provider)
            if pcfg is None:
                continue  # reported by the loader
            pricing = catalog.spec_for(provider, model_id, pcfg, tier=tier)
            spec = pricing.spec
            if pcfg.kind == "scripted":
                if spec is None:
                    problems.append(
                        f"{source}: providers.{provider}.simulated_as: a scripted provider needs the provider:id of a "
                        "catalog model whose prices it simulates"
                    )
                continue
            if spec is None:
                warnings.append(
                    f"{source}: tiers.{tier}: {key} is unpriced and never used for paid traffic ({pricing.reason}); "
                    f"add it to $SUPERVISOR_HOME/models or mark [providers.{provider}] local = true"
                )
            elif tier != "local" and spec.is_local:
                warnings.append(f"{source}: tiers.{tier}: {key} is a local model listed in the {tier} tier")
            if pcfg.api_key_env and not config.environ.get(pcfg.api_key_env) and not pcfg.local:
                warnings.append(f"{source}: tiers.{tier}: {key} needs {pcfg.api_key_env}, which is not set")
    for name, agent in config.agents.items():
        where = f"{source}: agent {name!r}"
        if agent.external:
            for tier in agent.ladder:
                if not config.tiers.models(tier):
                    warnings.append(f"{where}: ladder: tier {tier!r} has no models in [tiers], so it is skipped")
            continue
        workspace = config.workspace(name)
        if not workspace.is_dir():
            warnings.append(f"{where}: workspace {workspace} does not exist yet")
        for tier in agent.ladder:
            if not config.tiers.models(tier):
                warnings.append(f"{where}: ladder: tier {tier!r} has no models in [tiers], so it is skipped")
        for step in agent.steps:
            for tier in step.ladder or []:
                if tier not in agent.ladder:
                    warnings.append(f"{where}: steps.{step.name}.ladder: {tier!r} is not in the agent's ladder")
            for gate in step.verify:
                if (
                    isinstance(gate, JsonSchemaGate)
                    and workspace.is_dir()
                    and not (workspace / gate.json_schema).exists()
                ):
                    warnings.append(
                        f"{where}: steps.{step.name}.verify: schema file {gate.json_schema} not found in the workspace"
                    )
            if step.is_model_step and not step.verify:
                warnings.append(
                    f"{where}: steps.{step.name}: a model step with no verify gate accepts any answer; add a gate "
                    "(a command, json_schema, regex or python_compiles)"
                )
            if step.agent is not None:
                if not step.verify:
                    warnings.append(
                        f"{where}: steps.{step.name}: an agent step with no verify gate accepts whatever the program "
                        "did; add a gate (e.g. the tests)"
                    )
                missing = _missing_program(step.agent.cmd, config.environ)
                if missing:
                    warnings.append(f"{where}: steps.{step.name}.agent: {missing}")
        for name_, program in agent.programs.items():
            missing = _missing_program(program.cmd, config.environ)
            if missing:
                warnings.append(f"{where}: programs.{name_}: {missing}")
            for rel in step.context:
                if (
                    workspace.is_dir()
                    and not (workspace / rel).exists()
                    and not _produced_earlier(agent.steps, step.name, rel)
                ):
                    warnings.append(f"{where}: steps.{step.name}.context: {rel} does not exist in the workspace yet")
        for gate in agent.verify:
            if isinstance(gate, CommandGate) and not gate.cmd.strip():
                problems.append(f"{where}: verify: empty command")
    return problems, warnings


def _produced_earlier(steps: list, name: str, rel: str) -> bool:  # type: ignore[type-arg]
    """A context file may be made by an earlier step (a `run` command or a `writes`)."""
    for step in steps:
        if step.name == name:
            return False
        if step.writes == rel or (step.run and Path(rel).name in step.run):
            return True
    return False


def _missing_program(cmd: str, environ: Mapping[str, str]) -> str | None:
    """Why the program a command line starts is not found on PATH (None when it is, or cannot be told)."""
    import shlex
    import shutil

    try:
        words = shlex.split(cmd)
    except ValueError as exc:
        return f"the command line does not parse as shell words ({exc})"
    words = [w for w in words if not ("=" in w and w.split("=", 1)[0].isidentifier())]  # VAR=value prefixes
    if not words or any(c in cmd for c in "|;&$`()<>") or words[0] in ("env", "cd", "exec", "time", "nice"):
        return None  # shell syntax: the shell decides; the step's first attempt says what went wrong
    program = words[0]
    if "/" in program:
        return None if Path(program).expanduser().exists() else f"{program} does not exist"
    if shutil.which(program, path=environ.get("PATH")) is None:
        return f"{program!r} is not on PATH: install it, or give its full path"
    return None
