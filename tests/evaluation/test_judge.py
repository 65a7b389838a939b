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
from dreamrelation.generation.prompts import PromptEntry, load_prompt_file

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
    clause = f"{shipped.subject1} and {shipped.subject2} are walking apart"
    assert f"Does the video show that {clause}" in question_for(shipped, 8)
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


def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


@pytest.mark.skipif(
    not _torchvision_available(), reason="transformers' Qwen2.5-VL processor needs torchvision"
)
def test_tiny_qwen25_vl_answers_through_the_same_flow(tmp_path: Path) -> None:
    import torch

    from dreamrelation.testing.evaluation import QWEN_SPECIAL, TINY_QWEN_WORDS, write_tiny_qwen25_vl

    folder = write_tiny_qwen25_vl(tmp_path / "qwen")
    judge = LocalVLMJudge(str(folder), device="cpu", max_new_tokens=3)
    assert type(judge.processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(judge.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    path, frames = _video(tmp_path)  # 24 x 32 frames: a 4 x 6 patch grid each, 6 tokens after 2x2 merging
    question = "w1 w2 a is yes"
    images = [Image.fromarray(f) for f in frames[[0, 4, 9]]]

    inputs = judge.model_inputs(question, images)
    config = judge.model.config
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]] * 3  # one grid per frame
    # each frame's 24 patches, its two copies stacked in time (temporal_patch_size 2) x 3 x 14 x 14
    assert tuple(inputs["pixel_values"].shape) == (3 * 24, 3 * 2 * 14 * 14)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(config.image_token_id) == 3 * 6
    assert ids.count(config.vision_start_token_id) == ids.count(config.vision_end_token_id) == 3
    tokens = judge.processor.tokenizer.convert_ids_to_tokens(ids)
    text = " ".join(tokens)
    assert text.startswith("<|im_start|> system You are a helpful assistant. <|im_end|> <|im_start|> user")
    assert text.endswith("w1 w2 a is yes <|im_end|> <|im_start|> assistant")
    # the pixels are the frames: the first frame's first patch, normalised as the processor says
    processor = judge.processor.image_processor
    resized = np.asarray(images[0].resize((84, 56), Image.BICUBIC), dtype=np.float32) / 255
    normalised = (resized - np.array(processor.image_mean)) / np.array(processor.image_std)
    first_patch = torch.tensor(normalised[:14, :14].transpose(2, 0, 1), dtype=torch.float32)
    got = inputs["pixel_values"][0].reshape(3, 2, 14, 14)
    torch.testing.assert_close(got[:, 0], first_patch, atol=0.05, rtol=0)  # resampling differs slightly
    torch.testing.assert_close(got[:, 1], got[:, 0])

    # greedy decoding by hand: the argmax of a full forward pass, one token at a time
    ids, greedy = inputs["input_ids"], []
    pixels = {k: inputs[k] for k in ("pixel_values", "image_grid_thw")}
    with torch.no_grad():
        for _ in range(3):
            types = torch.zeros_like(ids)
            types[:, : inputs["input_ids"].shape[1]] = inputs["mm_token_type_ids"]
            logits = judge.model(input_ids=ids, mm_token_type_ids=types, **pixels, use_cache=False).logits
            greedy.append(int(logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[greedy[-1]]])], dim=1)
            if greedy[-1] == config.text_config.eos_token_id:
                break
    expected = judge.processor.tokenizer.decode(greedy, skip_special_tokens=True).strip()

    cache = AnswerCache(tmp_path / "cache")
    first = judge_video(judge, cache, path, frames, question, 3)
    assert first.reply == expected and not first.cached  # greedy, though the checkpoint samples
    words = first.reply.split()  # at most 3 new tokens, special ones dropped
    assert 1 <= len(words) <= 3 and set(words) <= set(TINY_QWEN_WORDS) - set(QWEN_SPECIAL)
    assert first.answer == parse_yes_no(first.reply)
    assert judge.ask(question, images) == first.reply
    assert judge_video(judge, cache, path, frames, question, 3).cached

    # bf16 (the GPU default): pixels take the model's dtype, the patch grid and ids stay integers
    half = LocalVLMJudge(str(folder), device="cpu", dtype="bfloat16", max_new_tokens=3)
    inputs = half.model_inputs(question, images)
    assert inputs["pixel_values"].dtype == torch.bfloat16 == half.model.dtype
    assert inputs["image_grid_thw"].dtype == inputs["input_ids"].dtype == torch.int64
    assert set(half.ask(question, images).split()) <= set(TINY_QWEN_WORDS) - set(QWEN_SPECIAL)


@pytest.mark.skipif(_torchvision_available(), reason="checks the error shown where torchvision is missing")
def test_qwen25_vl_without_torchvision_names_the_missing_package(tmp_path: Path) -> None:
    from dreamrelation.testing.evaluation import write_tiny_qwen25_vl

    folder = write_tiny_qwen25_vl(tmp_path / "qwen")
    with pytest.raises(JudgeError, match=r"needs a package that is not installed.*[Tt]orchvision"):
        LocalVLMJudge(str(folder), device="cpu")
