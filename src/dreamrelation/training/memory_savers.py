"""Memory savers for training: each one switch in ``TrainConfig``, each keeping DreamRelation's rules.

* gradient checkpointing: diffusers' per-block activation checkpointing (``enable_gradient_checkpointing``);
  ``"auto"`` turns it on when the cached geometry is large (see :func:`needs_checkpointing`).
* FP8 storage of the frozen base: diffusers' layerwise casting. Every frozen Linear/Conv weight is
  stored in ``float8_e4m3fn`` and upcast to the compute dtype only inside its own forward. The peft
  LoRA layers (``lora_A``/``lora_B``) are skipped, so the adapters stay float32.
* block offloading of the frozen base (:class:`FrozenBlockOffload`): every transformer block's
  frozen weights live in (pinned) CPU memory and are copied to the GPU for that block's forward only.
  Unlike diffusers' group offloading it never moves the adapters: they stay on the GPU with their
  gradients and optimizer state (group offloading moves every parameter of a group, and with CUDA
  streams restores the pinned copy taken when offloading was enabled, which would undo the
  adapters' updates).
* selective checkpointing (:func:`enable_checkpointing`): only some blocks recompute their
  activations (``checkpoint_blocks``), trading memory for speed.
* 8-bit AdamW (bitsandbytes: CUDA, and its CPU kernels) and gradient accumulation live in the trainer.
* fp16 mixed precision with a dynamic loss scale (:class:`LossScaling`).

FP8 storage and block offloading free the base weights between layers only if autograd does not
keep the upcast/onloaded copy for the backward pass, i.e. together with gradient checkpointing; on
their own they save little (measured by ``benchmarks/memory.py``). Inactive adapters are untouched
by every saver: none of them changes which parameters require grad.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dreamrelation.errors import ConfigError

#: latent positions (frames x height x width x batch) above which "auto" checkpointing turns on:
#: 16384 positions = 4096 tokens after the 2x2 patch of Mochi, Wan and HunyuanVideo.
CHECKPOINTING_THRESHOLD = 16384


def needs_checkpointing(setting: bool | str, latent_shape: Iterable[int], batch_size: int) -> bool:
    """Resolve ``gradient_checkpointing`` ("auto", True or False) for cached latents (C, f, h, w).

    "auto": on when the batch has at least :data:`CHECKPOINTING_THRESHOLD` latent positions. At the
    paper's geometry (Mochi, 61x480x848 -> 11x60x106 latents, 17490 tokens) the activations of 48
    blocks far exceed an 80 GB GPU without it; at test sizes it would only cost time.
    """
    if isinstance(setting, bool):
        return setting
    _, frames, height, width = tuple(latent_shape)
    return frames * height * width * batch_size >= CHECKPOINTING_THRESHOLD


def checkpointed_indices(n_blocks: int, setting: str | int | float) -> list[int]:
    """Which of ``n_blocks`` blocks recompute their activations under ``checkpoint_blocks``.

    "all": every block; an int N: N blocks; a float f in (0, 1]: round(f x n_blocks) blocks (at
    least one). The chosen blocks are spread evenly (block i x n / N), so the saved activations of
    the others are spread over the depth rather than piled at one end.
    """
    if setting == "all":
        count = n_blocks
    elif isinstance(setting, float):
        count = max(1, round(setting * n_blocks))
    else:
        count = int(setting)
    if not 1 <= count <= n_blocks:
        raise ConfigError(
            f"checkpoint_blocks: {setting!r} asks for {count} blocks but the transformer has {n_blocks}; "
            f"give 1..{n_blocks}, a fraction such as 0.5, or all"
        )
    return [i * n_blocks // count for i in range(count)]


def enable_checkpointing(transformer: torch.nn.Module, checkpoint_blocks: str | int | float = "all") -> int:
    """diffusers' gradient checkpointing, on all blocks or on the evenly spread subset that
    :func:`checkpointed_indices` picks; returns how many blocks recompute their activations.

    diffusers routes every block through ``_gradient_checkpointing_func(block, *args)``; for a subset
    ours checkpoints the chosen blocks exactly as diffusers does (non-reentrant) and calls the
    others directly, so their activations stay saved for the backward pass (faster, more memory).
    """
    if checkpoint_blocks == "all":
        transformer.enable_gradient_checkpointing()
        return len(transformer_blocks(transformer))
    blocks = transformer_blocks(transformer)
    chosen = {id(blocks[i]) for i in checkpointed_indices(len(blocks), checkpoint_blocks)}

    def checkpoint_chosen(block: torch.nn.Module, *args: object, **kwargs: object) -> object:
        if id(block) in chosen:
            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    transformer.enable_gradient_checkpointing(checkpoint_chosen)
    return len(chosen)


def transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a diffusers transformer (the classes named in ``_no_split_modules``)."""
    # diffusers names them in _no_split_modules, or (LTX-2) only in _repeated_blocks
    names = set(getattr(transformer, "_no_split_modules", None) or [])
    names |= set(getattr(transformer, "_repeated_blocks", None) or [])
    blocks: list[torch.nn.Module] = []
    inside: set[int] = set()  # modules within a block already taken (nested blocks stay in it)
    for module in transformer.modules():
        if type(module).__name__ in names and id(module) not in inside:
            blocks.append(module)
            inside.update(id(m) for m in module.modules())
    if not blocks:
        raise ConfigError(
            f"{type(transformer).__name__} declares no repeated blocks (_no_split_modules); "
            "block_offload, fsdp and checkpoint_blocks cannot be used with it"
        )
    return blocks


def _is_adapter(name: str) -> bool:
    return "lora_" in name


def enable_fp8_storage(transformer: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    """Store the frozen Linear/Conv weights in float8_e4m3fn, compute in ``compute_dtype``.

    Call after the adapters are added: diffusers then skips the peft LoRA layers (they stay float32)
    as well as the precision-critical layers the model declares (patch embedding, norms).
    """
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    wrong = [n for n, p in transformer.named_parameters() if _is_adapter(n) and p.dtype != torch.float32]
    if wrong:  # a diffusers change that would cast the adapters must not go unnoticed
        raise RuntimeError(f"fp8 storage cast adapter weights {wrong[:3]}; adapters must stay float32")


class FrozenBlockOffload:
    """Keep each block's frozen weights on the CPU; copy them to ``device`` for the block's forward.

    The adapters (parameters named ``lora_*``) never move. With gradient checkpointing the backward
    pass re-runs each block's forward, so the weights come back for it through the same hooks.
    """

    def __init__(self, blocks: list[torch.nn.Module], device: torch.device) -> None:
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        self.blocks = blocks
        self.frozen: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.handles = []
        for block in blocks:
            pairs = []
            for name, tensor in [*block.named_parameters(), *block.named_buffers()]:
                if _is_adapter(name):
                    tensor.data = tensor.data.to(self.device)
                    continue
                host = tensor.data.to("cpu")
                host = host.pin_memory() if pin else host
                tensor.data = host
                pairs.append((tensor, host))
            self.frozen.append(pairs)
            self.handles.append(block.register_forward_pre_hook(self._onload(pairs)))
            self.handles.append(block.register_forward_hook(self._offload(pairs)))

    def _onload(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: object) -> None:
            for tensor, host in pairs:
                tensor.data = host.to(self.device, non_blocking=True)

        return hook

    def _offload(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            for tensor, host in pairs:
                # frozen: the host copy is always current, so dropping the device copy is free
                tensor.data = host

        return hook

    def remove(self) -> None:
        """Undo the hooks and put every block back on ``device``."""
        for handle in self.handles:
            handle.remove()
        for pairs in self.frozen:
            for tensor, host in pairs:
                tensor.data = host.to(self.device)
        self.handles = []


def place_transformer(
    transformer: torch.nn.Module,
    device: torch.device,
    *,
    fp8_base: bool,
    block_offload: bool,
    gradient_checkpointing: bool,
    fsdp: bool = False,
    checkpoint_blocks: str | int | float = "all",
) -> FrozenBlockOffload | None:
    """Apply the savers to a transformer that already carries its (float32) adapters, then place it.

    Order matters: FP8 casting happens before offloading so the host copies are FP8 (half the
    transfer); without offloading the whole transformer moves to ``device``.
    """
    if gradient_checkpointing:
        enable_checkpointing(transformer, checkpoint_blocks)
    if fp8_base:
        base_dtypes = {p.dtype for n, p in transformer.named_parameters() if not _is_adapter(n)}
        compute = torch.bfloat16 if torch.bfloat16 in base_dtypes else next(iter(base_dtypes))
        enable_fp8_storage(transformer, compute)
    if fsdp:
        # each block goes to the device as its own shard (fully_shard moves it), never whole; the
        # adapters, left out of the sharding, are moved here
        for name, p in transformer.named_parameters():
            if _is_adapter(name):
                p.data = p.data.to(device)
        shard_frozen_base(transformer, device)
        return None
    if not block_offload:
        transformer.to(device)
        return None
    blocks = transformer_blocks(transformer)
    inside = {id(t) for b in blocks for t in [*b.parameters(), *b.buffers()]}
    for tensor in [*transformer.parameters(), *transformer.buffers()]:
        if id(tensor) not in inside:
            tensor.data = tensor.data.to(device)
    return FrozenBlockOffload(blocks, device)


def shard_frozen_base(transformer: torch.nn.Module, device: torch.device) -> int:
    """FSDP2 (``fully_shard``) over every process: each block's frozen weights, and the rest of the
    base, are split across processes and gathered for the block's forward only. The adapters are
    left out of the sharding (``ignored_params``): every process keeps a full copy, and the trainer
    averages their gradients itself, as in plain data parallel, so inactive adapters still get no
    gradient and no update. Returns how many base elements this process holds."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(
            "fsdp: true needs several processes: start training with `accelerate launch` or torchrun"
        )
    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    adapters = {p for n, p in transformer.named_parameters() if _is_adapter(n)}
    for block in transformer_blocks(transformer):
        fully_shard(block, mesh=mesh, ignored_params=adapters & set(block.parameters()))
    fully_shard(transformer, mesh=mesh, ignored_params=adapters)
    return sum(
        p.to_local().numel() if hasattr(p, "to_local") else p.numel()
        for n, p in transformer.named_parameters()
        if not _is_adapter(n)
    )


def make_optimizer(
    params: list[torch.nn.Parameter],
    name: str,
    device: torch.device,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (on CUDA, and on the CPU with bitsandbytes >= 0.50,
    whose CPU backend has the 8-bit blockwise AdamW kernel; refused elsewhere rather than approximated).

    bitsandbytes keeps float32 state for tensors under 4096 elements (its ``min_8bit_size``): the
    small LoRA vectors and the smallest LoRA matrices stay 32-bit, as in every bitsandbytes trainer.
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name != "adamw8bit":
        raise ConfigError(f"optimizer {name!r} is unknown; use adamw or adamw8bit")
    if torch.device(device).type not in ("cuda", "cpu"):
        raise ConfigError(
            f"optimizer: adamw8bit needs a CUDA GPU or the CPU (bitsandbytes' 8-bit kernels), not "
            f"{torch.device(device).type}; use optimizer: adamw"
        )
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ConfigError(
            "optimizer: adamw8bit needs bitsandbytes: pip install 'dreamrelation[memory]' "
            "(or pip install bitsandbytes), or use optimizer: adamw"
        ) from exc
    if torch.device(device).type == "cpu" and not _has_cpu_8bit_kernel():
        raise ConfigError(
            f"optimizer: adamw8bit on the CPU needs bitsandbytes >= 0.50 (installed: {bnb.__version__}, "
            "without the CPU 8-bit AdamW kernel): pip install -U bitsandbytes, or use optimizer: adamw"
        )
    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, betas=betas)


def _has_cpu_8bit_kernel() -> bool:
    try:
        op = torch.ops.bitsandbytes.optimizer_update_8bit_blockwise
        return op.default.has_kernel_for_dispatch_key(torch._C.DispatchKey.CPU)
    except (AttributeError, RuntimeError):
        return False


class LossScaling:
    """fp16 mixed precision done completely: autocast to float16 and a dynamic loss scale
    (``torch.amp.GradScaler``, the same class on CUDA and on the CPU).

    Per optimizer step: the loss is multiplied by the scale before backward; the gradients are
    unscaled (divided back) before clipping; a step whose gradients hold inf/NaN (an fp16
    overflow) is skipped — the adapters and the optimizer state stay as they were — and the scale
    halves; after 2000 clean steps in a row it doubles. The adapters stay float32 (autocast only
    changes the dtype ops compute in), so their gradients and updates are float32.
    """

    def __init__(self, device: torch.device, init_scale: float = 2.0**16) -> None:
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, init_scale=init_scale)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.unscale_(optimizer)

    @property
    def scale(self) -> float:
        return float(self.scaler.get_scale())

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step unless the (unscaled) gradients overflowed; update the scale. True if skipped."""
        before = self.scale
        self.scaler.step(optimizer)
        self.scaler.update()
        # GradScaler lowers the scale (x backoff 0.5) exactly when it found inf/NaN and skipped
        return self.scale < before

    def state_dict(self) -> dict[str, float | int]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.scaler.load_state_dict(state)
