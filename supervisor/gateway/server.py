"""The gateway: one loopback door through which the agents people already run reach models under our caps.

``async with Gateway(runtime) as gw: gw.url`` serves in the caller's event loop (the daemon's, the hosted TUI's,
``supervisor gateway``'s, or a test's), so approvals, caps and events are the runtime's own. Each request:

1. security: a loopback ``Host``, no foreign ``Origin``, a JSON body under the size limit;
2. who: a gateway key (``Authorization: Bearer`` or ``x-api-key``), a per-agent loopback port, or an agent
   step attempt's own loopback port -> an agent (and, for a key bound to an attempt, its run, step, attempt,
   tier and limits: ``open_attempt`` mints that key and ``close_attempt`` revokes it when the attempt ends);
3. where: the model name -> candidates (``routing``); offline, unpriced, tool-less and frontier-policy rules;
4. caps: ``ModelCaller.open`` reserves the worst case (prompt estimate + the output budget, injected or clamped
   to the agent's ceiling) against the agent's, the global and the key's caps in one ``BEGIN IMMEDIATE``;
5. send: the same protocol upstream -> a pass-through relay (event by event, usage read from a copy);
   otherwise a translation through the backend and the client protocol's encoder;
6. settle: the pending call finishes from the real usage (or keeps its worst case when usage is lost) and
   becomes one ledger row under the agent, with the model asked for, the model served and how it authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from supervisor.backends._http import HttpBackend
from supervisor.backends.base import Request, Result, TokenCount
from supervisor.catalog import TIERS
from supervisor.clock import utcnow
from supervisor.config import AgentConfig, GatewayConfig, ProviderConfig
from supervisor.errors import BackendError, BackendUnavailable, ContextOverflow, SupervisorError
from supervisor.gateway import codecs
from supervisor.gateway.http import ClientGone, HttpRequest, HttpResponse, HttpServer, ServerLimits
from supervisor.gateway.keys import bearer_token, lookup_key, mint_key
from supervisor.gateway.routing import RouteRefused, resolve
from supervisor.gateway.upstream import UpstreamPool
from supervisor.ledger import CapHit, CapLimits, GatewayKey
from supervisor.runtime import breaker
from supervisor.runtime.budget import cap_limits, caps_left, estimate_call
from supervisor.runtime.caller import CallTags, PendingCall
from supervisor.runtime.events import EscalationRequested, GatewayRefused, ModelSubstituted, Notice
from supervisor.runtime.program import AttemptDoor, AttemptGrant, AttemptWatch
from supervisor.runtime.router import Candidate
from supervisor.secrets import ByteStreamScrubber, Redactor

if TYPE_CHECKING:
    from supervisor.runtime.runtime import Runtime

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1", "localhost"})
GATEWAY_STEP = "gateway"
APPROVAL_POLL_S = 0.25
MANAGEMENT_ROUTES = frozenset({"/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs"})
FORWARDED_HEADERS = ("request-id", "x-request-id", "openai-processing-ms", "anthropic-organization-id")
ROUTES: dict[str, str] = {
    "/v1/chat/completions": "openai_chat",
    "/chat/completions": "openai_chat",
    "/v1/messages": "anthropic",
    "/v1/responses": "openai_responses",
    "/responses": "openai_responses",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
}
COUNT_TOKENS = "/v1/messages/count_tokens"
UPSTREAM_PROTOCOL = {"openai_compat": "openai_chat", "anthropic": "anthropic", "ollama": "ollama"}
ATTEMPT_SETTLE_S = 2.0  # when an attempt ends, its requests still in flight get this long to finish, then are cut
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
# The key the request being handled authenticated with (each connection's requests run in one task at a time).
_REQUEST_KEY: ContextVar[GatewayKey | None] = ContextVar("gateway_request_key", default=None)


class Refusal(Exception):
    """A request answered with an error before (or instead of) forwarding it."""

    def __init__(self, status: int, kind: codecs.ErrorKind, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Gateway:
    """The gateway server, bound to a runtime. Start it with ``async with`` (or ``start``/``aclose``)."""

    def __init__(
        self,
        runtime: Runtime,
        config: GatewayConfig | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        agent_ports: bool = True,
    ) -> None:
        self.runtime = runtime
        self.config = config or runtime.config.file.gateway or GatewayConfig()
        self.host = host or self.config.host
        self.port = self.config.port if port is None else port
        self.agent_ports = agent_ports
        self.server = HttpServer(
            self.handle,
            ServerLimits(self.config.max_body_bytes, self.config.request_timeout_s, self.config.idle_timeout_s),
            on_error=self._internal_error,
        )
        self.bound_port = 0
        self.port_agents: dict[int, str] = {}
        self.attempts: dict[int, AttemptWatch] = {}  # agent step attempts' keys (by key id) and what they did
        self.port_keys: dict[int, int] = {}  # an attempt's own loopback port -> its key id
        self._upstream: UpstreamPool | None = None
        self.requests_seen = 0
        self._codecs: dict[str, Any] = {}
        self._stop_checkpoints: Callable[[], None] | None = None
        self._max_tokens_keys: dict[str, str] = {}
        self._limits_cache: dict[str, tuple[object, AgentConfig, CapLimits]] = {}
        self._hourly_checked: dict[
            str, float
        ] = {}  # every request that reached the handler (tests check SDKs do not retry refusals)

    # ----------------------------------------------------------------------------------------------------
    # Lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    @property
    def local_url(self) -> str:
        """The URL a program on this machine uses (a wildcard listen address becomes loopback)."""
        host = WILDCARD_HOSTS.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.bound_port}"

    async def start(self) -> Gateway:
        if self.host not in LOOPBACK_ADDRESSES and not self.config.allow_non_loopback:
            raise SupervisorError(
                f"the gateway would listen on {self.host}, which is not a loopback address",
                "set allow_non_loopback = true under [gateway] to serve other machines (every request still "
                "needs a key), or listen on 127.0.0.1",
            )
        if self.host not in LOOPBACK_ADDRESSES and not self.runtime.ledger.gateway_keys():
            raise SupervisorError(
                f"refusing to listen on {self.host} with no gateway keys",
                "create one with `supervisor keys create AGENT` first",
            )
        try:
            self.bound_port = await self.server.listen(self.host, self.port)
            if self.agent_ports:
                for name, agent in self.runtime.config.agents.items():
                    if agent.gateway_port is not None:
                        self.port_agents[await self.server.listen("127.0.0.1", agent.gateway_port)] = name
        except OSError as exc:
            self.server.stop_listening()
            raise SupervisorError(
                f"the gateway cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                "is another gateway running? choose another port with --port or [gateway] port",
            ) from None
        # Every request commits twice: the WAL checkpoints those commits would trigger run in a thread instead.
        self._stop_checkpoints = self.runtime.ledger.checkpoint_in_background()
        return self

    async def aclose(self, grace_s: float | None = None) -> None:
        """Stop accepting; requests in flight finish within ``grace_s`` or are cancelled (their holds settled)."""
        await self.server.close(self.config.shutdown_grace_s if grace_s is None else grace_s)
        if self._stop_checkpoints is not None:
            stop, self._stop_checkpoints = self._stop_checkpoints, None
            stop()
        if self._upstream is not None:
            client, self._upstream = self._upstream, None
            await client.aclose()

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def upstream(self) -> UpstreamPool:
        if self._upstream is None:
            self._upstream = UpstreamPool(connect_timeout_s=5.0, timeout_s=self.config.upstream_timeout_s)
        return self._upstream

    def _internal_error(self, exc: BaseException) -> None:
        self.runtime.bus.publish(
            Notice(message=f"gateway: internal error ({type(exc).__name__}): {exc}", level="error")
        )

    # ----------------------------------------------------------------------------------------------------
    # Agent step attempts

    async def open_attempt(self, grant: AttemptGrant) -> AttemptDoor:
        """A door for one agent step attempt: a key bound to its agent, run, step, attempt and tier, with its
        limits and an expiry, and a loopback port bound to that key (for clients that cannot send one)."""
        ledger = self.runtime.ledger
        minted = mint_key(
            ledger,
            grant.agent,
            label=f"run {grant.run_id} step {grant.step} attempt {grant.attempt} ({grant.tier})",
            expires_at=grant.expires_at,
            run_id=grant.run_id,
            step=grant.step,
            attempt=grant.attempt,
            tier=grant.tier,
            max_calls=grant.max_calls,
            max_micros=grant.max_micros,
            max_tokens=grant.max_tokens,
            max_output_tokens=grant.max_output_tokens,
        )
        name = f"SUPERVISOR_GATEWAY_KEY_{minted.id}"  # its own name: attempts of several agents overlap
        ledger.redactor = ledger.redactor.including({name: minted.token}, [name])
        watch = AttemptWatch(minted.id)
        self.attempts[minted.id] = watch
        try:
            port = await self.server.listen("127.0.0.1", 0)
        except OSError as exc:
            self.attempts.pop(minted.id, None)
            ledger.revoke_key(minted.id)
            raise SupervisorError(
                f"the gateway cannot open a loopback port for the attempt: {exc.strerror or exc}"
            ) from None
        self.port_keys[port] = minted.id
        return AttemptDoor(minted.id, minted.token, minted.prefix, self.local_url, f"http://127.0.0.1:{port}", watch)

    async def close_attempt(self, door: AttemptDoor) -> None:
        """The attempt ended: its key is revoked (a straggler's next call gets 401), its requests still in flight
        get a moment to finish and are then cut (their holds kept at the worst case), its port is closed."""
        ledger = self.runtime.ledger
        ledger.revoke_key(door.key_id)
        watch = self.attempts.pop(door.key_id, None)
        if watch is not None and watch.inflight:
            _, late = await asyncio.wait(set(watch.inflight), timeout=ATTEMPT_SETTLE_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=ATTEMPT_SETTLE_S)
        for port in [p for p, k in self.port_keys.items() if k == door.key_id]:
            del self.port_keys[port]
            self.server.unlisten(port)
        # A dead key need not be scrubbed for ever (a long-lived daemon would carry one per attempt).
        ledger.redactor = Redactor(tuple(p for p in ledger.redactor.secrets if p[1] != door.token))

    # ----------------------------------------------------------------------------------------------------
    # Requests

    async def handle(self, req: HttpRequest, resp: HttpResponse) -> None:
        self.requests_seen += 1
        protocol = self._protocol_for(req)
        codec = self._codecs.get(protocol)
        if codec is None:
            codec = self._codecs[protocol] = codecs.codec_for(protocol)  # stateless: one per protocol
        reset = _REQUEST_KEY.set(None)
        try:
            self._check_security(req)
            await self._route(req, resp, protocol, codec)
        except Refusal as refusal:
            watch = self._watch()
            if watch is not None:
                watch.note_refusal(refusal.status, self._scrub(refusal.message))
            if resp.started:  # held open with pings: the refusal goes in-band
                if not resp.ended and not resp.disconnected:
                    if resp.media_type == "application/json":  # keep-alive whitespace, then the error body
                        resp.write(codec.error(refusal.status, refusal.kind, self._scrub(refusal.message))[2])
                    else:
                        encoder = codec.stream(model="", include_usage=False)
                        resp.write(encoder.error(refusal.kind, self._scrub(refusal.message)))
                    resp.end()
                return
            status, headers, body = codec.error(
                refusal.status, refusal.kind, self._scrub(refusal.message), retry_after_s=refusal.retry_after_s
            )
            resp.send(status, list(headers.items()), body)
        finally:
            watch = self._watch()
            if watch is not None:
                watch.inflight.discard(asyncio.current_task())
            _REQUEST_KEY.reset(reset)

    def _watch(self) -> AttemptWatch | None:
        """The attempt whose key the request being handled uses, while the attempt lasts."""
        key = _REQUEST_KEY.get()
        return self.attempts.get(key.id) if key is not None else None

    def _protocol_for(self, req: HttpRequest) -> codecs.ProtocolName:
        if req.path in ROUTES:
            return ROUTES[req.path]  # type: ignore[return-value]
        if req.path.startswith("/api/"):
            return "ollama_chat"
        if req.path.startswith("/v1/messages") or "anthropic-version" in req.headers:
            return "anthropic"
        return "openai_chat"

    def _check_security(self, req: HttpRequest) -> None:
        host = _host_name(req.headers.get("host", ""))
        allowed = LOOPBACK_HOSTS | ({self.host.lower()} if self.config.allow_non_loopback else set())
        if host not in allowed:
            raise Refusal(403, "permission", f"Host {host or '(none)'!r} is not a loopback name; refused")
        origin = req.headers.get("origin")
        if origin is not None and origin not in self.config.allowed_origins:
            raise Refusal(
                403,
                "permission",
                f"requests from the browser origin {origin!r} are refused (add it to [gateway] allowed_origins)",
            )

    def _scrub(self, text: str) -> str:
        return str(self.runtime.ledger.redactor.scrub(text))

    def _scrub_bytes(self, body: bytes) -> bytes:
        """A whole relayed body with any known key replaced (an upstream error may echo the provider key)."""
        for value, replacement in self.runtime.ledger.redactor.secret_bytes:
            if value in body:
                body = body.replace(value, replacement)
        return body

    async def _route(self, req: HttpRequest, resp: HttpResponse, protocol: str, codec: Any) -> None:
        path, method = req.path, req.method
        if path in ("/", "") and method in ("GET", "HEAD"):
            resp.send(
                200, [("content-type", "text/plain")], b"" if method == "HEAD" else b"frugal-supervisor gateway\n"
            )
            return
        if path == "/api/version" and method == "GET":
            resp.send(200, [("content-type", "application/json")], b'{"version":"0.14.0"}')
            return
        if path in MANAGEMENT_ROUTES or path.startswith("/api/blobs"):
            raise Refusal(
                403,
                "permission",
                f"{path} is refused: the gateway does not manage models (pull them with ollama itself)",
            )
        agent_name, key, auth = self._authenticate(req)
        if path in ("/v1/models", "/models") and method == "GET":
            self._models(req, resp, agent_name, key)
            return
        if path in ("/api/tags", "/api/ps") and method == "GET":
            self._ollama_tags(resp, agent_name, key, path)
            return
        if path == "/api/show" and method == "POST":
            await self._ollama_show(req, resp, agent_name, key)
            return
        if path == COUNT_TOKENS:
            if method != "POST":
                raise Refusal(405, "invalid_request", f"{path} takes POST")
            await self._count_tokens(req, resp, self._parse(req, codec), agent_name, key)
            return
        if path not in ROUTES:
            raise Refusal(404, "not_found", f"no route {method} {path}")
        if method != "POST":
            raise Refusal(405, "invalid_request", f"{path} takes POST")
        await self._serve(req, resp, codec, self._parse(req, codec), agent_name, key, auth)

    def _parse(self, req: HttpRequest, codec: Any) -> codecs.InboundRequest:
        """The request body as JSON, read by the client protocol's codec (a clear 4xx when it cannot be)."""
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refusal(415, "invalid_request", "the body must be JSON sent as Content-Type: application/json")
        try:
            body = json.loads(req.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Refusal(400, "invalid_request", f"the body is not valid JSON: {exc}") from None
        try:
            inbound: codecs.InboundRequest = codec.parse(body)
        except codecs.CodecError as exc:
            raise Refusal(400, "invalid_request", exc.message) from None
        return inbound

    def _authenticate(self, req: HttpRequest) -> tuple[str, GatewayKey | None, str]:
        token = bearer_token(req.headers)
        now = utcnow()
        if token is not None:
            key = lookup_key(self.runtime.ledger, token)
            if key is None:
                raise Refusal(
                    401, "authentication", "unknown gateway key (create one with `supervisor keys create AGENT`)"
                )
            why = key.usable(now)
            if why is not None:
                raise Refusal(401, "authentication", f"gateway key {key.prefix}... is {why}")
            return key.agent, self._attempt_request(key), "key"
        key_id = self.port_keys.get(req.local_port)
        if key_id is not None:
            key = self.runtime.ledger.gateway_key(key_id)
            why = "gone" if key is None else key.usable(now)
            if key is None or why is not None:
                raise Refusal(401, "authentication", f"the agent step attempt this port served has ended (key {why})")
            return key.agent, self._attempt_request(key), "port"
        bound = self.port_agents.get(req.local_port)
        if bound is not None:
            return bound, None, "port"
        raise Refusal(
            401,
            "authentication",
            "a gateway key is required: send it as `Authorization: Bearer KEY` or `x-api-key: KEY` "
            "(`supervisor keys create AGENT` makes one)",
        )

    def _attempt_request(self, key: GatewayKey) -> GatewayKey:
        """Note a request made with ``key``: an agent step attempt's key counts it (and can cut it at the end)."""
        _REQUEST_KEY.set(key)
        watch = self.attempts.get(key.id)
        if watch is not None:
            watch.requests += 1
            task = asyncio.current_task()
            if task is not None:
                watch.inflight.add(task)
        return key

    def _agent(self, name: str, *, attempt: bool = False) -> AgentConfig:
        agent = self.runtime.config.agents.get(name)
        if agent is None:
            raise Refusal(403, "permission", f"agent {name!r} is no longer in the config; its keys do not work")
        # A disabled agent is never scheduled, but a run started by hand may call models from its agent steps.
        if not agent.enabled and not attempt:
            raise Refusal(403, "permission", f"agent {name!r} is disabled (enabled = false)")
        return agent

    def _allowed_names(self, agent_name: str, key: GatewayKey | None) -> list[str]:
        agent = self._agent(agent_name, attempt=_for_attempt(key))
        names: list[str] = ["auto", *agent.ladder] if key is None or key.tier is None else [key.tier]
        names.extend(agent.models)
        config = self.runtime.config
        tiers = agent.ladder if key is None or key.tier is None else [t for t in TIERS if t == key.tier]
        for tier in tiers:
            names.extend(config.tiers.models(tier))
        return list(dict.fromkeys(names))

    def _models(self, req: HttpRequest, resp: HttpResponse, agent_name: str, key: GatewayKey | None) -> None:
        names = self._allowed_names(agent_name, key)
        payload = codecs.models_body(names, anthropic_shape="anthropic-version" in req.headers)
        resp.send(200, [("content-type", "application/json")], codecs.dumps(payload))

    def _ollama_tags(self, resp: HttpResponse, agent_name: str, key: GatewayKey | None, path: str) -> None:
        names = self._allowed_names(agent_name, key) if path == "/api/tags" else []
        models = [
            {"name": n, "model": n, "modified_at": "2026-01-01T00:00:00Z", "size": 0, "digest": "", "details": {}}
            for n in names
        ]
        resp.send(200, [("content-type", "application/json")], codecs.dumps({"models": models}))

    async def _ollama_show(self, req: HttpRequest, resp: HttpResponse, agent_name: str, key: GatewayKey | None) -> None:
        """``POST /api/show`` about the model that would serve a chat request for that name: Ollama's own answer
        when it is an Ollama model (forwarded, the name replaced), the model files' facts for in-process MLX
        (architecture, context length, parameters, quantization; text only), the catalog's for an API model."""
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = json.loads(req.body or b"{}") if content_type in ("application/json", "") else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise Refusal(400, "invalid_request", 'the body must be a JSON object such as {"model": "local"}')
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise Refusal(400, "invalid_request", "model is required")
        agent = self._agent(agent_name, attempt=_for_attempt(key))
        probe = codecs.InboundRequest(
            protocol="ollama_chat",
            model=name,
            stream=False,
            messages=(),
            tools=(),
            max_output_tokens=None,
            temperature=None,
            stop=(),
            include_usage=False,
            needs_server_state=False,
            body={},
        )
        candidate, tried = self._serving_candidate(probe, agent_name, agent, key)
        if candidate is None:
            raise Refusal(
                404,
                "not_found",
                f"model '{name}' not found: nothing may serve it for agent {agent_name!r} ("
                + ("; ".join(tried) or "no tier has models")
                + ")",
            )
        served = [("x-supervisor-served-model", candidate.key)]
        pcfg = self.runtime.config.providers[candidate.provider]
        if pcfg.kind == "ollama":
            host = (pcfg.host or "http://127.0.0.1:11434").rstrip("/")
            url = (host if host.startswith(("http://", "https://")) else f"http://{host}") + "/api/show"
            forwarded = {k: v for k, v in body.items() if k not in ("model", "name")} | {"model": candidate.model_id}
            headers = {"content-type": "application/json", **dict(pcfg.headers)}
            try:
                async with (
                    asyncio.timeout(self.config.upstream_timeout_s),
                    self.upstream().stream("POST", url, content=codecs.dumps(forwarded), headers=headers) as upstream,
                ):
                    raw = await upstream.aread()
            except (TimeoutError, httpx.HTTPError) as exc:
                raise Refusal(502, "unavailable", f"{candidate.key}: Ollama did not answer /api/show ({exc})") from None
            content = upstream.headers.get("content-type", "application/json")
            resp.send(upstream.status_code, [("content-type", content), *served], self._scrub_bytes(raw))
            return
        window = candidate.spec.context_window
        if pcfg.kind == "mlx":
            try:
                backend = self.runtime.pool.get(candidate.provider)
                facts = await asyncio.to_thread(backend.model_facts, candidate.model_id)  # type: ignore[attr-defined]
            except (BackendError, OSError, ValueError) as exc:
                raise Refusal(404, "not_found", self._scrub(f"{candidate.key}: {exc}")) from None
            arch = facts.architecture or "unknown"
            context = min(c for c in (facts.context_length, window) if c) if facts.context_length or window else None
            info: dict[str, Any] = {"general.architecture": arch}
            if facts.parameter_count:
                info["general.parameter_count"] = facts.parameter_count
            if context:
                info[f"{arch}.context_length"] = context
            details = {
                "parent_model": "",
                "format": facts.format,
                "family": arch,
                "families": [arch],
                "parameter_size": _human_number(facts.parameter_count) if facts.parameter_count else "",
                "quantization_level": facts.quantization or ("F32" if facts.format == "gguf" else ""),
            }
            capabilities = ["completion"]  # the in-process backend serves text, not tool calls
        else:
            arch = candidate.provider
            info = {"general.architecture": arch, f"{arch}.context_length": window}
            details = {
                "parent_model": "",
                "format": pcfg.kind,
                "family": candidate.provider,
                "families": [candidate.provider],
                "parameter_size": "",
                "quantization_level": "",
            }
            capabilities = ["completion", *(["tools"] if self._supports_tools(candidate) else [])]
        payload = {
            "modelfile": f"# served by frugal-supervisor: {candidate.key}\n",
            "parameters": "",
            "template": "",
            "details": details,
            "model_info": info,
            "capabilities": capabilities,
            "modified_at": "1970-01-01T00:00:00Z",
        }
        resp.send(200, [("content-type", "application/json"), *served], codecs.dumps(payload))

    # ----------------------------------------------------------------------------------------------------
    # One model request

    async def _serve(
        self,
        req: HttpRequest,
        resp: HttpResponse,
        codec: Any,
        inbound: codecs.InboundRequest,
        agent_name: str,
        key: GatewayKey | None,
        auth: str,
    ) -> None:
        runtime = self.runtime
        watch = self._watch()
        if watch is not None:
            watch.model_requests += 1
        attempt_key = _for_attempt(key)  # an agent step's attempt: its run decided
        agent = self._agent(agent_name, attempt=attempt_key)
        self._check_paused(agent_name, inbound.model)
        try:
            route = resolve(runtime.config, runtime.router, agent_name, agent, key, inbound.model)
        except RouteRefused as exc:
            self._refused(agent_name, inbound.model, exc.status, exc.message)
            raise Refusal(exc.status, exc.kind, exc.message) from None
        limits = self._limits(agent_name, agent, key)
        tried: list[str] = list(route.skipped)
        for candidate, substituted in route.candidates:
            if candidate.tier == "frontier" and agent.frontier == "never":
                tried.append(f'{candidate.key}: frontier = "never" for agent {agent_name}')
                continue
            mode = self._mode(inbound, candidate)
            if inbound.needs_server_state and mode != "pass_through":
                tried.append(
                    f"{candidate.key}: its provider does not speak OpenAI's Responses API, which keeps the state"
                )
                continue
            if mode == "translate":
                try:
                    codecs.check_translatable(inbound)
                except codecs.CodecError as exc:
                    tried.append(f"{candidate.key}: {exc.message}")
                    continue
            if inbound.tools and mode == "translate" and not self._supports_tools(candidate):
                tried.append(f"{candidate.key}: cannot call tools, and the request has tools")
                continue
            served_headers = [("x-supervisor-served-model", candidate.key)]
            if substituted:
                served_headers.append(("x-supervisor-substituted", f"{inbound.model} -> {candidate.key}"))
            approval_id: int | None = None
            # An agent step's frontier attempt was approved before its program started.
            if candidate.tier == "frontier" and agent.frontier == "ask" and not attempt_key:
                approval_id = await self._frontier_approval(
                    resp, codec, inbound, agent, agent_name, candidate, served_headers
                )
            max_out = self._max_output(agent, key, candidate, inbound)
            request = Request(
                model=candidate.model_id,
                messages=inbound.messages,
                max_output_tokens=max_out,
                temperature=inbound.temperature if inbound.temperature is not None else 0.0,
                stop=inbound.stop,
                timeout_s=self.config.upstream_timeout_s,
                context_window=candidate.spec.context_window,
                tools=inbound.tools,
                json_schema=inbound.json_schema,
            )
            count = await self._count(candidate, request, req.body)
            if mode == "pass_through" and _has_hidden_input(inbound):
                # The prompt includes a conversation kept on the server, which the body does not show: the worst
                # case is a full context window, so the caps hold whatever it holds.
                count = TokenCount(max(count.tokens, candidate.spec.context_window - max_out), exact=False)
            window_limits = limits
            if approval_id is not None:
                row = runtime.ledger.approval(approval_id)
                if row is not None and row.budget_micros is not None:
                    window_limits = _with(limits, approval_micros=row.budget_micros)
            try:
                pending = runtime.caller.open(
                    agent=agent_name,
                    run_id=key.run_id if key else None,
                    step=(key.step if key and key.step else GATEWAY_STEP),
                    step_id=None,
                    attempt=(key.attempt if key and key.attempt else 1),
                    candidate=candidate,
                    request=request,
                    limits=window_limits,
                    count=count,
                    tags=CallTags(
                        requested_model=inbound.model, auth=auth, key_id=key.id if key else None, via="gateway"
                    ),
                    key_id=key.id if key else None,
                    approval_id=approval_id if window_limits is not limits else None,
                    sent=True,
                )
            except ContextOverflow as exc:
                tried.append(str(exc))
                continue
            if isinstance(pending, CapHit):
                self._cap_refusal(agent_name, inbound.model, pending)
            if substituted:
                runtime.bus.publish(
                    ModelSubstituted(
                        agent=agent_name,
                        run_id=key.run_id if key else None,
                        requested=inbound.model,
                        served=candidate.key,
                        tier=candidate.tier,
                        reason=route.reason,
                    )
                )
            try:
                if mode == "pass_through":
                    await self._relay(req, resp, codec, inbound, candidate, pending, served_headers)
                else:
                    await self._translate(resp, codec, inbound, candidate, request, pending, served_headers)
            except asyncio.CancelledError:
                if not pending.done:
                    pending.cancelled("the client went away or the gateway stopped")
                raise
            except ClientGone:
                if not pending.done:
                    pending.cancelled("the client went away")
                raise
            finally:
                if not pending.done:
                    pending.cancelled("interrupted")
            self._after_call(agent_name, agent, pending, key)
            return
        offline = runtime.config.offline and any("offline" in t for t in tried)
        message = f"no model may serve {inbound.model!r} for agent {agent_name!r}: " + (
            "; ".join(tried) or "no tier has models"
        )
        if inbound.needs_server_state and not offline:
            message = (
                "requests that need server state (previous_response_id, store, conversation, item_reference) are "
                "served only by a model whose provider speaks OpenAI's Responses API (api.openai.com, or "
                f"`responses = true` under its [providers] table); send the whole conversation instead. {message}"
            )
        if offline:
            self._refused(agent_name, inbound.model, 503, message)
            raise Refusal(503, "offline", f"offline mode: API tiers are off. {message}")
        self._refused(agent_name, inbound.model, 400, message)
        raise Refusal(400, "invalid_request", message)

    def _mode(self, inbound: codecs.InboundRequest, candidate: Candidate) -> str:
        pcfg = self.runtime.config.providers[candidate.provider]
        kind = pcfg.kind
        if inbound.protocol == "openai_responses" and kind == "openai_compat" and self._speaks_responses(pcfg):
            return "pass_through"
        upstream = UPSTREAM_PROTOCOL.get(kind)
        if upstream == "ollama" and inbound.protocol in ("ollama_chat", "ollama_generate"):
            return "pass_through"
        if upstream is not None and upstream == inbound.protocol:
            return "pass_through"
        return "translate"

    def _speaks_responses(self, pcfg: ProviderConfig) -> bool:
        """Whether an OpenAI-compatible server also speaks the Responses API: ``responses`` in its config, else
        only OpenAI's own (api.openai.com)."""
        if pcfg.responses is not None:
            return pcfg.responses
        from urllib.parse import urlsplit

        return (urlsplit(pcfg.base_url or "").hostname or "") == "api.openai.com"

    def _supports_tools(self, candidate: Candidate) -> bool:
        try:
            backend = self.runtime.pool.get(candidate.provider)
        except BackendError:
            return False
        return bool(getattr(backend, "supports_tools", False))

    def _limits(self, agent_name: str, agent: AgentConfig, key: GatewayKey | None) -> CapLimits:
        config = self.runtime.config
        cached = self._limits_cache.get(agent_name)
        if cached is not None and cached[0] is config and cached[1] is agent:
            limits = cached[2]
        else:
            limits = cap_limits(config, agent)
            self._limits_cache[agent_name] = (config, agent, limits)
        if key is None:
            return limits
        return _with(limits, key_micros=key.max_micros, key_tokens=key.max_tokens, key_calls=key.max_calls)

    def _max_output(
        self, agent: AgentConfig, key: GatewayKey | None, candidate: Candidate, inbound: codecs.InboundRequest
    ) -> int:
        ceiling = (key.max_output_tokens if key else None) or agent.max_output_tokens or self.config.max_output_tokens
        ceiling = min(ceiling, candidate.spec.max_output_tokens)
        asked = inbound.max_output_tokens
        return ceiling if asked is None else max(1, min(asked, ceiling))

    async def _count(self, candidate: Candidate, request: Request, raw: bytes) -> TokenCount:
        """The prompt's worst-case size: the whole body at 3 bytes per token (tool schemas count too), or the
        model's own tokenizer for in-process MLX."""
        backend = None
        with contextlib.suppress(BackendError):
            backend = self.runtime.pool.get(candidate.provider)
        if backend is not None and backend.kind == "mlx":
            count: TokenCount = await asyncio.to_thread(backend.count_tokens, request)
            return count
        return TokenCount(math.ceil(len(raw) / 3) + 16, exact=False)

    def _check_paused(self, agent_name: str, requested: str) -> None:
        row = self.runtime.ledger.agent(agent_name)
        if row is None or row["state"] != "paused":
            return
        trips = self.runtime.ledger.events_after(0, agent=agent_name, kinds=["breaker_tripped"])
        evidence = ""
        if trips and row["paused_by"] == "breaker":
            data = trips[-1].data
            evidence = f" Evidence: {data.get('message', '')} {json.dumps(data.get('evidence', {}))}"
        message = (
            f"agent {agent_name!r} is paused ({row['state_reason']}).{evidence} "
            f"`supervisor resume {agent_name}` lets it call models again"
        )
        self._refused(agent_name, requested, 403, message)
        raise Refusal(403, "permission", message)

    def _refused(self, agent: str, requested: str, status: int, reason: str, approval_id: int | None = None) -> None:
        self.runtime.bus.publish(
            GatewayRefused(agent=agent, requested=requested, reason=reason, status=status, approval_id=approval_id)
        )

    def _cap_refusal(self, agent: str, requested: str, hit: CapHit) -> NoReturn:
        watch = self._watch()
        if watch is not None:
            watch.cap_reached(hit)  # the attempt's program is stopped: its next call would be refused too
        now = utcnow()
        reset_s = int((hit.resets_at - now).total_seconds()) + 1 if hit.resets_at else 3600
        message = f"{hit.describe()}. Nothing was sent. Raise the cap in supervisor.toml, or wait for the reset."
        self._refused(agent, requested, 429, message)
        raise Refusal(429, "cap_reached", message, retry_after_s=max(61, reset_s))

    def _after_call(
        self, agent_name: str, agent: AgentConfig, pending: PendingCall, key: GatewayKey | None = None
    ) -> None:
        """The runaway breaker watches gateway traffic like the runtime's: rising input with lean output, or an
        hour's spend over its share of the day cap, pauses the agent; its next request is refused. An agent
        step attempt's calls are watched within the attempt (its key), and a trip stops its program."""
        runtime = self.runtime
        cfg = runtime.config.file.breaker
        run_id = key.run_id if key is not None else None
        attempt_key = key.id if key is not None and run_id is not None else None
        trip = None
        usage = pending.finished_usage
        # The rising-input rule needs every call of its window (the agent's step, or the attempt's key) to have
        # lean output, and this call is the newest of the window (nothing awaited since it was recorded): an
        # answer that is not lean rules it out without reading the ledger.
        lean = usage is None or (usage.output or 0) < cfg.max_output_ratio * (usage.prompt_tokens or 0)
        if lean:
            trip = breaker.check_rising_input(runtime.ledger, agent_name, pending.step, cfg, key_id=attempt_key)
        now = time.monotonic()
        if trip is None and agent.caps.day_usd and now - self._hourly_checked.get(agent_name, 0.0) >= 1.0:
            # Summing an hour of spend after every call would grow with the traffic: once a second is enough
            # (the caps themselves are checked on every call, before it is sent).
            self._hourly_checked[agent_name] = now
            limits = cap_limits(runtime.config, agent)
            trip = breaker.check_hourly_spend(runtime.ledger, agent_name, limits.agent_day_micros, cfg, utcnow())
        if trip is not None:
            from supervisor.runtime.run import trip_breaker

            trip_breaker(runtime, agent_name, run_id, trip)

    # ----------------------------------------------------------------------------------------------------
    # Token counting (Anthropic's count_tokens), only where the count is exact

    def _serving_candidate(
        self, inbound: codecs.InboundRequest, agent_name: str, agent: AgentConfig, key: GatewayKey | None
    ) -> tuple[Candidate | None, list[str]]:
        """The model that would serve ``inbound`` (the first candidate the agent may use that can take it),
        without reserving anything; and why the others were passed over."""
        try:
            route = resolve(self.runtime.config, self.runtime.router, agent_name, agent, key, inbound.model)
        except RouteRefused as exc:
            raise Refusal(exc.status, exc.kind, exc.message) from None
        tried = list(route.skipped)
        for candidate, _substituted in route.candidates:
            if candidate.tier == "frontier" and agent.frontier == "never":
                tried.append(f'{candidate.key}: frontier = "never" for agent {agent_name}')
                continue
            if self._mode(inbound, candidate) == "translate":
                try:
                    codecs.check_translatable(inbound)
                except codecs.CodecError as exc:
                    tried.append(f"{candidate.key}: {exc.message}")
                    continue
                if inbound.tools and not self._supports_tools(candidate):
                    tried.append(f"{candidate.key}: cannot call tools, and the request has tools")
                    continue
            return candidate, tried
        return None, tried

    async def _count_tokens(
        self,
        req: HttpRequest,
        resp: HttpResponse,
        inbound: codecs.InboundRequest,
        agent_name: str,
        key: GatewayKey | None,
    ) -> None:
        """``POST /v1/messages/count_tokens`` for the model that would serve the same Messages request: Anthropic's
        own count for a Claude route (forwarded: the upstream speaks Anthropic), the model's own tokenizer and
        chat template for in-process MLX (the prompt size the call would record), and 404 for everything else,
        because an understated count is worse than none. Counting sends no model request and costs nothing:
        nothing is reserved or recorded."""
        agent = self._agent(agent_name, attempt=_for_attempt(key))
        self._check_paused(agent_name, inbound.model)
        candidate, tried = self._serving_candidate(inbound, agent_name, agent, key)
        if candidate is None:
            raise Refusal(
                404,
                "not_found",
                f"no model may serve {inbound.model!r} for agent {agent_name!r}, so no count: "
                + ("; ".join(tried) or "no tier has models"),
            )
        served = [("x-supervisor-served-model", candidate.key)]
        kind = self.runtime.config.providers[candidate.provider].kind
        if kind == "anthropic":
            await self._forward_count(req, resp, inbound, candidate, served)
            return
        if kind == "mlx":
            request = Request(
                model=candidate.model_id,
                messages=inbound.messages,
                max_output_tokens=1,
                context_window=candidate.spec.context_window,
            )
            try:
                backend = self.runtime.pool.get(candidate.provider)
                count: TokenCount = await asyncio.to_thread(backend.count_tokens, request)  # may load the model
            except BackendError as exc:
                raise Refusal(
                    503 if exc.retryable else 400,
                    "unavailable" if exc.retryable else "invalid_request",
                    self._scrub(str(exc)),
                ) from None
            if count.exact:
                resp.send(
                    200, [("content-type", "application/json"), *served], codecs.dumps({"input_tokens": count.tokens})
                )
                return
        raise Refusal(
            404,
            "not_found",
            f"count_tokens is answered only where the count is exact: {candidate.key} would serve this request, "
            f"and the gateway has no exact tokenizer for it (an estimate could understate the prompt)",
        )

    async def _forward_count(
        self,
        req: HttpRequest,
        resp: HttpResponse,
        inbound: codecs.InboundRequest,
        candidate: Candidate,
        served: list[tuple[str, str]],
    ) -> None:
        from supervisor.backends._http import CallSite, error_from_transport
        from supervisor.gateway.codecs._common import without_endpoint_fields

        body = without_endpoint_fields(inbound.body)
        body["model"] = candidate.model_id
        try:
            base, headers = self._anthropic_upstream(req, candidate)
        except BackendUnavailable as exc:
            raise Refusal(503, "unavailable", str(exc)) from None
        url = f"{base}/v1/messages/count_tokens"
        try:
            async with (
                asyncio.timeout(self.config.upstream_timeout_s),
                self.upstream().stream("POST", url, content=codecs.dumps(body), headers=headers) as upstream,
            ):
                raw = await upstream.aread()
        except TimeoutError:
            raise Refusal(
                504, "timeout", f"{candidate.key} did not count within {self.config.upstream_timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            pcfg = self.runtime.config.providers[candidate.provider]
            error = error_from_transport(
                CallSite(candidate.provider, candidate.model_id, url, pcfg.api_key_env), exc, response_started=False
            )
            raise Refusal(502, "unavailable", self._scrub(str(error))) from None
        out = [("content-type", upstream.headers.get("content-type", "application/json"))]
        out += [(h, upstream.headers[h]) for h in ("retry-after", *FORWARDED_HEADERS) if h in upstream.headers]
        resp.send(upstream.status_code, out + served, self._scrub_bytes(raw))

    # ----------------------------------------------------------------------------------------------------
    # Frontier approvals

    async def _frontier_approval(
        self,
        resp: HttpResponse,
        codec: Any,
        inbound: codecs.InboundRequest,
        agent: AgentConfig,
        agent_name: str,
        candidate: Candidate,
        served_headers: list[tuple[str, str]],
    ) -> int | None:
        """An open approval window's id (its budget caps the call), or None after using a one-time approval;
        otherwise a pending request is created (or reused) and the request refused, or held open."""
        ledger = self.runtime.ledger
        now = utcnow()
        window = ledger.approval_window(agent_name, GATEWAY_STEP, "frontier", now)
        if window is not None:
            return int(window.id)
        row = ledger.open_approval_for(agent_name, GATEWAY_STEP, "frontier")
        if row is not None and row.state == "approved" and row.window_until is None and ledger.consume_approval(row.id):
            return None
        approval_id = (
            row.id
            if row is not None and row.state == "pending"
            else self._request_approval(agent_name, candidate, inbound)
        )
        hold = min(agent.hold_open_s or 0.0, self.config.hold_open_max_s)
        if hold > 0:
            approved, window_id = await self._hold(resp, codec, inbound, approval_id, hold, served_headers)
            if approved:
                return window_id
        how = (
            f"`supervisor approve {approval_id}` (or `y` in the TUI) lets one request through; "
            f"`supervisor approve {approval_id} --window 15m --up-to 2` opens a window; then retry"
        )
        message = f"frontier model {candidate.key} needs approval #{approval_id} for agent {agent_name!r}: {how}"
        self._refused(agent_name, inbound.model, 429, message, approval_id)
        raise Refusal(429, "approval_required", message, retry_after_s=120)

    def _request_approval(self, agent_name: str, candidate: Candidate, inbound: codecs.InboundRequest) -> int:
        from supervisor.backends.base import estimate_tokens

        runtime = self.runtime
        now = utcnow()
        prompt = estimate_tokens(inbound.messages)
        output = inbound.max_output_tokens or self.config.max_output_tokens
        estimate = estimate_call(candidate.spec, 0, prompt, min(output, candidate.spec.max_output_tokens), now)
        left = caps_left(runtime.ledger, runtime.config, agent_name, None, now)
        reason = f"gateway request for {inbound.model!r} routed to the frontier ({prompt:,} prompt tokens)"
        approval_id = int(
            runtime.ledger.request_approval(
                agent=agent_name,
                run_id=None,
                step=GATEWAY_STEP,
                tier="frontier",
                model=candidate.key,
                reason=reason,
                est_cold_micros=estimate.cold_micros,
                est_warm_micros=estimate.warm_micros,
                caps_left=left,
                simulated=candidate.simulated,
            )
        )
        runtime.bus.publish(
            EscalationRequested(
                agent=agent_name,
                approval_id=approval_id,
                step=GATEWAY_STEP,
                model=candidate.key,
                reason=reason,
                est_cold_micros=estimate.cold_micros,
                est_warm_micros=estimate.warm_micros,
                caps_left=left,
                simulated=candidate.simulated,
            )
        )
        return approval_id

    async def _hold(
        self,
        resp: HttpResponse,
        codec: Any,
        inbound: codecs.InboundRequest,
        approval_id: int,
        hold_s: float,
        served_headers: list[tuple[str, str]],
    ) -> tuple[bool, int | None]:
        """Wait up to ``hold_s`` for a decision, pinging the client (a streaming client with the protocol's own
        keep-alive, a non-streaming one with whitespace before its JSON body): (True, the window's id or None)
        once approved; denied -> refused; still undecided -> (False, None), and the caller refuses (the request
        stays pending for the next try). After the first ping the status (200) is sent: a refusal or an
        upstream error arrives in-band, as the protocol's error event or error body."""
        ledger = self.runtime.ledger
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold_s
        next_ping = loop.time() + self.config.ping_interval_s
        encoder = None
        while loop.time() < deadline:
            row = ledger.approval(approval_id)
            if row is None:
                return False, None
            if row.state == "denied":
                raise Refusal(403, "permission", f"approval #{approval_id} was denied")
            if row.state == "approved":
                if row.window_until is not None:
                    return True, int(row.id)
                if ledger.consume_approval(approval_id):
                    return True, None
            if loop.time() >= next_ping:
                if not inbound.stream:
                    # A JSON body may start with whitespace: the status goes out now (200) and a space every
                    # interval keeps the client's read timeout (and any proxy's) from firing while a human decides.
                    if not resp.started:
                        resp.start(200, [("content-type", "application/json"), *served_headers])
                    resp.write(b" ")
                else:
                    if encoder is None:
                        encoder = codec.stream(model=inbound.model, include_usage=inbound.include_usage)
                        resp.start(
                            200, [("content-type", encoder.media_type), ("cache-control", "no-cache"), *served_headers]
                        )
                    ping = encoder.ping()
                    if ping:
                        resp.write(ping)
                next_ping = loop.time() + self.config.ping_interval_s
            await asyncio.sleep(APPROVAL_POLL_S)
        return False, None

    # ----------------------------------------------------------------------------------------------------
    # Pass-through relay

    def _upstream_request(
        self, req: HttpRequest, inbound: codecs.InboundRequest, candidate: Candidate, body: dict[str, Any]
    ) -> tuple[str, dict[str, str]]:
        pcfg = self.runtime.config.providers[candidate.provider]
        backend = self.runtime.pool.get(candidate.provider)
        headers = {"content-type": "application/json", **dict(pcfg.headers)}
        api_key = backend.api_key if isinstance(backend, HttpBackend) else (lambda _model: None)
        if pcfg.kind == "openai_compat":
            key = api_key(candidate.model_id)
            if key:
                headers["authorization"] = f"Bearer {key}"
            path = "/responses" if inbound.protocol == "openai_responses" else "/chat/completions"
            return f"{(pcfg.base_url or '').rstrip('/')}{path}", headers
        if pcfg.kind == "anthropic":
            base, headers = self._anthropic_upstream(req, candidate)
            return f"{base}/v1/messages", headers
        host = (pcfg.host or "http://127.0.0.1:11434").rstrip("/")
        if not host.startswith(("http://", "https://")):
            host = f"http://{host}"
        path = "/api/chat" if inbound.protocol == "ollama_chat" else "/api/generate"
        return host + path, headers

    def _anthropic_upstream(self, req: HttpRequest, candidate: Candidate) -> tuple[str, dict[str, str]]:
        """The base URL of an Anthropic provider and the headers a forwarded request carries (our key, the
        client's API version and betas)."""
        pcfg = self.runtime.config.providers[candidate.provider]
        backend = self.runtime.pool.get(candidate.provider)
        headers = {"content-type": "application/json", **dict(pcfg.headers)}
        key = backend.api_key(candidate.model_id) if isinstance(backend, HttpBackend) else None
        if key:
            headers["x-api-key"] = key
        headers["anthropic-version"] = req.headers.get("anthropic-version", pcfg.anthropic_version)
        if "anthropic-beta" in req.headers:
            headers["anthropic-beta"] = req.headers["anthropic-beta"]
        return (pcfg.base_url or "").rstrip("/"), headers

    async def _relay(
        self,
        req: HttpRequest,
        resp: HttpResponse,
        codec: Any,
        inbound: codecs.InboundRequest,
        candidate: Candidate,
        pending: PendingCall,
        served_headers: list[tuple[str, str]],
    ) -> None:
        from supervisor.backends._http import CallSite, error_from_response, error_from_transport

        pcfg = self.runtime.config.providers[candidate.provider]
        max_tokens_key = None
        if pcfg.kind == "openai_compat":
            max_tokens_key = self._max_tokens_keys.get(pcfg.base_url or "")
            if max_tokens_key is None:
                from supervisor.backends.openai_compat import max_tokens_field

                max_tokens_key = self._max_tokens_keys[pcfg.base_url or ""] = max_tokens_field(pcfg.base_url or "")
        body = codec.pass_through_body(
            inbound,
            upstream_model=candidate.model_id,
            max_output_tokens=pending.max_output_tokens,
            max_tokens_key=max_tokens_key,
        )
        try:
            url, headers = self._upstream_request(req, inbound, candidate, body)
        except BackendUnavailable as exc:
            pending.release(f"unavailable: {exc.error_class}")
            raise Refusal(503, "unavailable", str(exc)) from None
        backend = self.runtime.pool.get(candidate.provider)
        site = CallSite(
            candidate.provider, candidate.model_id, url, pcfg.api_key_env, getattr(backend, "_api_key", None)
        )
        tee = codec.usage_tee(streaming=inbound.stream, request=inbound)
        drop_usage_chunk = inbound.protocol == "openai_chat" and inbound.stream and not inbound.include_usage
        pending.mark_sent()
        t0 = time.monotonic()
        ttft: float | None = None
        started = False
        try:
            async with (
                asyncio.timeout(self.config.upstream_timeout_s),
                self.upstream().stream("POST", url, content=codecs.dumps(body), headers=headers) as upstream,
            ):
                if upstream.status_code >= 400:
                    raw = await upstream.aread()
                    error = error_from_response(site, upstream.status_code, upstream.headers, raw)
                    pending.fail(error)
                    if resp.started:  # held open: the status (200) is sent; the error goes in-band
                        if resp.media_type == "application/json":
                            resp.write(self._scrub_bytes(raw))
                        else:
                            resp.write(
                                codec.stream(model="", include_usage=False).error("api_error", self._scrub(str(error)))
                            )
                        resp.end()
                        return
                    out_headers = [("content-type", upstream.headers.get("content-type", "application/json"))]
                    out_headers += [(h, upstream.headers[h]) for h in ("retry-after",) if h in upstream.headers]
                    resp.send(
                        upstream.status_code,
                        out_headers + served_headers,
                        self._scrub(raw.decode("utf-8", "replace")).encode(),
                    )
                    return
                out_headers = [("content-type", upstream.headers.get("content-type", "application/json"))]
                out_headers += [(h, upstream.headers[h]) for h in FORWARDED_HEADERS if h in upstream.headers]
                out_headers += served_headers
                streaming = "json" not in out_headers[0][1] or (
                    inbound.protocol.startswith("ollama") and inbound.stream
                )
                if not streaming:
                    raw = await upstream.aread()
                    tee.feed(raw)
                    ttft = time.monotonic() - t0
                    resp.complete(upstream.status_code, out_headers, self._scrub_bytes(raw))
                else:
                    if not resp.started:  # (a held request already started its response with pings)
                        resp.start(upstream.status_code, [*out_headers, ("cache-control", "no-cache")])
                    started = True
                    splitter = _SSEEvents() if drop_usage_chunk else None
                    # Keys are scrubbed across reads: a key split between two reads is still caught.
                    scrubber = ByteStreamScrubber(self.runtime.ledger.redactor)
                    async for chunk in upstream.aiter_raw():
                        if ttft is None:
                            ttft = time.monotonic() - t0
                        relayed = splitter.without_usage_chunk(chunk) if splitter is not None else chunk
                        resp.write(scrubber.feed(relayed))  # the client first; the usage copy is read after
                        tee.feed(chunk)
                        await resp.drain()
                    if splitter is not None:
                        resp.write(scrubber.feed(splitter.rest()))
                    resp.write(scrubber.flush())
                    resp.end()
        except TimeoutError:
            # The whole call outlived upstream_timeout_s: it may be billed.
            pending.lost(f"no complete answer within {self.config.upstream_timeout_s:g} s")
            if started:
                with contextlib.suppress(ClientGone):
                    resp.write(
                        codec.stream(model=inbound.model, include_usage=False).error("timeout", "upstream timed out")
                    )
                    resp.end()
                return
            raise Refusal(
                504, "timeout", f"{candidate.key} did not answer within {self.config.upstream_timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            error = error_from_transport(
                site, exc, response_started=started, partial_text="", timeout_s=self.config.upstream_timeout_s
            )
            outcome = tee.close()
            if started:
                pending.lost(f"the upstream stream broke: {error.error_class}")
                with contextlib.suppress(ClientGone):
                    encoder = codec.stream(model=inbound.model, include_usage=False)
                    resp.write(encoder.error("api_error", self._scrub(str(error))))
                    resp.end()
                return
            del outcome
            pending.fail(error)
            raise Refusal(
                502 if error.retryable else 400,
                "unavailable" if error.retryable else "invalid_request",
                self._scrub(str(error)),
            ) from None
        total = time.monotonic() - t0
        outcome = tee.close()
        result = Result(
            text=outcome.text_excerpt,
            finish_reason=outcome.finish_reason,
            usage=outcome.usage,
            ttft_s=ttft,
            total_s=total,
            raw_usage=outcome.raw_usage,
        )
        if outcome.usage.input_uncached is not None and outcome.usage.output is not None and outcome.complete:
            pending.finish(result)
        elif outcome.error:
            pending.lost(f"the upstream reported an error mid-stream: {self._scrub(outcome.error)[:200]}", result)
        else:
            pending.lost("the upstream response carried no usage record", result)

    # ----------------------------------------------------------------------------------------------------
    # Translation through a backend

    async def _translate(
        self,
        resp: HttpResponse,
        codec: Any,
        inbound: codecs.InboundRequest,
        candidate: Candidate,
        request: Request,
        pending: PendingCall,
        served_headers: list[tuple[str, str]],
    ) -> None:
        try:
            backend = self.runtime.pool.get(candidate.provider)
        except BackendUnavailable as exc:
            pending.release(exc.error_class)
            raise Refusal(503, "unavailable", str(exc)) from None
        encoder = codec.stream(model=inbound.model, include_usage=inbound.include_usage) if inbound.stream else None

        def on_text(delta: str) -> None:
            if encoder is not None and not resp.disconnected and delta:
                if not resp.started:
                    resp.start(
                        200, [("content-type", encoder.media_type), ("cache-control", "no-cache"), *served_headers]
                    )
                resp.write(encoder.text(delta))

        pending.mark_sent()
        try:
            result = await backend.complete(request, on_text if encoder is not None else None)
        except BackendError as error:
            pending.fail(error)
            if resp.started and encoder is not None:
                resp.write(encoder.error("api_error", self._scrub(str(error))))
                resp.end()
                return
            if not error.retryable:
                raise Refusal(400, "invalid_request", self._scrub(str(error))) from None
            if error.error_class == "rate_limited":
                raise Refusal(429, "rate_limit", self._scrub(str(error))) from None
            raise Refusal(502, "unavailable", self._scrub(str(error))) from None
        if encoder is not None:
            if not resp.started:
                resp.start(200, [("content-type", encoder.media_type), ("cache-control", "no-cache"), *served_headers])
            resp.write(encoder.finish(result))
            resp.end()
        else:
            resp.complete(
                200,
                [("content-type", "application/json"), *served_headers],
                codec.response(result, model=inbound.model),
            )
        if result.usage.input_uncached is None or result.usage.output is None:
            pending.lost("the backend reported no usage", result)
        else:
            pending.finish(result)


class _SSEEvents:
    """Splits a relayed OpenAI stream into whole events so the usage-only chunk the gateway asked for (and the
    client did not) can be left out; every other event is forwarded as soon as it is complete."""

    def __init__(self) -> None:
        self._rest = b""

    def without_usage_chunk(self, chunk: bytes) -> bytes:
        data = self._rest + chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._rest = data
            return b""
        head, self._rest = data[: end + 2], data[end + 2 :]
        if b'"usage"' not in head:
            return head
        kept = []
        for event in head.split(b"\n\n"):
            if not event:
                continue
            if b'"usage"' in event and _is_usage_only(event):
                continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def rest(self) -> bytes:
        rest, self._rest = self._rest, b""
        return rest


def _is_usage_only(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                payload = json.loads(line[5:])
            except (json.JSONDecodeError, UnicodeDecodeError):
                return False
            return isinstance(payload, dict) and not payload.get("choices") and "usage" in payload
    return False


def _has_hidden_input(inbound: codecs.InboundRequest) -> bool:
    """A Responses request whose prompt includes items stored on the server (a previous response, a
    conversation, item references): its body understates the prompt."""
    body = inbound.body
    if body.get("previous_response_id") is not None or body.get("conversation") is not None:
        return True
    items = body.get("input")
    return isinstance(items, list) and any(isinstance(i, dict) and i.get("type") == "item_reference" for i in items)


def _for_attempt(key: GatewayKey | None) -> bool:
    """Whether ``key`` is an agent step attempt's (bound to a run)."""
    return key is not None and key.run_id is not None


def _human_number(count: int) -> str:
    """A parameter count as Ollama writes it (``format.HumanNumber``): "8B", "3.2B", "134.52M", "500K"."""
    for unit, size, digits in (("B", 1_000_000_000, 1), ("M", 1_000_000, 2)):
        if count >= size:
            number = count / size
            return f"{number:.0f}{unit}" if number == int(number) else f"{number:.{digits}f}{unit}"
    return f"{count / 1000:.0f}K" if count >= 1000 else str(count)


def _with(limits: CapLimits, **changes: Any) -> CapLimits:
    from dataclasses import replace

    return replace(limits, **changes)


@contextlib.asynccontextmanager
async def run_gateway(runtime: Runtime) -> AsyncIterator[Gateway]:
    """A gateway for one run's agent steps when the process hosts none (``supervisor run``): loopback, any free
    port, no per-agent ports (a ``supervisor gateway`` elsewhere may hold them), closed when the run ends."""
    base = runtime.config.file.gateway or GatewayConfig()
    config = base.model_copy(
        update={"host": "127.0.0.1", "port": 0, "shutdown_grace_s": min(base.shutdown_grace_s, ATTEMPT_SETTLE_S)}
    )
    gateway = Gateway(runtime, config, agent_ports=False)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.aclose()


@contextlib.asynccontextmanager
async def hosted_gateway(runtime: Runtime) -> AsyncIterator[Gateway | None]:
    """The gateway of a daemon or a hosted TUI: served when the config has a ``[gateway]`` table, in the same
    loop as the runtime (approvals and caps are one system). A gateway that cannot start is reported as a
    notice and the rest keeps running."""
    if runtime.config.file.gateway is None:
        yield None
        return
    gateway = Gateway(runtime)
    try:
        await gateway.start()
    except SupervisorError as exc:
        runtime.bus.publish(Notice(message=f"gateway not started: {exc.message}; {exc.hint or ''}", level="error"))
        yield None
        return
    runtime.bus.publish(Notice(message=f"gateway listening on {gateway.url}"))
    runtime.gateway = gateway  # the runtime's agent steps use it too
    try:
        yield gateway
    finally:
        if runtime.gateway is gateway:
            runtime.gateway = None
        await gateway.aclose()
