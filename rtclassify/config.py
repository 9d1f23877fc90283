"""Building the project's settings dataclasses from dicts (JSON, model cards), strictly."""
from dataclasses import fields

BUILTIN_MODELS = ("genetic5", "broad2")  # shipped in rtclassify/model/shipped/<name>.pt


def dataclass_from_dict(cls, d: dict, what: str):
    """cls(**d), refusing unknown keys with the list of valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**d)
