"""The call flow, written once for sync and async.

A flow is a generator that *yields* the I/O it needs (``Send`` a request, ``Sleep`` between
retries) and receives the answer; it holds all the logic: retries with backoff and Retry-After,
guided_json dialect probing and fallback, ``n`` top-ups, schema validation and re-asks.
``run_sync`` and ``run_async`` are the only two drivers: they perform the yielded actions on the
sync or async transport and are the only lines that differ between the two clients.

What the flow learns about the server (dialect, n limit, rejected fields) goes into the
client's ``ServerState`` (``_state.py``), never into the codec; detection runs as a ``Once``
action, which both drivers perform single-flight (one probe per state, however many calls
start together).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from ._state import ServerState, SingleFlight
from .errors import APIConnectionError, APIStatusError, APITimeoutError, GenAIError, SchemaValidationError
from .types import (
    Call,
    ChatResult,
    ChatResults,
    Completion,
    EmbeddingCall,
    EmbeddingPart,
    Embeddings,
    RawResponse,
    Request,
    Usage,
    chat_result,
)

logger = logging.getLogger("gen_ai")


class Send:
    """Action: perform ``request`` (a stream is opened rather than read when request.stream)."""

    __slots__ = ("request", "timeout")

    def __init__(self, request: Request, timeout: float) -> None:
        self.request = request
        self.timeout = timeout


class Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Parallel:
    """Action: run several sub-flows at once (threads for sync, tasks for async); the value
    sent back is the list of their results, in order. The first failure is raised."""

    __slots__ = ("flows",)

    def __init__(self, flows: list["Flow"]) -> None:
        self.flows = flows


class Blocking:
    """Action: call ``fn()``, which may block (a token callable, a credential refresh): inline
    for sync calls, in the shared worker pool for async ones so the event loop never waits."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class Once:
    """Action: run the sub-flow ``make()`` builds, once among concurrent callers of ``flight``;
    callers arriving while it runs wait for it (at most ``timeout`` seconds), then go on."""

    __slots__ = ("flight", "make", "timeout")

    def __init__(self, flight: SingleFlight, make: Callable[[], "Flow"], timeout: float) -> None:
        self.flight = flight
        self.make = make
        self.timeout = timeout


Flow = Generator["Send | Sleep | Parallel | Once | Blocking", Any, Any]


# Values to scrub from errors, or a function giving them (asked only when something failed).
Secrets = Iterable[str] | Callable[[], Iterable[str]]


class Observer:
    """What a caller (the batch runner, a client's hooks) may pass to watch a call's flow.

    ``traces`` False (the batch's gate) means only ``on_retry`` is called: the per-request
    methods cost nothing on the hot path unless hooks asked for them (``gen_ai.hooks``)."""

    traces = False

    def on_retry(self, error: GenAIError, delay: float) -> None:  # pragma: no cover - interface
        pass

    def on_request(self, request: Request, purpose: str = "call") -> None:  # pragma: no cover
        pass

    def on_response(self, response: Any) -> None:  # pragma: no cover - interface
        pass

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:  # pragma: no cover - interface
        pass


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


def run_sync(flow: Flow, transport: Any, secrets: Secrets = ()) -> Any:
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if type(action) is Send:
                    if action.request.stream:
                        value = transport.open_stream(action.request, action.timeout)
                    else:
                        value = transport.send(action.request, action.timeout)
                elif type(action) is Parallel:
                    value = _parallel_sync(action.flows, transport, secrets)
                elif type(action) is Once:
                    _once_sync(action, transport, secrets)
                elif type(action) is Blocking:
                    value = action.fn()
                else:
                    assert type(action) is Sleep
                    time.sleep(action.seconds)
            except GenAIError as exc:
                error = exc
    except GenAIError as exc:
        raise exc.redact(secrets() if callable(secrets) else secrets) from None


async def run_async(flow: Flow, transport: Any, secrets: Secrets = ()) -> Any:
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if type(action) is Send:
                    if action.request.stream:
                        value = await transport.open_stream(action.request, action.timeout)
                    else:
                        value = await transport.send(action.request, action.timeout)
                elif type(action) is Parallel:
                    value = await _parallel_async(action.flows, transport, secrets)
                elif type(action) is Blocking:
                    from ._offload import offload

                    value = await offload(action.fn)
                elif type(action) is Once:
                    await _once_async(action, transport, secrets)
                else:
                    assert type(action) is Sleep
                    import asyncio  # here, not per call: only a retry sleeps

                    await asyncio.sleep(action.seconds)
            except GenAIError as exc:
                error = exc
    except GenAIError as exc:
        raise exc.redact(secrets() if callable(secrets) else secrets) from None


def _once_sync(once: Once, transport: Any, secrets: Secrets) -> None:
    once.flight.run_sync(lambda: run_sync(once.make(), transport, secrets), once.timeout)


async def _once_async(once: Once, transport: Any, secrets: Secrets) -> None:
    await once.flight.run_async(lambda: run_async(once.make(), transport, secrets), once.timeout)


def _parallel_sync(flows: list[Flow], transport: Any, secrets: Secrets) -> list[Any]:
    """Run the flows at once in the process's shared, bounded top-up pool; the first failure is
    raised and the flows that have not started yet are cancelled."""
    if len(flows) == 1:
        return [run_sync(flows[0], transport, secrets)]
    from concurrent.futures import FIRST_EXCEPTION, wait

    from ._offload import topup_pool

    pool = topup_pool()
    futures = [pool.submit(run_sync, flow, transport, secrets) for flow in flows]
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for future in futures:
        if future in done and future.exception() is not None:
            for other in futures:
                other.cancel()
            raise future.exception()
    return [future.result() for future in futures]


async def _parallel_async(flows: list[Flow], transport: Any, secrets: Secrets) -> list[Any]:
    """Run the flows as tasks; when one fails, the others are cancelled (and awaited) before
    the failure is raised, so no request outlives its call."""
    import asyncio

    tasks = [asyncio.ensure_future(run_async(flow, transport, secrets)) for flow in flows]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# --------------------------------------------------------------------------------------------
# Flows
# --------------------------------------------------------------------------------------------


_NOT_SENT = object()  # request_flow: no attempt handed in


def request_flow(codec: Any, call: Call | EmbeddingCall, deadline: float, max_retries: int,
                 observer: Observer | None = None, state: ServerState | None = None,
                 first: "tuple[Request, Any] | None" = None) -> Flow:
    """One logical request: send, retry what is retryable, let the codec adapt on a 4xx.

    Returns a Completion, or for a stream the open 2xx stream response. An adaptation is
    decided by the codec from the request that failed (``request.facts``) and applied to
    ``state`` as a compare-and-set, so concurrent failures move the state one step.

    ``first`` is an attempt already made (``call_sync`` / ``call_async``): ``(request, what
    came back)``, a response, an ``APIConnectionError`` or the parsed Completion; the flow goes
    on from there as if it had sent it.
    """
    if state is None:
        state = ServerState()
    attempt = 0
    adaptations = 0
    while True:
        outcome: Any = _NOT_SENT
        if first is not None:
            request, outcome = first
            first = None
            if type(outcome) is Completion:
                return outcome
            traced = observer is not None and observer.traces
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise APITimeoutError(f"the call did not finish within timeout={call.timeout:g}s (retries included)")
            if codec.blocking_credentials:  # token callables, refreshing AWS credentials
                yield Blocking(codec.refresh_credentials)
            request = codec.build_request(call, state)
            traced = observer is not None and observer.traces
            if traced:
                observer.on_request(request, "retry" if attempt else "call")  # type: ignore[union-attr]
        error: GenAIError
        try:
            if outcome is _NOT_SENT:
                response = yield Send(request, remaining)
            elif isinstance(outcome, APIConnectionError):
                raise outcome
            else:
                response = outcome
        except APIConnectionError as exc:
            error = exc
        else:
            if traced:
                observer.on_response(response)  # type: ignore[union-attr]
            if type(response) is not RawResponse:  # an open 2xx stream
                return response
            if response.status < 300:
                return codec.parse_response(call, response)
            # Scrubbed here, for every provider, before anything logs it: servers echo keys back.
            error = codec.parse_error(response).redact(codec.secrets())
            changes = codec.fallback(call, request, error, state) if adaptations < 4 else None
            if changes is not None:
                state.apply(changes)
                adaptations += 1
                if traced:
                    observer.on_event("request_adapted", {"status": error.status_code,  # type: ignore[union-attr]
                                                          "message": error.message[:200]})
                logger.info("gen_ai: %s rejected a field (%s); adapted the request and sending again",
                            request.url, error.message[:200])
                continue
        if error.provider is None:
            error.provider = codec.provider
            error.redact(codec.secrets())
        if not error.retryable or attempt >= max_retries:
            raise error
        from ._retry import backoff_delay  # here, not at import: it pulls in random

        delay = backoff_delay(attempt, error.retry_after)
        if not call.stream and time.monotonic() + delay >= deadline:
            error.message += f" (not retried: waiting {delay:.1f}s would pass timeout={call.timeout:g}s)"
            error.args = (error.message,)
            raise error
        attempt += 1
        logger.warning("gen_ai: %s %s failed (%s: %s); retry %d of %d in %.2fs",
                       request.method, request.url, type(error).__name__, error.message[:200],
                       attempt, max_retries, delay)
        if observer is not None:
            observer.on_retry(error, delay)
        yield Sleep(delay)


def probe_flow(codec: Any, call: Call, state: ServerState, deadline: float | None = None,
               observer: Observer | None = None) -> Flow:
    """The codec's one-time detection (guided_json dialects), if it wants one: run once per
    state, however many calls arrive at the same moment (the others wait for its answer). It
    spends the call's own time (``deadline``), at most 10 s of it."""
    if codec.probe_request(call, state) is None:
        return
    budget = call.timeout if deadline is None else deadline - time.monotonic()
    timeout = max(0.001, min(10.0, budget))
    yield Once(state.probe, lambda: _detect_flow(codec, call, state, timeout, observer), 2 * timeout)


def _detect_flow(codec: Any, call: Call, state: ServerState, timeout: float,
                 observer: Observer | None = None) -> Flow:
    """Send the probe (and any follow-up the codec asks for); put what was found into the
    state in one update. Returns True when something was learned (the flight is then done)."""
    request = codec.probe_request(call, state)
    found: dict[str, Any] = {}
    while request is not None:
        try:
            response = yield Send(request, timeout)
        except GenAIError:
            response = None
        request = codec.learn(call, request, response, found)
    if observer is not None and observer.traces:
        observer.on_event("dialect_probe", {k: str(v) for k, v in found.items()})
    if found:
        state.learn(found)
        logger.info("gen_ai: detected %s", ", ".join(f"{k}={v}" for k, v in found.items()))
    return bool(found)


# A 400 that names the field n (llama.cpp's server: "Field 'n': Value must be between 1 <= value
# <= 2"; OpenAI: "Invalid 'n': ... Expected a value <= 128").
_N_FIELD_RE = re.compile(r"""(?:field|param(?:eter)?|invalid|argument)\s*['"`]n['"`]""", re.IGNORECASE)
_N_LIMIT_RE = re.compile(r"(?:<=|at most|maximum(?: value)?(?: is)?|up to)\s*(\d+)", re.IGNORECASE)


def rejected_n(error: GenAIError) -> int | None:
    """The largest n a server takes, when ``error`` is its refusal of the n asked for; else None."""
    if not isinstance(error, APIStatusError) or error.status_code not in (400, 422):
        return None
    message = error.message or ""
    if not _N_FIELD_RE.search(message):
        return None
    limits = [int(m) for m in _N_LIMIT_RE.findall(message)]
    return max(1, limits[-1]) if limits else 1


def call_flow(codec: Any, call: Call, max_retries: int, observer: Observer | None = None,
              state: ServerState | None = None, first: "tuple[Request, Any] | None" = None,
              start: float = 0.0, deadline: float = 0.0) -> Flow:
    """A whole non-streaming call: returns ChatResult (n == 1) or ChatResults. ``first`` (with
    the call's ``start`` and ``deadline``) is the first attempt ``call_sync`` / ``call_async`` made
    (n == 1, no schema): the flow goes on from it."""
    if first is None:
        start = time.perf_counter()
        deadline = time.monotonic() + call.timeout
    if state is None:  # a caller without a client's state: learn for this call only
        state = ServerState()
    if call.schema is not None:
        yield from probe_flow(codec, call, state, deadline, observer)
    first_call = call
    if call.n > 1 and state.max_n is not None and call.n > state.max_n:
        first_call = call.replace(n=1)  # learned: this server does not take this n; top up below
    try:
        completion: Completion = yield from request_flow(codec, first_call, deadline, max_retries, observer, state,
                                                         first)
    except APIStatusError as exc:
        limit = rejected_n(exc) if first_call.n > 1 else None
        if limit is None:
            raise
        # Learned once per client: later calls go straight to the top-up.
        state.learn({"max_n": limit})
        logger.info("gen_ai: the server takes n <= %d (%s); asking for %d answers one at a time",
                    limit, exc.message[:120], call.n)
        first_call = call.replace(n=1)
        completion = yield from request_flow(codec, first_call, deadline, max_retries, observer, state)
    if call.n == 1 and call.schema is None and completion.texts:  # the common case, kept lean
        return single_result(completion, start)
    texts = list(completion.texts[: call.n])
    # Where each answer came from (for its reasoning and logprobs).
    sources: list[tuple[Completion, int]] = [(completion, i) for i in range(len(texts))]
    reasons = list(completion.finish_reasons[: call.n])
    tool_calls: list[Any] = [completion.tool_calls_of(i) for i in range(len(texts))]
    usage = completion.usage
    if not texts:
        texts, reasons, tool_calls = [""], [None], [None]
    # The total is the sum over requests (ChatResults.usage). An answer that came in a request of
    # its own carries that request's usage; when one response carried several answers, its usage
    # is on the first of them only (None on the others), so it is never counted twice: the
    # answers' usages always add up to the total.
    usages: list[Usage | None] = [completion.usage] + [None] * (len(texts) - 1)
    # Servers that ignore n (llama-cpp-python), refuse it (llama.cpp's server beyond its slots)
    # and providers without it (Anthropic, Bedrock): ask for the missing answers one at a time,
    # all at once.
    if len(texts) < call.n:
        single = call.replace(n=1)
        extra: list[Completion] = yield Parallel(
            [request_flow(codec, single, deadline, max_retries, observer, state)
             for _ in range(call.n - len(texts))])
        for more in extra:
            sources.append((more, 0))
            texts.append(more.texts[0] if more.texts else "")
            reasons.append(more.finish_reasons[0] if more.finish_reasons else None)
            tool_calls.append(more.tool_calls_of(0))
            usages.append(more.usage)
            usage = _add_usage(usage, more.usage)
    parsed: list[Any] = [None] * len(texts)
    if call.schema is not None:
        for i in range(len(texts)):
            for attempt in range(call.schema_retries + 1):
                try:
                    parsed[i] = call.schema.validate(texts[i])
                    break
                except SchemaValidationError as exc:
                    if reasons[i] == "length":
                        # Cut off by max_tokens: asking again with the same budget is cut off
                        # again, so no re-ask; the error says what to change.
                        from .structured import cut_off

                        raise cut_off(exc, call.max_tokens, codec.provider) from None
                    if attempt >= call.schema_retries:
                        exc.message = (f"guided_json: {exc.message} (after {call.schema_retries} re-ask"
                                       f"{'' if call.schema_retries == 1 else 's'})")
                        exc.args = (exc.message,)
                        exc.provider = codec.provider
                        raise
                    logger.info("gen_ai: answer %d failed guided_json (%s); asking again", i, exc.message)
                    if observer is not None and observer.traces:
                        observer.on_event("schema_reask", {"choice": i, "message": exc.message[:200]})
                    retry_call = _reask_call(call, texts[i], exc)
                    fixed: Completion = yield from request_flow(codec, retry_call, deadline, max_retries, observer,
                                                                state)
                    sources[i] = (fixed, 0)
                    texts[i] = fixed.texts[0] if fixed.texts else ""
                    reasons[i] = fixed.finish_reasons[0] if fixed.finish_reasons else None
                    usages[i] = _add_usage(usages[i], fixed.usage)
                    usage = _add_usage(usage, fixed.usage)
    latency = time.perf_counter() - start
    if call.n == 1:
        result = ChatResult(texts[0], finish_reason=reasons[0], usage=usage, model=completion.model,
                            raw=completion.raw, latency=latency, id=completion.id, parsed=parsed[0],
                            tool_calls=tool_calls[0])
        if sources:
            attach_reasoning(result, *sources[0])
        return result
    results = [
        ChatResult(texts[i], finish_reason=reasons[i], usage=usages[i], model=completion.model,
                   raw=completion.raw, latency=latency, id=completion.id, choice_index=i,
                   parsed=parsed[i], tool_calls=tool_calls[i])
        for i in range(len(texts))
    ]
    for result, (source, j) in zip(results, sources, strict=False):  # no choice: nothing to copy
        attach_reasoning(result, source, j)
    return ChatResults(results, usage, completion.model, latency, completion.raw)


def single_result(completion: Completion, start: float) -> ChatResult:
    """The ChatResult of a one-answer call (n == 1, no schema) whose completion has a text."""
    result = chat_result(completion.texts[0], completion.finish_reasons[0], completion.usage, completion.model,
                         completion.raw, time.perf_counter() - start, completion.id,
                         completion.tool_calls[0] if completion.tool_calls else None)
    if completion.reasonings is not None or completion.reasoning_details is not None \
            or completion.logprobs is not None:
        attach_reasoning(result, completion, 0)
    return result


def _lean_first(codec: Any, call: Call, observer: Observer | None, state: ServerState | None) -> bool:
    """Whether ``call_sync``/``call_async`` make the first attempt themselves: one answer, no
    schema, no stream, nothing observing, the client's state, no credential refresh."""
    return (call.n == 1 and call.schema is None and observer is None and state is not None and not call.stream
            and not codec.blocking_credentials)


def _first_outcome(codec: Any, call: Call, outcome: Any, start: float) -> tuple[Any, Any]:
    """(the result, None) when the first attempt's answer is done; else (None, what the flow
    takes over: the response, or the parsed answer without a text)."""
    if type(outcome) is RawResponse and outcome.status < 300:
        outcome = codec.parse_response(call, outcome)
        if outcome.texts:
            return single_result(outcome, start), None
    return None, outcome


def call_sync(codec: Any, call: Call, max_retries: int, observer: Observer | None, state: ServerState | None,
              transport: Any, secrets: Secrets = ()) -> Any:
    """``run_sync(call_flow(...))``. The common call's first attempt is made here, without the
    flow's generators; whatever it brings back other than a 2xx answer with a text (an error
    status, a connection error, no choices) is handed to ``call_flow`` as its first attempt,
    which goes on from there (retries, adaptation, the result) exactly as if it had sent it."""
    if not _lean_first(codec, call, observer, state):
        return run_sync(call_flow(codec, call, max_retries, observer, state), transport, secrets)
    start = time.perf_counter()
    deadline = time.monotonic() + call.timeout
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # the flow raises the timeout
            return run_sync(call_flow(codec, call, max_retries, observer, state), transport, secrets)
        request = codec.build_request(call, state)
        try:
            outcome: Any = transport.send(request, remaining)
        except APIConnectionError as exc:
            outcome = exc
        else:
            result, outcome = _first_outcome(codec, call, outcome, start)
            if result is not None:
                return result
    except GenAIError as exc:
        raise exc.redact(secrets() if callable(secrets) else secrets) from None
    return run_sync(call_flow(codec, call, max_retries, observer, state, (request, outcome), start, deadline),
                    transport, secrets)


async def call_async(codec: Any, call: Call, max_retries: int, observer: Observer | None,
                     state: ServerState | None, transport: Any, secrets: Secrets = ()) -> Any:
    """``run_async(call_flow(...))``, the first attempt made as in ``call_sync``."""
    if not _lean_first(codec, call, observer, state):
        return await run_async(call_flow(codec, call, max_retries, observer, state), transport, secrets)
    start = time.perf_counter()
    deadline = time.monotonic() + call.timeout
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return await run_async(call_flow(codec, call, max_retries, observer, state), transport, secrets)
        request = codec.build_request(call, state)
        try:
            outcome: Any = await transport.send(request, remaining)
        except APIConnectionError as exc:
            outcome = exc
        else:
            result, outcome = _first_outcome(codec, call, outcome, start)
            if result is not None:
                return result
    except GenAIError as exc:
        raise exc.redact(secrets() if callable(secrets) else secrets) from None
    return await run_async(call_flow(codec, call, max_retries, observer, state, (request, outcome), start,
                                     deadline), transport, secrets)


def attach_reasoning(result: ChatResult, completion: Completion, i: int) -> None:
    """Copy choice ``i``'s thinking text, opaque reasoning items and logprobs onto the result
    (set on the instance only when present)."""
    for name, values in (("reasoning", completion.reasonings), ("reasoning_details", completion.reasoning_details),
                         ("logprobs", completion.logprobs)):
        if values is not None and i < len(values) and values[i] is not None:
            setattr(result, name, values[i])


def stream_open_flow(codec: Any, call: Call, max_retries: int, state: ServerState | None = None,
                     observer: Observer | None = None) -> Flow:
    """Open a stream (with the same retries as any call); returns the open 2xx response. The
    call's timeout covers the dialect probe as well."""
    if state is None:
        state = ServerState()
    deadline = time.monotonic() + call.timeout
    if call.schema is not None:
        yield from probe_flow(codec, call, state, deadline, observer)
    return (yield from request_flow(codec, call, deadline, max_retries, observer, state))


def _reask_call(call: Call, bad_text: str, error: SchemaValidationError) -> Call:
    if call.kind == "chat":
        from .structured import reask_messages  # only guided_json re-asks need it; keeps import gen_ai light

        return call.replace(n=1, messages=reask_messages(call.messages or [], bad_text, error))
    prompt = (f"{call.prompt}{bad_text}\n\nThat JSON was rejected: {error.message}.\n"
              "Corrected JSON only:\n")
    return call.replace(n=1, prompt=prompt)


def _add_usage(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None:
        return b
    return a + b


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class _EmbeddingCodec:
    """A codec's embedding functions under the names ``request_flow`` calls, so embeddings get
    the very same retries, backoff, adaptation and scrubbing as every completion."""

    __slots__ = ("codec", "provider")

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.provider = codec.provider

    def build_request(self, call: Any, state: ServerState) -> Request:
        request: Request = self.codec.build_embedding_request(call, state)
        return request

    def parse_response(self, call: Any, response: RawResponse) -> Any:
        return self.codec.parse_embedding_response(call, response)

    def parse_error(self, response: RawResponse) -> GenAIError:
        error: GenAIError = self.codec.parse_error(response)
        return error

    def fallback(self, call: Any, request: Request, error: GenAIError, state: ServerState) -> Any:
        return self.codec.embedding_fallback(call, request, error, state)

    def secrets(self) -> Any:
        return self.codec.secrets()

    # request_flow asks every codec for these (credentials refreshed off the event loop).
    @property
    def blocking_credentials(self) -> bool:
        return bool(getattr(self.codec, "blocking_credentials", False))

    def refresh_credentials(self) -> None:
        self.codec.refresh_credentials()


def embedding_chunks(codec: Any, call: EmbeddingCall) -> list[EmbeddingCall]:
    """The call split into requests of ``call.batch_size`` inputs (default: the codec's), never
    more than the provider's own per-request limit."""
    size = call.batch_size or codec.embedding_batch_size
    limit = codec.embedding_max_batch
    if limit and size > limit:
        size = limit
    inputs = call.inputs
    if len(inputs) <= size:
        return [call]
    return [call.replace(inputs=inputs[i:i + size]) for i in range(0, len(inputs), size)]


def embedding_flow(codec: Any, call: EmbeddingCall, max_retries: int, observer: Observer | None = None,
                   state: ServerState | None = None) -> Flow:
    """A whole embeddings call: its requests (``max_concurrent`` at a time), then one
    ``Embeddings`` in input order."""
    start = time.perf_counter()
    deadline = time.monotonic() + call.timeout
    view = _EmbeddingCodec(codec)
    if state is None:
        state = ServerState()
    chunks = embedding_chunks(codec, call)
    if len(chunks) == 1:
        parts: list[EmbeddingPart] = [(yield from request_flow(view, call, deadline, max_retries, observer, state))]
    else:
        # max_concurrent lanes, each sending its share of the chunks one after the other.
        lanes = min(max(1, call.max_concurrent), len(chunks))
        done: list[list[EmbeddingPart]] = yield Parallel(
            [_embedding_lane(view, chunks[j::lanes], deadline, max_retries, observer, state) for j in range(lanes)])
        parts = [None] * len(chunks)  # type: ignore[list-item]
        for j, lane_parts in enumerate(done):
            parts[j::lanes] = lane_parts
    vectors: list[Any] = []
    usage: Usage | None = None
    for part in parts:
        vectors.extend(part.vectors)
        usage = _add_usage(usage, part.usage)
    return Embeddings(vectors, usage, parts[0].model, time.perf_counter() - start)


def _embedding_lane(view: _EmbeddingCodec, chunks: list[EmbeddingCall], deadline: float, max_retries: int,
                    observer: Observer | None, state: ServerState) -> Flow:
    parts = []
    for chunk in chunks:
        parts.append((yield from request_flow(view, chunk, deadline, max_retries, observer, state)))
    return parts
