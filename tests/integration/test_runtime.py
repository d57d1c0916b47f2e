"""The run loop end to end: tier 0, gates, retry with the failure, escalation, approvals, caps, restores.

Tiers are scripted backends (fast, deterministic) and everything else is real: the ledger file, child processes
for commands and gates, the workspace on disk.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from supervisor.backends.base import Request
from supervisor.backends.scripted import ScriptedAnswer
from supervisor.ledger import Ledger
from tests.helpers import Tiers, last_user, make_harness, tree_digest

FIXER = """
[agents.fixer]
goal = "Make greeting.txt say hello world."
workspace = "ws"
attempts_per_tier = 2

[[agents.fixer.steps]]
name = "prepare"
run = "echo prepared > prepared.txt"

[[agents.fixer.steps]]
name = "write"
prompt = "Write the greeting."
context = ["notes.md"]
writes = "greeting.txt"
verify = ["grep -q 'hello world' greeting.txt"]
"""


def run(harness, agent: str = "fixer", **kwargs):  # type: ignore[no-untyped-def]
    runtime, backends = harness.runtime()
    result = asyncio.run(runtime.run_agent(agent, **kwargs))
    return result, runtime, backends


def test_tier0_step_runs_without_any_model(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        """
        [agents.janitor]
        goal = "Count lines."
        workspace = "ws"
        [[agents.janitor.steps]]
        name = "count"
        run = "wc -l < data.txt > count.txt"
        verify = ["test -s count.txt"]
        """,
        files={"data.txt": "a\nb\nc\n"},
    )
    result, runtime, backends = run(harness, "janitor")
    assert result.outcome == "success"
    assert result.calls == 0
    assert (harness.workspace / "count.txt").read_text().strip() == "3"
    assert all(not b.calls for b in backends.values())
    kinds = [e.kind for e in runtime.ledger.events_after(0)]
    assert "command_finished" in kinds
    assert "call_started" not in kinds


def test_pass_at_local_costs_nothing(tmp_path: Path) -> None:
    tiers = Tiers(local=lambda r: "hello world\n")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "say hello world"}, tiers=tiers)
    result, runtime, backends = run(harness)
    assert result.outcome == "success"
    assert result.tier_reached == "local"
    assert (harness.workspace / "greeting.txt").read_text() == "hello world\n"
    calls = runtime.ledger.calls(run_id=result.run_id)
    assert len(calls) == 1
    assert calls[0]["tier"] == "local"
    assert calls[0]["cost_micros"] == 0
    assert calls[0]["input_uncached"] > 0  # tokens are counted even when free
    assert not backends["sim-cheap"].calls


def test_failure_is_retried_with_the_gate_output_then_escalated(tmp_path: Path) -> None:
    tiers = Tiers(local=lambda r: "goodbye\n", cheap=lambda r: "hello world\n")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "say hello world"}, tiers=tiers)
    result, runtime, backends = run(harness)
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    local_requests = backends["sim-local"].calls
    assert len(local_requests) == 2
    assert "rejected by the verify gate" not in last_user(local_requests[0])
    retry_prompt = last_user(local_requests[1])
    assert "rejected by the verify gate" in retry_prompt
    assert "grep -q 'hello world' greeting.txt" in retry_prompt
    # The retry carries the failure, never the earlier answer or conversation history.
    assert "goodbye" not in retry_prompt
    assert all(len(r.messages) == 2 for r in local_requests + backends["sim-cheap"].calls)
    events = [e.kind for e in runtime.ledger.events_after(0)]
    assert events.count("workspace_restored") == 2
    assert "escalated" in events
    cheap_calls = [c for c in runtime.ledger.calls(run_id=result.run_id) if c["tier"] == "cheap"]
    assert len(cheap_calls) == 1
    assert cheap_calls[0]["cost_micros"] > 0
    assert cheap_calls[0]["simulated"] == 1


def test_failed_run_leaves_the_workspace_byte_for_byte(tmp_path: Path) -> None:
    files = {"notes.md": "say hello world", "greeting.txt": "old greeting\n", "sub/keep.txt": "keep"}
    harness = make_harness(
        tmp_path,
        """
        [agents.fixer]
        goal = "Make greeting.txt say hello world."
        workspace = "ws"
        ladder = ["local", "cheap"]
        attempts_per_tier = 2
        [[agents.fixer.steps]]
        name = "prepare"
        run = "echo prepared > prepared.txt && mkdir -p made/by && echo x > made/by/tier0.txt && echo more >> sub/keep.txt"
        [[agents.fixer.steps]]
        name = "write"
        prompt = "Write the greeting."
        context = ["notes.md"]
        writes = "greeting.txt"
        verify = ["echo side-effect > gate-wrote.txt; echo junk >> notes.md; grep -q 'hello world' greeting.txt"]
        """,
        files=files,
        tiers=Tiers(local=lambda r: "nope\n", cheap=lambda r: "still nope\n"),
    )
    before = tree_digest(harness.workspace)
    result, runtime, _ = run(harness)
    assert result.outcome == "exhausted"
    assert tree_digest(harness.workspace) == before
    assert not (harness.workspace / "made").exists()
    assert runtime.ledger.agent("fixer")["state"] == "exhausted"  # type: ignore[index]


def test_writes_are_restored_after_each_failed_attempt(tmp_path: Path) -> None:
    seen: list[str] = []

    def local(request: Request) -> str:
        seen.append((tmp_path / "ws" / "greeting.txt").read_text())
        return "bad answer\n"

    tiers = Tiers(local=local, cheap=lambda r: "hello world\n")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "n", "greeting.txt": "original\n"}, tiers=tiers)
    result, _, _ = run(harness)
    assert result.outcome == "success"
    assert seen == ["original\n", "original\n"]  # each attempt starts from the untouched file


FRONTIER = """
[agents.hard]
goal = "Solve it."
workspace = "ws"
attempts_per_tier = 1
frontier = "{policy}"
caps = {{ day_usd = 5.0 }}
[[agents.hard.steps]]
name = "solve"
prompt = "Solve."
writes = "answer.txt"
verify = [{{ regex = "^42$" }}]
"""


def frontier_harness(tmp_path: Path, policy: str):  # type: ignore[no-untyped-def]
    tiers = Tiers(local=lambda r: "41", cheap=lambda r: "43", frontier=lambda r: "42")
    return make_harness(tmp_path, FRONTIER.format(policy=policy), tiers=tiers)


def test_frontier_waits_for_approval_and_records_the_estimate(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "ask")
    result, runtime, backends = run(harness, "hard", approval_timeout_s=0)
    assert result.outcome == "waiting_approval"
    assert result.exit_code == 4
    assert not backends["sim-frontier"].calls
    pending = runtime.ledger.approvals()
    assert len(pending) == 1
    request = pending[0]
    assert request.model == "sim-frontier:sonnet"
    assert "does not match" in request.reason
    assert request.est_cold_micros is not None
    assert request.est_warm_micros is not None
    assert request.est_warm_micros <= request.est_cold_micros
    assert "agent day" in request.caps_left
    assert runtime.ledger.agent("hard")["state"] == "waiting_approval"  # type: ignore[index]
    assert not (harness.workspace / "answer.txt").exists()


def test_approval_from_another_process_lets_a_later_run_continue(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "ask")
    first, _runtime, _ = run(harness, "hard", approval_timeout_s=0)
    approval_id = first.approval_id
    assert approval_id is not None
    # Another process (another connection) approves.
    other = Ledger(harness.home / "ledger.db")
    other.decide_approval(approval_id, True, "someone-else")
    second, runtime2, backends2 = run(harness, "hard", approval_timeout_s=0)
    assert second.outcome == "success"
    assert (harness.workspace / "answer.txt").read_text() == "42\n"
    assert len(backends2["sim-frontier"].calls) == 1
    assert not backends2["sim-local"].calls  # the approval takes the step straight to the frontier tier
    assert runtime2.ledger.approval(approval_id).state == "consumed"  # type: ignore[union-attr]


def test_approval_while_waiting_in_process(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "ask")
    runtime, backends = harness.runtime()

    async def scenario() -> object:
        task = asyncio.create_task(runtime.run_agent("hard", approval_timeout_s=None))
        for _ in range(400):
            await asyncio.sleep(0.01)
            pending = runtime.ledger.approvals()
            if pending:
                runtime.approve(pending[0].id, by="test")
                break
        return await task

    result = asyncio.run(scenario())
    assert result.outcome == "success"  # type: ignore[attr-defined]
    assert len(backends["sim-frontier"].calls) == 1


def test_denied_approval_ends_the_run_as_denied(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "ask")
    runtime, backends = harness.runtime()

    async def deny(request: object) -> bool:
        return False

    result = asyncio.run(runtime.run_agent("hard", approver=deny))
    assert result.outcome == "denied"
    assert not backends["sim-frontier"].calls
    assert runtime.ledger.approvals(states=("denied",))


def test_frontier_never_means_exhausted(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "never")
    result, runtime, backends = run(harness, "hard")
    assert result.outcome == "exhausted"
    assert not backends["sim-frontier"].calls
    assert not runtime.ledger.approvals()


def test_frontier_allow_runs_without_asking(tmp_path: Path) -> None:
    harness = frontier_harness(tmp_path, "allow")
    result, _, backends = run(harness, "hard")
    assert result.outcome == "success"
    assert len(backends["sim-frontier"].calls) == 1


CAPPED = """
[agents.spender]
goal = "Spend."
workspace = "ws"
ladder = ["cheap"]
attempts_per_tier = 1
caps = {{ {caps} }}
[[agents.spender.steps]]
name = "go"
prompt = "Go."
output = "answer"
max_output_tokens = 1000
verify = [{{ regex = "ok" }}]
"""


@pytest.mark.parametrize(
    ("agent_caps", "global_caps", "cap_name"),
    [
        ("run_usd = 0.0005", "", "run_usd"),
        ("day_usd = 0.0005", "", "agent day_usd"),
        ("month_usd = 0.0005", "", "agent month_usd"),
        ("", "[caps]\nday_usd = 0.0005\n", "global day_usd"),
        ("", "[caps]\nmonth_usd = 0.0005\n", "global month_usd"),
        ("run_tokens = 100", "", "run_tokens"),
    ],
)
def test_a_call_that_could_cross_a_cap_is_not_sent(
    tmp_path: Path, agent_caps: str, global_caps: str, cap_name: str
) -> None:
    harness = make_harness(
        tmp_path, CAPPED.format(caps=agent_caps), extra_toml=global_caps, tiers=Tiers(cheap=lambda r: "ok")
    )
    result, runtime, backends = run(harness, "spender")
    assert result.outcome == "deferred"
    assert result.exit_code == 3
    assert cap_name in result.reason
    assert not backends["sim-cheap"].calls
    assert runtime.ledger.agent("spender")["state"] == "deferred"  # type: ignore[index]
    deferred = runtime.ledger.events_after(0, kinds=["agent_deferred"])
    assert deferred
    assert deferred[0].data["cap"] == cap_name


def test_local_models_keep_working_when_the_dollar_cap_is_spent(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        """
        [caps]
        day_usd = 0.0
        [agents.local]
        goal = "Work locally."
        workspace = "ws"
        caps = { day_usd = 0.0, month_usd = 0.0 }
        [[agents.local.steps]]
        name = "go"
        prompt = "Go."
        output = "answer"
        verify = [{ regex = "ok" }]
        """,
        tiers=Tiers(local=lambda r: "ok"),
    )
    result, _, backends = run(harness, "local")
    assert result.outcome == "success"
    assert len(backends["sim-local"].calls) == 1


def test_spend_plus_reservations_never_cross_the_cap(tmp_path: Path) -> None:
    # Each call reserves its worst case (~2.4k micros at the peak output price) and really spends ~1.2k, so a
    # 4k-micro run cap lets two calls through and defers the third before it is sent.
    harness = make_harness(
        tmp_path,
        """
        [agents.multi]
        goal = "Many steps."
        workspace = "ws"
        ladder = ["cheap"]
        attempts_per_tier = 1
        caps = { run_usd = 0.004 }
        """
        + "".join(
            f"""
        [[agents.multi.steps]]
        name = "s{i}"
        prompt = "Step {i}."
        output = "s{i}"
        max_output_tokens = 2000
        verify = [{{ regex = "ok" }}]
        """
            for i in range(6)
        ),
        tiers=Tiers(cheap=lambda r: ScriptedAnswer("ok", output_tokens=1900)),
    )
    result, runtime, backends = run(harness, "multi")
    assert result.outcome == "deferred"
    spend = runtime.ledger.spend(run_id=result.run_id)
    assert spend.micros <= 4_000
    assert spend.held_micros == 0
    assert len(backends["sim-cheap"].calls) == 2


def test_unpriced_models_never_get_paid_traffic(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        """
        [providers.mystery]
        kind = "openai_compat"
        base_url = "http://127.0.0.1:9"
        [agents.a]
        goal = "g"
        workspace = "ws"
        ladder = ["cheap"]
        [[agents.a.steps]]
        name = "s"
        prompt = "p"
        output = "o"
        verify = [{ regex = "x" }]
        """,
    )
    text = harness.config_path.read_text().replace('cheap = ["sim-cheap:flash"]', 'cheap = ["mystery:unknown-model"]')
    harness.config_path.write_text(text)
    result, runtime, _ = run(harness, "a")
    assert result.outcome == "exhausted"
    skipped = runtime.ledger.events_after(0, kinds=["tier_skipped"])
    assert "unpriced" in skipped[0].data["reason"]
    assert result.calls == 0


def test_context_files_over_the_limit_are_refused_not_truncated(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        FIXER,
        files={"notes.md": "x" * 5000},
        extra_toml="[limits]\nmax_context_file_bytes = 1000\n",
        tiers=Tiers(local=lambda r: "hello world"),
    )
    result, _, backends = run(harness)
    assert result.outcome in {"exhausted", "failed"}
    assert "over the 1,000-byte limit" in (result.steps[-1].failure or result.reason)
    assert not backends["sim-local"].calls


def test_a_prompt_too_big_for_the_local_window_escalates(tmp_path: Path) -> None:
    big = "word " * 8000  # ~13k estimated tokens: over the 8k window of the local model, fine for cheap
    harness = make_harness(
        tmp_path,
        FIXER,
        files={"notes.md": big},
        tiers=Tiers(local=lambda r: "hello world", cheap=lambda r: "hello world"),
    )
    result, _runtime, backends = run(harness)
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    assert not backends["sim-local"].calls


def test_answers_cannot_write_outside_the_workspace(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "n"}, tiers=Tiers(local=lambda r: "hello world"))
    (harness.workspace / "greeting.txt").symlink_to(outside)
    result, _, _ = run(harness)
    assert result.outcome != "success"
    assert outside.read_text() == "untouched"
    assert (harness.workspace / "greeting.txt").is_symlink()


def test_unknown_usage_is_recorded_unpriced_and_keeps_the_worst_case(tmp_path: Path) -> None:
    tiers = Tiers(cheap=lambda r: ScriptedAnswer("ok", usage_known=False))
    harness = make_harness(tmp_path, CAPPED.format(caps="day_usd = 1.0"), tiers=tiers)
    result, runtime, _ = run(harness, "spender")
    assert result.outcome == "success"
    call = runtime.ledger.calls(run_id=result.run_id)[0]
    assert call["priced"] == 0
    assert call["cost_micros"] is None
    reservation = runtime.ledger.query("SELECT * FROM reservations WHERE id = ?", (call["reservation_id"],))[0]
    assert reservation["state"] == "settled_unpriced"
    assert reservation["actual_micros"] == reservation["amount_micros"] > 0


def test_canary_keys_never_reach_the_ledger_or_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "sk-CANARY-0123456789abcdef"
    monkeypatch.setenv("DEEPSEEK_API_KEY", canary)
    tiers = Tiers(local=lambda r: f"leaking {canary}", cheap=lambda r: "hello world")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "n"}, tiers=tiers)
    text = harness.config_path.read_text().replace('verify = ["grep', f'verify = ["echo {canary}; grep')
    harness.config_path.write_text(text)
    result, runtime, backends = run(harness)
    assert result.outcome == "success"
    # Not even the retry prompt carries it to a model.
    for backend in backends.values():
        for request in backend.calls:
            assert all(canary not in m.content for m in request.messages)
    dump = "\n".join(runtime.ledger.conn.iterdump())
    assert canary not in dump
    assert "[redacted:DEEPSEEK_API_KEY]" in dump
    for path in (harness.home / "agents").rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(errors="replace"), path


def test_every_step_call_and_gate_is_an_event(tmp_path: Path) -> None:
    tiers = Tiers(local=lambda r: "goodbye", cheap=lambda r: "hello world")
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "n"}, tiers=tiers)
    result, runtime, _ = run(harness)
    kinds = [e.kind for e in runtime.ledger.events_after(0) if e.run_id == result.run_id]
    for kind in (
        "run_started",
        "step_started",
        "command_finished",
        "call_started",
        "call_recorded",
        "gate_checked",
        "escalated",
        "step_verified",
        "digest_written",
        "run_finished",
    ):
        assert kind in kinds, kind
    finished = runtime.ledger.events_after(0, kinds=["run_finished"])[-1]
    assert finished.data["outcome"] == "success"
    assert json.dumps(finished.data)


def test_a_paused_agent_does_not_run(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, FIXER, files={"notes.md": "n"}, tiers=Tiers(local=lambda r: "hello world"))
    runtime, backends = harness.runtime()
    runtime.pause("fixer")
    result = asyncio.run(runtime.run_agent("fixer"))
    assert result.outcome == "paused"
    assert result.exit_code == 5
    assert not backends["sim-local"].calls
    assert runtime.resume("fixer")
    assert asyncio.run(runtime.run_agent("fixer")).outcome == "success"
