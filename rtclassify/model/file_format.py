"""Saving and loading exported models: the only module that knows the file format.

A model file is a TorchScript archive whose `card.json` extra file describes it (classes, window
spec, normalisation, training data, evaluation, sha256 of the weights). The exported module maps
(N, L) windows in mV to (N, K) class probabilities. A folded network also carries `serving.onnx`,
the same function for ONNX Runtime (rtclassify.model.runtimes), verified against the TorchScript module
when written and at every load. On the CPU the daemon runs the folded network as compiled kernels
(rtclassify.model.compiled), built from the module at load and verified the same way.
TorchScript is deprecated upstream; if it is replaced (e.g. by torch.export), only this module
changes.
"""
import contextlib
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rtclassify.config import BUILTIN_MODELS
from rtclassify.model.runtimes import SERVING_FILE
from rtclassify.dsp.windows import WindowSpec

CARD_SCHEMA = "rtclassify.card/1"
CARD_FILE = "card.json"
REQUIRED_CARD_KEYS = ("schema", "name", "task", "classes", "window", "normalisation", "weights_sha256")
BUILTIN_DIR = Path(__file__).parent / "shipped"
RUNTIMES = ("auto", "kernels", "onnx", "torchscript")


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or inconsistent with its card."""


@dataclass
class LoadedModel:
    """A ready-to-run model: `module` maps (N, spec.n_samples) mV to (N, len(classes)) probabilities."""

    module: torch.jit.ScriptModule
    card: dict
    spec: WindowSpec
    path: Path
    device: str = "cpu"
    runtime: str = "torchscript"  # what `run` uses: "kernels" (compiled, CPU), "onnx" (ONNX Runtime, CPU), "torchscript"
    run: object = None  # (N, L) float32 mV ndarray -> (N, K) float64 probabilities, by `runtime`
    runtime_note: str = ""  # why "auto" did not take the fastest runtime, if it did not

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def sha256(self) -> str:
        return self.card["weights_sha256"]

    @functools.cached_property
    def trust(self):
        """How far its probabilities may be trusted (rtclassify.model.trust.Trust, from the card)."""
        from rtclassify.model.trust import Trust

        return Trust.from_card(self.card)

    @property
    def envelope(self) -> dict | None:
        """The acquisition envelope the card states (rtclassify.model.envelope), None if none."""
        return self.card.get("envelope") or None


@contextlib.contextmanager
def quiet_deprecation():
    """Silence torch's TorchScript deprecation notice: known, and contained in this module."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
        yield


def hash_weights(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def save_model(module: torch.nn.Module, card: dict, path: Path) -> dict:
    """Script `module` (eval mode), fill the card's checksum and schema, write `path`; returns the card."""
    module = module.eval()
    with quiet_deprecation():
        scripted = torch.jit.script(module)
    card = dict(card)
    card["schema"] = CARD_SCHEMA
    card["weights_sha256"] = hash_weights(scripted)
    check_card(card, Path(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_model_file(scripted, card, Path(path))
    return card


def write_model_file(scripted, card: dict, path: Path) -> None:
    """The one writer of model files: TorchScript archive, card, and for a folded network its ONNX
    serving graph, refused here already if it does not match the TorchScript module."""
    extra = {CARD_FILE: json.dumps(card, indent=1)}
    if scripted.original_name == "FoldedCNN":
        from rtclassify.model.runtimes import export_onnx, verified_runner

        graph = export_onnx(scripted)
        spec = WindowSpec.from_dict(card["window"])
        try:
            verified_runner(graph, scripted, spec.n_samples, spec.fs_hz)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}; not written") from None
        extra[SERVING_FILE] = graph
    with quiet_deprecation():
        torch.jit.save(scripted, str(path), _extra_files=extra)


def update_card(model: str, changes: dict) -> dict:
    """Replace top-level fields of a model file's card (e.g. its evaluation), weights untouched; the
    serving graph is written anew (so `update_card(path, {})` adds one to an older file).

    The file is loaded and verified first (checksum, card, output shape); the weights' sha256 and
    the schema cannot be changed this way. Returns the new card.
    """
    fixed = {"schema", "weights_sha256"} & set(changes)
    if fixed:
        raise ModelFileError(f"card fields {sorted(fixed)} follow from the weights and cannot be set")
    loaded = load_model(model, runtime="torchscript")
    card = {**loaded.card, **changes}
    check_card(card, loaded.path)
    write_model_file(loaded.module, card, loaded.path)
    return card


def apply_temperature_to_file(model: str, temperature: float, evidence: dict, out: Path | None = None) -> dict:
    """Calibrate a folded network's probabilities by a temperature, inside the module: softmax(z / T)
    is its last layer's weights and bias divided by T (no cost at run time, decisions unchanged).

    The card gets `calibration` = {"method": "temperature", "temperature": T (the total, when the
    file was calibrated before), **evidence} and the new weights' sha256; written to `out`
    (default: in place). Returns the new card.
    """
    loaded = load_model(model, runtime="torchscript")
    module, card = loaded.module, dict(loaded.card)
    if module.original_name != "FoldedCNN":
        raise ModelFileError(f"{loaded.path}: calibration inside the module needs a folded network "
                             f"(this one is {module.original_name})")
    with torch.no_grad():
        module.w2.div_(temperature)
        module.b2.div_(temperature)
    before = (card.get("calibration") or {}).get("temperature", 1.0)
    card["calibration"] = {"method": "temperature", "temperature": round(before * temperature, 6), **evidence}
    card["weights_sha256"] = hash_weights(module)
    check_card(card, loaded.path)
    write_model_file(module, card, Path(out) if out else loaded.path)
    return card


def shift_output_bias_in_file(model: str, shift, evidence: dict, out: Path | None = None) -> dict:
    """Add `shift` (K,) to a folded network's logits before its temperature, inside the module: the
    file then gives softmax((z + shift) / T), its last layer's bias raised by shift / T (no cost at run
    time). Post-hoc logit adjustment (Menon et al. 2021): decisions move towards the classes raised.

    The card gets `output_shift` = {"logits": the total shift (K,) in logit units before the temperature
    (added to any earlier one), **evidence} and the new weights' sha256; written to `out` (default: in
    place). Returns the new card.
    """
    loaded = load_model(model, runtime="torchscript")
    module, card = loaded.module, dict(loaded.card)
    if module.original_name != "FoldedCNN":
        raise ModelFileError(f"{loaded.path}: an output shift inside the module needs a folded network "
                             f"(this one is {module.original_name})")
    shift = [float(v) for v in shift]
    if len(shift) != len(card["classes"]):
        raise ModelFileError(f"{loaded.path}: output shift has {len(shift)} values for {len(card['classes'])} classes")
    temperature = float((card.get("calibration") or {}).get("temperature", 1.0))
    with torch.no_grad():
        module.b2.add_(torch.tensor(shift, dtype=module.b2.dtype) / temperature)
    before = (card.get("output_shift") or {}).get("logits", [0.0] * len(shift))
    card["output_shift"] = {"logits": [round(a + b, 6) for a, b in zip(before, shift)], **evidence}
    card["weights_sha256"] = hash_weights(module)
    check_card(card, loaded.path)
    write_model_file(module, card, Path(out) if out else loaded.path)
    return card


def output_shift(card: dict) -> list[float]:
    """(K,) the logit shift a model file adds before its temperature (card `output_shift`; zeros if none)."""
    return list((card.get("output_shift") or {}).get("logits", [0.0] * len(card["classes"])))


def resolve_model_path(model: str) -> Path:
    """A built-in name (genetic5, broad2) or a file path -> the model file's path."""
    if model in BUILTIN_MODELS:
        return BUILTIN_DIR / f"{model}.pt"
    path = Path(model)
    if not path.exists():
        raise ModelFileError(
            f"model {model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor an existing file"
        )
    return path


def load_model(model: str, device: str = "cpu", runtime: str = "auto") -> LoadedModel:
    """Load a built-in model by name or a model file by path, verifying card and checksum.

    runtime (the CPU ones are verified against the TorchScript module at load, or refused):
    "kernels" (the folded network as compiled numba kernels, rtclassify.model.compiled), "onnx" (the
    file's serving graph on ONNX Runtime), "torchscript", or "auto": on the CPU kernels, else onnx,
    else torchscript, whichever first loads (`runtime_note` says why one was passed over); on CUDA
    torchscript. `rtclassify bench` compares them.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: expected one of {RUNTIMES}")
    path = resolve_model_path(model)
    extra = {CARD_FILE: "", SERVING_FILE: ""}
    try:
        with quiet_deprecation():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable rtclassify model file ({type(exc).__name__}: {exc})") from None
    if not extra[CARD_FILE]:
        raise ModelFileError(f"{path}: has no {CARD_FILE}; export it with the rtclassify trainer")
    try:
        card = json.loads(extra[CARD_FILE])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: {CARD_FILE} is not valid JSON ({exc})") from None
    check_card(card, path)
    actual = hash_weights(module)
    if actual != card["weights_sha256"]:
        raise ModelFileError(
            f"{path}: weights sha256 {actual[:12]}… does not match the card's {card['weights_sha256'][:12]}…; "
            "the file was altered or corrupted: re-export or re-install it"
        )
    module.eval()
    spec = WindowSpec.from_dict(card["window"])
    check_output_shape(module, spec, card, path, device)
    loaded = LoadedModel(module=module, card=card, spec=spec, path=path, device=device)
    loaded.runtime, loaded.run, loaded.runtime_note = choose_runtime(runtime, module, spec, path, device,
                                                                     extra[SERVING_FILE])
    return loaded


def choose_runtime(runtime: str, module, spec: WindowSpec, path: Path, device: str, graph: bytes):
    """(runtime name, runner, note) for load_model; ModelFileError when the runtime asked for cannot run."""
    if runtime in ("kernels", "onnx") and device != "cpu":
        raise ModelFileError(f"{path}: runtime {runtime} runs on the CPU only (device {device}); use --runtime torchscript")
    if runtime == "onnx" and not graph:
        raise ModelFileError(f"{path}: runtime onnx needs a serving graph in the file, and it has none: "
                             "re-save it with `python -m trainer cards`")
    if runtime == "torchscript" or (runtime == "auto" and device != "cpu"):
        return "torchscript", torchscript_runner(module, device), ""
    # a serving graph in the file is checked whichever runtime runs: an altered file is refused
    onnx = load_serving_graph(graph, module, spec, path) if graph else None
    if runtime == "onnx":
        return "onnx", onnx, ""
    from rtclassify.model.runtimes import verified_kernels

    try:
        return "kernels", verified_kernels(module, spec.n_samples, spec.fs_hz), ""
    except ValueError as exc:
        if runtime == "kernels":
            raise ModelFileError(f"{path}: runtime kernels: {exc}; use --runtime onnx or torchscript") from None
        note = f"compiled kernels passed over: {exc}"
    if onnx is not None:
        return "onnx", onnx, note
    return "torchscript", torchscript_runner(module, device), note + "; no serving graph in the file"


def load_serving_graph(graph: bytes, module, spec: WindowSpec, path: Path):
    """An OnnxRunner for the file's serving graph, refused unless it matches the TorchScript module."""
    from rtclassify.model.runtimes import verified_runner

    try:
        return verified_runner(graph, module, spec.n_samples, spec.fs_hz)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}; the file was altered: re-export it, or use --runtime torchscript") from None
    except Exception as exc:
        raise ModelFileError(f"{path}: its serving graph does not load in ONNX Runtime ({type(exc).__name__}: "
                             f"{exc}); use --runtime torchscript or re-save the file") from None


def torchscript_runner(module, device: str):
    """(N, L) float32 ndarray -> (N, K) float64 probabilities through the TorchScript module."""
    forward = module.forward  # the scripted forward itself: skips nn.Module's call hooks

    def run(windows):
        with torch.inference_mode():
            return forward(torch.from_numpy(windows).to(device)).cpu().numpy().astype("float64")

    return run


def check_card(card: dict, path: Path) -> None:
    """Refuse a card without the required fields or with an unknown schema."""
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ModelFileError(f"{path}: model card lacks {missing}")
    if card["schema"] != CARD_SCHEMA:
        raise ModelFileError(f"{path}: card schema {card['schema']!r}, this rtclassify reads {CARD_SCHEMA!r}")
    classes = card["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ModelFileError(f"{path}: card classes {classes!r} must be a list of at least 2 distinct names")
    try:
        WindowSpec.from_dict(card["window"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: card window spec is invalid: {exc}") from None


def check_output_shape(module, spec: WindowSpec, card: dict, path: Path, device: str) -> None:
    """Run one flat window through the model: the output must be (1, n_classes) probabilities."""
    with torch.inference_mode():
        out = module(torch.full((1, spec.n_samples), -60.0, device=device))
    if tuple(out.shape) != (1, len(card["classes"])):
        raise ModelFileError(
            f"{path}: model outputs shape {tuple(out.shape)} but the card lists {len(card['classes'])} classes"
        )

