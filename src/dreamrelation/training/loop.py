"""`dreamrelation train`: the DreamRelation training loop (one screen, every knob in TrainConfig).

Per iteration: draw the LoRA to train (HMT selection), activate exactly the adapters it needs,
noise the cached latents (flow matching), predict, take the mask-weighted loss on the selected
mask plus λ_1 × the relational contrastive loss against the memory bank, and step AdamW on the
active adapters only. Every random draw comes from generators seeded by (seed, step, rank), so a
run resumed from a checkpoint reproduces the uninterrupted loss sequence exactly. Each sample's
draws (caption dropout, posterior sample, σ, noise) come from a generator keyed by the sample's
place in the global sample sequence, so splitting the same global batch over processes or
micro-batches changes no draw.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file

from dreamrelation.backbones import Backbone, backbone_class, load_backbone
from dreamrelation.cache import MASK_ORDER, CachedDataset, cache_digest
from dreamrelation.config import TrainConfig, dump_config
from dreamrelation.errors import ConfigError, TrainingError
from dreamrelation.files import save_tensors, write_text_atomic
from dreamrelation.seeding import generator
from dreamrelation.training.adapters import selection_mask
from dreamrelation.training.checkpoints import (
    list_checkpoints,
    load_newest_intact,
    save_checkpoint,
    set_rng_state,
)
from dreamrelation.training.losses import (
    MemoryBank,
    batch_relational_contrastive_loss,
    combined_mask_loss,
    frame_features,
    mask_weighted_loss,
)
from dreamrelation.training.memory_savers import (
    LossScaling,
    make_optimizer,
    needs_checkpointing,
    place_transformer,
)
from dreamrelation.training.methods import method_class
from dreamrelation.training.methods.base import TrainingMethod
from dreamrelation.training.trackers import log_validation_videos, tracker_config, trackers


@dataclass
class TrainResult:
    output: Path
    #: the file ``dreamrelation generate --lora`` loads, whatever the method
    lora_path: Path
    #: the full LoRA triplet (LoRA methods); None for methods that train no LoRA
    triplet_path: Path | None
    history: list[dict[str, float | str | int]] = field(default_factory=list)


#: a LoRA weight beyond this has diverged (trained LoRA weights are of order 0.01-1)
MAX_LORA_WEIGHT = 1e4


class Trainer:
    """Holds the pieces of one training run; :meth:`run` is the loop."""

    def __init__(self, config: TrainConfig, backbone: Backbone | None = None) -> None:
        self.config = config
        mixed = config.mixed_precision
        if mixed == "auto":
            mixed = "bf16" if torch.cuda.is_available() else "no"
        self.accelerator = Accelerator(
            # cpu=True also lets torchrun/accelerate start CPU data parallelism (gloo)
            cpu=not torch.cuda.is_available(),
            # fp16: our own autocast + loss scaling (LossScaling), on CUDA and CPU alike; accelerate's
            # scaler would need its optimizer wrapper and exists on CUDA only
            mixed_precision="no" if mixed == "fp16" else mixed,
            log_with=trackers(config) or None,
            project_dir=str(config.output),
        )
        self.dataset = CachedDataset(config.cache)
        self.data_digest = cache_digest(config.cache)  # stored in checkpoints: resume checks it
        if config.latent_sampling == "sample" and any(i.latents_std is None for i in self.dataset.items):
            raise ConfigError(
                "latent_sampling: sample needs the VAE posterior's std in the cache (caches written "
                "before it keep only the mean); re-run `dreamrelation cache` or set latent_sampling: mean"
            )
        # the frames the loss sees: all, or (first_frame) all but the given first one
        replaces = backbone_class(config.model.backbone).image_replaces_first_frame
        needed = 2 + int(config.first_frame and replaces)
        single = [i for i in self.dataset.items if i.latents.shape[1] < needed]
        if config.loss.contrastive_weight > 0 and single:
            # RCL contrasts frame-to-frame dynamics: one latent frame has none (its loss would be NaN)
            raise ConfigError(
                f"loss.contrastive_weight > 0 (RCL) needs at least {needed} latent frames, but {len(single)} "
                f"cached video(s) have fewer (e.g. {single[0].key}); cache more frames (video.num_frames) or "
                "set loss.contrastive_weight: 0"
            )
        per_relation = Counter(i.relation for i in self.dataset.items)
        if config.loss.contrastive_weight > 0 and max(per_relation.values(), default=0) < 2:
            # its positives are other videos of the same relation: with one each it never runs
            self.accelerator.print(
                "warning: loss.contrastive_weight > 0 but every relation has a single cached video, so the "
                "relational contrastive loss has no positive and never runs; cache more clips per relation "
                "or set loss.contrastive_weight: 0"
            )
        spec = config.model
        method_cls = method_class(config.method)
        if backbone is None:
            # Training reads the cache: only validation (and ReVersion) needs the text encoders and the VAE.
            needs_all = config.validation_every or method_cls.needs_text_encoders
            components = "all" if needs_all else "transformer"
            backbone = load_backbone(
                spec.backbone, spec.model, spec.dtype, spec.max_sequence_length, components=components
            )
        if config.first_frame and not backbone.image_to_video:
            raise ConfigError(
                f"first_frame: {backbone.name} has no image-to-video form; set first_frame: false or use a "
                "backbone that has one (docs/backbones.md)"
            )
        if not config.first_frame and not backbone.text_to_video:
            raise ConfigError(f"first_frame: {backbone.name} is image-to-video only; set first_frame: true")
        if config.first_frame and not backbone.image_replaces_first_frame:
            if any(item.image_condition is None for item in self.dataset.items):
                raise ConfigError(
                    f"first_frame: the cache holds no image condition for {backbone.name}; re-run "
                    "`dreamrelation cache` with this backbone"
                )
        if backbone.name not in self.dataset.backbones:
            raise ConfigError(
                f"the cache was made with {sorted(self.dataset.backbones)}, training uses {backbone.name}; "
                "re-run `dreamrelation cache` with the same backbone"
            )
        self.backbone = backbone
        self.transformer = backbone.transformer
        if method_cls.needs_text_encoders:  # ReVersion runs them at every step, on the training device
            for _, encoder_name in backbone.text_encoders:
                getattr(backbone.pipeline, encoder_name).to(self.accelerator.device)
        self.method: TrainingMethod = method_cls(config, self.backbone, self.dataset)
        # the trained parameters (named for the LoRA methods; any method's, in optimizer order)
        self.lora_params = self.method.parameters()
        device = self.accelerator.device
        self.gradient_checkpointing = needs_checkpointing(
            config.gradient_checkpointing, self.dataset.items[0].latents.shape, config.batch_size
        )
        self.offload = place_transformer(
            self.transformer,
            device,
            fp8_base=config.fp8_base,
            block_offload=config.block_offload,
            gradient_checkpointing=self.gradient_checkpointing,
            fsdp=config.fsdp,
            checkpoint_blocks=config.checkpoint_blocks,
        )
        self.loss_scaling = LossScaling(device) if mixed == "fp16" else None
        for p in self.lora_params:  # trained tensors outside the transformer (motion embeddings) follow it
            if p.device != device:
                p.data = p.data.to(device)
        self.transformer.train()
        self.optimizer = make_optimizer(
            self.lora_params,
            config.optimizer,
            device,
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=config.adam_betas,
        )
        schedule = {"constant": "constant_with_warmup", "cosine": "cosine"}[config.lr_schedule]
        self.scheduler = get_scheduler(
            schedule,
            self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
        self.memory_bank = MemoryBank(config.loss.memory_bank_size)
        self.history: list[dict[str, float | str | int]] = []
        self.step = 0
        self._perms: dict[int, torch.Tensor] = {}

    # ----- deterministic data order -----------------------------------------------------------
    def batch_positions(self, step: int) -> list[int]:
        """This process's places in the global sample sequence at micro-batch ``step``."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        start = step * self.config.batch_size * world + rank * self.config.batch_size
        return list(range(start, start + self.config.batch_size))

    def batch_indices(self, step: int) -> list[int]:
        n = len(self.dataset)
        indices = []
        for pos in self.batch_positions(step):
            epoch, offset = divmod(pos, n)
            if epoch not in self._perms:
                self._perms = {epoch: torch.randperm(n, generator=generator(self.config.seed, 7, epoch))}
            indices.append(int(self._perms[epoch][offset]))
        return indices

    def collate(self, indices: list[int], generator: torch.Generator | list[torch.Generator]) -> dict:
        """The batch of dataset ``indices``; each sample draws from its own generator (or all from one)."""
        items = [self.dataset.items[i] for i in indices]
        gens = generator if isinstance(generator, list) else [generator] * len(items)
        drop = torch.cat([torch.rand(1, generator=g) for g in gens]) < self.config.caption_dropout
        null = self.dataset.null_text or {}
        text = {
            key: torch.stack([null[key] if d else it.text[key] for it, d in zip(items, drop, strict=True)])
            for key in items[0].text
        }
        device = self.accelerator.device
        latents = torch.stack([it.latents for it in items])
        if self.config.latent_sampling == "sample":  # a fresh draw from the VAE posterior
            std = torch.stack([it.latents_std for it in items])
            eps = [torch.randn(it.latents.shape, generator=g) for it, g in zip(items, gens, strict=True)]
            latents = latents + std * torch.stack(eps)
        image = {k: [getattr(it, k) for it in items] for k in ("image_condition", "image_embeds")}
        return {
            "latents": latents.to(device),
            **{k: None if v[0] is None else torch.stack(v).to(device) for k, v in image.items()},
            "masks": None if items[0].masks is None else torch.stack([it.masks for it in items]).to(device),
            "text": {k: v.to(device) for k, v in text.items()},
            "relations": [it.relation for it in items],
            "keys": [it.key for it in items],
            "captions": [it.caption for it in items],
            "dropped": [bool(d) for d in drop],
        }

    # ----- one iteration ----------------------------------------------------------------------
    @property
    def present(self) -> list[str]:
        """The LoRA adapters this run trains (empty for methods without LoRA)."""
        return list(getattr(self.method, "present", []))

    def select(self, step: int) -> str | None:
        """HMT LoRA selection: one of relation/subject1/subject2 uniformly (same on every process)."""
        select = getattr(self.method, "select", None)
        return select(step) if select is not None else None

    def training_step(self, step: int) -> dict[str, float | str | int]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches.

        Each micro-batch draws its own adapter (HMT); an adapter inactive in every micro-batch keeps
        grad None, so AdamW neither moves nor decays it. With one micro-batch the draws are those
        of the unaccumulated loop (micro index = step).
        """
        cfg = self.config
        accumulate = cfg.gradient_accumulation_steps
        # 1.-7. forward and backward of each micro-batch (micro_step); their gradients add up
        parts = [self.micro_step(step * accumulate + m, step, accumulate) for m in range(accumulate)]

        # 8. the gradients: mean over processes, true scale (fp16), clipped
        self._average_gradients()
        if self.loss_scaling is not None:  # fp16: the true gradients before clipping
            self.loss_scaling.unscale_(self.optimizer)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.lora_params if p.grad is not None], cfg.max_grad_norm
            )

        # 9. step AdamW and the schedule. Inactive adapters have grad None: AdamW skips them (no
        # update, no weight decay). A non-finite gradient, weight or optimizer state stops training
        # here, before any file of this step is written (the last checkpoint stays the newest)
        skipped = False
        if self.loss_scaling is None:
            self._check_finite(step, "gradients", [p.grad for p in self.lora_params if p.grad is not None])
            self.optimizer.step()
        else:  # an fp16 overflow (inf/NaN gradient, finite loss) skips the step and halves the scale
            skipped = self.loss_scaling.step(self.optimizer)
        if not skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._check_finite(step, "LoRA weights", list(self.lora_params), limit=MAX_LORA_WEIGHT)
        state = [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        self._check_finite(step, "optimizer state", [v for v in state if v.is_floating_point()])

        # 10. the step's record: losses averaged over the micro-batches
        record: dict[str, float | str | int] = {"step": step + 1}
        if self.loss_scaling is not None:
            record["loss_scale"] = self.loss_scaling.scale
            record["skipped"] = int(skipped)
            if skipped:  # expected now and then under fp16; a non-finite *loss* is an error instead
                self.accelerator.print(
                    f"step {step + 1}: fp16 gradient overflow, step skipped; "
                    f"loss scale now {record['loss_scale']:g}"
                )
        for key in ("loss", "reconstruction", "contrastive"):
            record[key] = sum(float(p[key]) for p in parts) / accumulate
        record["contrastive_terms"] = sum(int(p["contrastive_terms"]) for p in parts)
        for key in parts[0]:  # the method's own loss terms (ReVersion: steering)
            if key not in record and key != "adapter":
                record[key] = sum(float(p[key]) for p in parts) / accumulate
        record["adapter"] = "+".join(str(p["adapter"]) for p in parts)
        record["lr"] = self.scheduler.get_last_lr()[0]
        return record

    def micro_step(self, micro: int, step: int, accumulate: int = 1) -> dict[str, float | str | int]:
        """Forward and backward of one micro-batch (``micro`` seeds its draws); no optimizer step."""
        cfg, loss_cfg = self.config, self.config.loss
        # one generator per sample, keyed by its global place (one process at batch 1: the same as
        # the micro-batch's); the memory bank and the method draw from the first sample's
        sample_gens = [generator(cfg.seed, 2, pos, 0) for pos in self.batch_positions(micro)]
        gen = sample_gens[0]
        # 1. select adapters: the method readies the model (DreamRelation: HMT picks one LoRA and
        # activates the adapters it needs)
        selected = self.method.begin_step(micro)

        # 2. noise the cached latents (flow matching)
        batch = self.collate(self.batch_indices(micro), sample_gens)
        latents = batch["latents"]
        sigma = torch.cat([self.method.sample_sigma(1, g) for g in sample_gens]).to(latents.device)
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in sample_gens])
        noise = noise.to(latents.device)
        noisy = self.backbone.add_noise(latents, noise, sigma)
        target = self.backbone.flow_target(latents, noise)
        # 3. predict the flow (image-to-video: the clean first latent frame is the condition, or what
        # the cache holds for backbones whose image enters otherwise, its image-encoder tokens included)
        image = batch["image_condition"] if batch["image_condition"] is not None else latents[:, :, :1]
        given = {"first_frame": image} if cfg.first_frame else {}
        embeds = {"image_embeds": batch["image_embeds"]} if batch["image_embeds"] is not None else {}
        conditioning = {**self.method.conditioning(batch), **(embeds if cfg.first_frame else {})}
        with self.accelerator.autocast() if self.loss_scaling is None else self.loss_scaling.autocast():
            prediction = self.backbone.predict(noisy, sigma, conditioning, **given)
        prediction = prediction.float()
        masks = batch["masks"]
        if cfg.first_frame and self.backbone.image_replaces_first_frame:
            # the given frame is no prediction: every loss sees the frames after it
            prediction, target = prediction[:, :, 1:], target[:, :, 1:]
            masks = None if masks is None else masks[:, :, 1:]

        # 4. reconstruction loss (mask-weighted on the selected mask, plain without one)
        compared, compared_target = self.method.loss_inputs(prediction, target)
        if selected is None:
            mask = torch.zeros_like(compared[:, :1])
        else:
            mask = masks[:, MASK_ORDER.index(selection_mask(selected))].unsqueeze(1)
        loss_fn = mask_weighted_loss if loss_cfg.mask_loss == "paper" else combined_mask_loss
        rec = loss_fn(compared, compared_target, mask, loss_cfg.mask_weight if selected else 0.0)

        # 5. relational contrastive loss: this batch's dynamics against the memory bank (RCL)
        single, dynamics = frame_features(prediction)
        rcl, rcl_terms = torch.zeros((), device=prediction.device), 0
        if loss_cfg.contrastive_weight > 0:
            rcl, rcl_terms = batch_relational_contrastive_loss(
                dynamics,
                single,
                batch["relations"],
                batch["keys"],
                self.memory_bank,
                gen,
                num_positives=loss_cfg.num_positives,
                num_negatives=loss_cfg.num_negatives,
                temperature=loss_cfg.temperature,
            )
        loss = rec + loss_cfg.contrastive_weight * rcl

        # 6. the method's own terms (ReVersion: relation steering), then backward
        extra = self.method.extra_losses(batch, gen)
        for term in extra.values():
            loss = loss + term
        if not torch.isfinite(loss):  # under fp16 too: only gradient overflows are skipped
            raise TrainingError(
                f"non-finite loss at step {step} (reconstruction {rec.item()}, contrastive {rcl.item()}, "
                f"adapter {selected}); the last checkpoint is intact. Lower learning_rate, set "
                "max_grad_norm, or re-run `dreamrelation cache` if the cached latents contain NaN"
            )
        if self.loss_scaling is None:
            self.accelerator.backward(loss / accumulate)
        else:
            self.loss_scaling.backward(loss / accumulate)

        # 7. the memory bank keeps this batch's features for the next steps' RCL
        for b, relation in enumerate(batch["relations"]):
            self.memory_bank.push(relation, dynamics[b].detach(), single[b].detach(), source=batch["keys"][b])
        return {
            "loss": loss.item(),
            "reconstruction": rec.item(),
            "contrastive": rcl.item(),
            "contrastive_terms": rcl_terms,
            **{name: term.item() for name, term in extra.items()},
            "adapter": self.method.step_label(selected),
        }

    def _check_finite(
        self, step: int, what: str, tensors: list[torch.Tensor], limit: float = float("inf")
    ) -> None:
        """Stop with one clear line when ``tensors`` hold NaN/inf (or values beyond ``limit``)."""
        if not tensors:
            return
        largest = torch.stack([t.detach().abs().max().float() for t in tensors]).max().item()
        if math.isfinite(largest) and largest <= limit:
            return
        found = "NaN or infinite values" if not math.isfinite(largest) else f"values up to {largest:.3g}"
        newest = list_checkpoints(self.checkpoint_root)
        kept = f"the last checkpoint ({newest[-1].name}) is kept" if newest else "no checkpoint was written"
        raise TrainingError(
            f"training diverged at step {step + 1}: the {what} hold {found}; nothing of this step was "
            f"written and {kept}. Fix: lower learning_rate or the loss weights (loss.mask_weight, "
            "loss.contrastive_weight), or set max_grad_norm"
        )

    def _average_gradients(self) -> None:
        """Data parallel without DDP: mean the grads of the active adapters across processes.

        DDP would all-reduce (and so materialise) grads for inactive adapters too.
        """
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad for p in self.lora_params if p.grad is not None]
        flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    # ----- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return Path(self.config.output) / "checkpoints"

    def save(self) -> None:
        acc = self.accelerator
        directory = self.checkpoint_root / f"step-{self.step:07d}"
        if acc.num_processes > 1:
            # every process writes its own bank beside the shared state
            bank_dir = self.checkpoint_root / f".banks-{self.step:07d}"
            bank_dir.mkdir(parents=True, exist_ok=True)
            save_tensors(
                self.memory_bank.state_dict(), str(bank_dir / f"rank{acc.process_index}.safetensors")
            )
            acc.wait_for_everyone()
        if acc.is_main_process:
            if acc.num_processes > 1:
                banks = {
                    r: load_file(str(bank_dir / f"rank{r}.safetensors")) for r in range(acc.num_processes)
                }
            else:
                banks = {0: self.memory_bank.state_dict()}
            save_checkpoint(
                directory,
                adapters=self.method.state_dict(),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                memory_banks=banks,
                state={
                    "step": self.step,
                    "history": self.history,
                    "config": json.loads(dump_config(self.config)),
                    "data": self.data_digest,
                    **({"loss_scale": self.loss_scaling.state_dict()} if self.loss_scaling else {}),
                },
            )
            if acc.num_processes > 1:
                shutil.rmtree(bank_dir, ignore_errors=True)
            for old in list_checkpoints(self.checkpoint_root)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def resume(self) -> bool:
        found = list_checkpoints(self.checkpoint_root) if self.config.resume == "auto" else []
        if not found:
            return False
        ckpt, found = load_newest_intact(found, rank=self.accelerator.process_index)
        saved = ckpt["state"]["config"]
        keys = ("method", "reversion", "motion_inversion", "lora", "loss", "cache", "batch_size", "seed")
        for key in (*keys, "gradient_accumulation_steps"):
            now = json.loads(dump_config(self.config))[key]
            # checkpoints from before the baselines existed are DreamRelation runs
            if saved.get(key, now if key != "method" else "dreamrelation") != now:
                raise ConfigError(
                    f"{found[-1]}: checkpoint was trained with a different `{key}` "
                    f"({saved.get(key)} vs {now}); use another output folder or set resume: never"
                )
        self.method.load_state_dict(ckpt["adapters"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.memory_bank.load_state_dict(ckpt["memory_bank"])
        set_rng_state(*ckpt["rng"])
        if self.loss_scaling is not None and "loss_scale" in ckpt["state"]:
            self.loss_scaling.load_state_dict(ckpt["state"]["loss_scale"])
        self.step = ckpt["state"]["step"]
        self.history = ckpt["state"]["history"]
        return True

    # ----- the loop ---------------------------------------------------------------------------
    def run(
        self,
        show_progress: bool = True,
        stop_after: int | None = None,
        on_step: Callable[[dict[str, float | str | int]], None] | None = None,
    ) -> TrainResult:
        """Train to ``max_steps`` (or stop early after ``stop_after`` steps, for tests/benchmarks).

        ``on_step`` receives each step's record (for callers that draw their own progress).
        """
        cfg, acc = self.config, self.accelerator
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
        self.resume()
        if trackers(cfg):
            acc.init_trackers("dreamrelation", config=tracker_config(cfg))
        progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rec {task.fields[rec]:.4f} rcl {task.fields[rcl]:.4f} [cyan]{task.fields[adapter]}"),
            TimeRemainingColumn(),
            disable=not (show_progress and acc.is_main_process),
        )
        last = self.step + (stop_after if stop_after is not None else cfg.max_steps)
        last = min(last, cfg.max_steps)
        with progress:
            task = progress.add_task(
                "", total=cfg.max_steps, completed=self.step, rec=math.nan, rcl=math.nan, adapter="-"
            )
            while self.step < last:
                record = self.training_step(self.step)
                self.step += 1
                self.history.append(record)
                if on_step is not None:
                    on_step(record)
                progress.update(
                    task,
                    advance=1,
                    rec=record["reconstruction"],
                    rcl=record["contrastive"],
                    adapter=record["adapter"],
                )
                if trackers(cfg) and self.step % cfg.log_every == 0:
                    acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=self.step)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save()
                if cfg.validation_every and self.step % cfg.validation_every == 0 and acc.is_main_process:
                    self.validate()
        return self.finish()

    def validate(self) -> list[Path]:
        from dreamrelation.generation.render import render_and_save

        manifest = json.loads((Path(self.config.cache[0]) / "manifest.json").read_text())
        geo = manifest["video"]
        self.method.inference_mode()
        self.transformer.eval()
        # the text encoders and the VAE wait on the CPU between validations (unless the method runs
        # the text encoders at every step)
        resident = {e for _, e in self.backbone.text_encoders} if self.method.needs_text_encoders else set()
        others = [
            m
            for name, m in self.backbone.pipeline.components.items()
            if name != "transformer" and name not in resident and isinstance(m, torch.nn.Module)
        ]
        for module in others:
            module.to(self.accelerator.device)
        try:
            videos = render_and_save(
                self.backbone,
                self.config.validation_prompts,
                Path(self.config.output) / "validation" / f"step-{self.step:07d}",
                num_frames=geo["num_frames"],
                height=geo["height"],
                width=geo["width"],
                num_inference_steps=self.config.validation_steps,
                guidance_scale=self.config.validation_guidance,
                seed=self.config.seed,
                show_progress=False,
            )
            log_validation_videos(self.accelerator, videos, self.step)
            return videos
        finally:
            for module in others:
                module.to("cpu")
            self.transformer.train()

    def finish(self) -> TrainResult:
        acc = self.accelerator
        output = Path(self.config.output)
        lora_path, triplet_path = self.method.output_paths(output)
        if acc.is_main_process:
            lora_path, triplet_path = self.method.save(output, dump_config(self.config))
            write_text_atomic(output / "history.json", json.dumps(self.history, indent=1))
        self.close()
        return TrainResult(output, lora_path, triplet_path, self.history)

    def close(self) -> None:
        """Stop the trackers and, in a multi-process run, tear the process group down on every process.

        Without this a process can exit while the communication threads of its group still run, and it
        aborts ("terminate called without an active exception") after its work is done.
        """
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def train(config: TrainConfig, backbone: Backbone | None = None, show_progress: bool = True) -> TrainResult:
    return Trainer(config, backbone).run(show_progress=show_progress)
