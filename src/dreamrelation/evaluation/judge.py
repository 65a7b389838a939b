"""Relation accuracy: a vision-language model judges whether a video shows its relation.

The paper asks Qwen-VL-Max. Here the judge is either any OpenAI-compatible chat endpoint
(``OpenAIChatJudge``: DashScope's compatible mode for Qwen-VL-Max, vLLM, OpenAI, ...) or a local
transformers model (``LocalVLMJudge``: ``AutoModelForImageTextToText`` + ``AutoProcessor``, e.g.
a Qwen2.5-VL checkpoint). Both see the same thing: ``num_frames`` frames sampled evenly from the
video (first and last included), in order, and one question built from the shared relation table:

    These are {n} frames sampled evenly from a video, in temporal order. Does the video show that
    {clause}? Answer with one word: yes or no.

``{clause}`` is the relation's NTU template with the prompt's subjects, e.g. "a dog is shaking
hands with a cat". A video whose manifest entry has no subjects is asked about its prompt text;
one without a relation is not judged. Answers are parsed by ``parse_yes_no`` and cached on disk
under a key of (judge name, SHA-256 of the video file, question, frame count): a rerun asks
nothing twice, and the API key is never part of a key, a cache entry, a log or an error.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dreamrelation.errors import DreamRelationError
from dreamrelation.files import file_sha256, write_text_atomic
from dreamrelation.generation.prompts import PromptEntry
from dreamrelation.relations import get_relation

if TYPE_CHECKING:
    from transformers import BatchFeature

QUESTION_TEMPLATE = (
    "These are {n} frames sampled evenly from a video, in temporal order. "
    "Does the video show that {clause}? Answer with one word: yes or no."
)


class JudgeError(DreamRelationError):
    """The judge cannot answer (endpoint unreachable, refused, or a model that does not load)."""


def question_for(entry: PromptEntry, num_frames: int) -> str | None:
    """The question asked about ``entry``'s video, or None when it names no relation."""
    if entry.relation is None:
        return None
    relation = get_relation(entry.relation)
    if entry.subject1 and entry.subject2:
        clause = relation.template.format(a=entry.subject1, b=entry.subject2)
    else:
        clause = f'"{entry.prompt.rstrip(".")}"'
    return QUESTION_TEMPLATE.format(n=num_frames, clause=clause)


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_WORD = re.compile(r"[a-z]+")


_YES, _NO = {"yes", "yeah", "yep", "true"}, {"no", "nope", "false"}


def parse_yes_no(text: str) -> bool | None:
    """``True`` for yes, ``False`` for no, ``None`` when the reply says neither or is ambiguous.

    Reasoning blocks (``<think>...</think>``) and markup are dropped; then the reply's first word
    decides if it is yes/no ("No, there is no handshake; yes, ..."), except for an echoed "yes or
    no"; otherwise the first sentence, then the whole reply, decides if it holds only one of the
    two words ("**Answer:** yes.", "The answer is no")."""
    text = _THINK.sub(" ", text or "").lower()
    words = _WORD.findall(text)
    if words and words[0] in _YES | _NO and words[1:2] != ["or"]:
        return words[0] in _YES
    first_sentence = re.split(r"[.!?\n]", text.strip(" \t\n*_`'\"#:>-"), maxsplit=1)[0]
    for scope in (first_sentence, text):
        found = set(_WORD.findall(scope))
        yes, no = bool(found & _YES), bool(found & _NO)
        if yes != no:
            return yes
        if yes and no:
            return None
    return None


def sample_frames(frames: np.ndarray, count: int) -> list[Image.Image]:
    """``count`` evenly spaced frames of a (F, H, W, 3) uint8 video as PIL images."""
    from dreamrelation.evaluation.metrics import evenly_spaced_indices

    return [Image.fromarray(frames[i]) for i in evenly_spaced_indices(len(frames), count)]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dreamrelation" / "judge"


class AnswerCache:
    """One small JSON file per answer, named by the hash of (judge, video hash, question, frames)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(judge: str, video_sha256: str, question: str, num_frames: int) -> str:
        payload = json.dumps([judge, video_sha256, question, num_frames], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text("utf-8"))["reply"]
        except (json.JSONDecodeError, KeyError):
            return None  # a torn or foreign file: ask again and overwrite it

    def put(self, key: str, record: dict) -> None:
        write_text_atomic(self._path(key), json.dumps(record, ensure_ascii=False))


class Judge:
    """A VLM that answers one question about a few frames. ``name`` keys the answer cache."""

    name: str

    def ask(self, question: str, images: Sequence[Image.Image]) -> str:
        raise NotImplementedError


def image_data_url(image: Image.Image, quality: int = 95) -> str:
    """A JPEG ``data:`` URL, the way OpenAI-compatible APIs take inline images."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIChatJudge(Judge):
    """Any OpenAI-compatible ``/chat/completions`` endpoint. The key is read from the environment
    variable ``api_key_env`` at each request (never stored, logged or cached); an unset variable
    sends no key (local servers). 429, 5xx, timeouts and refused connections are retried with
    exponential back-off (``backoff * 2**attempt`` seconds, or the server's Retry-After)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_tokens: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_tokens = max_tokens
        self.sleep = sleep
        self.name = f"openai:{model}@{base_url.rstrip('/')}"

    def request_body(self, question: str, images: Sequence[Image.Image]) -> dict:
        content: list[dict] = [{"type": "text", "text": question}]
        content += [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }

    def _where(self) -> str:
        return f"judge endpoint {self.url} (model {self.model}, API key from ${self.api_key_env})"

    def ask(self, question: str, images: Sequence[Image.Image]) -> str:
        body = json.dumps(self.request_body(question, images)).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            wait = self.backoff * 2**attempt
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return _reply_text(payload, self._where())
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise JudgeError(
                        f"{self._where()} refused the request (HTTP {exc.code}); "
                        f"set ${self.api_key_env} to a valid key (or pick the variable with --judge-key-env)"
                    ) from None
                if exc.code not in _RETRY_STATUS:
                    detail = redact(exc.read().decode("utf-8", "replace"), key)[:300]
                    raise JudgeError(f"{self._where()} answered HTTP {exc.code}: {detail}") from None
                last = f"HTTP {exc.code}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.strip().isdigit():
                    wait = min(float(retry_after), 60.0)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = redact(str(getattr(exc, "reason", exc)) or type(exc).__name__, key)
            except json.JSONDecodeError as exc:
                raise JudgeError(f"{self._where()} did not answer JSON ({redact(str(exc), key)})") from None
            except JudgeError as exc:  # a reply without an answer may echo the request's headers
                raise JudgeError(redact(str(exc), key)) from None
            if attempt < self.max_retries:
                self.sleep(wait)
        raise JudgeError(
            f"{self._where()} unreachable or failing after {self.max_retries + 1} tries ({last}); "
            f"check the URL (--judge-url), that the server is up, and ${self.api_key_env}"
        )


_BEARER = re.compile(r"(?i)(bearer|authorization|api[-_]?key)([\"':=\s]+)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str, key: str | None) -> str:
    """``text`` with the API key, and anything sent as a bearer token or key, replaced by ``***``:
    a server that echoes the request's headers in an error must not put the key on the terminal."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _reply_text(payload: dict, where: str) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(
            f"{where} answered without choices[0].message.content: {str(payload)[:300]}"
        ) from None
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


class LocalVLMJudge(Judge):
    """A transformers image-text-to-text model (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``) from a hub
    id or a local folder, asked greedily through its processor's chat template."""

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_new_tokens: int = 16,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from dreamrelation.devices import resolve_device
        from dreamrelation.pretrained import require_all_weights

        self.device = resolve_device(device or "auto")
        torch_dtype = {
            "auto": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model, info = AutoModelForImageTextToText.from_pretrained(
                model, dtype=torch_dtype, output_loading_info=True
            )
        except ImportError as exc:  # e.g. Qwen2-VL/Qwen2.5-VL's video processor needs torchvision
            reason = " ".join(str(exc).split()).split(". ")[0]
            fix = (
                "install the torchvision build that matches your torch (same version, same index as torch)"
                if "torchvision" in reason.lower()
                else "install the package it names"
            )
            raise JudgeError(
                f"judge model {model!r} needs a package that is not installed ({reason}); {fix}"
            ) from None
        except (OSError, ValueError) as exc:
            raise JudgeError(
                f"judge model {model!r} could not be loaded ({exc}); give a hub id or a local folder "
                "of an image-text-to-text model (e.g. Qwen/Qwen2.5-VL-7B-Instruct)"
            ) from None
        # a checkpoint missing weights (another architecture, a partial download) would answer at random
        require_all_weights("judge model", model, info, "Qwen/Qwen2.5-VL-7B-Instruct")
        self.model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.name = f"local:{model}"

    def model_inputs(self, question: str, images: Sequence[Image.Image]) -> BatchFeature:
        """What ``ask`` feeds the model: the chat-templated user turn (one image part per frame,
        then the question) through the processor, which expands each image's placeholder to its
        patch grid (Qwen2.5-VL: ``image_grid_thw``; LLaVA: a fixed count), on the model's device;
        only floating tensors (pixels) take the model's dtype."""
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=list(images), return_tensors="pt")
        return inputs.to(self.device, dtype=self.model.dtype)

    def ask(self, question: str, images: Sequence[Image.Image]) -> str:
        import torch

        inputs = self.model_inputs(question, images)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()


@dataclass(frozen=True)
class Verdict:
    """One judged video: the question, the raw reply, its parse, and whether it came from the cache."""

    question: str
    reply: str
    answer: bool | None
    cached: bool


def judge_video(
    judge: Judge,
    cache: AnswerCache,
    video_path: Path,
    frames: np.ndarray,
    question: str,
    num_frames: int,
    video_sha256: str | None = None,
) -> Verdict:
    """Ask ``judge`` about ``frames`` (the decoded video at ``video_path``), via the cache."""
    video_sha256 = video_sha256 or file_sha256(video_path)
    key = AnswerCache.key(judge.name, video_sha256, question, num_frames)
    reply = cache.get(key)
    cached = reply is not None
    if reply is None:
        reply = judge.ask(question, sample_frames(frames, num_frames))
        cache.put(
            key,
            {
                "judge": judge.name,
                "video_sha256": video_sha256,
                "question": question,
                "num_frames": num_frames,
                "reply": reply,
            },
        )
    return Verdict(question=question, reply=reply, answer=parse_yes_no(reply), cached=cached)
