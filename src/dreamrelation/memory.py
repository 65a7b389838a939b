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
* 8-bit AdamW (bitsandbytes, CUDA only) and gradient accumulation live in the trainer.

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


def transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a diffusers transformer (the classes named in ``_no_split_modules``)."""
    names = set(getattr(transformer, "_no_split_modules", None) or [])
    blocks: list[torch.nn.Module] = []
    inside: set[int] = set()  # modules within a block already taken (nested blocks stay in it)
    for module in transformer.modules():
        if type(module).__name__ in names and id(module) not in inside:
            blocks.append(module)
            inside.update(id(m) for m in module.modules())
    if not blocks:
        raise ConfigError(
            f"{type(transformer).__name__} declares no repeated blocks (_no_split_modules); "
            "block_offload cannot be used with it"
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
) -> FrozenBlockOffload | None:
    """Apply the savers to a transformer that already carries its (float32) adapters, then place it.

    Order matters: FP8 casting happens before offloading so the host copies are FP8 (half the
    transfer); without offloading the whole transformer moves to ``device``.
    """
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
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
    """AdamW, or bitsandbytes' 8-bit AdamW (CUDA only; refused elsewhere rather than approximated)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name != "adamw8bit":
        raise ConfigError(f"optimizer {name!r} is unknown; use adamw or adamw8bit")
    if torch.device(device).type != "cuda":
        raise ConfigError(
            "optimizer: adamw8bit needs a CUDA GPU (bitsandbytes' 8-bit kernels); on this device use "
            "optimizer: adamw (the adapters' optimizer state is small: 8-bit saves little here)"
        )
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ConfigError(
            "optimizer: adamw8bit needs bitsandbytes: pip install 'dreamrelation[memory]' "
            "(or pip install bitsandbytes), or use optimizer: adamw"
        ) from exc
    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, betas=betas)
