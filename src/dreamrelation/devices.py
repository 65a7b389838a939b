"""Where work runs, and what the hardware does natively (so no CPU path depends on native bf16)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def default_device() -> torch.device:
    """cuda when available, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> :func:`default_device`; anything else as torch reads it."""
    return default_device() if device == "auto" else torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AMX or
    AVX512-BF16. Elsewhere (an AVX2-only CPU) bf16 autocast is emulated and ~10x slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def use_bf16_autocast(setting: str, device: torch.device) -> bool:
    return setting == "bf16" or (setting == "auto" and native_bf16(device))


def machine_description(device: torch.device) -> str:
    """The processor a figure came from (CPU model and torch's vector capability, or the GPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    threads = torch.get_num_threads()
    plural = "s" if threads != 1 else ""
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}, {threads} thread{plural})"
