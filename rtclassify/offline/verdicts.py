"""The cell verdicts of one recording: one CellEvidence per recorded cell (channel), for `sweeps`,
`watch` and `annotate`."""
from rtclassify.verdict.cell import CellEvidence
from rtclassify.verdict.cell_model import cell_model_for


class FileVerdicts:
    """The cells of one file. A channel is a recorded cell when at least one of its sweeps is a
    membrane potential in current clamp or a voltage-clamp recording (a current monitor beside a
    membrane potential is not a cell)."""

    def __init__(self, model, temperature_c: float | None = None, min_confidence: float | None = None):
        self.model = model
        self.min_confidence = min_confidence  # None: the cell model's own
        self.cell_model = cell_model_for(model)
        self.temperature_c = temperature_c
        self.cells: dict[int, CellEvidence] = {}

    def evidence_for(self, s) -> CellEvidence | None:
        """The CellEvidence of Sweep `s`'s channel, None when the channel is not a recorded cell."""
        if s.refusal and s.clamp_mode == "current":
            return None
        if s.channel not in self.cells:
            self.cells[s.channel] = CellEvidence(self.model.classes, self.cell_model, self.temperature_c,
                                                   self.min_confidence, self.model.trust.class_ceiling)
        return self.cells[s.channel]

    def lines(self, source_file: str) -> list[dict]:
        """One `verdict` line per recorded cell, in channel order (the contract's fields, and the
        cell's long-step features)."""
        out = []
        for channel in sorted(self.cells):
            evidence = self.cells[channel]
            out.append({"verdict": evidence.verdict().to_dict(), "channel": channel, "source_file": source_file,
                        "features": evidence.reported_features()})
        return out
