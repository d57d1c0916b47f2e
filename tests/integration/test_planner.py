"""Planner mode: an agent with a goal and verify gates but no steps asks the cheapest tier for a JSON plan.

Plan steps may only be model steps or commands from the agent's ``tools``; anything else rejects the plan, and
planning is retried with the failure and escalated like any step. Model output is never run as a shell command.
Scripted tiers answer; the ledger, the workspace and the tool commands are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.backends.base import Request
from supervisor.runtime.planner import plan_schema, validate_plan
from supervisor.runtime.runtime import RunResult, Runtime
from tests.helpers import Harness, Tiers, last_user, make_harness, tree_digest

PLANNER = """
[agents.planner]
goal = "Write notes.txt about the release and log that the release tool ran."
workspace = "ws"
attempts_per_tier = {attempts}
ladder = {ladder}
tools = ["echo tool-ran >> log.txt", "test -s notes.txt"]
verify = ["grep -q tool-ran log.txt && test -s notes.txt"]
"""

# Shell metacharacters everywhere the model controls text: none of it may ever run.
VALID_PLAN: dict[str, Any] = {
    "summary": "notes then log; $(touch pwned-summary) `touch pwned-summary2`",
    "steps": [
        {
            "kind": "model",
            "name": "notes",
            "prompt": "Write release notes. $(touch pwned-prompt); touch pwned-prompt2",
            "writes": "notes.txt",
            "verify": ["test -s notes.txt"],
        },
        {"kind": "tool", "name": "log", "tool": "echo tool-ran >> log.txt"},
    ],
}
NOTES = "Release notes. $(touch pwned-answer) `touch pwned-answer2`; touch pwned-answer3\n"


def is_planning(request: Request) -> bool:
    return "Plan the steps that reach the goal" in last_user(request)


def tier(plans: list[str], notes: str = NOTES) -> Callable[[Request], str]:
    """A tier that answers planning requests with ``plans`` in turn (the last one repeats) and steps with ``notes``."""
    answers = iter(plans)
    last = [plans[-1] if plans else ""]

    def respond(request: Request) -> str:
        if is_planning(request):
            last[0] = next(answers, last[0])
            return last[0]
        return notes

    return respond


def harness_for(
    tmp_path: Path,
    *,
    local: list[str],
    cheap: list[str] | None = None,
    attempts: int = 1,
    ladder: str = '["local", "cheap"]',
) -> Harness:
    tiers = Tiers(
        local=tier(local), cheap=tier(cheap or [json.dumps(VALID_PLAN)]), frontier=tier([json.dumps(VALID_PLAN)])
    )
    return make_harness(
        tmp_path, PLANNER.format(attempts=attempts, ladder=ladder), files={"README.md": "the project\n"}, tiers=tiers
    )


def run(harness: Harness) -> tuple[RunResult, Runtime, dict[str, Any]]:
    runtime, backends = harness.runtime()
    result = asyncio.run(runtime.run_agent("planner"))
    return result, runtime, backends


def plans(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in runtime.ledger.query(
            "SELECT agent, run_id, tier, model, valid, validation_error, plan FROM plans ORDER BY id"
        )
    ]


def assert_nothing_injected(tmp_path: Path) -> None:
    assert not list(tmp_path.rglob("pwned*")), "text from the model was executed"


def test_a_valid_plan_runs_its_model_steps_and_allowlisted_tools(tmp_path: Path) -> None:
    harness = harness_for(tmp_path, local=[json.dumps(VALID_PLAN)])
    result, runtime, backends = run(harness)
    assert result.outcome == "success", result.reason
    assert [s.name for s in result.steps] == ["notes", "log"]

    # The cheapest tier was asked for the plan, first.
    planning = [r for r in backends["sim-local"].calls if is_planning(r)]
    assert backends["sim-local"].calls[0] is planning[0]
    assert not backends["sim-cheap"].calls
    prompt = last_user(planning[0])
    assert "- echo tool-ran >> log.txt" in prompt
    assert "- test -s notes.txt" in prompt
    assert "README.md" in prompt

    # The plan, its validation and the tier that produced it are recorded.
    (plan,) = plans(runtime)
    assert plan["run_id"] == result.run_id
    assert (plan["tier"], plan["model"], plan["valid"], plan["validation_error"]) == ("local", "sim-local:tiny", 1, "")
    assert json.loads(plan["plan"]) == VALID_PLAN
    (recorded,) = runtime.ledger.events_after(0, kinds=["plan_recorded"])
    assert recorded.data == {"tier": "local", "model": "sim-local:tiny", "valid": True, "error": "", "steps": 2}

    # The steps ran as planned: the model's answer written, the tool from the config run, then the agent's gate.
    assert (harness.workspace / "notes.txt").read_text() == NOTES
    assert (harness.workspace / "log.txt").read_text() == "tool-ran\n"
    steps = runtime.ledger.steps(result.run_id)
    assert [(s["name"], s["kind"], s["outcome"]) for s in steps] == [
        ("plan", "plan", "passed"),
        ("notes", "model", "passed"),
        ("log", "run", "passed"),
    ]
    (tool,) = runtime.ledger.events_after(0, kinds=["command_finished"])
    assert tool.data["command"] == "echo tool-ran >> log.txt"
    gates = [
        (e.data["step"], e.data["gate"], e.data["passed"])
        for e in runtime.ledger.events_after(0, kinds=["gate_checked"])
    ]
    assert ("notes", "cmd: test -s notes.txt", True) in gates
    assert gates[-1] == ("verify", "cmd: grep -q tool-ran log.txt && test -s notes.txt", True)
    assert_nothing_injected(tmp_path)


def test_a_fenced_plan_is_accepted(tmp_path: Path) -> None:
    harness = harness_for(tmp_path, local=["```json\n" + json.dumps(VALID_PLAN, indent=2) + "\n```"])
    result, runtime, _ = run(harness)
    assert result.outcome == "success", result.reason
    assert [p["valid"] for p in plans(runtime)] == [1]


OUTSIDE_TOOLS = {"steps": [{"kind": "tool", "name": "log", "tool": "echo tool-ran >> log.txt; touch pwned-tool"}]}


@pytest.mark.parametrize(
    ("bad_plan", "error"),
    [
        pytest.param(json.dumps(OUTSIDE_TOOLS), "is not one of the agent's tools", id="tool-outside-allowlist"),
        pytest.param(
            json.dumps({"steps": [{"kind": "model", "name": "n", "prompt": "p", "verify": ["touch pwned-verify"]}]}),
            "verify command 'touch pwned-verify' is not one of the agent's tools",
            id="verify-outside-allowlist",
        ),
        pytest.param(
            json.dumps(
                {
                    "steps": [
                        {"kind": "tool", "name": "log", "tool": "echo tool-ran >> log.txt", "run": "touch pwned-run"}
                    ]
                }
            ),
            "does not match the plan schema at steps/0",
            id="smuggled-run-key",
        ),
        pytest.param(
            json.dumps({"steps": [{"kind": "shell", "name": "sh", "command": "touch pwned-shell"}]}),
            "does not match the plan schema at steps/0",
            id="shell-step",
        ),
        pytest.param(json.dumps({"steps": []}), "does not match the plan schema at steps", id="no-steps"),
        pytest.param(
            '{"steps": [{"kind": "model", "name": "notes", "prompt": "Write notes."',
            "the plan is not valid JSON",
            id="truncated-json",
        ),
        pytest.param(
            "Sure! First I will write the notes, then run the tool.", "the plan is not valid JSON", id="prose"
        ),
        pytest.param('["notes", "log"]', "does not match the plan schema at (root)", id="json-but-not-a-plan"),
    ],
)
def test_an_invalid_plan_is_recorded_retried_with_the_failure_and_escalated(
    tmp_path: Path, bad_plan: str, error: str
) -> None:
    harness = harness_for(tmp_path, local=[bad_plan], attempts=2)
    result, runtime, backends = run(harness)
    assert result.outcome == "success", result.reason

    recorded = plans(runtime)
    assert [(p["tier"], p["valid"]) for p in recorded] == [("local", 0), ("local", 0), ("cheap", 1)]
    for rejected in recorded[:2]:
        assert error in rejected["validation_error"]
        assert rejected["plan"].strip() == bad_plan.strip()
    assert recorded[2]["model"] == "sim-cheap:flash"

    # The retry at local carried the failure; then the planning escalated to cheap, which carried it too.
    local_planning = [r for r in backends["sim-local"].calls if is_planning(r)]
    assert len(local_planning) == 2
    assert "rejected by the verify gate" not in last_user(local_planning[0])
    assert error in last_user(local_planning[1])
    cheap_planning = [r for r in backends["sim-cheap"].calls if is_planning(r)]
    assert len(cheap_planning) == 1
    assert error in last_user(cheap_planning[0])
    escalated = runtime.ledger.events_after(0, kinds=["escalated"])
    assert [(e.data["step"], e.data["from_tier"], e.data["to_tier"]) for e in escalated] == [("plan", "local", "cheap")]

    # Only the valid plan ran.
    assert (harness.workspace / "log.txt").read_text() == "tool-ran\n"
    assert_nothing_injected(tmp_path)


@pytest.mark.parametrize(
    ("step", "where"),
    [
        pytest.param({"writes": "../x"}, "'../x' is outside the workspace", id="writes-dotdot"),
        pytest.param({"writes": "sub/../../x"}, "is outside the workspace", id="writes-nested-dotdot"),
        pytest.param(
            {"writes": "/tmp/pwned-absolute"}, "'/tmp/pwned-absolute' is outside the workspace", id="writes-absolute"
        ),
        pytest.param({"context": ["../secret.txt"]}, "'../secret.txt' is outside the workspace", id="context-dotdot"),
    ],
)
def test_a_plan_that_reaches_outside_the_workspace_is_rejected(
    tmp_path: Path, step: dict[str, Any], where: str
) -> None:
    (tmp_path / "secret.txt").write_text("do not read\n")
    bad = {"steps": [{"kind": "model", "name": "notes", "prompt": "Write notes.", **step}]}
    harness = harness_for(tmp_path, local=[json.dumps(bad)])
    result, runtime, backends = run(harness)
    assert result.outcome == "success", result.reason
    recorded = plans(runtime)
    assert [(p["tier"], p["valid"]) for p in recorded] == [("local", 0), ("cheap", 1)]
    assert where in recorded[0]["validation_error"]
    assert not (tmp_path / "x").exists()
    assert not Path("/tmp/pwned-absolute").exists()
    # The rejected plan's step never ran: no model saw the secret, nothing was written for it.
    for backend in backends.values():
        for request in backend.calls:
            assert all("do not read" not in m.content for m in request.messages)
    assert (tmp_path / "secret.txt").read_text() == "do not read\n"


def test_planning_that_never_validates_escalates_to_the_frontier_approval(tmp_path: Path) -> None:
    harness = harness_for(
        tmp_path, local=["not json"], cheap=["still not json"], ladder='["local", "cheap", "frontier"]'
    )
    before = tree_digest(harness.workspace)
    result, runtime, backends = run(harness)
    assert result.outcome == "waiting_approval"  # planning is a step: the frontier tier asks a human first
    assert not backends["sim-frontier"].calls
    (approval,) = runtime.ledger.approvals()
    assert approval.step == "plan"
    assert "not valid JSON" in approval.reason
    assert [(p["tier"], p["valid"]) for p in plans(runtime)] == [("local", 0), ("cheap", 0)]
    assert tree_digest(harness.workspace) == before


def test_the_agents_verify_gate_decides_after_the_plan_ran(tmp_path: Path) -> None:
    # A valid plan that does not reach the goal (no tool step): the run fails and the workspace is put back.
    only_notes = {"steps": [VALID_PLAN["steps"][0]]}
    harness = harness_for(tmp_path, local=[json.dumps(only_notes)])
    before = tree_digest(harness.workspace)
    result, runtime, _ = run(harness)
    assert result.outcome == "failed"
    assert "verify gate failed after the plan ran" in result.reason
    assert tree_digest(harness.workspace) == before
    assert [p["valid"] for p in plans(runtime)] == [1]


def test_tool_steps_run_the_configured_string() -> None:
    # The allowlist is compared exactly: a look-alike with extra shell is not the tool.
    from supervisor.config import AgentConfig

    agent = AgentConfig(goal="g", workspace="ws", tools=["echo tool-ran >> log.txt"], verify=["true"])
    for candidate in (
        "echo tool-ran >> log.txt ",
        " echo tool-ran >> log.txt",
        "echo tool-ran >> log.txt && touch p",
        "echo  tool-ran >> log.txt",
    ):
        plan = {"steps": [{"kind": "tool", "name": "t", "tool": candidate}]}
        assert not validate_plan(json.dumps(plan), agent).passed, candidate
    plan = {"steps": [{"kind": "tool", "name": "t", "tool": "echo tool-ran >> log.txt"}]}
    assert validate_plan(json.dumps(plan), agent).passed


def test_the_published_schema_is_the_one_enforced() -> None:
    schema = json.loads((Path(__file__).parents[2] / "supervisor" / "schemas" / "plan.schema.json").read_text())
    assert schema == plan_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    kinds = {item["properties"]["kind"]["const"] for item in schema["properties"]["steps"]["items"]["oneOf"]}
    assert kinds == {"model", "tool", "agent"}


def test_a_plan_step_named_plan_is_not_mistaken_for_the_plan(tmp_path: Path) -> None:
    plan = {"steps": [{"kind": "model", "name": "plan", "prompt": "Write the release plan as prose."}]}
    harness = harness_for(tmp_path, local=[json.dumps(plan)], cheap=[json.dumps(plan)])
    text = harness.config_path.read_text().replace(
        'verify = ["grep -q tool-ran log.txt && test -s notes.txt"]', 'verify = ["true"]'
    )
    harness.config_path.write_text(text)
    result, runtime, _ = run(harness)
    # Rejected up front (a reserved name) or run as a normal step: either way its answer is never a "plan".
    assert all(p["plan"].strip() != NOTES.strip() for p in plans(runtime))
    assert result.outcome in {"success", "exhausted"}


def test_a_failed_plan_cannot_leave_files_in_unrestored_directories(tmp_path: Path) -> None:
    plan = {
        "steps": [
            {"kind": "model", "name": "hook", "prompt": "Write a helpful hook.", "writes": ".git/hooks/post-checkout"}
        ]
    }
    harness = harness_for(tmp_path, local=[json.dumps(plan)], cheap=[json.dumps(plan)])
    (harness.workspace / ".git").mkdir()
    (harness.workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = tree_digest(harness.workspace)
    result, _, _ = run(harness)
    assert result.outcome != "success"  # the agent's verify gate (log.txt) can never pass without the tool step
    assert tree_digest(harness.workspace) == before
