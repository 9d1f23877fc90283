"""Device choice: CUDA when asked for and present, CPU otherwise."""
import torch


def choose_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' if available else 'cpu'; 'cuda' without a GPU -> ValueError with the fix."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={requested!r}: expected auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ValueError("device='cuda' but torch sees no CUDA GPU; use --device cpu or auto")
    return "cpu"
