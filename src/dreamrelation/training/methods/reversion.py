"""ReVersion adapted to a video DiT: one learned relation token ``<R>`` in the text encoder(s).

Everything else is frozen. The token's input embedding is the only trained tensor (one vector per
text encoder: T5 for Mochi/Wan, Llama and CLIP for HunyuanVideo, the toy T5 for the toy world).
It enters through a forward hook on the encoder's embedding table that replaces the token's row,
so the table itself never changes and the optimizer sees nothing but the vector.

Per step, the training captions are re-encoded with the relation written as ``<R>`` (so this
method loads and runs the text encoder while training, unlike the cache-only LoRA methods), and
two things differ from the plain flow-matching loop, both from the ReVersion paper:

* relation-steering contrastive loss (weight 0.01, τ 0.07): ``<R>``'s embedding is pulled towards
  prepositions (a few drawn per step) and pushed from the caption's other words (appearance);
* relation-focal importance sampling: noise levels σ are drawn from p(σ) = 1 − α·cos(πσ) on
  [0, 1] instead of uniformly, favouring high noise (σ = 1 is pure noise), where layouts and
  interactions are decided. This is ReVersion's f(t) = (1 − α·cos(πt/T))/T with t/T = σ.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from tokenizers import AddedToken

from dreamrelation.backbones import Backbone
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_save
from dreamrelation.relations import get_relation
from dreamrelation.training.losses import relational_contrastive_loss
from dreamrelation.training.methods.base import TrainingMethod
from dreamrelation.training.methods.settings import ReVersionConfig

if TYPE_CHECKING:
    from dreamrelation.cache import CachedDataset, CachedItem
    from dreamrelation.config import TrainConfig

TOKEN_FILE = "relation_token.safetensors"
TOKEN_KEY = "dreamrelation.token"
ENCODERS_KEY = "dreamrelation.encoders"


# ----------------------------------------------------------------------------- pure parts


def focal_sigma_density(sigma: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Relation-focal importance sampling density on σ ∈ [0, 1]: 1 − α·cos(πσ) (integrates to 1)."""
    return 1.0 - alpha * torch.cos(math.pi * sigma)


def focal_sigma_cdf(sigma: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Its distribution function: σ − α·sin(πσ)/π."""
    return sigma - alpha * torch.sin(math.pi * sigma) / math.pi


def sample_focal_sigma(n: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` noise levels from :func:`focal_sigma_density` by inverting the CDF (bisection, float64).

    One uniform draw per sample from ``generator``, so a resumed run draws the same σ.
    """
    if not 0 <= alpha < 1:
        raise ValueError(f"importance sampling needs 0 <= alpha < 1 (a positive density); got {alpha}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    low, high = torch.zeros_like(u), torch.ones_like(u)
    for _ in range(50):  # the CDF is strictly increasing: 50 halvings reach float64 resolution
        mid = (low + high) / 2
        below = focal_sigma_cdf(mid, alpha) < u
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return ((low + high) / 2).float()


def steering_loss(
    anchor: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """ReVersion's relation-steering loss: multi-positive InfoNCE of the token embedding ``anchor``
    (D,) against positive (P, D) and negative (K, D) word embeddings, all L2-normalised:
    −log(Σ_pos exp(a·p/τ) / Σ_pos∪neg exp(a·k/τ)). The same form as RCL's, so it reuses it."""
    return relational_contrastive_loss(anchor[None], positives[None], negatives[None], temperature)


def relation_caption(caption: str, template: str, token: str) -> str:
    """Rewrite a training caption with the relation as ``token``.

    ``template`` with ``{a}`` and ``{b}`` ("{a} is shaking hands with {b}") turns
    "A person is shaking hands with a person." into "A person <R> a person."; whatever follows the
    template in the caption ("... on a dark background.") is kept. A template without placeholders
    is a phrase replaced where it occurs. Raises ValueError when the caption does not fit.
    """
    if "{a}" not in template and "{b}" not in template:
        pattern = re.compile(r"\s+".join(map(re.escape, template.split())), re.IGNORECASE)
        if not pattern.search(caption):
            raise ValueError(f"caption {caption!r} does not contain the relation phrase {template!r}")
        return pattern.sub(token, caption, count=1)
    if "{a}" not in template or "{b}" not in template:
        raise ValueError(f"relation template {template!r} needs both {{a}} and {{b}} (or neither)")
    regex = r"^\s*"
    parts = re.split(r"(\{a\}|\{b\})", template)
    for part in parts:
        if part in ("{a}", "{b}"):
            regex += rf"(?P<{part[1]}>.+?)"
        elif part.strip():
            regex += r"\s*" + r"\s+".join(map(re.escape, part.split())) + r"\s*"
        elif part:
            regex += r"\s+"
    # after a final placeholder the subject runs to the sentence's end; after final words, anything
    # that follows them in the caption ("... on a dark background.") is kept as it is
    regex += r"(?P<rest>[.!?]?\s*)$" if not parts[-1].strip() else r"(?P<rest>.*)$"
    found = re.match(regex, caption, re.IGNORECASE | re.DOTALL)
    if found is None:
        raise ValueError(f"caption {caption!r} does not follow the relation template {template!r}")
    rest = found["rest"].strip()
    if rest[:1].isalnum():
        rest = " " + rest
    return f"{found['a'].strip()} {token} {found['b'].strip()}{rest}"


def caption_words(caption: str) -> list[str]:
    """Lower-cased words of a caption, in order, without repeats (hyphenated words kept whole)."""
    return list(dict.fromkeys(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", caption)))


# ----------------------------------------------------------------------------- the token


class RelationToken(torch.nn.Module):
    """The learned token: one input-embedding vector per text encoder, applied by forward hooks."""

    def __init__(self, token: str, vectors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.token = token
        self.encoders = list(vectors)
        self.vectors = torch.nn.ParameterList(
            torch.nn.Parameter(v.detach().float().clone()) for v in vectors.values()
        )
        self.token_ids: dict[str, int] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def vector(self, encoder: str) -> torch.nn.Parameter:
        return self.vectors[self.encoders.index(encoder)]

    def install(self, backbone: Backbone) -> None:
        """Add the token to each tokenizer and hook each encoder's embedding table."""
        pipe = backbone.pipeline
        for tokenizer_name, encoder_name in backbone.text_encoders:
            if encoder_name not in self.encoders:
                continue
            token_id = add_token(getattr(pipe, tokenizer_name), getattr(pipe, encoder_name), self.token)
            self.token_ids[encoder_name] = token_id
            table = getattr(pipe, encoder_name).get_input_embeddings()
            vector = self.vector(encoder_name)
            if vector.shape != (table.embedding_dim,):
                raise ValueError(
                    f"the {self.token} vector for {encoder_name} has {tuple(vector.shape)} numbers, the "
                    f"encoder embeds in {table.embedding_dim}: the file was trained on another model"
                )
            with torch.no_grad():
                vector.data = vector.data.to(table.weight.device)
            self._hooks.append(table.register_forward_hook(_replace_row(token_id, vector)))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def _replace_row(token_id: int, vector: torch.Tensor):  # noqa: ANN202 - a torch hook
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        hit = (args[0] == token_id).unsqueeze(-1)
        return torch.where(hit, vector.to(output.dtype), output)

    return hook


def add_token(tokenizer: Any, encoder: torch.nn.Module, token: str) -> int:
    """Register ``token`` as one unsplittable token (grows the embedding table if it must)."""
    tokenizer.add_tokens([AddedToken(token, normalized=False, single_word=False)])
    token_id = tokenizer.convert_tokens_to_ids(token)
    # (sentencepiece tokenizers may put a lone word-start piece before it; the token itself must be whole)
    if token_id not in tokenizer(f"a {token} b", add_special_tokens=False).input_ids:
        raise ValueError(f"the tokenizer splits {token!r}; choose another reversion.token")
    if token_id >= encoder.get_input_embeddings().num_embeddings:
        encoder.resize_token_embeddings(token_id + 1)
    return token_id


def word_embedding(tokenizer: Any, encoder: torch.nn.Module, word: str) -> torch.Tensor | None:
    """Mean input embedding of a word's tokens (special tokens dropped); None for an unknown word."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    ids = [i for i in ids if i not in set(tokenizer.all_special_ids)]
    if not ids:
        return None
    table = encoder.get_input_embeddings().weight
    return table[torch.tensor(ids, device=table.device)].detach().float().mean(0)


# ----------------------------------------------------------------------------- the method


class ReVersionMethod(TrainingMethod):
    """Relation inversion: train ``<R>``'s embedding with the flow-matching + steering losses."""

    name = "reversion"
    file_name = TOKEN_FILE
    needs_text_encoders = True

    def __init__(self, config: TrainConfig, backbone: Backbone, dataset: CachedDataset) -> None:
        super().__init__(config, backbone, dataset)
        self.settings: ReVersionConfig = config.reversion
        self.captions = {item.key: self._caption(item) for item in dataset.items}  # fails before work
        pipe = backbone.pipeline
        backbone.transformer.requires_grad_(False)
        encoders = [(getattr(pipe, t), getattr(pipe, e), e) for t, e in backbone.text_encoders]
        vectors = {}
        for tokenizer, encoder, encoder_name in encoders:
            encoder.requires_grad_(False)
            init = word_embedding(tokenizer, encoder, self.settings.initializer)
            if init is None:
                raise ConfigError(
                    f"reversion.initializer {self.settings.initializer!r} is not in the {encoder_name} "
                    "vocabulary; choose a common word such as 'and'"
                )
            vectors[encoder_name] = init
        self.relation_token = RelationToken(self.settings.token, vectors)
        self.relation_token.install(backbone)
        # Word embeddings of the frozen tables: positives (prepositions) and per-caption negatives.
        self.positives: dict[str, torch.Tensor] = {}
        self.negatives: dict[str, dict[str, torch.Tensor]] = {}
        banned = {*self.settings.ignore_words, *self.settings.positive_words}
        for tokenizer, encoder, encoder_name in encoders:
            known = [
                v
                for v in (word_embedding(tokenizer, encoder, w) for w in self.settings.positive_words)
                if v is not None
            ]
            if not known:
                raise ConfigError(
                    f"none of reversion.positive_words is in the {encoder_name} vocabulary; "
                    "list prepositions it knows"
                )
            self.positives[encoder_name] = torch.stack(known)
            for key, caption in self.captions.items():
                words = [
                    w for w in caption_words(caption.replace(self.settings.token, " ")) if w not in banned
                ]
                vecs = [v for v in (word_embedding(tokenizer, encoder, w) for w in words) if v is not None]
                dim = self.positives[encoder_name].shape[1]
                self.negatives.setdefault(key, {})[encoder_name] = (
                    torch.stack(vecs)
                    if vecs
                    else torch.zeros(0, dim, device=self.positives[encoder_name].device)
                )

    def _caption(self, item: CachedItem) -> str:
        template = self.settings.relation_template
        if template is None:
            try:
                template = get_relation(item.relation).template
            except KeyError:
                raise ConfigError(
                    f"reversion needs to know where the relation is in the caption of {item.key!r} "
                    f"({item.caption!r}); {item.relation!r} is not an NTU relation, so set "
                    "reversion.relation_template (e.g. '{a} is shaking hands with {b}')"
                ) from None
        try:
            return relation_caption(item.caption, template, self.settings.token)
        except ValueError as exc:
            raise ConfigError(f"{item.key}: {exc}; set reversion.relation_template to match it") from None

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.relation_token.vectors)

    def step_label(self, selected: str | None) -> str:
        return self.settings.token

    def sample_sigma(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        if not self.settings.importance_sampling:
            return super().sample_sigma(batch_size, generator)
        return sample_focal_sigma(batch_size, self.settings.importance_alpha, generator)

    def conditioning(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # caption dropout (off by default) falls back to the empty caption, as the cache's null prompt
        captions = [
            "" if dropped else self.captions[key]
            for key, dropped in zip(batch["keys"], batch["dropped"], strict=True)
        ]
        return self.backbone.encode_prompts(captions)

    def extra_losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        if s.steering_weight == 0:
            return {}
        terms = []
        for key in batch["keys"]:
            for encoder_name in self.relation_token.encoders:
                pool = self.positives[encoder_name]
                pick = torch.randperm(pool.shape[0], generator=generator)[: s.num_positives]
                anchor = self.relation_token.vector(encoder_name)
                terms.append(
                    steering_loss(
                        anchor,
                        pool[pick.to(pool.device)],
                        self.negatives[key][encoder_name],
                        s.steering_temperature,
                    )
                )
        return {"steering": s.steering_weight * torch.stack(terms).mean()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"token.{name}": self.relation_token.vector(name).detach().to("cpu", copy=True)
            for name in self.relation_token.encoders
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name in self.relation_token.encoders:
                vector = self.relation_token.vector(name)
                vector.copy_(state[f"token.{name}"].to(vector.device))

    def save(self, output: Path, config_json: str) -> tuple[Path, Path | None]:
        path = Path(output) / TOKEN_FILE
        meta = {
            **self.metadata(config_json),
            TOKEN_KEY: self.settings.token,
            ENCODERS_KEY: ",".join(self.relation_token.encoders),
        }
        atomic_save(self.state_dict(), path, meta)
        return path, None

    @staticmethod
    def apply_file(backbone: Backbone, path: Path, meta: dict[str, Any], scale: float = 1.0) -> str:
        """Add the saved token to ``backbone``'s tokenizer(s) and encoder(s); returns the token."""
        with safe_open(str(path), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        encoders = str(meta.get(ENCODERS_KEY, "")).split(",")
        missing = [e for e in encoders if f"token.{e}" not in state]
        if missing or not encoders:
            raise InputError(path, f"no token vector for encoder(s) {missing}", "use the file training wrote")
        token = RelationToken(str(meta[TOKEN_KEY]), {e: state[f"token.{e}"] for e in encoders})
        token.requires_grad_(False)
        token.install(backbone)
        # keep the hooks' tensors alive with the pipeline
        backbone.pipeline._dreamrelation_relation_token = token
        return token.token
