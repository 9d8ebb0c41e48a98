"""Endpoints that refuse `max_tokens` (OpenAI's newest models) still work everywhere we call them:
Generate, Chat and Evaluate. Our server plays such an endpoint with `refuse_max_tokens`."""

from __future__ import annotations

import httpx
import openai
import pytest

from core.serve.background import BackgroundServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_server(embedded):
    with BackgroundServer(embedded, fault_injection=True, refuse_max_tokens=True) as server:
        yield server


def test_the_server_refuses_max_tokens_like_openai(strict_server):
    client = openai.OpenAI(base_url=strict_server.base_url, api_key="unused", max_retries=0)
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        client.chat.completions.create(model="embedded", messages=hi, max_tokens=4)
    reply = client.chat.completions.create(model="embedded", messages=hi, max_completion_tokens=4)
    assert reply.usage.completion_tokens <= 4


def test_generate_chat_and_evaluate_switch_to_max_completion_tokens(strict_server, tmp_path):
    from core import chat as core_chat
    from core.evals.backends import Endpoint, Target
    from core.evals.retrieval import PasskeyConfig
    from core.evals.runner import Evaluation
    from core.models.generation import SamplingParams
    from core.synth.client import EndpointConfig, Generator

    url = strict_server.base_url
    httpx.delete(strict_server.url + "/_stats").raise_for_status()

    reply = Generator(EndpointConfig(base_url=url, model="embedded", answer_tokens=6)).complete(
        [{"role": "user", "content": "Name a colour."}]
    )
    assert reply.content and reply.completion_tokens <= 6

    target = core_chat.ChatTarget(kind=core_chat.ENDPOINT, base_url=url, endpoint_model="embedded")
    chunks = list(
        core_chat.stream_reply(
            target, [{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=5, temperature=0)
        )
    )
    assert "".join(c.text for c in chunks) and 0 < chunks[-1].completion_tokens <= 5

    evaluation = Evaluation(
        PasskeyConfig(lengths=[200], depths=[50], max_new_tokens=8),
        Target(endpoint=Endpoint(url, "embedded"), tokenizer="embedded"),
        out=tmp_path / "eval",
    )
    assert len(evaluation.run_all()) == 1

    stats = httpx.get(strict_server.url + "/_stats").json()
    # One refusal taught the client; every later request used the new name at once.
    assert stats["by_status"].get("400") == 1
    assert stats["by_status"].get("200") == stats["requests"] - 1
