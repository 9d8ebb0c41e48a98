"""The synthetic-data engine without a model: parsing, checks, prompts, contexts, cache, config.

A whitespace "tokenizer" makes token counts exact and obvious. The last tests run the whole
pipeline from a pre-filled reply cache against an address where nothing listens: a run whose
replies are all cached must finish without a single request.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from core import workspace
from core.configs import field_help
from core.data import io, schema
from core.errors import ConfigError, LongCtxError
from core.serve.app import _break
from core.synth import checks, parsing, prompts, sources, tasks
from core.synth.cache import ReplyCache, request_key
from core.synth.client import Cancelled, EndpointConfig, Generator, RequestFailed
from core.synth.config import SynthConfig
from core.synth.job import SynthJob
from core.text.corpus import Document


class WordTokenizer:
    """One token per whitespace-separated word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def words(text: str) -> int:
    return len(text.split())


def _paragraph(i: int, n: int = 20) -> str:
    return " ".join(f"w{i}x{j}" for j in range(n - 1)) + " end."


def _doc(title: str, n_paragraphs: int, size: int = 20) -> Document:
    text = "\n\n".join(_paragraph(i, size) for i in range(n_paragraphs))
    return Document(title, text, f"test:{title}")


def _free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed again: nothing listens


# ---------------------------------------------------------------------------------------------
# Parsing answers.


@pytest.mark.parametrize(
    "text",
    [
        '[{"question": "Q?", "answer": "A"}]',
        'Sure! Here you go:\n```json\n[{"question": "Q?", "answer": "A"},]\n```\nHope it helps.',
        "[{\u201cquestion\u201d: \u201cQ?\u201d, \u201canswer\u201d: \u201cA\u201d}]",
        '{"pairs": [{"Question": "Q?", "Answer": "A"}]}',
        '{"q": "Q?", "a": "A"}',
        '[["Q?", "A"]]',
        "Q: Q?\nA: A",
        "1. **Question:** Q?\n**Answer:** A",
    ],
)
def test_qa_pairs_are_read_leniently(text):
    assert parsing.parse_qa(text) == [parsing.QA("Q?", "A")]


def test_a_cut_array_keeps_its_complete_objects_and_a_broken_answer_reads_nothing():
    cut = '[{"question": "One?", "answer": "1"}, {"question": "Two?", "answer": "2"}, {"quest'
    assert parsing.parse_qa(cut) == [parsing.QA("One?", "1"), parsing.QA("Two?", "2")]
    # What the server's broken_json fault makes of a short answer: nothing is left to read, so
    # the client must re-ask (the integration tests rely on this).
    assert parsing.parse_qa(_break('{"question": "Who kept the lamp?", "answer": "Ann"}')) == []
    assert parsing.parse_qa("I cannot help with that.") == []
    multi_line = "Q: Why?\nA: Because\nit rained.\nQ: When?\nA: Monday"
    assert [p.answer for p in parsing.qa_lines(multi_line)] == ["Because it rained.", "Monday"]


def test_names_are_read_from_json_lists_and_salvaged_from_broken_json():
    assert parsing.parse_names('["Ann Miller", "Tom", "ann miller"]') == ["Ann Miller", "Tom"]
    assert parsing.parse_names('[{"name": "Ann"}, {"name": "Tom"}]') == ["Ann", "Tom"]
    assert parsing.parse_names("Main characters:\n- Ann Miller\n- Tom Baker") == [
        "Ann Miller",
        "Tom Baker",
    ]
    broken = '{"Ann Miller": {"Tom Baker": {"id": 1, "name": "Rosa'
    assert parsing.parse_names(broken) == ["Ann Miller", "Tom Baker"]
    assert parsing.parse_names("no names here") == []
    assert parsing.parse_text("```\nA life.\n```") == "A life."


# ---------------------------------------------------------------------------------------------
# Checks and prompts.


def test_biographies_are_read_with_their_names_even_from_a_cut_off_reply():
    whole = '```json\n[{"name": "Ann Miller", "summary": "Keeps the lamp."}, {"name": "Tom"}]\n```'
    assert parsing.parse_biographies(whole) == [("Ann Miller", "Keeps the lamp.")]
    cut = '[{"name": "Ann", "biography": "Says \\"hi\\".", "age": "4'
    assert parsing.parse_biographies(cut) == [("Ann", 'Says "hi".')]
    assert parsing.parse_biographies("Ann is a sailor.") == []


def test_the_paper_set_asks_at_temperature_0_and_suggests_its_counts():
    with pytest.raises(ConfigError, match="temperature 0"):
        SynthConfig(prompt_set="paper").validate()
    with pytest.raises(ConfigError, match="prompt_set must be one of studio, paper"):
        SynthConfig(prompt_set="gpt4").validate()
    paper = SynthConfig.suggested("paper", "multi-detail")
    assert paper == {
        "temperature": 0.0,
        "qa_per_chunk": 10,
        "multi_mode": "homogeneous",
        "answer_tokens": 4096,
    }
    assert SynthConfig.suggested("paper", "single-detail")["qa_per_chunk"] == 4
    config = SynthConfig(prompt_set="paper", endpoint=EndpointConfig(temperature=0.0)).validate()
    assert SynthConfig.from_dict(config.to_dict()).prompt_set == "paper"


def test_support_flags_answers_absent_from_their_source():
    source = "The lighthouse keeper Ann Miller founded the rowing club in 1921 on Gull Island."
    assert checks.support("Ann Miller founded it in 1921.", source) == 1.0
    assert checks.support("The keeper was founding clubs", source) == 1.0  # shared stem
    assert checks.support("Bob Stone invented the telephone in Paris.", source) < 0.5
    assert checks.support("Yes.", source) == 1.0  # nothing to check


def test_duplicate_questions_are_dropped_exactly_and_near():
    questions = [
        "Who founded the rowing club on Gull Island?",
        "who founded the rowing club on gull island",
        "Who founded the rowing club on the Gull Island?",
        "When was the club founded?",
    ]
    kept, dropped = checks.unique_questions(questions)
    assert kept == [0, 3] and dropped == 2


def test_prompts_fill_known_placeholders_only_and_overrides_are_checked():
    text = prompts.fill('Read {passage} then reply [{"question": "..."}] {unknown}', passage="X")
    assert text == 'Read X then reply [{"question": "..."}] {unknown}'
    problems = prompts.check_overrides(
        {"single_detail": "no placeholder", "nope": "x", "biography": "{name} {passages}"}
    )
    assert len(problems) == 2
    assert "{passage}" in problems[0] and "unknown prompt 'nope'" in problems[1]


# ---------------------------------------------------------------------------------------------
# Documents, chunks, contexts.


def test_chunks_stay_within_the_limit_on_paragraph_boundaries():
    paras = [_paragraph(i) for i in range(10)]  # 20 words each
    pieces = sources.pack(paras, 50, words)
    assert [p.tokens for p in pieces] == [40] * 5
    assert [q for p in pieces for q in p.paragraphs] == paras  # nothing lost, order kept
    long = " ".join(f"Sentence {i} has five words." for i in range(30))  # 150 words
    split = sources.pack([long], 40, words)
    assert all(p.tokens <= 40 for p in split) and 4 <= len(split) <= 5
    assert " ".join(p.text for p in split) == long


def test_document_contexts_respect_the_token_range():
    docs = [_doc("short", 2), _doc("fits", 4), _doc("long", 12)]  # 40, 80, 240 words
    contexts, skipped = sources.document_contexts(docs, 60, 100, words, limit=10)
    assert [c.titles[0] for c in contexts] == ["fits", "long", "long", "long"]
    assert all(60 <= c.tokens <= 100 for c in contexts)
    assert len(skipped) == 1 and skipped[0].startswith("short")
    limited, _ = sources.document_contexts(docs, 60, 100, words, limit=2)
    assert len(limited) == 2
    passages = contexts[0].passages(40, words)
    assert [p.depth for p in passages] == sorted(p.depth for p in passages)
    assert all(p.tokens <= 40 for p in passages)


def test_clusters_group_similar_documents_and_concatenate_them():
    sea = "The ship sailed the ocean; sailors, waves, harbour, anchor and tide."
    space = "The rocket reached orbit; astronauts, planets, comet, moon and stars."
    docs = [
        Document(f"{k}{i}", f"{text} Part {i}.", k)
        for i in range(3)
        for k, text in (("sea", sea), ("space", space))
    ]
    labels = sources.cluster_labels(docs, 2, seed=0)
    by_title = dict(zip([d.title for d in docs], labels, strict=True))
    assert len({by_title[f"sea{i}"] for i in range(3)}) == 1
    assert len({by_title[f"space{i}"] for i in range(3)}) == 1
    assert by_title["sea0"] != by_title["space0"]

    def header(i, title):
        return f"Document {i}: {title}"

    contexts, _ = sources.cluster_contexts(docs, labels, 20, 60, words, 10, header)
    assert contexts and all(c.kind == "cluster" and len(c.parts) >= 2 for c in contexts)
    for c in contexts:
        assert 20 <= c.tokens <= 60
        assert len({by_title[t] for t in c.titles}) == 1  # one cluster per context
        assert c.text.startswith(f"Document 1: {c.titles[0]}")


def test_documents_are_read_from_folders_and_jsonl(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Alpha text.")
    (folder / "sub" / "b.md").write_text("Beta text.")
    rows = [{"title": "C", "text": "Gamma."}, {"content": "Delta."}, {"other": 1}]
    (folder / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    workspace.allow_root(tmp_path)
    docs = sources.load_documents(str(folder))
    assert [d.text for d in docs] == ["Alpha text.", "Beta text.", "Gamma.", "Delta."]
    assert docs[2].title == "C" and docs[3].title == "more.jsonl:2"
    with pytest.raises(LongCtxError, match="does not exist"):
        sources.load_documents(str(folder / "missing"))


def test_a_folder_outside_the_allowed_roots_is_refused(tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere", numbered=True)
    with pytest.raises(LongCtxError, match="outside the folders"):
        sources.load_documents(str(outside / "not-allowed-here"))


# ---------------------------------------------------------------------------------------------
# Tasks.


def test_main_characters_are_the_most_mentioned_names_that_occur():
    text = "Ann Miller rowed. Ann Miller sang. Tom waved. Ann laughed. Tom ran. Zed? No."
    ctx = sources.Context("c", "document", [], text, 20)
    found = [["Tom", "Ann Miller", "Ghost"], ["Ann", "Tom"]]
    assert tasks.main_characters(ctx, found, 3) == ["Ann Miller", "Tom"]  # Ann is Ann Miller
    assert tasks.main_characters(ctx, found, 1) == ["Ann Miller"]
    assert tasks.main_characters(ctx, [["Ghost"]], 3) == []


def test_qa_sample_is_valid_with_flags_and_without_duplicates():
    ctx = sources.Context(
        "abc",
        "document",
        [sources.Part("doc", "test:doc", ["Ann rowed to Gull Island."], 5)],
        "Ann rowed to Gull Island.",
        5,
    )
    ask = tasks.Ask("qa", [], "Ann rowed to Gull Island.", "abc chunk 1/1", [0.0])
    pairs = [
        parsing.QA("Where did Ann row?", "To Gull Island."),
        parsing.QA("where did ann row", "Gull Island"),
        parsing.QA("Who invented radio?", "Marconi in Bologna."),
    ]
    built = tasks.qa_sample(
        "single-detail",
        ctx,
        [tasks.Answer(ask, pairs)],
        min_support=0.5,
        drop_unsupported=False,
        seed=0,
        metadata={"generator": {}},
    )
    sample = built.sample
    assert schema.check(sample) == []
    assert built.duplicates == 1 and built.flagged == 1
    assert sample["conversations"][0]["content"].startswith("Ann rowed to Gull Island.\n\n")
    assert sample["task"] == "single-detail" and sample["source"] == "test:doc"
    flagged = sample["checks"]["low_support_turns"]
    assert [sample["conversations"][i]["content"] for i in flagged] == ["Marconi in Bologna."]
    dropped = tasks.qa_sample(
        "single-detail",
        ctx,
        [tasks.Answer(ask, pairs)],
        min_support=0.5,
        drop_unsupported=True,
        seed=0,
        metadata={},
    )
    assert len(dropped.sample["conversations"]) == 2


def test_multi_detail_passages_come_from_several_places_or_documents():
    (ctx,), _ = sources.document_contexts([_doc("one", 12)], 60, 400, words, 1)
    asks = tasks.multi_detail_asks(ctx, prompts.DEFAULTS, words, 120, 2, 3, 2, seed=0)
    assert len(asks) == 2 and asks[0].messages != asks[1].messages
    for ask in asks:  # one excerpt from each third of the document
        first, middle, last = ask.depths
        assert first < 100 / 3 <= middle < 200 / 3 <= last
    docs = [_doc(name, 3) for name in ("alpha", "beta", "gamma")]
    (cluster,), _ = sources.cluster_contexts(
        docs, [0, 0, 0], 60, 400, words, 1, lambda i, t: f"Document {i}: {t}"
    )
    (ask,) = tasks.multi_detail_asks(cluster, prompts.DEFAULTS, words, 120, 2, 3, 1, seed=0)
    text = ask.messages[-1]["content"]
    assert all(f'from "{name}"' in text for name in ("alpha", "beta", "gamma"))
    assert text.startswith("Below are passages from 3 different documents.")


def test_spread_picks_evenly():
    assert tasks.spread(list(range(10)), 3) == [0, 4, 9]
    assert tasks.spread([1, 2], 0) == [1, 2]


# ---------------------------------------------------------------------------------------------
# Cache and config.


def test_request_keys_and_cache_files(tmp_path):
    messages = [{"role": "user", "content": "Hi"}]
    key = request_key("m", messages, {"temperature": 0.0})
    assert key == request_key("m", [dict(messages[0])], {"temperature": 0.0})
    assert key != request_key("m", messages, {"temperature": 0.5})
    assert key != request_key("other", messages, {"temperature": 0.0})
    cache = ReplyCache(tmp_path)
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"content": "Hello", "usage": {"prompt_tokens": 3}})
    assert cache.get(key)["content"] == "Hello" and key in cache and len(cache) == 1
    cache.path(key).write_text("{broken")
    assert cache.get(key) is None  # a damaged file is ignored, not trusted


def test_config_validation_lists_every_problem():
    bad = SynthConfig(
        task="novel",
        n_docs=0,
        min_tokens=500,
        max_tokens=100,
        passages=1,
        min_support=2.0,
        prompts={"names": "no placeholder"},
        endpoint=EndpointConfig(base_url="localhost", concurrency=0),
    )
    with pytest.raises(ConfigError) as info:
        bad.validate()
    text = str(info.value)
    for word in (
        "task",
        "n_docs",
        "context range",
        "passages",
        "min_support",
        "{passage}",
        "base_url",
        "concurrency",
    ):
        assert word in text, word
    assert len(info.value.problems) == 8


def test_help_texts_and_saved_config_without_key():
    helps = field_help(SynthConfig)
    assert set(helps) == {f for f in SynthConfig.__dataclass_fields__}
    assert set(field_help(EndpointConfig)) == set(EndpointConfig.__dataclass_fields__)
    config = SynthConfig(endpoint=EndpointConfig(api_key="sk-secret"))
    assert "sk-secret" not in repr(config)
    data = config.to_dict()
    assert "api_key" not in data["endpoint"]
    assert SynthConfig.from_dict(data).endpoint.model == config.endpoint.model


def test_a_silent_endpoint_times_out_is_retried_then_recorded():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        endpoint = EndpointConfig(
            base_url=url,
            model="m",
            timeout_s=0.3,
            max_retries=1,
            backoff_s=0.01,
            max_backoff_s=0.05,
        )
        gen = Generator(endpoint)
        with pytest.raises(RequestFailed, match="no answer within 0.3 s") as info:
            gen.complete([{"role": "user", "content": "hi"}])
        assert info.value.attempts == 2 and gen.usage.retries == 1 and gen.usage.sent == 0
        stopped = threading.Event()
        stopped.set()
        with pytest.raises(Cancelled):  # a stopped run sends nothing more
            Generator(endpoint, cancel=stopped).complete([{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------------------------
# The whole pipeline, every reply already cached: no request at all.


def _story_docs() -> list[Document]:
    names = ["Ann Miller", "Tom Baker"]
    paras = [
        f"In {1900 + i} {names[i % 2]} rowed to Gull Island with {names[(i + 1) % 2]} and "
        f"counted {i + 3} boats in the harbour."
        for i in range(8)
    ]
    return [Document("gull", "\n\n".join(paras), "test:gull")]


def _job(tmp_path, task: str, **kwargs) -> SynthJob:
    endpoint = EndpointConfig(base_url=_free_port_url(), model="m", max_retries=0, timeout_s=2)
    config = SynthConfig(
        task=task,
        n_docs=1,
        min_tokens=20,
        max_tokens=400,
        chunk_tokens=60,
        qa_per_chunk=1,
        characters=2,
        cache_dir=str(tmp_path / "cache"),
        out=str(tmp_path / f"{task}.jsonl"),
        endpoint=endpoint,
        **kwargs,
    )
    return SynthJob(config, tokenizer=WordTokenizer(), documents=_story_docs())


def _fill_cache(job: SynthJob, asks: list[tasks.Ask], answer) -> None:
    gen = Generator(job.config.endpoint, cache=ReplyCache(job.config.cache_dir))
    for ask in asks:
        gen.cache.put(
            gen.key(ask.messages),
            {"content": answer(ask), "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        )


def test_estimate_counts_requests_tokens_cost_and_cached_ones(tmp_path):
    job = _job(tmp_path, "single-detail")
    job.config.endpoint.price_in, job.config.endpoint.price_out = 2.0, 10.0
    est = job.estimate()
    assert est.contexts == 1 and est.to_send == len(est.requests) >= 2 and est.cached == 0
    assert est.max_completion_tokens == est.to_send * job.config.endpoint.answer_tokens
    expected = (est.prompt_tokens * 2.0 + est.max_completion_tokens * 10.0) / 1e6
    assert est.cost_usd == pytest.approx(expected)
    asks = job.first_asks(job.prepare()[0])
    _fill_cache(job, asks[:1], lambda a: "[]")
    again = job.estimate()
    assert again.cached == 1 and again.to_send == est.to_send - 1
    assert "cost at most" in again.summary(2.0, 10.0)


def test_a_fully_cached_run_sends_nothing_and_writes_valid_samples(tmp_path):
    job = _job(tmp_path, "single-detail")
    asks = job.first_asks(job.prepare()[0])
    # The first reply is unreadable: its re-ask (also cached) answers.
    _fill_cache(
        job,
        asks,
        lambda a: (
            "sorry"
            if a is asks[0]
            else '[{"question": "Who rowed to Gull Island?", "answer": "Ann Miller"}]'
        ),
    )
    reask = dict(asks[0].messages[-1])
    reask["content"] += prompts.REASK
    retry = tasks.Ask("qa", [*asks[0].messages[:-1], reask], "", "")
    _fill_cache(job, [retry], lambda a: '[{"question": "How many boats?", "answer": "3"}]')
    seen = []
    result = job.run(on_sample=seen.append, progress=lambda d, t: None)
    assert result.usage.sent == 0 and result.usage.cached == len(asks) + 1
    assert len(result.samples) == 1 and seen == result.samples
    sample = result.samples[0]
    assert schema.check(sample) == []
    questions = [t["content"] for t in sample["conversations"][2::2]]
    assert len(questions) == 1  # the same question from every chunk, kept once
    assert sample["checks"]["duplicates_dropped"] == len(asks) - 2
    assert sample["generator"]["model"] == "m" and "api_key" not in json.dumps(sample)
    rows = list(io.iter_raw(io.open_source(result.output)))
    assert [r.problems for r in rows] == [[]]


def test_a_request_that_cannot_be_sent_is_logged_and_the_run_goes_on(tmp_path):
    job = _job(tmp_path, "biography")
    asks = job.first_asks(job.prepare()[0])
    _fill_cache(job, asks[1:], lambda a: '["Ann Miller", "Tom Baker", "Nobody Here"]')
    bios = tasks.biography_asks(
        job.prepare()[0],
        ["Ann Miller", "Tom Baker"],
        job.templates,
        job.count,
        job.config.chunk_tokens,
    )
    _fill_cache(job, bios, lambda a: f"{a.name} rowed to Gull Island and counted boats.")
    result = job.run()
    # asks[0] was not cached and nothing listens: one failure, logged with its reason.
    assert len(result.failures) == 1 and "cannot reach" in result.failures[0]["reason"]
    logged = [json.loads(line) for line in result.failures_path.read_text().splitlines()]
    assert logged[0]["request"] == asks[0].label
    sample = result.samples[0]
    assert schema.check(sample) == [] and sample["characters"] == ["Ann Miller", "Tom Baker"]
    assert (
        sample["conversations"][2]["content"]
        == "Write a biography of Tom Baker based on the text above."
    )
    assert sample["checks"]["low_support_turns"] == []
