"""The fake Anthropic upstream with ``POST /v1/messages/count_tokens`` as Anthropic serves it.

The body is a Messages request without ``max_tokens``: ``model`` and ``messages`` required,
the other fields only those the endpoint takes (COUNT_FIELDS; anything else, ``max_tokens``
and ``stream`` included, is refused: "Extra inputs are not permitted"), each checked as
``POST /v1/messages`` checks it. Authenticated like the rest. The answer is
``{"input_tokens": N}``, N by the fake's prompt rule (``count_input_tokens``: what a message
with the same prompt reports as its input). Both endpoints are recorded, in arrival order.
"""

from typing import Any

from aiohttp import web

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reject, count_input_tokens, validate
from tests.fakes.fake_server import RECORD_KEY, json_response

COUNT_PATH = "/v1/messages/count_tokens"
COUNT_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control", "output_config", "speed"}
)
ANY_OUTPUT = 1_000_000  # the max_tokens the Messages checks are run with: a count has no output


class FakeCountingAnthropicUpstream(FakeAnthropicUpstream):
    def build_routes(self) -> list[web.RouteDef]:
        return [web.post(COUNT_PATH, self._count_tokens), *super().build_routes()]

    def _should_record(self, request: web.Request) -> bool:
        return super()._should_record(request) or (request.method == "POST" and request.path == COUNT_PATH)

    def counts(self) -> list[Any]:
        """The bodies of the count requests received, in order."""
        return [record.json for record in self.requests if record.path == COUNT_PATH]

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = request[RECORD_KEY].json
        script = self._next_script()
        if script.error_status is not None:
            return self._error(script.error_status, script.error_message, {}, script.error_type)
        try:
            self._check_headers(request)
            if not isinstance(body, dict):
                raise Reject(400, "Request body must be a JSON object")
            refused = sorted(name for name in body if name not in COUNT_FIELDS)
            if refused:
                raise Reject(400, f"{refused[0]}: Extra inputs are not permitted")
            validate({**body, "max_tokens": ANY_OUTPUT}, request.headers["anthropic-version"])
        except Reject as rejection:
            return self._error(rejection.status, rejection.message, {})
        return json_response({"input_tokens": count_input_tokens(body)})
