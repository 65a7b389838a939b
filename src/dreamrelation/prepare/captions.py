"""`dreamrelation caption DATA_FOLDER`: captions proposed by a local vision-language model for the clips
of a dataset folder that have none, in the project's caption form ("{a} is shaking hands with {b}.").

The folder's relation (``--relation``, else its relation.txt, else its name; one of the 26 relations of
:mod:`dreamrelation.relations`) gives the caption's form. The model is the judge's family
(:class:`~dreamrelation.evaluation.judge.LocalVLMJudge`: a transformers image-text-to-text model from a
hub id or a folder); it sees evenly spaced frames of the clip and is asked for each subject in turn as a
short noun phrase, and the caption is the relation's template with the two answers. Proposals are a
starting point for a person to confirm or edit: they are written to ``captions_proposed.json`` and,
with ``accept``, as ``<clip>.txt`` (a caption that exists is never overwritten). The web UI shows the
same proposals in editable fields and saves them with :func:`write_caption`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrelation.errors import DreamRelationError, InputError
from dreamrelation.files import write_text_atomic
from dreamrelation.relations import Relation, get_relation

if TYPE_CHECKING:
    from dreamrelation.evaluation.judge import Judge

#: the judge's default local model (README: `--judge local --judge-model ...`)
DEFAULT_CAPTION_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
PROPOSALS_FILE = "captions_proposed.json"
SUBJECT_QUESTION = (
    "These are {n} frames sampled evenly from a video, in temporal order. They show that {clause}. "
    "Who or what is {which}? Answer with a short noun phrase, such as 'a man in a red shirt' or 'a dog'."
)
_WHICH = ("the first subject, the one written A", "the second subject, the one written B")
_ARTICLES = ("a ", "an ", "the ")
_MAX_WORDS = 6


@dataclass
class CaptionProposal:
    """One clip of the folder: its caption (existing or proposed) or why none was proposed."""

    name: str
    video: str
    #: "captioned" (had a caption), "proposed" (the model's proposal), "failed" (see message)
    status: str
    caption: str = ""
    #: the model's raw replies for subject A and subject B (for a person to judge the proposal)
    replies: tuple[str, str] = ("", "")
    message: str = ""


def folder_relation(folder: Path, relation: str | None = None) -> Relation:
    """The relation whose template shapes the captions: ``relation``, else relation.txt, else the name."""
    from dreamrelation.data.dataset import RELATION_FILE

    source = "--relation"
    if relation is None:
        relation_file = folder / RELATION_FILE
        if relation_file.is_file():
            relation, source = relation_file.read_text("utf-8-sig").strip(), str(relation_file)
        else:
            relation, source = folder.name, f"the folder name of {folder}"
    try:
        return get_relation(relation)
    except KeyError as error:
        raise InputError(
            folder,
            f"{source} names no known relation ({relation!r}): {error.args[0]}",
            "write the relation's name in relation.txt (e.g. shaking_hands) or pass --relation",
        ) from None


def list_clips(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, video, caption path) of every clip of a dataset folder, sorted; the caption may be absent."""
    from dreamrelation.data.dataset import VIDEO_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder", "give the dataset folder that holds the clips")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    videos = [p for p in videos if not p.name.startswith(".")]
    if not videos:
        raise InputError(
            folder,
            f"no videos found (looked for {', '.join(VIDEO_EXTENSIONS)})",
            "put the exemplar clips in this folder",
        )
    return [(p.stem, p, folder / f"{p.stem}.txt") for p in videos]


def subject_phrase(reply: str) -> str:
    """The model's reply as a subject for the template: first line, no quotes or final stop, at most
    six words, with an article ("dog" -> "a dog"); empty when the reply has no word."""
    line = next((part.strip() for part in reply.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^(answer|subject [ab12]|[ab])\s*[:.)-]\s*", "", line, flags=re.IGNORECASE)
    words = [w.strip("'-") for w in re.findall(r"[\w'-]+", line)]
    phrase = " ".join(w for w in words if w)
    phrase = " ".join(phrase.split()[:_MAX_WORDS])
    if not phrase:
        return ""
    if phrase.lower().startswith(_ARTICLES):  # mid-sentence in the caption: "... hugging the man"
        return phrase[0].lower() + phrase[1:]
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def propose_caption(judge: Judge, frames: Sequence, relation: Relation) -> tuple[str, tuple[str, str]]:
    """Ask ``judge`` for subject A and subject B of a clip (``frames``: PIL images); returns the
    caption in the relation's form and the two raw replies. Raises ValueError when a reply names
    nothing."""
    clause = relation.template.format(a="A", b="B")
    replies = tuple(
        judge.ask(SUBJECT_QUESTION.format(n=len(frames), clause=clause, which=which), list(frames))
        for which in _WHICH
    )
    subjects = [subject_phrase(reply) for reply in replies]
    for which, subject, reply in zip(("A", "B"), subjects, replies, strict=True):
        if not subject:
            raise ValueError(f"the model's answer for subject {which} ({reply!r}) names nothing")
    return relation.caption(*subjects), (replies[0], replies[1])


def propose_captions(
    folder: str | Path,
    judge: Judge,
    relation: str | None = None,
    num_frames: int = 4,
    on_clip: Callable[[CaptionProposal], None] | None = None,
) -> list[CaptionProposal]:
    """A proposal for every clip of ``folder`` without a caption (clips with one are listed as they are),
    written to ``folder/captions_proposed.json``. A clip that does not decode is listed as failed with
    the reason; the others go on."""
    from dreamrelation.data.video import read_video, video_info
    from dreamrelation.evaluation.judge import sample_frames

    folder = Path(folder)
    clips = list_clips(folder)
    chosen = folder_relation(folder, relation)
    proposals = []
    for name, video, caption_path in clips:
        if caption_path.is_file():
            text = caption_path.read_text("utf-8-sig").strip()
            proposal = CaptionProposal(name, str(video), "captioned", text)
        else:
            try:
                info = video_info(video)
                frames = read_video(video, info.num_frames, info.height, info.width).numpy()
                caption, replies = propose_caption(judge, sample_frames(frames, num_frames), chosen)
                proposal = CaptionProposal(name, str(video), "proposed", caption, replies)
            except InputError as error:
                proposal = CaptionProposal(name, str(video), "failed", message=str(error))
            except ValueError as error:
                fix = f"write the caption yourself in {caption_path.name}, e.g. {chosen.caption()!r}"
                proposal = CaptionProposal(name, str(video), "failed", message=f"{name}: {error}; {fix}")
        proposals.append(proposal)
        if on_clip is not None:
            on_clip(proposal)
    payload = {"relation": chosen.name, "clips": [asdict(p) for p in proposals]}
    write_text_atomic(folder / PROPOSALS_FILE, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    return proposals


def write_caption(folder: str | Path, name: str, caption: str, overwrite: bool = True) -> Path | None:
    """Write ``caption`` as ``folder/<name>.txt`` (one line); None when it exists and not ``overwrite``.
    An empty caption, or one on several lines, is refused naming the clip."""
    path = Path(folder) / f"{name}.txt"
    text = " ".join(caption.split())
    if not text:
        raise InputError(path, "the caption is empty", "write one line, e.g. 'A person is hugging a person.'")
    if "\n" in caption.strip():
        raise InputError(path, "the caption has several lines", "put the caption on a single line")
    if path.exists() and not overwrite:
        return None
    return write_text_atomic(path, text + "\n")


def load_caption_model(model: str, device: str | None = None) -> Judge:
    """The judge's local VLM family (``AutoModelForImageTextToText`` + ``AutoProcessor``), as a
    :class:`DreamRelationError` naming the model and the fix when it does not load (offline, no such
    folder, a missing package)."""
    from dreamrelation.evaluation.judge import LocalVLMJudge

    try:
        return LocalVLMJudge(model, device=device, max_new_tokens=12)
    except DreamRelationError as error:  # one line: the loader's own message spans several
        raise type(error)(" ".join(str(error).split())) from None
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one message naming the model
        raise DreamRelationError(
            f"caption model {model!r} could not be loaded ({type(error).__name__}: {error}); give a hub id "
            "that is in the local cache (offline) or a folder of an image-text-to-text model"
        ) from None
