"""The tool loop behind ``Client.run_tools`` / ``arun_tools``: ask the model, run the functions
it calls, send the results back, until it answers.

    result = client.run_tools(messages, tools=[get_weather, search], max_turns=8, timeout=120)
    result               the final answer (a ChatResult)
    result.transcript    every message: yours, the assistant turns, the tool results
    result.tool_runs     one ToolRun per executed call (name, arguments, output, error, seconds)
    result.total_usage   tokens summed over every turn
    result.turns         how many model calls were made

Rules (docs/tools.md):
- A turn's calls run concurrently when there are several (threads for sync functions in
  ``run_tools``; tasks in ``arun_tools``, sync functions in worker threads); results are appended
  in the order the model made the calls.
- A tool that raises, an unknown tool name and arguments that are not valid JSON or do not fit
  the tool's parameters are reported to the model as an error result ("Error: ..."): the
  exception's type and message with credentials scrubbed, never a traceback.
  ``raise_errors=True`` raises ToolCallError instead.
- ``tool_choice`` applies to the first turn only (a forced call every turn would never end),
  later turns use "auto"; the last allowed turn (``max_turns``) sends ``tool_choice="none"`` so
  the model answers. If it still calls tools there, the result is returned with
  ``max_turns_reached = True`` and those calls are not run.
- A call to a tool without a function (a pydantic model class or a schema-only tool dict) ends
  the loop: that call is the answer, parsed into ``result.parsed``.
- ``timeout`` bounds the whole loop, model calls and tool runs together (a running sync
  function cannot be interrupted; the loop stops waiting for it and raises APITimeoutError).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any

from .errors import APITimeoutError, GenAIError, InvalidInputError, ToolCallError
from .tools import Tool, normalize_tools
from .types import ChatResult, ToolCall, Usage

logger = logging.getLogger("gen_ai")
ERROR_LIMIT = 2000


class ToolRun:
    """One executed tool call: what the model asked and what it was told."""

    __slots__ = ("id", "name", "arguments", "output", "error", "seconds")

    def __init__(self, call: ToolCall) -> None:
        self.id = call.id
        self.name = call.name
        self.arguments = call.arguments
        self.output: Any = None      # the function's return value
        self.error: str | None = None  # the error text sent to the model, if the call failed
        self.seconds = 0.0

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error is not None else f"output={self.output!r}"
        return f"ToolRun({self.name}({self.arguments}) -> {state})"


class _Loop:
    """What run_tools and arun_tools share: the bookkeeping between model calls."""

    def __init__(self, client: Any, messages: Any, tools: Any, max_turns: Any, timeout: Any,
                 tool_choice: Any, raise_errors: bool) -> None:
        if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1:
            raise InvalidInputError(f"max_turns: must be a whole number >= 1, got {max_turns!r}",
                                    suggestion="Pass e.g. max_turns=8.", field="max_turns")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInputError(f"timeout: must be a number of seconds > 0, got {timeout!r}",
                                    suggestion="Pass e.g. timeout=120 (it bounds the whole loop).", field="timeout")
        if not tools:
            raise InvalidInputError("tools: run_tools needs at least one tool",
                                    suggestion="Pass tools=[a_function, ...].", field="tools")
        from .client import validate_messages

        self.client = client
        self.transcript: list[dict[str, Any]] = list(validate_messages(messages))
        self.tools = normalize_tools(tools)
        self.by_name: dict[str, Tool] = {t.name: t for t in self.tools}
        self.max_turns = max_turns
        self.timeout = float(timeout)
        self.deadline = time.monotonic() + self.timeout
        self.tool_choice = tool_choice
        self.raise_errors = raise_errors
        self.runs: list[ToolRun] = []
        self.observers: dict[ToolRun, Any] = {}  # tracing of the runs in flight (gen_ai.hooks)
        self.usage: Usage | None = None
        self.turn = 0

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            calls = f"{self.turn} model call{'s' if self.turn != 1 else ''}"
            raise APITimeoutError(f"run_tools did not finish within timeout={self.timeout:g}s "
                                  f"({calls}, {len(self.runs)} tool runs)",
                                  suggestion="Raise timeout, lower max_turns, or make the tools faster.")
        return left

    def choice(self) -> Any:
        if self.turn == self.max_turns - 1 and self.max_turns > 1:
            return "none"
        if self.turn == 0:
            return self.tool_choice
        return None if self.tool_choice in (None, "none") else "auto"

    def record(self, result: ChatResult) -> None:
        self.turn += 1
        if result.usage is not None:
            self.usage = result.usage if self.usage is None else self.usage + result.usage
        self.transcript.append(result.to_message())

    def finish(self, result: ChatResult, reached: bool = False) -> ChatResult:
        result.transcript = self.transcript  # type: ignore[attr-defined]
        result.tool_runs = self.runs  # type: ignore[attr-defined]
        result.total_usage = self.usage  # type: ignore[attr-defined]
        result.turns = self.turn  # type: ignore[attr-defined]
        result.max_turns_reached = reached  # type: ignore[attr-defined]
        return result

    def final_call(self, result: ChatResult) -> ToolCall | None:
        """A call to a tool without a function: the structured answer that ends the loop."""
        for call in result.tool_calls:
            tool = self.by_name.get(call.name)
            if tool is not None and tool.function is None:
                return call
        return None

    def _trace(self, run: ToolRun) -> None:
        """An ``execute_tool`` observation of the run for the client's hooks (tracing), if any."""
        hooks = getattr(self.client, "hooks", None)
        if hooks is not None:
            observer = hooks.begin("execute_tool", params={"tool_name": run.name, "tool_call_id": run.id,
                                                          "arguments": run.arguments})
            if observer is not None:
                self.observers[run] = observer

    def _end_trace(self, run: ToolRun, error: BaseException | None = None) -> None:
        observer = self.observers.pop(run, None) if self.observers else None
        if observer is not None:
            if error is None and run.error is not None:
                error = ToolCallError(run.error[len("Error: "):] if run.error.startswith("Error: ") else run.error,
                                      tool_name=run.name)
            if error is not None:
                observer.end(error=error)
            else:
                observer.end(run)

    def step(self, result: ChatResult) -> tuple[ChatResult | None, list[tuple[ToolRun, Tool | None, Any]],
                                                list[tuple[ToolRun, Tool, Any]]]:
        """After a model turn: (the final result, [], []) when the loop ends here, else
        (None, every requested run, the runs that can be called)."""
        self.record(result)
        calls = result.tool_calls
        if not calls:
            return self.finish(result), [], []
        final = self.final_call(result)
        if final is not None:
            return _finish_structured(self, result, final), [], []
        if self.turn >= self.max_turns:
            return self.finish(result, reached=True), [], []
        prepared = [self.prepare(call) for call in calls]
        runnable = [(run, tool, args) for run, tool, args in prepared if tool is not None]
        return None, prepared, runnable

    def prepare(self, call: ToolCall) -> tuple[ToolRun, Tool | None, Any]:
        """-> (run, tool, arguments); run.error set when the call cannot be run."""
        run = ToolRun(call)
        self.runs.append(run)
        self._trace(run)
        tool = self.by_name.get(call.name)
        if tool is None:
            run.error = (f"Error: there is no tool named {call.name!r}. "
                         f"Available tools: {', '.join(self.by_name)}.")
            return self._failed(run, None)
        try:
            arguments = tool.parse(call.parsed_arguments)
        except GenAIError as exc:
            run.error = f"Error: {exc.message}"
            return self._failed(run, tool)
        except (ValueError, TypeError) as exc:
            run.error = f"Error: invalid arguments for {call.name!r}: {_short(exc)}"
            return self._failed(run, tool)
        return run, tool, arguments

    def _failed(self, run: ToolRun, tool: Tool | None) -> tuple[ToolRun, Tool | None, Any]:
        self._end_trace(run)
        if self.raise_errors:
            raise ToolCallError(run.error[len("Error: "):] if run.error else "tool call failed", tool_name=run.name)
        return run, None, None

    def done(self, run: ToolRun, output: Any, exc: BaseException | None, started: float) -> None:
        run.seconds = time.perf_counter() - started
        if exc is None:
            run.output = output
            self._end_trace(run)
            return
        if not isinstance(exc, GenAIError):  # scrubbed before any hook sees it; the class is kept
            traced = ToolCallError(self.scrub(f"{type(exc).__name__}: {_short(exc)}"), tool_name=run.name)
            traced.error_type = type(exc).__name__
            self._end_trace(run, traced)
        else:
            self._end_trace(run, exc.redact(self.client.secrets()))
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        if self.raise_errors:
            raise ToolCallError(f"tool {run.name!r} raised {type(exc).__name__}: {_short(exc)}",
                                tool_name=run.name) from exc
        run.error = self.scrub(f"Error: {type(exc).__name__}: {_short(exc)}")
        logger.info("gen_ai: tool %r raised %s; reported to the model", run.name, type(exc).__name__)

    def scrub(self, text: str) -> str:
        for secret in self.client._secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text[:ERROR_LIMIT]

    def append_results(self, runs: list[ToolRun]) -> None:
        for run in runs:
            content = run.error if run.error is not None else _as_text(run.output)
            self.transcript.append({"role": "tool", "tool_call_id": run.id, "content": self.scrub(content)})


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= ERROR_LIMIT else text[:ERROR_LIMIT] + "..."


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _call_sync(function: Any, arguments: Any) -> Any:
    """Run a tool function from sync code, in a worker thread (so the loop's timeout can stop
    waiting for it); an async function gets its own event loop there."""
    value = function(**arguments) if isinstance(arguments, dict) else function(arguments)
    if inspect.isawaitable(value):
        async def wait() -> Any:
            return await value

        return asyncio.run(wait())
    return value


def _finish_structured(loop: _Loop, result: ChatResult, call: ToolCall) -> ChatResult:
    tool = loop.by_name[call.name]
    try:
        result.parsed = tool.parse(call.parsed_arguments)
    except (GenAIError, ValueError, TypeError) as exc:
        if loop.raise_errors:
            raise ToolCallError(f"the answer tool {call.name!r} got invalid arguments: {_short(exc)}",
                                tool_name=call.name) from None
        result.parsed = None
    return loop.finish(result)


def run_tools(client: Any, messages: Any, tools: Any, *, max_turns: int = 8, timeout: float = 120,
              tool_choice: Any = None, parallel_tool_calls: bool | None = None, raise_errors: bool = False,
              **options: Any) -> ChatResult:
    loop = _Loop(client, messages, tools, max_turns, timeout, tool_choice, raise_errors)
    while True:
        choice = loop.choice()
        result = client.run_chat_completions(loop.transcript, tools=loop.tools, tool_choice=choice,
                                             parallel_tool_calls=parallel_tool_calls, timeout=loop.remaining(),
                                             **options)
        ended, prepared, runnable = loop.step(result)
        if ended is not None:
            return ended
        if runnable:
            _run_parallel_sync(loop, runnable)
        loop.append_results([run for run, _, _ in prepared])


def _run_parallel_sync(loop: _Loop, runnable: list[tuple[ToolRun, Tool, Any]]) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    pool = ThreadPoolExecutor(max_workers=min(len(runnable), 16), thread_name_prefix="gen_ai-tool")
    try:
        started = time.perf_counter()
        futures = [pool.submit(_call_sync, tool.function, args) for _, tool, args in runnable]
        for (run, _, _), future in zip(runnable, futures, strict=True):
            try:
                output, error = future.result(timeout=loop.remaining()), None
            except FutureTimeout:
                loop.remaining()  # raises APITimeoutError once the deadline has passed
                raise
            except BaseException as exc:  # noqa: BLE001 - reported to the model (see done())
                output, error = None, exc
            loop.done(run, output, error, started)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


async def arun_tools(client: Any, messages: Any, tools: Any, *, max_turns: int = 8, timeout: float = 120,
                     tool_choice: Any = None, parallel_tool_calls: bool | None = None, raise_errors: bool = False,
                     **options: Any) -> ChatResult:
    loop = _Loop(client, messages, tools, max_turns, timeout, tool_choice, raise_errors)
    while True:
        choice = loop.choice()
        result = await client.arun_chat_completions(loop.transcript, tools=loop.tools, tool_choice=choice,
                                                    parallel_tool_calls=parallel_tool_calls,
                                                    timeout=loop.remaining(), **options)
        ended, prepared, runnable = loop.step(result)
        if ended is not None:
            return ended
        if runnable:
            started = time.perf_counter()
            tasks = [asyncio.ensure_future(_call_async(tool.function, args)) for _, tool, args in runnable]
            try:
                done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), loop.remaining())
            except asyncio.TimeoutError:
                loop.deadline = time.monotonic()  # make remaining() raise with the loop's own message
                loop.remaining()
                raise
            for (run, _, _), outcome in zip(runnable, done, strict=True):
                if isinstance(outcome, BaseException):
                    loop.done(run, None, outcome, started)
                else:
                    loop.done(run, outcome, None, started)
        loop.append_results([run for run, _, _ in prepared])


async def _call_async(function: Any, arguments: Any) -> Any:
    if inspect.iscoroutinefunction(function):
        return await (function(**arguments) if isinstance(arguments, dict) else function(arguments))
    value = await asyncio.to_thread(_call_sync, function, arguments)
    return value
