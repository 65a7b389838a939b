"""The relation judge: its question, parsing, cache and retries against a local HTTP server on
127.0.0.1, and the same flow through a tiny random local VLM."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrelation.evaluation.judge import (
    QUESTION_TEMPLATE,
    AnswerCache,
    JudgeError,
    LocalVLMJudge,
    OpenAIChatJudge,
    judge_video,
    parse_yes_no,
    question_for,
)
from dreamrelation.evaluation.prompts import PromptEntry, load_prompt_file

ENTRY = PromptEntry("A058-00", "A dog is shaking hands with a cat.", 5800, "shaking_hands", "a dog", "a cat")


def _video(tmp_path: Path, frames: int = 10) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (frames, 24, 32, 3), dtype=np.uint8)
    path = tmp_path / "v.mp4"
    path.write_bytes(array.tobytes())  # the judge hashes the file; frames are passed decoded
    return path, array


def test_question_uses_the_shared_relation_template_with_the_prompt_subjects() -> None:
    assert question_for(ENTRY, 8) == QUESTION_TEMPLATE.format(n=8, clause="a dog is shaking hands with a cat")
    shipped = load_prompt_file("paper", relations="walking_apart")[0]
    assert f"Does the video show {shipped.subject1} and {shipped.subject2} are walking apart" in question_for(
        shipped, 8
    )
    no_subjects = PromptEntry("x", "Two robots hug.", 0, "hugging")
    assert '"Two robots hug"' in question_for(no_subjects, 4)
    assert question_for(PromptEntry("y", "A cat.", 0), 4) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes", True),
        ("no.", False),
        ("**Yes.** The dog clearly shakes the cat's paw.", True),
        ("Answer: No", False),
        ("The answer is yes.", True),
        ("<think>is it no? maybe</think>Yes", True),
        ("No, there is no handshake; yes, they stand together.", False),
        ("I think yes, although one could say no.", None),
        ("Looking closely, they shake hands. So: yes.", True),
        ("yes or no", None),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_yes_no(reply: str, expected: bool | None) -> None:
    assert parse_yes_no(reply) is expected


def test_request_body_parsing_and_cache(endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = endpoint([(200, "Yes, they are.")])
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-123")
    judge = OpenAIChatJudge(server.url, "qwen-vl-max", api_key_env="TEST_JUDGE_KEY")
    cache = AnswerCache(tmp_path / "cache")
    path, frames = _video(tmp_path)
    question = question_for(ENTRY, 4)

    verdict = judge_video(judge, cache, path, frames, question, 4)
    assert verdict.answer is True and verdict.reply == "Yes, they are." and not verdict.cached
    (route, headers, body) = server.requests[0]
    assert route == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-secret-123"
    assert body["model"] == "qwen-vl-max" and body["temperature"] == 0
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": question}
    urls = [part["image_url"]["url"] for part in content[1:]]
    assert len(urls) == 4 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]
    for got, index in zip(decoded, [0, 3, 6, 9], strict=True):  # evenly spaced, first and last
        assert got.shape == (24, 32, 3)
        # JPEG is lossy: the right frame is much closer than any other
        errors = [np.abs(got.astype(float) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == index

    again = judge_video(judge, cache, path, frames, question, 4)
    assert again.cached and again.answer is True and len(server.requests) == 1
    # the key is nowhere on disk
    assert all("sk-secret" not in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    # another judge name, question or video content asks again
    judge_video(OpenAIChatJudge(server.url, "other-model"), cache, path, frames, question, 4)
    path.write_bytes(b"changed")
    judge_video(judge, cache, path, frames, question, 4)
    assert len(server.requests) == 3


def test_retries_429_and_5xx_with_exponential_backoff(endpoint, tmp_path: Path) -> None:
    server = endpoint([(429, "slow down"), (503, "busy"), (500, "oops"), (200, "No")])
    sleeps: list[float] = []
    judge = OpenAIChatJudge(server.url, "m", backoff=0.5, sleep=sleeps.append)
    assert judge.ask("q?", []) == "No"
    assert sleeps == [0.5, 1.0, 2.0] and len(server.requests) == 4


def test_gives_up_naming_the_url_and_the_key_variable(endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    server = endpoint([(503, "busy")] * 3)
    judge = OpenAIChatJudge(server.url, "m", api_key_env="MY_KEY_VAR", max_retries=2, sleep=lambda s: None)
    with pytest.raises(JudgeError, match=r"chat/completions.*MY_KEY_VAR") as info:
        judge.ask("q?", [])
    assert "HTTP 503" in str(info.value)

    closed = endpoint([])
    url = closed.url
    closed.close()  # nothing listens there now
    judge = OpenAIChatJudge(url, "m", api_key_env="MY_KEY_VAR", max_retries=1, sleep=lambda s: None)
    with pytest.raises(JudgeError, match="unreachable") as info:
        judge.ask("q?", [])
    assert url in str(info.value) and "MY_KEY_VAR" in str(info.value)

    monkeypatch.setenv("MY_KEY_VAR", "sk-do-not-print")
    refused = endpoint([(401, "bad key")])
    with pytest.raises(JudgeError, match=r"HTTP 401.*set \$MY_KEY_VAR") as info:
        OpenAIChatJudge(refused.url, "m", api_key_env="MY_KEY_VAR").ask("q?", [])
    assert "sk-do-not-print" not in str(info.value)
    assert len(refused.requests) == 1  # a refused key is not retried


def test_tiny_local_vlm_answers_through_the_same_flow(tmp_path: Path) -> None:
    from dreamrelation.testing.evaluation import TINY_WORDS, write_tiny_vlm

    folder = write_tiny_vlm(tmp_path / "vlm")
    judge = LocalVLMJudge(str(folder), device="cpu", max_new_tokens=3)
    assert judge.name == f"local:{folder}"
    path, frames = _video(tmp_path)
    cache = AnswerCache(tmp_path / "cache")
    question = "w1 w2 a is yes"  # the tiny vocabulary; unknown words would all be <unk>
    first = judge_video(judge, cache, path, frames, question, 3)
    words = first.reply.split()  # at most 3 new tokens, special ones dropped
    assert 1 <= len(words) <= 3 and set(words) <= set(TINY_WORDS)
    assert first.answer == parse_yes_no(first.reply)
    # greedy decoding is deterministic, and the second ask comes from the cache
    assert judge.ask(question, [Image.fromarray(f) for f in frames[[0, 4, 9]]]) == first.reply
    assert judge_video(judge, cache, path, frames, question, 3).cached

    with pytest.raises(JudgeError, match="could not be loaded"):
        LocalVLMJudge(str(tmp_path / "missing"), device="cpu")
