"""Load any Hugging Face model by hub id or local path, the same way for hub, local and builtin models.

`models` writes a `model_ref.json` per role (teacher, student) recording what was resolved; every later
stage loads through `load_model(model_dir)`, so a changed model changes that file and reruns what follows.
Weights are safetensors only; `trust_remote_code` stays off unless a param turns it on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import InputError

MODEL_REF = "model_ref.json"
BUILTIN_WEIGHTS = "weights"  # sub-folder of data/models/<role> where the builtin model is saved


@dataclass(frozen=True)
class ModelRef:
    """What `models` resolved: enough to load the exact same weights again."""

    source: str
    """Hub id, local path (relative to the repository root where it lies inside it), or the builtin folder
    (relative to the model dir)."""
    revision: str | None
    """Resolved hub commit, or `sha256:<hash>` of a local folder's files."""
    kind: str
    """`causal_lm` (has an LM head: option logits available) or `encoder` (hidden states only)."""
    trust_remote_code: bool = False
    builtin: bool = False

    def save(self, model_dir: Path) -> None:
        (model_dir / MODEL_REF).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelRef:
        path = Path(model_dir) / MODEL_REF
        if not path.exists():
            raise InputError(f"{path}: model reference not found (run `dvc repro models` first)")
        return cls(**json.loads(path.read_text()))

    @property
    def hub_revision(self) -> str | None:
        """The revision to pass to from_pretrained (None for local folders and the builtin)."""
        if self.builtin or self.revision is None or self.revision.startswith("sha256:"):
            return None
        return self.revision

    def location(self, model_dir: str | Path) -> str:
        return str(Path(model_dir) / self.source) if self.builtin else self.source


def infer_kind(config: Any) -> str:
    """`causal_lm` when the checkpoint's architecture has a next-token head, else `encoder`."""
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return "causal_lm"
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{architectures}: encoder-decoder models are not supported; use a decoder or encoder")
    return "encoder"


def relative_to_root(folder: Path) -> str:
    """`folder` relative to the repository root (the working directory every stage runs in) where it lies inside
    it, so model_ref.json holds the same path in every clone; absolute where it lies outside."""
    absolute, root = Path(os.path.abspath(folder.expanduser())), Path.cwd().resolve()
    return absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else str(absolute)


def hash_folder(folder: Path) -> str:
    """Content hash of a local model folder (file names and bytes), so edits to the weights rerun stages."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\x00")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def resolve(source: str, *, revision: str | None, trust_remote_code: bool) -> ModelRef:
    """Pin a hub id to its commit (downloading it into the HF cache) or hash a local folder."""
    from transformers import AutoConfig

    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError(f"{source}: a local model must be a folder saved with save_pretrained")
        try:
            config = AutoConfig.from_pretrained(local, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:  # no config.json, or one transformers does not recognise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(
                f"{source}: no model transformers can load in this folder ({first}); give a folder saved with "
                "save_pretrained (config.json, safetensors weights, tokenizer)"
            ) from error
        return ModelRef(relative_to_root(local), hash_folder(local), infer_kind(config), trust_remote_code)
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(
            snapshot_download(
                source,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken"],
            )
        )
    except Exception as error:  # no network, unknown id, gated repo: say which model and why
        raise InputError(f"model {source!r} is neither a local folder nor loadable from the hub: {error}") from error
    config = AutoConfig.from_pretrained(snapshot, trust_remote_code=trust_remote_code)
    return ModelRef(source, snapshot.name, infer_kind(config), trust_remote_code)


def load_tokenizer(ref: ModelRef, model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        ref.location(model_dir), revision=ref.hub_revision, trust_remote_code=ref.trust_remote_code
    )
    if tokenizer.pad_token is None:  # decoder tokenizers often ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model(
    model_dir: str | Path, *, dtype: Any = None, device_map: Any = None, with_head: bool = True
) -> tuple[Any, Any, ModelRef]:
    """(model, tokenizer, ref) for the model resolved into `model_dir`.

    `with_head=False` loads the bare backbone (AutoModel) even for a causal LM.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    ref = ModelRef.read(model_dir)
    model_class = AutoModelForCausalLM if with_head and ref.kind == "causal_lm" else AutoModel
    model = model_class.from_pretrained(
        ref.location(model_dir),
        revision=ref.hub_revision,
        dtype=dtype if dtype is not None else "auto",
        device_map=device_map,
        use_safetensors=True,
        trust_remote_code=ref.trust_remote_code,
    )
    model.eval()
    return model, load_tokenizer(ref, model_dir), ref
