"""Shared fixtures: an isolated workspace per test session, the embedded model, a tiny Llama.

The embedded model is converted once per machine into a shared models folder
(`LONGCTX_MODELS`, default ~/.cache/longctx-studio/models) so that test sessions do not each
pay the ~20 s GGUF conversion.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

_SESSION_HOME = None


def pytest_configure(config):
    global _SESSION_HOME
    import tempfile

    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="longctx-test-"))
    os.environ["LONGCTX_HOME"] = str(_SESSION_HOME)
    os.environ.setdefault(
        "LONGCTX_MODELS", str(Path.home() / ".cache" / "longctx-studio" / "models")
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def pytest_unconfigure(config):
    """Remove the session workspace (runs, evaluations: ~1.5 GB); LONGCTX_KEEP_TEST_HOME=1 keeps it."""
    if _SESSION_HOME is None:
        return
    if os.environ.get("LONGCTX_KEEP_TEST_HOME"):
        print(f"\ntest workspace kept: {_SESSION_HOME}")
        return
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def workspace_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct, loaded once per session (real weights)."""
    from core.models.loader import ModelSpec, default_cache

    return default_cache.get(ModelSpec())


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded):
    return embedded.tokenizer


@pytest.fixture(scope="session")
def llama3_8b_shape():
    """Llama-3-8B's config (shape only, no weights): what the fit estimate is checked against."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    )


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    """A 2-layer random Llama with the embedded tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# -- the app in a real browser (Debian chromium driven by Playwright; never a downloaded one) --

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on two shared cores, two intra-op threads wait on each
    other (decoding runs many times slower) or fight the browser."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reset_faults(server):
    """A fault-injection server with no pending faults and fresh statistics."""
    import httpx

    httpx.delete(server.url + "/_faults").raise_for_status()
    httpx.delete(server.url + "/_stats").raise_for_status()
    return server


@contextlib.contextmanager
def serve_process(*args: str, stderr=subprocess.DEVNULL, timeout: float = 120):
    """`longctx serve ARGS` in its own process, yielding (base_url, process) once it is ready;
    stopped with SIGTERM afterwards (killed if it does not stop)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", *args],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()))
        reader.start()
        reader.join(timeout)
        assert ready and "ready at" in ready[0], f"no ready line: {ready!r}"
        yield ready[0].split("ready at ")[1].strip(), process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def start_app(**launch) -> tuple:
    """The whole app on a free 127.0.0.1 port, styled as `python app.py`: (demo, url).

    `launch` adds keyword arguments to `demo.launch` (e.g. `auth`).
    """
    from ui.shell import build_app
    from ui.theme import style_kwargs

    demo = build_app()
    demo.queue(default_concurrency_limit=2)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    try:
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            **style_kwargs(),
            **launch,
        )
    except ValueError as exc:
        # Gradio probes its page once the server runs, with a 3 s timeout, and raises when that
        # times out. On two loaded cores the first render can take longer; the server is up
        # (nothing after the probe matters without a share link), so wait for it here instead.
        if "localhost is not accessible" not in str(exc):
            raise
        _wait_until_served(url, timeout=90)
    return demo, url


def _wait_until_served(url: str, timeout: float) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def app_url(embedded):
    """One app per test module, with the embedded model already loaded."""
    demo, url = start_app()
    yield url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it where apt exists)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- documents built in the test (no binary files in the repository) -------------------------


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF whose pages carry these lines of text (Helvetica, one line per row); a page with
    no lines has no text at all, like a scanned one."""

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    bodies = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for n, lines in enumerate(pages):
        page, content = 4 + 2 * n, 5 + 2 * n
        rows = " ".join(f"({escape(line)}) Tj T*" for line in lines)
        stream = f"BT /F1 10 Tf 13 TL 56 740 Td {rows} ET".encode() if lines else b""
        bodies[page] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ).encode()
        bodies[content] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        kids.append(page)
    refs = " ".join(f"{k} 0 R" for k in kids)
    bodies[2] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode()
    out, offsets = bytearray(b"%PDF-1.4\n"), {}
    for num in sorted(bodies):
        offsets[num] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (num, bodies[num])
    xref, size = len(out), max(bodies) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[num] for num in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    path.write_bytes(bytes(out))
    return path


def make_epub(path: Path, chapters: list[tuple[str, str]], spine: list[int] | None = None) -> Path:
    """An EPUB of (file name, XHTML body) chapters, read in `spine` order (indexes)."""
    import zipfile

    spine = list(range(len(chapters))) if spine is None else spine
    items = "".join(
        f'<item id="c{i}" href="{name.replace(" ", "%20")}" media-type="application/xhtml+xml"/>'
        for i, (name, _) in enumerate(chapters)
    )
    refs = "".join(f'<itemref idref="c{i}"/>' for i in spine)
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip")
        book.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        book.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            f"<manifest>{items}</manifest><spine>{refs}</spine></package>",
        )
        for name, body in chapters:
            book.writestr(
                f"OEBPS/{name}",
                '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
                f"<title>{name}</title><style>p {{ margin: 0 }}</style></head>"
                f"<body>{body}</body></html>",
            )
    return path
